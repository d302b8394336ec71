package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

func readResults(r io.Reader) ([]*Result, error) {
	var out []*Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || !strings.HasPrefix(line, "{") {
			continue
		}
		var res Result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return nil, fmt.Errorf("parse %q: %w", line, err)
		}
		out = append(out, &res)
	}
	return out, sc.Err()
}

// priority tells in a table's heading whether its runs had the load tool,
// proxy and backend at a real-time priority: all, some (the rows are then
// not comparable) or none (nothing said).
func priority(g []*Result) string {
	n := 0
	for _, r := range g {
		if r.RealTime {
			n++
		}
	}
	switch n {
	case 0:
		return ""
	case len(g):
		return ", real-time priority"
	default:
		return fmt.Sprintf(", real-time priority in only %d of %d runs", n, len(g))
	}
}

// writeTable prints one markdown table per workload label, in the order
// the labels first appear, with ratios of ref against every other target.
// A target measured several times for a label (compare.sh repeats each
// throughput and latency workload, alternating targets) gets one row: its
// median run by the table's key figure, with the spread of that figure
// over the runs and how many runs saturated which side.
func writeTable(w io.Writer, results []*Result, ref string) error {
	var labels []string
	groups := map[string][]*Result{}
	for _, r := range results {
		if _, ok := groups[r.Label]; !ok {
			labels = append(labels, r.Label)
		}
		groups[r.Label] = append(groups[r.Label], r)
	}
	for _, l := range labels {
		g := groups[l]
		for _, r := range g {
			if r.Error != "" {
				r.Target += " (failed: " + r.Error + ")"
			}
		}
		first := g[0]
		switch first.Mode {
		case "throughput":
			fmt.Fprintf(w, "### %s: throughput, %d conns × %d B, %d in flight, %.0f s%s\n\n", l, first.Conns, first.Size, first.InFlight, first.Seconds, priority(g))
			unit, key := "msgs", func(r *Result) float64 { return r.MsgsPerSec }
			if first.Size >= 16<<10 {
				unit, key = "MB", func(r *Result) float64 { return r.MBPerSec }
			}
			perCPU := func(r *Result) float64 { return r.perProxyCPU(key(r) * r.Seconds) }
			rows := medians(g, func(r *Result) float64 {
				if v := perCPU(r); v > 0 {
					return v
				}
				return key(r)
			})
			rr := refRow(rows, ref)
			fmt.Fprintf(w, "| target | runs | saturated | msg/s | MB/s | rtt p50 ms | p99 ms | max ms | proxy CPU s | backend CPU s | load CPU s | %s per proxy CPU s | spread (min–max) | wire B per round trip | %s ÷ target, per CPU s | %s ÷ target, per s |\n", unit, ref, ref)
			fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
			for _, m := range rows {
				r := m.r
				name := r.Target
				if r.Deflate {
					name += " (deflate)"
				}
				fmt.Fprintf(w, "| %s | %d | %s | %.0f | %.1f | %.2f | %.2f | %.1f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
					name, m.n, m.saturated, r.MsgsPerSec, r.MBPerSec, r.P50ms, r.P99ms, r.MaxMs,
					cpu(r, "proxy"), cpu(r, "backend"), cpu(r, "load"), num(perCPU(r), 1), m.spread(1),
					wire(r), ratio(rr, m, perCPU), ratio(rr, m, key))
			}
		case "latency":
			fmt.Fprintf(w, "### %s: latency, %d msg/s over %d conns × %d B, %.0f s%s\n\n", l, first.Rate, first.Conns, first.Size, first.Seconds, priority(g))
			rows := medians(g, func(r *Result) float64 { return r.P99ms })
			rr := refRow(rows, ref)
			// The row is the median run by p99; the CPU columns are the
			// medians of all runs (the median-p99 run's CPU is one
			// sample), and the last column compares p99 round by round.
			fmt.Fprintf(w, "| target | runs | achieved msg/s | rtt p50 ms | p99 ms | p99 spread (min–max) | max ms | proxy CPU s (median) | load CPU s | %s ÷ target, p50 | %s ÷ target, p99 | %s ÷ target, proxy CPU | rounds with %s's p99 ≤ target's |\n", ref, ref, ref, ref)
			fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
			proxyCPU := func(r *Result) float64 { return r.CPU["proxy"] }
			for _, m := range rows {
				r := m.r
				cpuRatio := "–"
				if rr != nil && rr != m {
					if a, b := m.median(proxyCPU), rr.median(proxyCPU); a > 0 && b > 0 {
						cpuRatio = fmt.Sprintf("%.2f", b/a)
					}
				}
				fmt.Fprintf(w, "| %s | %d | %.0f | %.3f | %.3f | %s | %.1f | %s | %s | %s | %s | %s | %s |\n",
					r.Target, m.n, r.MsgsPerSec, r.P50ms, r.P99ms, m.spread(3), r.MaxMs, num(m.median(proxyCPU), 2), cpu(r, "load"),
					ratio(rr, m, func(r *Result) float64 { return r.P50ms }),
					ratio(rr, m, func(r *Result) float64 { return r.P99ms }),
					cpuRatio, rounds(rr, m, func(r *Result) float64 { return r.P99ms }))
			}
			writeHops(w, g, ref)
		case "idle":
			fmt.Fprintf(w, "### %s: idle, %d sessions held %.0f s\n\n", l, first.Conns, first.Seconds)
			rows := medians(g, func(r *Result) float64 { return r.RSSPerSession })
			rr := refRow(rows, ref)
			fmt.Fprintf(w, "| target | proxy RSS before MiB | after MiB | RSS per session KiB | proxy CPU %% idle | pings answered by the tool | %s ÷ target, RSS per session | %s ÷ target, CPU %% |\n", ref, ref)
			fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
			for _, m := range rows {
				r := m.r
				fmt.Fprintf(w, "| %s | %.1f | %.1f | %.2f | %.2f | %d | %s | %s |\n",
					r.Target, float64(r.RSSBase)/(1<<20), float64(r.RSSAfter)/(1<<20), r.RSSPerSession/1024,
					r.ProxyCPUPercent, r.PingsAnswered,
					ratio(rr, m, func(r *Result) float64 { return r.RSSPerSession }),
					ratio(rr, m, func(r *Result) float64 { return r.ProxyCPUPercent }))
			}
		}
		fmt.Fprintln(w)
	}
	return nil
}

