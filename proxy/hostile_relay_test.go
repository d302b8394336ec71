package proxy_test

// Hostile peers after the upgrade (issue "Hardening"): a client that goes
// silent, a client that never reads while the backend floods it, and ping
// floods from either peer, against tether on 127.0.0.1 with a real
// backend. Helpers carry the prefix hx.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/proxy"
)

// hxReadFrame reads one unmasked frame from tether (no t: safe on any
// goroutine).
func hxReadFrame(br *bufio.Reader) (op byte, p []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("tether sent a masked frame to the client")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > 16<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	p = make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, p, nil
}

// hxQuiet turns both legs' heartbeats to mode with hour-long intervals:
// tether answers pings as in mode but sends none of its own.
func hxQuiet(client, upstream heartbeat.Mode) func(*proxy.Config) {
	return func(c *proxy.Config) {
		c.Session.ClientHeartbeat = heartbeat.Config{Mode: client, Interval: time.Hour, Timeout: 3 * time.Hour}
		c.Session.UpstreamHeartbeat = heartbeat.Config{Mode: upstream, Interval: time.Hour, Timeout: 3 * time.Hour}
	}
}

// README "Heartbeats" and "Close codes": a client that completes its handshake
// and then neither reads nor writes anything is dead after
// TETHER_CLIENT_HEARTBEAT_TIMEOUT: it gets Close 1001 (its socket buffer still
// has room, so it is writable) and is closed; the upstream gets Close 1001.
func TestHostileSilentAfterUpgrade(t *testing.T) {
	t.Parallel()
	const timeout = 800 * time.Millisecond
	ends := make(chan coreEnd, 1)
	b := newBackend(t, nil, coreEchoRecorder(ends))
	tt := startTether(t, b.URL, hbOnly("client", heartbeat.ModeWS, 200*time.Millisecond, timeout))
	c, err := net.Dial("tcp", tt.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	start := time.Now()
	if _, err := io.WriteString(c, coreUpgradeReq("/")+"\r\n"); err != nil {
		t.Fatal(err)
	}
	// Not a byte read or written from here until the upstream is closed.
	e := coreRecv(t, ends, timeout+5*time.Second, "the upstream's close")
	if took := e.at.Sub(start); took < timeout || took > timeout+3*time.Second {
		t.Errorf("the upstream was closed %v after the upgrade, want about %v", took, timeout)
	}
	if code, _ := closeCode(e.err); code != 1001 {
		t.Errorf("upstream: %v, want Close 1001", e.err)
	}

	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake response: %v %v", resp, err)
	}
	pings := 0
	for {
		op, p, err := hxReadFrame(br)
		if err != nil {
			t.Fatalf("after %d pings, no Close: %v", pings, err)
		}
		if op == 9 {
			pings++
			continue
		}
		if op != 8 || len(p) < 2 || binary.BigEndian.Uint16(p) != 1001 {
			t.Fatalf("frame op %d %q, want Close 1001", op, p)
		}
		break
	}
	if pings == 0 {
		t.Error("tether sent no ping before it gave up")
	}
	if _, err := hxClosed(c, time.Now().Add(3*time.Second)); hxIsTimeout(err) {
		t.Error("tether did not close the connection after its Close")
	}
	coreWaitSessions(t, tt, 0)
}

// README "Configuration" TETHER_WRITE_TIMEOUT and §5: a client that upgrades
// and then never reads while the backend sends as fast as it can. tether holds
// about one message, so what the backend manages to write before it is blocked
// is bounded by the kernel's socket buffers, not by the time it spends
// writing, and tether's heap does not grow with it; when the write timeout
// passes, the client connection is dropped, the upstream gets Close 1001, and
// the backend's blocked write returns. Not parallel: it measures the heap.
func TestHostileNeverReads(t *testing.T) {
	const wt = 2 * time.Second
	const msg = 64 << 10
	var written atomic.Int64
	var gaveUp atomic.Bool // the backend stopped waiting for tether
	writerExited := make(chan struct{})
	ends := make(chan coreEnd, 1)
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		go func() {
			defer close(writerExited)
			p := make([]byte, msg)
			for c.WriteMessage(websocket.BinaryMessage, p) == nil {
				written.Add(msg)
			}
		}()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				ends <- coreEnd{err: err, at: time.Now()}
				break
			}
		}
		// Returning closes the connection, which would unblock the writer
		// by itself: wait, so that only tether can unblock it.
		select {
		case <-writerExited:
		case <-time.After(15 * time.Second):
			gaveUp.Store(true)
		}
	})
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		c.Session.WriteTimeout = wt
		hxQuiet(heartbeat.ModeBoth, heartbeat.ModeWS)(c)
	})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapInuse

	c, _ := coreRawUpgrade(t, tt.Addr) // and never read again
	// A small receive buffer (no autotuning): what the backend can write
	// before it blocks is then about tether's socket buffers, whatever
	// the machine's tcp_rmem.
	if err := c.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	var peak uint64
	var e coreEnd
	deadline := time.After(wt + 10*time.Second)
