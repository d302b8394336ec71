package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// notYetImplementedMetrics are metrics the dashboard and the alerts
// already use for features tether does not have yet (none today). The
// checks against a live /metrics skip them, saying so; they fail once
// tether serves one of them, so remove it from this list when its feature
// lands.
var notYetImplementedMetrics = []string{}

// prometheusOwnMetrics are series Prometheus makes itself while scraping.
var prometheusOwnMetrics = []string{"up"}

// promqlMetricNames returns the metric names a PromQL expression selects,
// in order of first use. It understands what dashboards and rules use:
// strings, label matchers (a __name__ matcher names a metric), range and
// subquery brackets, durations and numbers, function calls, the label
// lists of by/without/on/ignoring/group_left/group_right, binary keywords,
// comments and Grafana's $variables.
func promqlMetricNames(expr string) ([]string, error) {
	var names []string
	add := func(n string) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	// skipString returns the index just past the string literal at i.
	skipString := func(i int) (int, error) {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch {
			case expr[j] == '\\' && q != '`':
				j++
			case expr[j] == q:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d in %q", i, expr)
	}
	// skipGroup returns the index just past the group that opens at i,
	// calling inner on each label matcher's name and value when braces.
	skipGroup := func(i int, open, close byte) (int, error) {
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; {
			case c == '"' || c == '\'' || c == '`':
				end, err := skipString(j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unclosed %c at %d in %q", open, i, expr)
	}
	keywords := map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true, "inf": true, "nan": true}
	labelLists := map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	nextNonSpace := func(i int) int {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
		return i
	}
	nextWord := func(i int) string {
		j := i
		for j < len(expr) && isIdent(expr[j]) {
			j++
		}
		return expr[i:j]
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '$': // Grafana variable: $name, ${name}, ${name:format}
			i++
			if i < len(expr) && expr[i] == '{' {
				end := strings.IndexByte(expr[i:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unclosed ${ in %q", expr)
				}
				i += end + 1
				continue
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case c == '{':
			end, err := skipGroup(i, '{', '}')
			if err != nil {
				return nil, err
			}
			for _, m := range strings.Split(expr[i+1:end-1], ",") {
				if k, v, ok := strings.Cut(m, "="); ok && strings.TrimSpace(k) == "__name__" {
					add(strings.Trim(strings.TrimSpace(v), "\"'`"))
				}
			}
			i = end
		case c == '[':
			end, err := skipGroup(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = end
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(expr) && expr[i+1] >= '0' && expr[i+1] <= '9':
			// A number or a duration (5m, 1h30m, 1e-3, 0x1F).
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.' ||
				(expr[i] == '-' || expr[i] == '+') && (expr[i-1] == 'e' || expr[i-1] == 'E')) {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := nextNonSpace(i)
			switch {
			case labelLists[word]:
				if next < len(expr) && expr[next] == '(' {
					end, err := skipGroup(next, '(', ')')
					if err != nil {
						return nil, err
					}
					i = end
				}
			case keywords[strings.ToLower(word)]:
			case next < len(expr) && expr[next] == '(': // a function or aggregation
			case nextWord(next) == "by" || nextWord(next) == "without": // sum by (x) (...)
			default:
				add(word)
			}
		default: // operators, parentheses, commas, @
			i++
		}
	}
	return names, nil
}

func TestPromQLMetricNames(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le, leg) (rate(tether_heartbeat_rtt_seconds_bucket{job=~"$job", instance=~"${instance:regex}"}[$__rate_interval])))`: {"tether_heartbeat_rtt_seconds_bucket"},
		`sum(rate(a_total[5m])) by (direction) / ignoring(x) group_left(y) b`:                                                                                  {"a_total", "b"},
		`x > 0 unless on (instance) y offset 1h30m and bool z or count_values("le", w) # c_total`:                                                              {"x", "y", "z", "w"},
		`{__name__="named_total", le="0.5"} * 1e-3 + .5 + max_over_time(q[1h:5m]) + label_replace(v, "dst", "$1", "src", "(a) or b")`:                          {"named_total", "q", "v"},
		`  up{job="tether"} == 0`:                             {"up"},
		`sum without (leg) (bytes_total) and bytes_total > 0`: {"bytes_total"},
	} {
		got, err := promqlMetricNames(expr)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("promqlMetricNames(%q) = %q, %v; want %q", expr, got, err, want)
		}
	}
	for _, bad := range []string{`x{a="b"`, `rate(x[5m)`, `x{a="b}`} {
		if _, err := promqlMetricNames(bad); err == nil {
			t.Errorf("promqlMetricNames(%q): no error", bad)
		}
	}
}

// checkMetricsServed checks that every metric an expression of exprs
// (what → PromQL) selects is served by tether's live /metrics (mfs). A
// histogram's _bucket, _sum and _count series count as the histogram.
// Metrics in notYetImplementedMetrics are skipped with a log line, and
// prometheusOwnMetrics are allowed. It returns every metric selected.
func checkMetricsServed(t *testing.T, mfs map[string]*dto.MetricFamily, exprs map[string]string) map[string]bool {
	t.Helper()
	used := map[string]bool{}
	for what, expr := range exprs {
		names, err := promqlMetricNames(expr)
		if err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", what, expr)
		}
		for _, n := range names {
			base := n
			if mfs[n] == nil {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suffix); ok && mfs[b] != nil {
						if typ := mfs[b].GetType(); typ == dto.MetricType_HISTOGRAM || typ == dto.MetricType_SUMMARY {
							base = b
						}
					}
				}
			}
			used[base] = true
			switch {
			case mfs[base] != nil:
			case slices.Contains(prometheusOwnMetrics, base):
			case slices.Contains(notYetImplementedMetrics, base):
			default:
				t.Errorf("%s uses %s, which tether's /metrics does not serve", what, n)
			}
		}
	}
	for _, n := range notYetImplementedMetrics {
		switch {
		case mfs[n] != nil:
			t.Errorf("%s is served now: remove it from notYetImplementedMetrics", n)
		case used[n]:
			t.Logf("not checked, not yet implemented: %s", n)
		}
	}
	return used
}
