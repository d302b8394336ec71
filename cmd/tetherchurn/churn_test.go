package main

import (
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-proxy/tether/internal/tetherproc"
)

// The backends are this test binary re-executed with backendEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(backendEnv) != "" {
		os.Exit(backendMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// logWriter sends progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// tetherBin builds tether once for the tests of this package.
func tetherBin(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tetherchurn-test-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin, buildErr = tetherproc.Build(t.Context(), dir, false)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

func runChurn(t *testing.T, cfg Config) *Result {
	t.Helper()
	res := runChurnResult(t, cfg)
	if !res.OK {
		t.Fatal("churn run failed (report above)")
	}
	return res
}

func runChurnResult(t *testing.T, cfg Config) *Result {
	t.Helper()
	cfg.Tether = tetherBin(t)
	res, err := Run(t.Context(), cfg, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + res.Failed())
	return res
}

// TestChurn is the workload at a small scale: 200 sessions with traffic
// both ways, the three backends SIGKILLed at once, then one after
// another; no client message may be lost and every session must survive
// and relay again after every kill.
func TestChurn(t *testing.T) {
	t.Parallel()
	res := runChurn(t, Config{
		Sessions: 200,
		Interval: 300 * time.Millisecond,
		Push:     300 * time.Millisecond,
		Downtime: time.Second,
		Warmup:   time.Second,
		Settle:   20 * time.Second,
	})
	if len(res.Scenarios) != 2 || len(res.Scenarios[1].Steps) != 3 {
		t.Fatalf("scenarios %+v, want all (1 step) and rolling (3 steps)", res.Scenarios)
	}
	all := res.Scenarios[0]
	if st := all.Steps[0]; st.Affected != 200 || st.Recovered != 200 {
		t.Errorf("all at once: %d sessions cut off, %d relayed again; want 200 and 200", st.Affected, st.Recovered)
	}
	// Every session reconnected through the backends, and tether's own
	// counters saw the dials (the failed ones while all three were down).
	if all.ReconnectedSessions != 200 || all.ReconnectsOK < 200 || all.ReconnectsFailed == 0 || all.PeakDials1s == 0 {
		t.Errorf("all at once: %d sessions reconnected, tether counted %d successful and %d failed dials, peak %.0f/s",
			all.ReconnectedSessions, all.ReconnectsOK, all.ReconnectsFailed, all.PeakDials1s)
	}
	// tether logged every dial it started.
	if n := all.ReconnectsOK + all.ReconnectsFailed; int64(all.DialStarts) != n || all.PeakDialStarts1s == 0 {
		t.Errorf("all at once: %d dial starts in tether's log (peak %d in 1 s), %d dials counted", all.DialStarts, all.PeakDialStarts1s, n)
	}
	if res.Receipts == 0 || res.Pushes == 0 || all.TetherCPUSeconds <= 0 || all.TetherPeakRSSMiB <= 0 {
		t.Errorf("receipts %d, pushes %d, CPU %.2f s, peak RSS %.1f MiB: something was not measured",
			res.Receipts, res.Pushes, all.TetherCPUSeconds, all.TetherPeakRSSMiB)
	}
}

// TestChurnGraceful restarts the backends one after another with SIGTERM:
// each sends every connection Close 1001, which tether reconnects on.
func TestChurnGraceful(t *testing.T) {
	t.Parallel()
	res := runChurn(t, Config{
		Sessions:  100,
		Interval:  300 * time.Millisecond,
		Push:      300 * time.Millisecond,
		Downtime:  500 * time.Millisecond,
		Warmup:    time.Second,
		Settle:    20 * time.Second,
		Scenarios: []string{"rolling"},
		Graceful:  true,
	})
	if st := res.Scenarios[0].Steps[0]; st.Affected == 0 || st.Recovered != st.Affected {
		t.Errorf("first step: %d sessions cut off, %d relayed again", st.Affected, st.Recovered)
	}
}

// A tether that gives up on its sessions fails the run: with one reconnect
// attempt allowed, every session gets Close 1014 while all three backends
// are down.
func TestChurnCatchesClosedSessions(t *testing.T) {
	t.Parallel()
	res := runChurnResult(t, Config{
		Sessions:       50,
		Interval:       300 * time.Millisecond,
		Downtime:       3 * time.Second, // the one attempt (within 250 ms + a token) is refused
		Warmup:         500 * time.Millisecond,
		Settle:         5 * time.Second,
		RecoverTimeout: 5 * time.Second,
		Scenarios:      []string{"all"},
		Env:            []string{"TETHER_RECONNECT_MAX_ATTEMPTS=1"},
	})
	if res.OK || res.ClosedByTether != 50 || res.Survived != 0 || res.Scenarios[0].Steps[0].ClosedByTether != 50 {
		t.Fatalf("ok %v, %d sessions closed by tether, %d survived; want a failed run with all 50 closed", res.OK, res.ClosedByTether, res.Survived)
	}
	if !slices.ContainsFunc(res.Violations, func(v string) bool { return strings.Contains(v, "(1014;") }) {
		t.Errorf("violations %q do not name the close code 1014", res.Violations)
	}
}

// The ledger counts a message no backend reported as lost and a repeated
// receipt as a duplicate, across backend incarnations.
func TestLedger(t *testing.T) {
	t.Parallel()
	l := newLedger(3)
	for _, line := range []string{"a 1 100", "r 1 0", "r 1 1", "r 1 3", "a 1 200", "r 1 3", "r 1 130", "r 2 0"} {
		gen := 0
		if line == "a 1 200" || line == "r 1 3" {
			gen = 1
		}
		l.line(gen, []byte(line))
	}
	if m := l.missing(1, 0, 4); m != 1 {
		t.Errorf("session 1 missing %d of 0..3, want 1 (message 2)", m)
	}
	if m := l.missing(1, 0, 131); m != 127 {
		t.Errorf("session 1 missing %d of 0..130, want 127", m)
	}
	if m := l.missing(0, 0, 2); m != 2 {
		t.Errorf("session 0 missing %d, want 2", m)
	}
	if r, d := l.counts(); r != 6 || d != 1 {
		t.Errorf("receipts %d, duplicates %d; want 6 and 1", r, d)
	}
	if d := l.sessionDups(); d[0] != 0 || d[1] != 1 || d[2] != 0 {
		t.Errorf("duplicates per session %v, want [0 1 0]", d)
	}
	if g, n := l.upstreamGen(1); g != 1 || n != 2 {
		t.Errorf("session 1 upstream incarnation %d after %d accepts; want 1 after 2", g, n)
	}
	if times, sess := l.acceptsIn(150, 300); len(times) != 1 || sess != 1 {
		t.Errorf("accepts in [150, 300): %v for %d sessions", times, sess)
	}
	for _, bad := range []string{"r 9 1", "r 1 -1", "x 1 1", "r 1", "v malformed"} {
		l.line(0, []byte(bad))
	}
	if l.nviol != 5 {
		t.Errorf("%d bad reports counted, want 5", l.nviol)
	}
}

func TestParseMessages(t *testing.T) {
	t.Parallel()
	if s, q, ok := parseClientMsg([]byte("m 12 345 |xxxx")); !ok || s != "12" || q != "345" {
		t.Errorf("parseClientMsg = %q %q %v", s, q, ok)
	}
	for _, p := range []string{"m 12 |x", "m  3 |", "e 1 2", "m 1 -2 |", "m 1 2"} {
		if _, _, ok := parseClientMsg([]byte(p)); ok {
			t.Errorf("parseClientMsg(%q) accepted", p)
		}
	}
	if k, g, n, ok := parseBackendMsg([]byte("e 3 77")); !ok || k != 'e' || g != 3 || n != 77 {
		t.Errorf("parseBackendMsg = %c %d %d %v", k, g, n, ok)
	}
	for _, p := range []string{`{"type":"ping"}`, "e 3", "q 1 2", "p -1 2"} {
		if _, _, _, ok := parseBackendMsg([]byte(p)); ok {
			t.Errorf("parseBackendMsg(%q) accepted", p)
		}
	}
}

func TestPeaks(t *testing.T) {
	t.Parallel()
	ms := int64(time.Millisecond)
	if p := peakBin([]int64{0, 10 * ms, 99 * ms, 100 * ms, 250 * ms}, 0, 100*ms); p != 3 {
		t.Errorf("peakBin = %d, want 3", p)
	}
	t0 := time.Unix(0, 0)
	ss := []sample{{at: t0, attempts: 0}, {at: t0.Add(5 * time.Millisecond), attempts: 50}, {at: t0.Add(100 * time.Millisecond), attempts: 60},
		{at: t0.Add(200 * time.Millisecond), attempts: 100}, {at: t0.Add(1100 * time.Millisecond), attempts: 300}}
	p100, p1s := peakRates(ss)
	// 100 ms windows: 0→60 over 100 ms (600/s), 50→100 over 195 ms, 60→100
	// over 100 ms (400/s); never 50 over 5 ms.
	if math.Abs(p100-600) > 1e-6 || math.Abs(p1s-300/1.1) > 1e-6 {
		t.Errorf("peakRates = %v, %v; want 600, %v", p100, p1s, 300/1.1)
	}
}
