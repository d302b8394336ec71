// Package leakcheck fails a test binary whose goroutines outlive its
// tests, in the manner of coder/websocket's TestMain.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests, then waits up to 5 s for every goroutine started
// by them to exit; it reports the leftovers and exits 1 if any remain.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := wait(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines outlived the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// Check fails t if goroutines other than the baseline ones remain after t
// and its cleanups finish.
func Check(t testing.TB) {
	t.Cleanup(func() {
		if leaked := wait(5 * time.Second); leaked != "" {
			t.Errorf("goroutines outlived the test:\n%s", leaked)
		}
	})
}

func wait(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		leaked := interesting()
		if leaked == "" || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func interesting() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if g == "" || strings.Contains(g, "leakcheck.interesting") || ignored(g) {
			continue
		}
		out = append(out, g)
	}
	return strings.Join(out, "\n\n")
}

func ignored(g string) bool {
	for _, s := range []string{
		"testing.(*M).",
		"testing.tRunner",
		"testing.runTests",
		"testing.(*T).Run",
		"runtime.goexit\n",
		"signal.signal_recv",
		"os/signal.loop",
		"created by runtime.gc",
		"runtime.ReadTrace",
		"net/http.(*persistConn)",           // idle keep-alive conns of http.DefaultClient
		"internal/poll.runtime_pollWait(0x", // checked below
	} {
		if strings.Contains(g, s) && !strings.Contains(g, "tether") {
			if s == "internal/poll.runtime_pollWait(0x" {
				continue
			}
			return true
		}
	}
	first := strings.SplitN(g, "\n", 3)
	return len(first) > 1 && strings.HasPrefix(first[1], "testing.")
}