wait:
	for {
		select {
		case e = <-ends:
			break wait
		case <-deadline:
			t.Fatalf("the session did not end; the backend wrote %d MiB", written.Load()>>20)
		case <-time.After(50 * time.Millisecond):
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	if code, _ := closeCode(e.err); code != 1001 {
		t.Errorf("upstream: %v, want Close 1001", e.err)
	}
	// The backend's blocked write returns once tether gives up: tether
	// closes the upstream at most its close wait (1 s here) after the
	// Close.
	<-writerExited
	if gaveUp.Load() {
		t.Error("the backend's write stayed blocked after the session ended")
	}
	sent := written.Load()
	t.Logf("the backend wrote %d MiB; heap in use %d MiB before, %d MiB at most during the stall",
		sent>>20, heap0>>20, peak>>20)
	// Loopback socket buffers hold some MiB (9 measured); without
	// backpressure the backend writes 100 MiB in 2 s even under -race.
	if sent > 48<<20 {
		t.Errorf("the backend wrote %d MiB into a client that never reads", sent>>20)
	}
	if peak > heap0 && peak-heap0 > 16<<20 {
		t.Errorf("heap in use grew by %d MiB while the client did not read", (peak-heap0)>>20)
	}
	if _, err := hxClosed(c, time.Now().Add(5*time.Second)); hxIsTimeout(err) {
		t.Error("tether did not close the client connection")
	}
	coreWaitSessions(t, tt, 0)
}

// hxPing is the counter payload of flood ping i.
func hxPing(i int) []byte {
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], uint64(i))
	return p[:]
}

// hxJSONPing is flood JSON ping i; the pong echoes the id (README
// "Heartbeats").
func hxJSONPing(i int) []byte { return fmt.Appendf(nil, `{"type":"ping","id":%d}`, i) }

// hxJSONPongID returns the id of a JSON pong, or -1 if p is not one.
func hxJSONPongID(p []byte) int {
	var m struct {
		Type string `json:"type"`
		ID   *int   `json:"id"`
	}
	if json.Unmarshal(p, &m) != nil || m.Type != "pong" || m.ID == nil {
		return -1
	}
	return *m.ID
}

// hxPongs checks the pongs of a flood of n pings: at most one per ping,
// in increasing order (only the latest unanswered ping is answered), and
// the last ping answered.
type hxPongs struct {
	n, count, last int
	err            error
}

func (h *hxPongs) add(id int) {
	if h.err != nil {
		return
	}
	switch {
	case id < 0 || id >= h.n:
		h.err = fmt.Errorf("pong for ping %d, which was not sent", id)
	case h.count > 0 && id <= h.last:
		h.err = fmt.Errorf("pong for ping %d after the pong for ping %d", id, h.last)
	}
	h.count++
	h.last = id
}

func (h *hxPongs) check(t *testing.T, what string) {
	t.Helper()
	if h.err != nil {
		t.Errorf("%s: %v", what, h.err)
	}
	if h.count == 0 || h.last != h.n-1 {
		t.Errorf("%s: the last ping (%d) was not answered; %d pongs, last %d", what, h.n-1, h.count, h.last)
	}
	if h.count > h.n {
		t.Errorf("%s: %d pongs for %d pings", what, h.count, h.n)
	}
	t.Logf("%s: %d pings, %d pongs", what, h.n, h.count)
}

// README "Heartbeats" and RFC 6455 §5.5.3: a flood of pings, RFC and JSON,
// from the client and from the upstream, sent as fast as the socket takes
// them. tether answers without queueing: no more pongs than pings, in order,
// the last ping answered, no goroutine per ping, and the session still relays
// data both ways afterwards. Not parallel: it counts goroutines.
func TestHostilePingFlood(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 2000
	}

	t.Run("client RFC pings", func(t *testing.T) { hxClientFlood(t, n, false) })
	t.Run("client JSON pings", func(t *testing.T) { hxClientFlood(t, n, true) })
	t.Run("upstream RFC pings", func(t *testing.T) { hxUpstreamFlood(t, n, false) })
	t.Run("upstream JSON pings", func(t *testing.T) { hxUpstreamFlood(t, n, true) })
}