// row is one target's runs of one workload, shown as its median run.
type row struct {
	r         *Result   // the median run by the table's key figure
	runs      []*Result // the runs that did not fail, in the order run
	n         int       // runs that did not fail
	lo, hi    float64   // the key figure's range over those runs
	saturated string    // e.g. "proxy 3/3", "harness 1/3, proxy 2/3, 1 failed"
}

func (m *row) spread(prec int) string {
	if m.n < 2 {
		return "–"
	}
	return fmt.Sprintf("%.*f–%.*f", prec, m.lo, prec, m.hi)
}

// medians groups g by target, in the order targets first appear, and
// picks each target's median run by f (the lower middle for an even
// count). Failed runs are shown only when a target has no other.
func medians(g []*Result, f func(*Result) float64) []*row {
	var order []string
	by := map[string][]*Result{}
	for _, r := range g {
		t := r.Target
		if r.Error != "" {
			t = strings.SplitN(t, " (failed: ", 2)[0]
		}
		if _, ok := by[t]; !ok {
			order = append(order, t)
		}
		by[t] = append(by[t], r)
	}
	var rows []*row
	for _, t := range order {
		var ok, failed []*Result
		for _, r := range by[t] {
			if r.Error != "" {
				failed = append(failed, r)
			} else {
				ok = append(ok, r)
			}
		}
		if len(ok) == 0 {
			for _, r := range failed {
				rows = append(rows, &row{r: r, n: 1, saturated: satOf(r)})
			}
			continue
		}
		runs := slices.Clone(ok)
		slices.SortStableFunc(ok, func(a, b *Result) int { return cmp.Compare(f(a), f(b)) })
		m := &row{r: ok[(len(ok)-1)/2], runs: runs, n: len(ok), lo: f(ok[0]), hi: f(ok[len(ok)-1])}
		counts := map[string]int{}
		var kinds []string
		for _, r := range ok {
			k := satOf(r)
			if counts[k] == 0 {
				kinds = append(kinds, k)
			}
			counts[k]++
		}
		slices.Sort(kinds)
		var parts []string
		for _, k := range kinds {
			if len(ok) == 1 {
				parts = append(parts, k)
			} else {
				parts = append(parts, fmt.Sprintf("%s %d/%d", k, counts[k], len(ok)))
			}
		}
		if len(failed) > 0 {
			parts = append(parts, fmt.Sprintf("%d failed", len(failed)))
		}
		m.saturated = strings.Join(parts, ", ")
		rows = append(rows, m)
	}
	return rows
}

