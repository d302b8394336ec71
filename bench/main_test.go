package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/leakcheck"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/internal/tetherproc"
	"github.com/tether-proxy/tether/proxy"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// startBackend runs the benchmark backend on 127.0.0.1 for the test.
func startBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveBackend(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("backend: %v", err)
		}
	})
	return ln.Addr().String()
}

// startTether runs tether in this process in front of backend, with JSON
// heartbeats every 100 ms on both legs (dead after 1 s of silence), so a
// load tool that did not answer pings would lose its sessions.
func startTether(t *testing.T, backend string, compression bool) string {
	t.Helper()
	return startTetherWith(t, backend, func(cfg *proxy.Config) { cfg.ClientCompression = compression })
}

// startTetherWith is startTether with configure applied to its
// configuration last.
func startTetherWith(t *testing.T, backend string, configure func(*proxy.Config)) string {
	t.Helper()
	cfg, err := proxy.DefaultConfig("ws://" + backend)
	if err != nil {
		t.Fatal(err)
	}
	for _, hb := range []*heartbeat.Config{&cfg.Session.ClientHeartbeat, &cfg.Session.UpstreamHeartbeat} {
		hb.Mode, hb.Interval, hb.Timeout = heartbeat.ModeJSON, 100*time.Millisecond, time.Second
	}
	configure(&cfg)
	srv, err := proxy.New(cfg, proxy.Options{CloseWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

func startRelay(t *testing.T, to string, noSplice bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveRelay(ctx, ln, to, noSplice) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	return ln.Addr().String()
}

// runJSON runs the tool's command line and decodes its -json result.
func runJSON(t *testing.T, args ...string) *Result {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(t.Context(), append(args, "-json"), &out, &errb); err != nil {
		t.Fatalf("bench %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench %s printed %q: %v", strings.Join(args, " "), out.String(), err)
	}
	return &r
}

// checkRTTs checks a latency run's -rtts file: a line per echo (at least
// those of the window), in send order, sent in the last minute of wall
// clock time (Unix nanoseconds), whose largest round trip is the run's
// max.
func checkRTTs(t *testing.T, path string, r *Result) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var prev, maxRTT int64
	for i, l := range lines {
		var sent, rtt int64
		if _, err := fmt.Sscanf(l, "%d %d", &sent, &rtt); err != nil || rtt <= 0 || sent < prev {
			t.Fatalf("%s line %d %q: %v (previous send %d)", path, i+1, l, err, prev)
		}
		if i == 0 {
			if age := time.Since(time.Unix(0, sent)); age < 0 || age > time.Minute {
				t.Fatalf("%s: first message sent %v ago, want a Unix time in the last minute", path, age)
			}
		}
		prev, maxRTT = sent, max(maxRTT, rtt)
	}
	if int64(len(lines)) < r.Msgs {
		t.Errorf("%s: %d lines for %d echoes in the window", path, len(lines), r.Msgs)
	}
	if got := float64(maxRTT) / 1e6; math.Abs(got-r.MaxMs) > 0.001 {
		t.Errorf("%s: largest round trip %.4f ms, the run's max %.4f ms", path, got, r.MaxMs)
	}
}

// TestQuickAgainstTether runs every mode of the tool in quick form against
// an in-process tether (its own pid is the proxy's), the TCP relay and
// the backend directly, then builds the table.
func TestQuickAgainstTether(t *testing.T) {
	backend := startBackend(t)
	tether := startTether(t, backend, false)
	relay := startRelay(t, backend, false)
	relayBuf := startRelay(t, backend, true)
	pid := os.Getpid()
	common := []string{"-duration", "300ms", "-sources", "4", "-proxy-pid", "0"}
	var results []*Result
	for _, tg := range []struct{ name, addr string }{{"direct", backend}, {"relay", relay}, {"relay-nosplice", relayBuf}, {"tether", tether}} {
		url := "ws://" + tg.addr + "/"
		small := runJSON(t, append([]string{"throughput", "-url", url, "-target", tg.name, "-label", "tput-1k",
			"-conns", "4", "-size", "1024", "-inflight", "4", "-backend-pid", itoa(os.Getpid())}, common...)...)
		if small.Msgs == 0 || small.P50ms <= 0 || small.MaxMs < small.P99ms || small.WirePerMsg < 2*1024 {
			t.Errorf("%s throughput: %+v", tg.name, small)
		}
		big := runJSON(t, append([]string{"throughput", "-url", url, "-target", tg.name, "-label", "tput-64k",
			"-conns", "2", "-size", "65536", "-inflight", "2", "-text"}, common...)...)
		if big.Msgs == 0 || big.MBPerSec <= 0 {
			t.Errorf("%s 64 KiB throughput: %+v", tg.name, big)
		}
		rttsFile := filepath.Join(t.TempDir(), "rtts")
		lat := runJSON(t, append([]string{"latency", "-url", url, "-target", tg.name,
			"-conns", "20", "-rate", "200", "-size", "128", "-rtts", rttsFile}, common...)...)
		if lat.Msgs < 20 || lat.P99ms <= 0 {
			t.Errorf("%s latency: %+v", tg.name, lat)
		}
		checkRTTs(t, rttsFile, lat)
		results = append(results, small, big, lat)
	}

	// idle: the proxy is this process; its heartbeats come every 100 ms
	// and a session that does not answer them dies after 1 s, so a 1.5 s
	// hold with no closed session means the tool answered.
	idle := runJSON(t, "idle", "-url", "ws://"+tether+"/", "-target", "tether", "-sessions", "50",
		"-duration", "1500ms", "-settle", "100ms", "-proxy-pid", itoa(pid))
	if idle.ClosedDuringHold != 0 || idle.PingsAnswered < 50*5 || idle.RSSBase == 0 || idle.RSSAfter == 0 {
		t.Errorf("idle: %+v", idle)
	}
	if _, ok := idle.CPU["proxy"]; !ok {
		t.Errorf("idle recorded no proxy CPU: %+v", idle.CPU)
	}
	results = append(results, idle)

	results = append(results, &Result{Label: "idle", Target: "broken", Mode: "idle", Error: "3 of 50 sessions closed during the hold"})
	var b strings.Builder
	if err := writeTable(&b, results, "tether"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### tput-1k", "### tput-64k", "### latency", "### idle", "| relay |", "tether ÷ target", "| broken (failed: 3 of 50"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestLatencyPacing: the latency workload sends each connection's
// messages on its own schedule, not the sends of each millisecond in one
// burst. With random phases the gaps between consecutive sends are spread
// (their median about 0.7 of their mean); Go's timers, woken from an idle
// epoll_wait at millisecond resolution, sent most messages within
// microseconds of the previous one (median gap 38 µs of a 500 µs mean).
// A machine busy with other tests can hold the tool back long enough
// that it catches up in a burst: up to three runs, one with spread gaps
// passes (the burst sender failed every run).
func TestLatencyPacing(t *testing.T) {
	backend := startBackend(t)
	var median, mean time.Duration
	for range 3 {
		if median, mean = latencyGaps(t, backend); median >= mean/4 {
			return
		}
	}
	t.Errorf("median gap between sends %v, mean %v: sent in bursts", median, mean)
}

// The load tool dials wss:// URLs, accepting the test certificate of a
// proxy on loopback: tether with TLS on its listener.
func TestLatencyOverTLS(t *testing.T) {
	backend := startBackend(t)
	certFile, keyFile, _ := testkit.SelfSigned(t)
	addr := startTetherWith(t, backend, func(cfg *proxy.Config) { cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile })
	lat := runJSON(t, "latency", "-url", "wss://"+addr+"/", "-conns", "20", "-rate", "400",
		"-size", "128", "-duration", "500ms", "-proxy-pid", "0")
	if lat.Msgs < 100 || lat.Error != "" {
		t.Fatalf("%d round trips over wss in 0.5 s at 400 msg/s (error %q)", lat.Msgs, lat.Error)
	}
}

// The backend serves wss:// with -cert and -key (a TLS upstream for a
// proxy under test).
func TestBackendOverTLS(t *testing.T) {
	certFile, keyFile, _ := testkit.SelfSigned(t)
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"backend", "-addr", "127.0.0.1:0", "-cert", certFile, "-key", keyFile}, io.Discard, pw)
		_ = pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("backend: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	addr := strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:])
	lat := runJSON(t, "latency", "-url", "wss://"+addr+"/", "-conns", "10", "-rate", "200",
		"-size", "128", "-duration", "300ms", "-proxy-pid", "0")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("backend: %v", err)
	}
	if lat.Msgs < 30 || lat.Error != "" {
		t.Fatalf("%d round trips over wss in 0.3 s at 200 msg/s (error %q)", lat.Msgs, lat.Error)
	}
}

// latencyGaps runs the latency workload for a second at 2,000 msg/s and
// returns the median and mean gaps between consecutive sends.
func latencyGaps(t *testing.T, backend string) (median, mean time.Duration) {
	t.Helper()
	rttsFile := filepath.Join(t.TempDir(), "rtts")
	lat := runJSON(t, "latency", "-url", "ws://"+backend+"/", "-conns", "50", "-rate", "2000",
		"-size", "128", "-duration", "1s", "-rtts", rttsFile, "-proxy-pid", "0")
	checkRTTs(t, rttsFile, lat)
	sent := sendTimes(t, rttsFile)
	gaps := make([]int64, 0, len(sent))
	for i := 1; i < len(sent); i++ {
		gaps = append(gaps, sent[i]-sent[i-1])
	}
	if len(gaps) < 1000 {
		t.Fatalf("%d sends in 1 s at 2,000 msg/s", len(sent))
	}
	slices.Sort(gaps)
	return time.Duration(gaps[len(gaps)/2]), time.Duration((sent[len(sent)-1] - sent[0]) / int64(len(gaps)))
}

// TestDeflate checks that -deflate negotiates permessage-deflate with a
// tether that allows it, that echoes decompress to what was sent (the
// tool checks size and stamp), and that fewer bytes cross the wire.
func TestDeflate(t *testing.T) {
	backend := startBackend(t)
	args := func(addr string) []string {
		return []string{"throughput", "-url", "ws://" + addr + "/", "-conns", "2", "-size", "2048", "-inflight", "2",
			"-duration", "300ms", "-text", "-deflate"}
	}
	plain := runJSON(t, args(startTether(t, backend, false))...)
	z := runJSON(t, args(startTether(t, backend, true))...)
	if plain.Deflate || !z.Deflate {
		t.Fatalf("deflate negotiated: without compression %v, with %v", plain.Deflate, z.Deflate)
	}
	// The filler is JSON-like text that deflate shrinks about threefold;
	// a round trip is 2 × 2048 B plus headers uncompressed.
	if z.Msgs == 0 || plain.WirePerMsg < 2*2048 || z.WirePerMsg > plain.WirePerMsg/2 {
		t.Fatalf("wire bytes per round trip: %.0f compressed, %.0f plain", z.WirePerMsg, plain.WirePerMsg)
	}
}

// TestAdminSampling covers -admin: unlabelled series are read, labelled
// ones skipped.
func TestAdminSampling(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("# HELP go_goroutines x\ngo_goroutines 10\nprocess_resident_memory_bytes 1e6\ntether_sessions_active{x=\"y\"} 3\n"))
	}))
	defer srv.Close()
	m := sampleMetrics(srv.URL)
	if m["go_goroutines"] != 10 || m["process_resident_memory_bytes"] != 1e6 {
		t.Fatalf("sample = %v", m)
	}
	if _, ok := m["tether_sessions_active"]; ok {
		t.Fatal("labelled series must be skipped")
	}
}

