package tetherproc

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-proxy/tether/internal/testkit"
)

func TestParseMetrics(t *testing.T) {
	t.Parallel()
	m, err := ParseMetrics(strings.NewReader("# HELP x\ngo_goroutines 12\ntether_messages_total{direction=\"client_to_upstream\"} 3.5e+06\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m["go_goroutines"] != 12 || m[`tether_messages_total{direction="client_to_upstream"}`] != 3.5e6 {
		t.Fatalf("ParseMetrics = %v", m)
	}
}

// This process's own /proc entries parse: some RSS, and CPU time that grows
// with work.
func TestProcSelf(t *testing.T) {
	if rt, err := RealTime(0); err != nil || rt != selfRealTime(t) {
		t.Fatalf("RealTime(self) = %v, %v; sched_getscheduler says %v", rt, err, selfRealTime(t))
	}
	rss, err := VmRSS(0)
	if err != nil || rss < 1<<20 {
		t.Fatalf("VmRSS(self) = %d, %v", rss, err)
	}
	before, err := CPUSeconds(0)
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	deadline := time.Now().Add(10 * time.Second)
	for after := before; after < before+0.05; {
		if time.Now().After(deadline) {
			t.Fatalf("CPUSeconds(self) stayed at %v through 10 s of spinning", after)
		}
		for i := range 10_000_000 {
			x += i
		}
		if after, err = CPUSeconds(0); err != nil {
			t.Fatal(err)
		}
	}
	_ = x
}

// selfRealTime asks the kernel directly (sched_getscheduler), to check
// RealTime's reading of /proc against.
func selfRealTime(t *testing.T) bool {
	policy, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, 0, 0, 0)
	if errno != 0 {
		t.Fatalf("sched_getscheduler: %v", errno)
	}
	return policy == 1 || policy == 2
}

// TestRealTimeOfOthers: RealTime tells a process started with chrt -f from
// one started normally.
func TestRealTimeOfOthers(t *testing.T) {
	for _, want := range []bool{true, false} {
		pid := testkit.Sleeper(t, want)
		if got, err := RealTime(pid); err != nil || got != want {
			t.Errorf("RealTime of a sleep started real-time=%v: %v, %v", want, got, err)
		}
	}
}