// hxGoroutines watches the process's goroutines during a flood. The
// count alone cannot tell tether's goroutines from anything else the test
// binary runs (a runtime timer's callback, a finished test's server still
// winding down), so whenever the count passes limit the sampler takes a
// goroutine profile at that moment and counts the goroutines with a frame
// in tether's own packages: that number is what the flood tests judge,
// and the profile explains any growth.
type hxGoroutines struct {
	stop  chan struct{}
	done  chan struct{}
	limit int

	peak    int    // the most goroutines seen
	ours    int    // tether's goroutines in the profile taken at the most
	profile string // that profile (debug=1), "" if the limit was never passed
}

// hxOwnFrame matches a stack frame in one of tether's non-test packages.
var hxOwnFrame = regexp.MustCompile(`\tgithub\.com/tether-proxy/tether/(proxy|session|heartbeat|internal/[a-z]+)\.`)

func hxWatchGoroutines(limit int) *hxGoroutines {
	g := &hxGoroutines{stop: make(chan struct{}), done: make(chan struct{}), limit: limit}
	go func() {
		defer close(g.done)
		tk := time.NewTicker(2 * time.Millisecond)
		defer tk.Stop()
		for {
			n := runtime.NumGoroutine() - 1 // not this sampler
			if n > g.peak {
				g.peak = n
				if n > limit {
					var b strings.Builder
					_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
					if ours := hxCountOwn(b.String()); ours >= g.ours {
						g.ours, g.profile = ours, b.String()
					}
				}
			}
			select {
			case <-g.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return g
}

// hxCountOwn counts the goroutines of a debug=1 goroutine profile whose
// stack has a frame in tether's packages (the profile groups identical
// stacks as "N @ pcs" followed by "#\t" frame lines).
func hxCountOwn(profile string) int {
	_, profile, _ = strings.Cut(profile, "\n") // "goroutine profile: total N"
	total := 0
	for _, group := range strings.Split(profile, "\n\n") {
		var n int
		if _, err := fmt.Sscanf(group, "%d @", &n); err != nil {
			continue
		}
		if hxOwnFrame.MatchString(group) {
			total += n
		}
	}
	return total
}

// finish stops the sampler and fails t if tether's own goroutines grew by
// more than allowed over base during the flood.
func (g *hxGoroutines) finish(t *testing.T, base, allowed int) {
	t.Helper()
	close(g.stop)
	<-g.done
	if g.profile == "" {
		return // never past the limit
	}
	if g.ours > base+allowed {
		t.Errorf("tether's goroutines grew from %d to %d during the flood (%d in the process); the profile at that moment:\n%s", base, g.ours, g.peak, g.profile)
		return
	}
	// Not tether's: say whose, so that a slow machine's noise is visible.
	t.Logf("the process had %d goroutines at most, %d of them tether's (at most %d allowed); the profile at that moment:\n%s", g.peak, g.ours, base+allowed, hxHead(g.profile, 40))
}

// hxHead returns the first n lines of s.
func hxHead(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// hxOwnGoroutines counts tether's goroutines now.
func hxOwnGoroutines() int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	return hxCountOwn(b.String())
}

func hxClientFlood(t *testing.T, n int, jsonPings bool) {
	const after = "after the flood"
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, hxQuiet(heartbeat.ModeBoth, heartbeat.ModeWS))
	c, br := coreRawUpgrade(t, tt.Addr)
	base := runtime.NumGoroutine()
	own := hxOwnGoroutines()

	pongs := &hxPongs{n: n}
	type result struct {
		data string
		err  error
	}
	done := make(chan result, 1)
	gs := hxWatchGoroutines(base + 10)
	go func() {
		var r result
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			op, p, err := hxReadFrame(br)
			if err != nil {
				r.err = err
				break
			}
			switch {
			case op == 10 && !jsonPings:
				if len(p) != 8 {
					r.err = fmt.Errorf("pong payload %q", p)
				} else {
					pongs.add(int(binary.BigEndian.Uint64(p)))
				}
			case op == 1 && jsonPings && hxJSONPongID(p) >= 0:
				pongs.add(hxJSONPongID(p))
			case op == 1:
				r.data = string(p)
			default:
				r.err = fmt.Errorf("unexpected frame op %d %q", op, p)
			}
			if r.err != nil || (r.data != "" && pongs.count > 0 && pongs.last == n-1) {
				break
			}
		}
		done <- r
	}()

	var buf bytes.Buffer
	for i := 0; i < n; i++ {
		if jsonPings {
			buf.Write(coreFrame(true, 0, 1, true, hxJSONPing(i)))
		} else {
			buf.Write(coreFrame(true, 0, 9, true, hxPing(i)))
		}
	}
	buf.Write(coreFrame(true, 0, 1, true, []byte(after)))
	start := time.Now()
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := coreRecv(t, done, 40*time.Second, "the pongs and the echo")
	gs.finish(t, own, 5)
	if r.err != nil {
		t.Fatalf("client read: %v (%d pongs so far)", r.err, pongs.count)
	}
	t.Logf("%d pings in %v; goroutines %d before, %d at most during", n, time.Since(start).Round(time.Millisecond), base, gs.peak-1)
	pongs.check(t, "client leg")
	if r.data != after {
		t.Errorf("data after the flood: %q, want %q", r.data, after)
	}
	// Still open, still relaying: JSON pings were consumed, never
	// forwarded (the echo backend would have returned them as data).
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(coreFrame(true, 0, 1, true, []byte("once more"))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	op, p, err := hxReadFrame(br)
	if err != nil || op != 1 || string(p) != "once more" {
		t.Fatalf("echo after the flood: op %d %q %v", op, p, err)
	}
	// The counter moves just after the write that the echo proved, so
	// give it that moment; more than 2 would mean pings became data.
	got := metric(t, tt, "tether_messages_total", "direction=client_to_upstream")
	for deadline := time.Now().Add(5 * time.Second); got < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		got = metric(t, tt, "tether_messages_total", "direction=client_to_upstream")
	}
	if got != 2 {
		t.Errorf("client_to_upstream messages = %v, want 2 (pings are not data)", got)
	}
}

func hxUpstreamFlood(t *testing.T, n int, jsonPings bool) {
	const after = "after the flood"
	type result struct {
		pongs *hxPongs
		data  string
		err   error
	}
	res := make(chan result, 1)
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		pongs := &hxPongs{n: n}
		lastPong := make(chan struct{})
		var r result
		r.pongs = pongs
		note := func(id int) {
			pongs.add(id)
			if id == n-1 {
				close(lastPong)
			}
		}
		c.SetPongHandler(func(s string) error {
			if len(s) != 8 {
				return fmt.Errorf("pong payload %q", s)
			}
			note(int(binary.BigEndian.Uint64([]byte(s))))
			return nil
		})
		werr := make(chan error, 1)
		go func() {
			for i := 0; i < n; i++ {
				var err error
				if jsonPings {
					err = c.WriteMessage(websocket.TextMessage, hxJSONPing(i))
				} else {
					err = c.WriteControl(websocket.PingMessage, hxPing(i), time.Now().Add(5*time.Second))
				}
				if err != nil {
					werr <- err
					return
				}
			}
			werr <- c.WriteMessage(websocket.TextMessage, []byte(after))
		}()
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		for r.data == "" || pongs.count == 0 || pongs.last != n-1 {
			typ, p, err := c.ReadMessage()
			if err != nil {
				r.err = err
				break
			}
			if id := hxJSONPongID(p); jsonPings && typ == websocket.TextMessage && id >= 0 {
				note(id)
				continue
			}
			r.data = string(p)
		}
		if err := <-werr; err != nil && r.err == nil {
			r.err = err
		}
		res <- r
		// Keep the connection until the test ends.
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	})
	mode := heartbeat.ModeWS
	if jsonPings {
		mode = heartbeat.ModeJSON
	}
	tt := startTether(t, b.URL, hxQuiet(heartbeat.ModeBoth, mode))
	base := runtime.NumGoroutine()
	own := hxOwnGoroutines()
	gs := hxWatchGoroutines(base + 20)
	c := dial(t, tt.URL, nil)
	start := time.Now()
	got := make(chan string, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, p, err := c.ReadMessage()
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(p)
	}()
	// The backend needs the client's "reply" before it reports.
	first := coreRecv(t, got, 40*time.Second, "the backend's message after its flood")
	if first != after {
		t.Fatalf("the client got %q first, want %q (pings are not data)", first, after)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("reply")); err != nil {
		t.Fatal(err)
	}
	r := coreRecv(t, res, 40*time.Second, "the backend's pongs")
	// A session is a handful of goroutines (client and upstream loops,
	// the gorilla ends, the backend's handler): not one per ping.
	gs.finish(t, own, 10)
	if r.err != nil {
		t.Fatalf("backend: %v (%d pongs)", r.err, r.pongs.count)
	}
	t.Logf("%d pings in %v; goroutines %d before the client, %d at most during", n, time.Since(start).Round(time.Millisecond), base, gs.peak)
	r.pongs.check(t, "upstream leg")
	if r.data != "reply" {
		t.Errorf("the backend got %q, want %q", r.data, "reply")
	}
}

