package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds returns utime+stime of pid (0 means this process) in seconds,
// from /proc/<pid>/stat; threads are included.
func cpuSeconds(pid int) (float64, error) {
	path := "/proc/self/stat"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces: fields count from
	// after its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse %s: no ')'", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse %s: %d fields", path, len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse %s: utime %q stime %q", path, f[11], f[12])
	}
	return float64(u+s) / clockTicks, nil
}

// rssBytes returns VmRSS of pid (0 means this process) from
// /proc/<pid>/status.
func rssBytes(pid int) (int64, error) {
	path := "/proc/self/status"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("parse %s: VmRSS %q", path, v)
				}
				return n << 10, nil
			}
		}
	}
	return 0, fmt.Errorf("parse %s: no VmRSS", path)
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