func satOf(r *Result) string {
	if r.Saturated == "" {
		return "–"
	}
	return r.Saturated
}

func refRow(rows []*row, ref string) *row {
	for _, m := range rows {
		if m.r.Target == ref {
			return m
		}
	}
	return nil
}

func cpu(r *Result, k string) string {
	v, ok := r.CPU[k]
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func num(v float64, prec int) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func wire(r *Result) string {
	if r.WirePerMsg == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", r.WirePerMsg)
}

// median is the median of f over m's runs (the lower middle for an even
// count); 0 without runs.
func (m *row) median(f func(*Result) float64) float64 {
	if len(m.runs) == 0 {
		return 0
	}
	v := make([]float64, len(m.runs))
	for i, r := range m.runs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

// writeHops prints, for latency runs traced hop by hop (-hops), where
// the round trips went: the proxy's own part (from a message's arrival at
// the proxy to its copy's arrival at the backend, plus the same for the
// echo), the backend's, and the whole on the wire, as the kernel saw
// them; the load tool's own waits are in none of them. The row is each
// target's median run by the proxy's p99, compared round by round.
func writeHops(w io.Writer, g []*Result, ref string) {
	var traced []*Result
	for _, r := range g {
		if r.Hops != nil && r.Hops.Msgs > 0 {
			traced = append(traced, r)
		}
	}
	if len(traced) == 0 {
		return
	}
	proxyP99 := func(r *Result) float64 {
		if r.Hops == nil {
			return 0
		}
		return r.Hops.Proxy.P99
	}
	rows := medians(traced, proxyP99)
	rr := refRow(rows, ref)
	fmt.Fprintf(w, "\nHop by hop (µs, from the kernel's arrival times; `bench latency -hops`):\n\n")
	fmt.Fprintf(w, "| target | runs | round trips traced | proxy p50 | proxy p90 | proxy p99 | proxy p99 spread (min–max) | proxy p99.9 | backend p99 | wire p99 | %s ÷ target, proxy p99 | rounds with %s's proxy p99 ≤ target's |\n", ref, ref)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
	for _, m := range rows {
		h := m.r.Hops
		fmt.Fprintf(w, "| %s | %d | %d | %.0f | %.0f | %.0f | %s | %.0f | %.0f | %.0f | %s | %s |\n",
			m.r.Target, m.n, h.Msgs, h.Proxy.P50, h.Proxy.P90, h.Proxy.P99, m.spread(0), h.Proxy.P999,
			h.Backend.P99, h.Wire.P99, ratio(rr, m, proxyP99), rounds(rr, m, proxyP99))
	}
}

// rounds is in how many rounds (the i-th runs of ref and m, in the order
// run) f(ref) was at most f(m), as "k of n"; a dash for ref itself.
func rounds(ref, m *row, f func(*Result) float64) string {
	if ref == nil || ref == m {
		return "–"
	}
	n := min(len(ref.runs), len(m.runs))
	k := 0
	for i := range n {
		if f(ref.runs[i]) <= f(m.runs[i]) {
			k++
		}
	}
	return fmt.Sprintf("%d of %d", k, n)
}

// ratio is f(ref) / f(r), or a dash where either is missing or r is ref.
func ratio(ref, m *row, f func(*Result) float64) string {
	if ref == nil || ref == m {
		return "–"
	}
	a, b := f(ref.r), f(m.r)
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}