// RFC 6455 §5.5.3 and README "Heartbeats" ("only the latest is answered, so a
// ping flood costs no memory"): pings that arrive while tether's write to the
// client is blocked (an 8 MiB message the client does not read) are answered
// by one pong each for RFC and JSON, carrying the latest ping, once the client
// drains; nothing queues per ping.
func TestHostilePingFloodWhileBlocked(t *testing.T) {
	t.Parallel()
	const big = 8 << 20
	n := 10000
	if testing.Short() {
		n = 1000
	}
	marker := make(chan struct{})
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		if c.WriteMessage(websocket.BinaryMessage, make([]byte, big)) != nil {
			return
		}
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if string(p) == "marker" {
				close(marker)
				continue
			}
			if c.WriteMessage(mt, p) != nil {
				return
			}
		}
	})
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		hxQuiet(heartbeat.ModeBoth, heartbeat.ModeWS)(c)
		c.Session.MaxMessageBytes = big
		c.Session.WriteTimeout = 30 * time.Second
	})
	c, br := coreRawUpgrade(t, tt.Addr)
	// A small receive buffer (no autotuning), so that the big message
	// cannot fit in the socket buffers on any machine.
	if err := c.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	// The header of the big message: tether is now writing it, under the
	// client leg's write lock, and blocks on the full socket.
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var hdr [10]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 0x82 || hdr[1] != 127 || binary.BigEndian.Uint64(hdr[2:]) != big {
		t.Fatalf("frame header % x, want the %d-byte binary message", hdr, big)
	}
	var buf bytes.Buffer
	for i := 0; i < n; i++ {
		buf.Write(coreFrame(true, 0, 9, true, hxPing(i)))
		buf.Write(coreFrame(true, 0, 1, true, hxJSONPing(i)))
	}
	buf.Write(coreFrame(true, 0, 1, true, []byte("marker")))
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	// tether read every ping before it relayed the marker.
	coreRecv(t, marker, 20*time.Second, "the marker at the backend")

	if _, err := io.CopyN(io.Discard, br, big); err != nil {
		t.Fatalf("draining the big message: %v", err)
	}
	if _, err := c.Write(coreFrame(true, 0, 1, true, []byte("echo me"))); err != nil {
		t.Fatal(err)
	}
	rfc, js := &hxPongs{n: n}, &hxPongs{n: n}
	for {
		op, p, err := hxReadFrame(br)
		if err != nil {
			t.Fatalf("after %d RFC and %d JSON pongs: %v", rfc.count, js.count, err)
		}
		switch {
		case op == 10 && len(p) == 8:
			rfc.add(int(binary.BigEndian.Uint64(p)))
			continue
		case op == 1 && hxJSONPongID(p) >= 0:
			js.add(hxJSONPongID(p))
			continue
		case op == 1 && string(p) == "echo me":
		default:
			t.Fatalf("unexpected frame op %d %q", op, p)
		}
		break
	}
	rfc.check(t, "RFC pings")
	js.check(t, "JSON pings")
	// One pong each; a second one is possible if a ping was answered
	// before the write took the lock.
	if rfc.count > 2 || js.count > 2 {
		t.Errorf("%d RFC and %d JSON pongs for %d pings each that arrived during one blocked write, want 1 each",
			rfc.count, js.count, n)
	}
}

