package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
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

// writeTable prints one markdown table per workload label, in the order
// the labels first appear, with ratios of ref against every other target.
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
		var rr *Result
		for _, r := range g {
			if r.Error != "" {
				r.Target += " (failed: " + r.Error + ")"
			}
			if r.Target == ref {
				rr = r
			}
		}
		first := g[0]
		switch first.Mode {
		case "throughput":
			fmt.Fprintf(w, "### %s: throughput, %d conns × %d B, %d in flight, %.0f s\n\n", l, first.Conns, first.Size, first.InFlight, first.Seconds)
			unit, key := "msgs", func(r *Result) float64 { return r.MsgsPerSec }
			if first.Size >= 16<<10 {
				unit, key = "MB", func(r *Result) float64 { return r.MBPerSec }
			}
			perCPU := func(r *Result) float64 { return r.perProxyCPU(key(r) * r.Seconds) }
			fmt.Fprintf(w, "| target | saturated | msg/s | MB/s | rtt p50 ms | p99 ms | max ms | proxy CPU s | backend CPU s | load CPU s | %s per proxy CPU s | wire B per round trip | %s ÷ target, per CPU s | %s ÷ target, per s |\n", unit, ref, ref)
			fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
			for _, r := range g {
				name := r.Target
				if r.Deflate {
					name += " (deflate)"
				}
				sat := r.Saturated
				if sat == "" {
					sat = "–"
				}
				fmt.Fprintf(w, "| %s | %s | %.0f | %.1f | %.2f | %.2f | %.1f | %s | %s | %s | %s | %s | %s | %s |\n",
					name, sat, r.MsgsPerSec, r.MBPerSec, r.P50ms, r.P99ms, r.MaxMs,
					cpu(r, "proxy"), cpu(r, "backend"), cpu(r, "load"), num(perCPU(r), 1),
					wire(r), ratio(rr, r, perCPU), ratio(rr, r, key))
			}
		case "latency":
			fmt.Fprintf(w, "### %s: latency, %d msg/s over %d conns × %d B, %.0f s\n\n", l, first.Rate, first.Conns, first.Size, first.Seconds)
			fmt.Fprintf(w, "| target | achieved msg/s | rtt p50 ms | p99 ms | max ms | proxy CPU s | load CPU s | %s ÷ target, p50 | %s ÷ target, p99 |\n", ref, ref)
			fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
			for _, r := range g {
				fmt.Fprintf(w, "| %s | %.0f | %.3f | %.3f | %.1f | %s | %s | %s | %s |\n",
					r.Target, r.MsgsPerSec, r.P50ms, r.P99ms, r.MaxMs, cpu(r, "proxy"), cpu(r, "load"),
					ratio(rr, r, func(r *Result) float64 { return r.P50ms }),
					ratio(rr, r, func(r *Result) float64 { return r.P99ms }))
			}
		case "idle":
			fmt.Fprintf(w, "### %s: idle, %d sessions held %.0f s\n\n", l, first.Conns, first.Seconds)
			fmt.Fprintf(w, "| target | proxy RSS before MiB | after MiB | RSS per session KiB | proxy CPU %% idle | pings answered by the tool | %s ÷ target, RSS per session | %s ÷ target, CPU %% |\n", ref, ref)
			fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
			for _, r := range g {
				fmt.Fprintf(w, "| %s | %.1f | %.1f | %.2f | %.2f | %d | %s | %s |\n",
					r.Target, float64(r.RSSBase)/(1<<20), float64(r.RSSAfter)/(1<<20), r.RSSPerSession/1024,
					r.ProxyCPUPercent, r.PingsAnswered,
					ratio(rr, r, func(r *Result) float64 { return r.RSSPerSession }),
					ratio(rr, r, func(r *Result) float64 { return r.ProxyCPUPercent }))
			}
		}
		fmt.Fprintln(w)
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

// ratio is f(ref) / f(r), or a dash where either is missing or r is ref.
func ratio(ref, r *Result, f func(*Result) float64) string {
	if ref == nil || ref == r {
		return "–"
	}
	a, b := f(ref), f(r)
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}
