package tetherproc

import (
	"strings"
	"testing"
	"time"
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