// The same from the upstream side: a backend that floods RFC and JSON
// pings while tether's write to it is blocked (an 8 MiB client message
// it does not read yet) gets one pong each, for its latest pings.
func TestHostileUpstreamPingFloodWhileBlocked(t *testing.T) {
	t.Parallel()
	const big = 8 << 20
	n := 10000
	if testing.Short() {
		n = 1000
	}
	type result struct {
		rfc, js *hxPongs
		err     error
	}
	res := make(chan result, 1)
	drain := make(chan struct{})
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		r := result{rfc: &hxPongs{n: n}, js: &hxPongs{n: n}}
		defer func() { res <- r }()
		// A small receive buffer (no autotuning), so that the big
		// message cannot fit in the socket buffers on any machine.
		if r.err = c.NetConn().(*net.TCPConn).SetReadBuffer(64 << 10); r.err != nil {
			return
		}
		c.SetPongHandler(func(s string) error {
			r.rfc.add(int(binary.BigEndian.Uint64([]byte(s))))
			return nil
		})
		// The header of the big message: tether is writing it now.
		_, rd, err := c.NextReader()
		if err != nil {
			r.err = err
			return
		}
		for i := 0; i < n; i++ {
			if err := c.WriteControl(websocket.PingMessage, hxPing(i), time.Now().Add(5*time.Second)); err != nil {
				r.err = err
				return
			}
			if err := c.WriteMessage(websocket.TextMessage, hxJSONPing(i)); err != nil {
				r.err = err
				return
			}
		}
		if r.err = c.WriteMessage(websocket.TextMessage, []byte("marker")); r.err != nil {
			return
		}
		<-drain
		if _, r.err = io.Copy(io.Discard, rd); r.err != nil {
			return
		}
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				r.err = err
				return
			}
			if id := hxJSONPongID(p); id >= 0 {
				r.js.add(id)
				continue
			}
			if string(p) != "echo me" {
				r.err = fmt.Errorf("backend got %q", p)
			}
			return
		}
	})
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		hxQuiet(heartbeat.ModeBoth, heartbeat.ModeBoth)(c)
		c.Session.MaxMessageBytes = big
		c.Session.WriteTimeout = 30 * time.Second
	})
	c := dial(t, tt.URL, nil)
	werr := make(chan error, 1)
	go func() { werr <- c.WriteMessage(websocket.BinaryMessage, make([]byte, big)) }()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, p, err := c.ReadMessage()
	if err != nil || string(p) != "marker" {
		t.Fatalf("client got %q, %v; want the marker (pings are not data)", p, err)
	}
	// tether read every ping before it relayed the marker.
	close(drain)
	if err := coreRecv(t, werr, 20*time.Second, "the big client write"); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("echo me")); err != nil {
		t.Fatal(err)
	}
	r := coreRecv(t, res, 20*time.Second, "the backend's pongs")
	if r.err != nil {
		t.Fatalf("backend: %v", r.err)
	}
	r.rfc.check(t, "RFC pings")
	r.js.check(t, "JSON pings")
	if r.rfc.count > 2 || r.js.count > 2 {
		t.Errorf("%d RFC and %d JSON pongs for %d pings each that arrived during one blocked write, want 1 each",
			r.rfc.count, r.js.count, n)
	}
}