func TestProcReaders(t *testing.T) {
	if c, err := cpuSeconds(0); err != nil || c < 0 {
		t.Fatalf("cpuSeconds(self) = %v, %v", c, err)
	}
	if r, err := rssBytes(os.Getpid()); err != nil || r < 1<<20 {
		t.Fatalf("rssBytes(self) = %v, %v", r, err)
	}
	if _, err := cpuSeconds(1 << 30); err == nil {
		t.Fatal("cpuSeconds of a missing pid succeeded")
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"throughput", "-size", "8"}} {
		if err := run(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("bench %v: no error", args)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestBackendAnswersJSONPing: the backend answers {"type":"ping"} with
// {"type":"pong"} (tether's JSON heartbeat) and echoes everything else.
func TestBackendAnswersJSONPing(t *testing.T) {
	backend := startBackend(t)
	var cnt counters
	c, err := dial(t.Context(), dialOpts{url: "ws://" + backend + "/", sources: 1}, 0, &cnt)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for _, tc := range []struct{ send, want string }{
		{`{"type":"ping"}`, `{"type":"pong"}`},
		{`{"type":"other"}`, `{"type":"other"}`},
	} {
		if err := c.writeFrame(ws.OpText, []byte(tc.send), true); err != nil {
			t.Fatal(err)
		}
		// Raw frames: c.read would answer an echoed ping itself.
		f, err := ws.ReadFrame(c.br)
		if err != nil {
			t.Fatal(err)
		}
		if p := f.Payload; f.Header.OpCode != ws.OpText || string(p) != tc.want {
			t.Errorf("sent %s, got %s, want %s", tc.send, p, tc.want)
		}
	}
}

// TestJudgeSaturation: a row says which side limited it, from the CPU
// seconds of its window (proxy alone on one core; load tool and backend
// sharing the other).
func TestJudgeSaturation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cpu  map[string]float64
		want string
	}{
		{"proxy busy", map[string]float64{"proxy": 9.6, "load": 5, "backend": 4}, "proxy"},
		{"harness busy", map[string]float64{"proxy": 7, "load": 5.5, "backend": 4.1}, "harness"},
		{"direct, harness busy", map[string]float64{"load": 6, "backend": 3.6}, "harness"},
		{"neither", map[string]float64{"proxy": 9.4, "load": 4, "backend": 4}, "neither"},
		{"proxy wins a tie", map[string]float64{"proxy": 9.5, "load": 6, "backend": 4}, "proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Result{Seconds: 10, CPU: tc.cpu}
			r.judge()
			if r.Saturated != tc.want {
				t.Errorf("saturated = %q, want %q", r.Saturated, tc.want)
			}
		})
	}
}

