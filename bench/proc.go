package main

import "github.com/tether-proxy/tether/internal/tetherproc"

// cpuSeconds returns utime+stime of pid (0 means this process) in seconds.
func cpuSeconds(pid int) (float64, error) { return tetherproc.CPUSeconds(pid) }

// rssBytes returns VmRSS of pid (0 means this process).
func rssBytes(pid int) (int64, error) { return tetherproc.VmRSS(pid) }

// realTime reports whether this process and the proxy and backend (those
// whose pids are given) all run at a real-time priority (chrt -f), as
// bench/compare.sh and bench/ab.sh run the latency workload.
func (p procs) realTime() bool {
	self, err := tetherproc.RealTime(0)
	return err == nil && self && allRealTime(p.proxy, p.backend)
}

// allRealTime reports whether every pid above 0 runs at a real-time
// priority.
func allRealTime(pids ...int) bool {
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		if rt, err := tetherproc.RealTime(pid); err != nil || !rt {
			return false
		}
	}
	return true
}

// cpuSample holds CPU seconds of the named processes at one instant.
type cpuSample map[string]float64

// procs names the processes whose CPU a run records: "proxy" and
// "backend" when their pids are given, and "load" (this process).
type procs struct {
	proxy, backend int
}

func (p procs) sample() cpuSample {
	s := cpuSample{}
	if v, err := cpuSeconds(0); err == nil {
		s["load"] = v
	}
	if p.proxy > 0 {
		if v, err := cpuSeconds(p.proxy); err == nil {
			s["proxy"] = v
		}
	}
	if p.backend > 0 {
		if v, err := cpuSeconds(p.backend); err == nil {
			s["backend"] = v
		}
	}
	return s
}

// since returns the CPU seconds each process used between before and s.
func (s cpuSample) since(before cpuSample) map[string]float64 {
	d := map[string]float64{}
	for k, v := range s {
		if b, ok := before[k]; ok {
			d[k] = v - b
		}
	}
	return d
}