// README "Close codes": a continuation frame whose declared length, added to
// the fragments already received, passes the largest int64 is a message over
// TETHER_MAX_MESSAGE_BYTES (1009), from either peer: the sum must not overflow
// into a negative size (which panicked in the frame reader and closed both
// legs with 1011).
func TestHostileFragmentLengthOverflow(t *testing.T) {
	t.Parallel()
	huge := func(masked bool) []byte {
		b := []byte{0x80, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} // FIN, continuation, 2^63-1 bytes
		if masked {
			b[1] |= 0x80
			b = append(b, 1, 2, 3, 4)
		}
		return b
	}
	t.Run("client", func(t *testing.T) {
		t.Parallel()
		ends := make(chan coreEnd, 1)
		b := newBackend(t, nil, coreEchoRecorder(ends))
		tt := startTether(t, b.URL, nil)
		c, br := coreRawUpgrade(t, tt.Addr)
		msg := append(coreFrame(false, 0, 1, true, []byte("first fragment")), huge(true)...)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if code := coreReadClose(t, c, br); code != 1009 {
			t.Errorf("client got Close %d, want 1009", code)
		}
		coreWantEnd(t, ends, 1001, "*")
	})
	t.Run("upstream", func(t *testing.T) {
		t.Parallel()
		ends := make(chan coreEnd, 1)
		b := newBackend(t, nil, func(c *websocket.Conn, r *http.Request) {
			msg := append(coreFrame(false, 0, 2, false, []byte("first fragment")), huge(false)...)
			if _, err := c.NetConn().Write(msg); err != nil {
				ends <- coreEnd{err: err}
				return
			}
			coreEchoRecorder(ends)(c, r)
		})
		tt := startTether(t, b.URL, nil)
		c := dial(t, tt.URL, nil)
		coreWantClose(t, c, 1014, "*")
		coreWantEnd(t, ends, 1009, "*")
	})
}