// TestTableMedianOfRuns: repeated runs of a target make one row, its
// median run, with the spread and the saturation count; ratios use the
// medians.
func TestTableMedianOfRuns(t *testing.T) {
	run := func(target string, msgs, proxyCPU float64, sat string) *Result {
		return &Result{Label: "tput-1k", Target: target, Mode: "throughput", Conns: 64, Size: 1024, InFlight: 16,
			Seconds: 10, MsgsPerSec: msgs, CPU: map[string]float64{"proxy": proxyCPU}, Saturated: sat}
	}
	results := []*Result{
		run("haproxy", 300e3, 10, "proxy"), run("tether", 200e3, 10, "proxy"),
		run("haproxy", 310e3, 10, "proxy"), run("tether", 260e3, 10, "harness"),
		run("haproxy", 290e3, 10, "proxy"), run("tether", 230e3, 10, "proxy"),
		{Label: "tput-1k", Target: "tether", Mode: "throughput", Error: "boom"},
	}
	var b strings.Builder
	if err := writeTable(&b, results, "tether"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| tether | 3 | harness 1/3, proxy 2/3, 1 failed | 230000 |", // median of 200k, 230k, 260k
		"| 230000.0 | 200000.0–260000.0 |",
		"| haproxy | 3 | proxy 3/3 | 300000 |",
		"| 0.77 | 0.77 |", // 230k / 300k
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// The latency table shows the median CPU of the runs (not the CPU of the
// median-p99 run) and compares p99 round by round.
func TestTableLatencyRounds(t *testing.T) {
	run := func(target string, p99, proxyCPU float64) *Result {
		return &Result{Label: "latency", Target: target, Mode: "latency", Conns: 1000, Size: 128, Rate: 5000,
			Seconds: 7, MsgsPerSec: 5000, P50ms: 0.1, P99ms: p99, CPU: map[string]float64{"proxy": proxyCPU}}
	}
	results := []*Result{
		run("caddy", 0.50, 1.0), run("tether", 0.40, 3.0),
		run("caddy", 0.50, 1.2), run("tether", 0.60, 0.9),
		run("caddy", 0.50, 1.1), run("tether", 0.45, 0.8),
	}
	var b strings.Builder
	if err := writeTable(&b, results, "tether"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		// caddy: median CPU 1.1; tether's median-p99 run (0.45) used
		// 0.8 s, its median CPU is 0.9: 0.9 / 1.1 = 0.82.
		"| caddy | 3 | 5000 | 0.100 | 0.500 | 0.500–0.500 | 0.0 | 1.10 |",
		"| 0.82 | 2 of 3 |",
		"| tether | 3 | 5000 | 0.100 | 0.450 | 0.400–0.600 | 0.0 | 0.90 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestTablePriority: a latency table's heading says whether its runs were
// at real-time priority, and flags a mix (rows that are not comparable).
func TestTablePriority(t *testing.T) {
	run := func(target string, rt bool) *Result {
		return &Result{Label: "latency", Target: target, Mode: "latency", Conns: 1000, Size: 128, Rate: 5000,
			Seconds: 7, MsgsPerSec: 5000, P50ms: 0.1, P99ms: 0.3, RealTime: rt}
	}
	for _, c := range []struct {
		rts  []bool
		want string
	}{
		{[]bool{true, true}, "### latency: latency, 5000 msg/s over 1000 conns × 128 B, 7 s, real-time priority\n"},
		{[]bool{true, false}, "7 s, real-time priority in only 1 of 2 runs\n"},
		{[]bool{false, false}, "7 s\n"},
	} {
		var b strings.Builder
		if err := writeTable(&b, []*Result{run("caddy", c.rts[0]), run("tether", c.rts[1])}, "tether"); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), c.want) {
			t.Errorf("%v: heading lacks %q:\n%s", c.rts, c.want, b.String())
		}
	}
}

// TestRealTimeRecorded: a run is recorded as real-time only when the load
// tool, the proxy and the backend all run at real-time priority.
func TestRealTimeRecorded(t *testing.T) {
	rt1, rt2, normal := testkit.Sleeper(t, true), testkit.Sleeper(t, true), testkit.Sleeper(t, false)
	if !allRealTime(rt1, rt2, 0) {
		t.Error("two real-time processes (and no third) not all real-time")
	}
	if allRealTime(rt1, normal) {
		t.Error("a normal-priority backend counted as real-time")
	}
	self, err := tetherproc.RealTime(0)
	if err != nil {
		t.Fatal(err)
	}
	if got := (procs{proxy: rt1, backend: rt2}).realTime(); got != self {
		t.Errorf("realTime() with a real-time proxy and backend = %v, but this process's own policy is real-time=%v", got, self)
	}
}

// countingListener counts what crosses the connections it accepts.
type countingListener struct {
	net.Listener
	cnt *counters
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.cnt}, nil
}

// TestLargeFramesFewWrites: at 64 KiB the load tool and the backend write
// a burst of messages in about one write per message, not two: their
// buffers hold two messages (BENCHMARKS.md, seventh sitting). With
// 64 KiB buffers four messages took five writes each way.
func TestLargeFramesFewWrites(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var backend counters
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serveBackend(ctx, countingListener{ln, &backend}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("backend: %v", err)
		}
	}()
	const size, burst = 65536, 4
	var cnt counters
	// As throughput sizes the buffers for its messages.
	c, err := dial(t.Context(), dialOpts{url: "ws://" + ln.Addr().String() + "/", readBuf: max(64<<10, 2*size+64)}, 0, &cnt)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	msg := filler(size, 1)
	payload(msg, time.Now())
	before := cnt.writes.Load()
	for range burst {
		if err := c.writeFrame(ws.OpBinary, msg, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	for range burst {
		if p, err := c.read(); err != nil || len(p) != size {
			t.Fatalf("echo: %d bytes, %v", len(p), err)
		}
	}
	// ceil(4 × 65,550 / 131,136) = 2 writes, and one more for the rest.
	if n := cnt.writes.Load() - before; n > burst-1 {
		t.Errorf("the load tool wrote %d messages of 64 KiB in %d writes, want at most %d", burst, n, burst-1)
	}
	// The backend echoes what one read brought in one write, or in one
	// per message; never two per message.
	if n := backend.writes.Load(); n > burst+1 { // the 101 response, then the echoes
		t.Errorf("the backend echoed %d messages of 64 KiB in %d writes (after its 101), want at most %d", burst, n-1, burst)
	}
}

// TestFloor: the syscall floor measures something for both halves.
func TestFloor(t *testing.T) {
	r, err := floor(2000)
	if err != nil {
		t.Fatal(err)
	}
	if r.N != 2000 || r.WriteNs <= 0 || r.ReadNs <= 0 || r.RoundTripNs != r.WriteNs+r.ReadNs {
		t.Fatalf("floor: %+v", r)
	}
}

// TestResumeThroughput: -resume asks tether for resumable sessions, the
// tool consumes tether's own messages and acknowledges what it receives,
// so a run longer than tether's resume window (1,024 messages per
// session) keeps going.
func TestResumeThroughput(t *testing.T) {
	backend := startBackend(t)
	tether := startTether(t, backend, false)
	r := runJSON(t, "throughput", "-url", "ws://"+tether+"/", "-resume", "-conns", "2", "-size", "256", "-inflight", "8",
		"-duration", "500ms", "-sources", "1")
	if r.Resumable != 2 {
		t.Fatalf("%d of 2 connections resumable", r.Resumable)
	}
	if r.Msgs < 2*1024 {
		t.Fatalf("%d messages: a resumable run stalled at tether's window (acknowledgements missing?)", r.Msgs)
	}
}

// sendTimes reads the send times (Unix nanoseconds, in send order) of a
// bench latency -rtts file.
func sendTimes(t *testing.T, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sent []int64
	for l := range strings.Lines(string(b)) {
		var s, rtt int64
		if _, err := fmt.Sscanf(l, "%d %d", &s, &rtt); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, s)
	}
	return sent
}

// bench latency -seed sends each connection's first message at the phase
// schedulePhases draws from that seed: the offsets of the first round's
// sends from the first one match the seed's phases (within the pacer's
// jitter), and not another seed's.
func TestLatencySeedSetsArrivals(t *testing.T) {
	backend := startBackend(t)
	const conns, rate = 20, 200 // a 100 ms period
	rttsFile := filepath.Join(t.TempDir(), "rtts")
	runJSON(t, "latency", "-url", "ws://"+backend+"/", "-conns", strconv.Itoa(conns), "-rate", strconv.Itoa(rate),
		"-size", "64", "-duration", "300ms", "-seed", "5", "-rtts", rttsFile, "-proxy-pid", "0")
	sent := sendTimes(t, rttsFile)
	if len(sent) < conns {
		t.Fatalf("%d sends, want at least a round of %d", len(sent), conns)
	}
	// How far, at the median, the first round's offsets lie from those
	// of seed's phases, up to a constant: the median difference, so that
	// a pacer that fell behind for a moment on a loaded machine (and
	// sent what was due at once) moves only the sends of that moment.
	off := func(seed uint64) time.Duration {
		ph := schedulePhases(conns, time.Second*conns/rate, seed)
		slices.Sort(ph)
		d := make([]time.Duration, conns)
		for i := range conns {
			d[i] = time.Duration(sent[i]-sent[0]) - (ph[i] - ph[0])
		}
		slices.Sort(d)
		anchor := d[conns/2]
		for i := range d {
			d[i] = (d[i] - anchor).Abs()
		}
		slices.Sort(d)
		return d[conns/2]
	}
	if d := off(5); d > 2*time.Millisecond {
		t.Errorf("first round %v (median) from seed 5's phases, want within 2ms", d)
	}
	if d := off(6); d <= 2*time.Millisecond {
		t.Errorf("first round within %v (median) of seed 6's phases too: the seed set nothing", d)
	}
}

// The latency workload's send phases come from -seed: the same seed gives
// every run the same arrivals, another seed others, and seed 0 a new draw
// each time.
func TestSchedulePhasesSeeded(t *testing.T) {
	const n, period = 1000, 200 * time.Millisecond
	a, b := schedulePhases(n, period, 1), schedulePhases(n, period, 1)
	if !slices.Equal(a, b) {
		t.Fatal("seed 1 drew two different phase sets")
	}
	if slices.Equal(a, schedulePhases(n, period, 2)) {
		t.Fatal("seeds 1 and 2 drew the same phases")
	}
	if slices.Equal(schedulePhases(n, period, 0), schedulePhases(n, period, 0)) {
		t.Fatal("seed 0 drew the same phases twice")
	}
	for _, p := range a {
		if p < 0 || p >= period {
			t.Fatalf("phase %v outside [0, %v)", p, period)
		}
	}
}
