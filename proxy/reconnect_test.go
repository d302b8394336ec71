package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/faultnet"
	"github.com/tether-proxy/tether/internal/leakcheck"
	"github.com/tether-proxy/tether/proxy"
	"github.com/tether-proxy/tether/session"
)

// End-to-end tests of README "Upstream loss, reconnect and the delivery
// guarantee" (upstream loss, reconnect, buffering) with real sockets:
// gorilla/websocket clients and backends, and internal/faultnet between tether
// and the backend to reset, close, stall and refuse.

// rcBackend is a gorilla/websocket backend that can be stopped and
// started again on the same port, decides per handshake how to answer,
// and records handshakes.
type rcBackend struct {
	t    *testing.T
	addr string // host:port, fixed after the first start
	URL  string // ws://host:port
	quit chan struct{}

	// Set before the first connection.
	// handle serves connection n (n counts handshakes from 1); nil echoes.
	handle func(c *websocket.Conn, n int)
	// answer, if set, returns an HTTP status to refuse handshake n with,
	// or 0 and the response headers of the upgrade.
	answer func(r *http.Request, n int) (int, http.Header)
	// hsDelay holds each handshake this long before answering.
	hsDelay time.Duration

	mu          sync.Mutex
	ln          net.Listener
	srv         *http.Server
	conns       map[*websocket.Conn]string // live connections, by request query
	killed      map[string]time.Time       // request query → when stop/rollover closed it
	reqs        []*http.Request
	times       []time.Time // handshake arrivals
	inflight    int
	maxInflight int
	// gen counts stops and rollovers: an upgrade that began before one
	// and completes after it dies at once, with the connections of the
	// backend it was made to (see snapshot).
	gen int
	hs  chan int // n of each completed upgrade
	wg  sync.WaitGroup
}

func rcNewBackend(t *testing.T, setup func(b *rcBackend)) *rcBackend {
	t.Helper()
	b := &rcBackend{t: t, quit: make(chan struct{}), conns: make(map[*websocket.Conn]string), killed: make(map[string]time.Time), hs: make(chan int, 4096)}
	if setup != nil {
		setup(b)
	}
	b.start()
	t.Cleanup(func() {
		close(b.quit)
		b.stop()
		b.wg.Wait()
	})
	return b
}

// start listens (on the same port as before, after a stop).
func (b *rcBackend) start() {
	b.t.Helper()
	addr := b.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.t.Fatalf("backend listen %s: %v", addr, err)
	}
	srv := &http.Server{Handler: b}
	b.mu.Lock()
	b.ln, b.srv = ln, srv
	b.addr = ln.Addr().String()
	b.URL = "ws://" + b.addr
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		_ = srv.Serve(ln)
	}()
}

// stop kills the backend: the listener and every connection close
// without a Close frame, as when its process dies.
func (b *rcBackend) stop() {
	conns := b.snapshot()
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
	b.kill(conns)
}

// snapshot returns the connections a stop or rollover kills, and makes
// each upgrade still in flight die once it completes: without that, an
// upgrade whose 101 tether read just before the snapshot, registered
// just after, outlived its backend (a session that never reconnected,
// seen under load).
func (b *rcBackend) snapshot() map[*websocket.Conn]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	return maps.Clone(b.conns)
}

// kill closes conns (no Close frame) and records when, by the request's
// query.
func (b *rcBackend) kill(conns map[*websocket.Conn]string) {
	for c, q := range conns {
		at := time.Now()
		_ = c.NetConn().Close()
		b.mu.Lock()
		b.killed[q] = at
		b.mu.Unlock()
	}
}

// restart kills the backend and starts it again on the same port: the
// port refuses connections while the old connections close.
func (b *rcBackend) restart() {
	b.t.Helper()
	b.stop()
	b.start()
}

// rollover restarts the backend the way a new process takes over a port:
// the new listener is up at once, then the old connections die.
func (b *rcBackend) rollover() {
	b.t.Helper()
	conns := b.snapshot()
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	_ = srv.Close()
	b.start()
	b.kill(conns)
}

func (b *rcBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.reqs = append(b.reqs, r.Clone(context.Background()))
	b.times = append(b.times, time.Now())
	n := len(b.reqs)
	gen := b.gen
	b.inflight++
	b.maxInflight = max(b.maxInflight, b.inflight)
	b.mu.Unlock()
	done := func() {
		b.mu.Lock()
		b.inflight--
		b.mu.Unlock()
	}
	if b.hsDelay > 0 {
		// A handshake whose connection is cut meanwhile (a fault of the
		// test) is no longer in flight from tether's side: stop
		// counting it then, not after the delay.
		select {
		case <-time.After(b.hsDelay):
		case <-r.Context().Done():
			done()
			return
		}
	}
	var hdr http.Header
	if b.answer != nil {
		var status int
		status, hdr = b.answer(r, n)
		if status != 0 {
			done()
			http.Error(w, http.StatusText(status), status)
			return
		}
	}
	c, err := (&websocket.Upgrader{}).Upgrade(w, r, hdr)
	done()
	if err != nil {
		return
	}
	b.mu.Lock()
	if b.gen != gen {
		// Stopped while this upgrade was in flight: tether may have
		// had the 101 before the snapshot, so the connection dies now.
		b.killed[r.URL.RawQuery] = time.Now()
		b.mu.Unlock()
		_ = c.NetConn().Close()
		return
	}
	b.conns[c] = r.URL.RawQuery
	b.mu.Unlock()
	b.wg.Add(1)
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		_ = c.Close()
		b.wg.Done()
	}()
	select {
	case b.hs <- n:
	default:
	}
	if b.handle == nil {
		echo(c, r)
		return
	}
	b.handle(c, n)
}

// handshakes returns how many handshakes arrived so far.
func (b *rcBackend) handshakes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.reqs)
}

func (b *rcBackend) request(n int) *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reqs[n-1]
}

// waitHandshake waits for upgrade number n to complete.
func (b *rcBackend) waitHandshake(n int) {
	b.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-b.hs:
			if got >= n {
				return
			}
		case <-deadline:
			b.t.Fatalf("backend upgrade %d did not happen within 10s (%d handshakes)", n, b.handshakes())
		}
	}
}

// noHandshakeWithin checks that no handshake arrives within d.
func (b *rcBackend) noHandshakeWithin(d time.Duration) {
	b.t.Helper()
	before := b.handshakes()
	deadline := time.After(d)
	for wait := true; wait; {
		select {
		case n := <-b.hs:
			if n > before {
				b.t.Fatalf("unexpected upstream connection %d", n)
			}
		case <-deadline:
			wait = false
		}
	}
	if got := b.handshakes(); got != before {
		b.t.Fatalf("%d handshakes, want %d", got, before)
	}
}

// rcRelay starts a faultnet relay to addr, closed at cleanup.
func rcRelay(t *testing.T, addr string) *faultnet.Relay {
	t.Helper()
	r, err := faultnet.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// rcFast is the test baseline: upstream ws heartbeats every 50ms (so
// acknowledgements flow) with a generous timeout, a 10ms..100ms backoff.
func rcFast(c *proxy.Config) {
	c.Session.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: 50 * time.Millisecond, Timeout: 3 * time.Second}
	c.Session.Reconnect.InitialDelay = 10 * time.Millisecond
	c.Session.Reconnect.MaxDelay = 100 * time.Millisecond
}

// rcStartTether starts tether in front of upstream (a comma list of URLs
// or host:port relays) with rcFast, then mod, and the given options.
func rcStartTether(t *testing.T, upstream string, opts proxy.Options, mod func(*proxy.Config)) *tether {
	t.Helper()
	var urls []string
	for _, u := range strings.Split(upstream, ",") {
		if !strings.Contains(u, "://") {
			u = "ws://" + u
		}
		urls = append(urls, u)
	}
	return startTetherOpts(t, strings.Join(urls, ","), opts, func(c *proxy.Config) {
		rcFast(c)
		if mod != nil {
			mod(c)
		}
	})
}

// rcTopJitter always draws the top of [0, d]: delays are exactly d.
func rcTopJitter(n int64) int64 { return n - 1 }

// rcMetric returns the value of a counter or gauge with the given labels
// ("k=v"), 0 if absent.
func rcMetric(t *testing.T, tt *tether, name string, labels ...string) float64 {
	t.Helper()
	return metric(t, tt, name, labels...)
}

// rcWaitMetric polls a metric until it equals want (10s at most).
func rcWaitMetric(t *testing.T, tt *tether, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := rcMetric(t, tt, name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rcNext reads the next message from c within 10s.
func rcNext(t *testing.T, c *websocket.Conn) (int, string, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, p, err := c.ReadMessage()
	return typ, string(p), err
}

// rcExpect reads the next messages and checks they are these texts.
func rcExpect(t *testing.T, c *websocket.Conn, want ...string) {
	t.Helper()
	for _, w := range want {
		typ, p, err := rcNext(t, c)
		if err != nil {
			t.Fatalf("want %q, got %v", w, err)
		}
		if typ != websocket.TextMessage || p != w {
			t.Fatalf("got %d %q, want text %q", typ, p, w)
		}
	}
}

// rcExpectClose reads the next frame and checks it is a Close with code
// (and reason, unless "*").
func rcExpectClose(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	typ, p, err := rcNext(t, c)
	got, text := closeCode(err)
	if got == -1 {
		t.Fatalf("got %d %q (err %v), want Close %d", typ, p, err, code)
	}
	if got != code || !reasonMatches(text, reason) {
		t.Fatalf("got Close %d %q, want %d %q", got, text, code, reason)
	}
}

// rcAcked waits until tether holds no client message: everything sent so
// far was acknowledged by an upstream heartbeat round trip, so a loss
// from now on re-sends nothing older.
func rcAcked(t *testing.T, tt *tether) {
	t.Helper()
	rcWaitMetric(t, tt, 0, "tether_buffered_messages")
}

func rcSend(t *testing.T, c *websocket.Conn, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatalf("client write %q: %v", m, err)
		}
	}
}

func rcReconnecting(n int) string {
	return `{"type":"upstream","status":"reconnecting","attempt":` + strconv.Itoa(n) + `}`
}

const (
	rcConnected   = `{"type":"upstream","status":"connected"}`
	rcUnavailable = `{"type":"upstream","status":"unavailable"}`
)

// rcRecorder is a backend handler that records, per connection, the text
// messages it reads (answering JSON pings when json is set) and replies
// with reply(msg, n) when that is not empty.
type rcRecorder struct {
	mu    sync.Mutex
	byCon map[int][]string
	got   chan struct{} // a message arrived
	json  bool
	reply func(msg string, n int) string
}

func rcNewRecorder() *rcRecorder {
	return &rcRecorder{byCon: make(map[int][]string), got: make(chan struct{}, 1)}
}

func (rr *rcRecorder) handle(c *websocket.Conn, n int) {
	for {
		_, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		msg := string(p)
		if rr.json && msg == `{"type":"ping"}` {
			if c.WriteMessage(websocket.TextMessage, []byte(`{"type":"pong"}`)) != nil {
				return
			}
			continue
		}
		rr.add(n, msg)
		if rr.reply != nil {
			if r := rr.reply(msg, n); r != "" {
				if c.WriteMessage(websocket.TextMessage, []byte(r)) != nil {
					return
				}
			}
		}
	}
}

// add records msg as received by connection n.
func (rr *rcRecorder) add(n int, msg string) {
	rr.mu.Lock()
	rr.byCon[n] = append(rr.byCon[n], msg)
	rr.mu.Unlock()
	select {
	case rr.got <- struct{}{}:
	default:
	}
}

func (rr *rcRecorder) conn(n int) []string {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return slices.Clone(rr.byCon[n])
}

// waitConn waits until connection n has received k messages.
func (rr *rcRecorder) waitConn(t *testing.T, n, k int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := rr.conn(n); len(got) >= k {
			return got
		}
		select {
		case <-rr.got:
		case <-deadline:
			t.Fatalf("backend connection %d got %q, want %d messages", n, rr.conn(n), k)
		}
	}
}

// Every way the upstream leg can be lost (README "Upstream loss, reconnect and
// the delivery guarantee") reconnects while the client leg stays open: the
// next message is echoed by the new upstream connection.
func TestRcLossDetection(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		mod  func(*proxy.Config)
		// kill makes connection 1 lost; cmd reaches its handler.
		kill   func(t *testing.T, tt *tether, r *faultnet.Relay, cmd chan<- string)
		hbTO   bool   // a heartbeat timeout is counted
		resent string // a message the new connection echoes first
	}{
		{name: "reset", kill: func(_ *testing.T, _ *tether, r *faultnet.Relay, _ chan<- string) { r.ResetAll() }},
		{name: "FIN", kill: func(_ *testing.T, _ *tether, r *faultnet.Relay, _ chan<- string) { r.CloseAll() }},
		{name: "upstream Close 1001", kill: func(_ *testing.T, _ *tether, _ *faultnet.Relay, cmd chan<- string) { cmd <- "1001" }},
		{name: "upstream Close 1012", kill: func(_ *testing.T, _ *tether, _ *faultnet.Relay, cmd chan<- string) { cmd <- "1012" }},
		{name: "upstream Close 4001 in RECONNECT_ON_CODES", mod: func(c *proxy.Config) {
			c.Session.Reconnect.OnCodes = append(c.Session.Reconnect.OnCodes, 4001)
		}, kill: func(_ *testing.T, _ *tether, _ *faultnet.Relay, cmd chan<- string) { cmd <- "4001" }},
		{name: "heartbeat timeout", mod: func(c *proxy.Config) {
			c.Session.UpstreamHeartbeat.Timeout = 300 * time.Millisecond
		}, kill: func(_ *testing.T, _ *tether, _ *faultnet.Relay, cmd chan<- string) { cmd <- "silence" }, hbTO: true, resent: "stop"},
		{name: "stalled network", mod: func(c *proxy.Config) {
			c.Session.UpstreamHeartbeat.Timeout = 300 * time.Millisecond
		}, kill: func(t *testing.T, tt *tether, r *faultnet.Relay, _ chan<- string) {
			r.Stall() // nothing passes, nothing closes
			rcWaitMetric(t, tt, 1, "tether_heartbeat_timeouts_total", "leg=upstream")
			r.Resume() // the reconnect's dial can pass
		}, hbTO: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := make(chan string, 1)
			b := rcNewBackend(t, func(b *rcBackend) {
				b.handle = func(c *websocket.Conn, n int) {
					if n > 1 {
						echo(c, nil)
						return
					}
					go func() {
						select {
						case s := <-cmd:
							if s == "silence" {
								return // and the echo below stops reading
							}
							code, _ := strconv.Atoi(s)
							_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "bye"), time.Now().Add(time.Second))
						case <-b.quit:
						}
					}()
					for {
						typ, p, err := c.ReadMessage()
						if err != nil {
							return
						}
						if string(p) == "stop" {
							<-b.quit // silent: no reads, so no pongs either
							return
						}
						if c.WriteMessage(typ, p) != nil {
							return
						}
					}
				}
			})
			relay := rcRelay(t, b.addr)
			tt := rcStartTether(t, relay.Addr(), proxy.Options{}, tc.mod)
			c := dial(t, tt.URL, nil)
			rcSend(t, c, "a")
			rcExpect(t, c, "a")
			rcAcked(t, tt)
			if tc.resent != "" {
				rcSend(t, c, tc.resent)
			}
			tc.kill(t, tt, relay, cmd)
			b.waitHandshake(2)
			if tc.resent != "" {
				// Never acknowledged (the backend stopped reading after
				// it): re-sent, so the new connection echoes it.
				rcExpect(t, c, tc.resent)
			}
			rcSend(t, c, "b")
			rcExpect(t, c, "b")
			if got := b.handshakes(); got != 2 {
				t.Fatalf("%d handshakes, want 2", got)
			}
			rcWaitMetric(t, tt, 1, "tether_upstream_reconnects_total", "result=success")
			if tc.hbTO {
				if got := rcMetric(t, tt, "tether_heartbeat_timeouts_total", "leg=upstream"); got != 1 {
					t.Fatalf("upstream heartbeat timeouts = %v, want 1", got)
				}
			}
		})
	}
}

// An upstream Close whose code is not in RECONNECT_ON_CODES is passed to
// the client and ends the session without a reconnect; so does a broken
// connection when 1006 is not in the list (client Close 1014).
func TestRcNoReconnect(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		mod    func(*proxy.Config)
		kill   func(r *faultnet.Relay, cmd chan<- int)
		code   int
		reason string
	}{
		{name: "upstream Close 1000", kill: func(_ *faultnet.Relay, cmd chan<- int) { cmd <- 1000 }, code: 1000, reason: "bye"},
		{name: "upstream Close 4000", kill: func(_ *faultnet.Relay, cmd chan<- int) { cmd <- 4000 }, code: 4000, reason: "bye"},
		{name: "upstream Close 1001 not in RECONNECT_ON_CODES", mod: func(c *proxy.Config) {
			c.Session.Reconnect.OnCodes = session.CloseCodes{1006}
		}, kill: func(_ *faultnet.Relay, cmd chan<- int) { cmd <- 1001 }, code: 1001, reason: "bye"},
		{name: "reset without 1006 in RECONNECT_ON_CODES", mod: func(c *proxy.Config) {
			c.Session.Reconnect.OnCodes = session.CloseCodes{1001, 1011, 1012, 1013, 1014}
		}, kill: func(r *faultnet.Relay, _ chan<- int) { r.ResetAll() }, code: 1014, reason: "*"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := make(chan int, 1)
			b := rcNewBackend(t, func(b *rcBackend) {
				b.handle = func(c *websocket.Conn, _ int) {
					go func() {
						select {
						case code := <-cmd:
							_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "bye"), time.Now().Add(time.Second))
						case <-b.quit:
						}
					}()
					echo(c, nil)
				}
			})
			relay := rcRelay(t, b.addr)
			tt := rcStartTether(t, relay.Addr(), proxy.Options{}, tc.mod)
			c := dial(t, tt.URL, nil)
			rcSend(t, c, "a")
			rcExpect(t, c, "a")
			tc.kill(relay, cmd)
			rcExpectClose(t, c, tc.code, tc.reason)
			b.noHandshakeWithin(300 * time.Millisecond) // 3× the largest backoff
			if got := rcMetric(t, tt, "tether_upstream_reconnects_total", "result=success") + rcMetric(t, tt, "tether_upstream_reconnects_total", "result=failure"); got != 0 {
				t.Fatalf("%v reconnect attempts, want 0", got)
			}
		})
	}
}

// rcCheckStream checks that every number 0..n-1 reached the backend and
// that each connection got its numbers in increasing order; it returns
// how many were received more than once.
func rcCheckStream(t *testing.T, rr *rcRecorder, n int) (dups int) {
	t.Helper()
	rr.mu.Lock()
	defer rr.mu.Unlock()
	seen := make([]int, n)
	for con, msgs := range rr.byCon {
		last := -1
		for _, m := range msgs {
			v, err := strconv.Atoi(m)
			if err != nil || v < 0 || v >= n {
				t.Fatalf("connection %d: unexpected message %q", con, m)
			}
			if v <= last {
				t.Fatalf("connection %d: %d after %d (out of order)", con, v, last)
			}
			last = v
			seen[v]++
		}
	}
	for v, k := range seen {
		if k == 0 {
			t.Fatalf("message %d never reached the backend", v)
		}
		dups += k - 1
	}
	return dups
}

// rcStream sends 0..n-1 from c, pausing every batch messages (so that
// the stream spans the faults the test injects).
func rcStream(c *websocket.Conn, n, batch int, pause time.Duration) error {
	for i := range n {
		if err := c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i))); err != nil {
			return fmt.Errorf("client write %d: %w", i, err)
		}
		if i%batch == batch-1 {
			time.Sleep(pause)
		}
	}
	return nil
}

// rcWaitAll waits until the backend has seen every number 0..n-1.
func rcWaitAll(t *testing.T, rr *rcRecorder, n int, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		rr.mu.Lock()
		seen := make(map[string]bool, n)
		for _, msgs := range rr.byCon {
			for _, m := range msgs {
				seen[m] = true
			}
		}
		rr.mu.Unlock()
		if len(seen) >= n {
			return
		}
		select {
		case <-rr.got:
		case <-deadline:
			t.Fatalf("backend saw %d of %d numbers", len(seen), n)
		}
	}
}

// The backend process dies and comes back on the same port, twice, while
// the client streams numbered messages: every number arrives, in order
// on each connection.
func TestRcBackendRestart(t *testing.T) {
	t.Parallel()
	rr := rcNewRecorder()
	b := rcNewBackend(t, func(b *rcBackend) { b.handle = rr.handle })
	tt := rcStartTether(t, b.addr, proxy.Options{}, func(c *proxy.Config) {
		c.Session.Reconnect.MaxAttempts = 0
	})
	c := dial(t, tt.URL, nil)
	const n = 600
	errc := make(chan error, 1)
	go func() { errc <- rcStream(c, n, 10, 10*time.Millisecond) }()
	for k := 1; k <= 2; k++ {
		rr.waitConn(t, k, 100) // mid-stream
		b.restart()
		b.waitHandshake(k + 1)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	rcWaitAll(t, rr, n, 10*time.Second)
	dups := rcCheckStream(t, rr, n)
	t.Logf("%d messages over %d connections, %d duplicates", n, b.handshakes(), dups)
}

// A reconnect that the upstream refuses with 403, or that selects another
// subprotocol than the first connection, closes the client with 1014 at
// once: no further attempt.
func TestRcRejectedReconnect(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		answer func(r *http.Request, n int) (int, http.Header)
	}{
		{name: "403", answer: func(_ *http.Request, n int) (int, http.Header) {
			if n > 1 {
				return http.StatusForbidden, nil
			}
			return 0, http.Header{"Sec-Websocket-Protocol": {"v1"}}
		}},
		{name: "other subprotocol", answer: func(_ *http.Request, n int) (int, http.Header) {
			p := "v1"
			if n > 1 {
				p = "v2"
			}
			return 0, http.Header{"Sec-Websocket-Protocol": {p}}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := rcNewBackend(t, func(b *rcBackend) { b.answer = tc.answer })
			relay := rcRelay(t, b.addr)
			tt := rcStartTether(t, relay.Addr(), proxy.Options{}, nil)
			d := websocket.Dialer{Subprotocols: []string{"v1", "v2"}}
			c, _, err := d.Dial(tt.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if c.Subprotocol() != "v1" {
				t.Fatalf("subprotocol %q, want v1", c.Subprotocol())
			}
			rcSend(t, c, "a")
			rcExpect(t, c, "a")
			rcAcked(t, tt)
			relay.ResetAll()
			rcExpectClose(t, c, 1014, "*")
			if got := b.handshakes(); got != 2 {
				t.Fatalf("%d handshakes when the client got 1014, want 2", got)
			}
			b.noHandshakeWithin(300 * time.Millisecond)
			if got := relay.Accepted(); got != 2 {
				t.Fatalf("%d upstream dials, want 2", got)
			}
			if got := rcMetric(t, tt, "tether_upstream_reconnects_total", "result=failure"); got != 1 {
				t.Fatalf("failed reconnects = %v, want 1", got)
			}
		})
	}
}

// TETHER_RECONNECT_MAX_ATTEMPTS=3 against a relay that refuses: exactly 3
// dials, then client Close 1014; with TETHER_NOTIFY_CLIENT the client
// first sees attempts 1, 2, 3 and "unavailable".
func TestRcAttemptsExhausted(t *testing.T) {
	t.Parallel()
	for _, notify := range []bool{false, true} {
		t.Run("notify="+strconv.FormatBool(notify), func(t *testing.T) {
			t.Parallel()
			b := rcNewBackend(t, nil)
			relay := rcRelay(t, b.addr)
			tt := rcStartTether(t, relay.Addr(), proxy.Options{}, func(c *proxy.Config) {
				c.Session.Reconnect.MaxAttempts = 3
				c.Session.NotifyClient = notify
			})
			c := dial(t, tt.URL, nil)
			rcSend(t, c, "a")
			rcExpect(t, c, "a")
			relay.Refuse(true)
			base := relay.Accepted()
			relay.ResetAll()
			if notify {
				rcExpect(t, c, rcReconnecting(1), rcReconnecting(2), rcReconnecting(3), rcUnavailable)
			}
			rcExpectClose(t, c, 1014, "*")
			if got := relay.Accepted() - base; got != 3 {
				t.Fatalf("%d dials, want 3", got)
			}
			time.Sleep(300 * time.Millisecond) // must NOT dial again
			if got := relay.Accepted() - base; got != 3 {
				t.Fatalf("%d dials after giving up, want 3", got)
			}
			if got := rcMetric(t, tt, "tether_upstream_reconnects_total", "result=failure"); got != 3 {
				t.Fatalf("failed reconnects = %v, want 3", got)
			}
		})
	}
}

// Overflow while reconnecting (TETHER_BUFFER_MAX_MESSAGES=5, 10 sent):
// that client gets 1013 and the overflow is counted; another session of the
// same tether rides the same outage out.
func TestRcBufferOverflow(t *testing.T) {
	t.Parallel()
	b := rcNewBackend(t, nil)
	relay := rcRelay(t, b.addr)
	tt := rcStartTether(t, relay.Addr(), proxy.Options{}, func(c *proxy.Config) {
		c.Session.Buffer.MaxMessages = 5
		c.Session.Reconnect.MaxAttempts = 0
		c.Session.NotifyClient = true
	})
	a := dial(t, tt.URL, nil)
	other := dial(t, tt.URL, nil)
	for _, c := range []*websocket.Conn{a, other} {
		rcSend(t, c, "hello")
		rcExpect(t, c, "hello")
	}
	rcWaitMetric(t, tt, 0, "tether_buffered_messages") // acknowledged
	relay.Refuse(true)
	relay.ResetAll()
	rcExpect(t, a, rcReconnecting(1))
	rcExpect(t, other, rcReconnecting(1))
	for i := range 10 {
		rcSend(t, a, strconv.Itoa(i))
	}
	for {
		typ, p, err := rcNext(t, a)
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 1013 {
				t.Fatalf("client read: %v, want Close 1013", err)
			}
			break
		}
		if typ != websocket.TextMessage || !strings.HasPrefix(p, `{"type":"upstream","status":"reconnecting"`) {
			t.Fatalf("got %d %q, want reconnecting notices then Close 1013", typ, p)
		}
	}
	if got := rcMetric(t, tt, "tether_buffer_overflows_total"); got != 1 {
		t.Fatalf("overflows = %v, want 1", got)
	}
	relay.Refuse(false)
	// The other session: still open, reconnects, relays.
	for {
		_, p, err := rcNext(t, other)
		if err != nil {
			t.Fatalf("other session: %v", err)
		}
		if p == rcConnected {
			break
		}
	}
	rcSend(t, other, "still here")
	rcExpect(t, other, "still here")
	if got := rcMetric(t, tt, "tether_buffer_overflows_total"); got != 1 {
		t.Fatalf("overflows = %v, want 1", got)
	}
}

// A full retention window while connected pauses reading from the client
// (backpressure) and never closes it: with TETHER_BUFFER_MAX_MESSAGES=4
// and a backend that reads slowly, tether never has more than 4
// unacknowledged messages out, and everything arrives.
func TestRcBackpressure(t *testing.T) {
	t.Parallel()
	const max, n = 4, 60
	var tt *tether
	var ttReady = make(chan struct{})
	violations := make(chan string, 2*n+1) // never blocks the handler
	b := rcNewBackend(t, func(b *rcBackend) {
		b.handle = func(c *websocket.Conn, _ int) {
			<-ttReady
			for i := range n {
				time.Sleep(3 * time.Millisecond) // a slow reader
				_, p, err := c.ReadMessage()
				if err != nil {
					return
				}
				if string(p) != strconv.Itoa(i) {
					violations <- fmt.Sprintf("got %q, want %d", p, i)
					return
				}
				// tether's sent count can pass what this connection has
				// read only by the window: acknowledgements come from
				// pongs, which this reader produces.
				if sent := rcMetric(t, tt, "tether_messages_total", "direction=client_to_upstream"); sent > float64(i+1+max) {
					violations <- fmt.Sprintf("tether sent %v messages when the backend had read %d (window %d)", sent, i+1, max)
				}
				if held := rcMetric(t, tt, "tether_buffered_messages"); held > max {
					violations <- fmt.Sprintf("%v messages held, window %d", held, max)
				}
			}
			_ = c.WriteMessage(websocket.TextMessage, []byte("all read"))
			echo(c, nil)
		}
	})
	tt = rcStartTether(t, b.addr, proxy.Options{}, func(c *proxy.Config) {
		c.Session.Buffer.MaxMessages = max
	})
	close(ttReady)
	c := dial(t, tt.URL, nil)
	for i := range n {
		rcSend(t, c, strconv.Itoa(i))
	}
	rcExpect(t, c, "all read")
	close(violations)
	for v := range violations {
		t.Error(v)
	}
	rcSend(t, c, "open")
	rcExpect(t, c, "open")
	if got := tt.Sessions(); got != 1 {
		t.Fatalf("%d sessions, want 1", got)
	}
}

// TETHER_REPLAY_FIRST=1 sends the opening (auth) first on every new
// connection, once, before the re-sent messages; with
// TETHER_REPLAY_DROP_REPLIES=1 the backend's answer to the replayed auth
// does not reach the client, while the first connection's answer does.
func TestRcReplayFirst(t *testing.T) {
	t.Parallel()
	rr := rcNewRecorder()
	rr.reply = func(msg string, n int) string {
		if msg == "auth" || msg == "probe"+strconv.Itoa(n) {
			return msg + "-ok-" + strconv.Itoa(n)
		}
		return ""
	}
	b := rcNewBackend(t, func(b *rcBackend) { b.handle = rr.handle })
	relay := rcRelay(t, b.addr)
	tt := rcStartTether(t, relay.Addr(), proxy.Options{}, func(c *proxy.Config) {
		c.Session.ReplayFirst = 1
		c.Session.ReplayDropReplies = 1
		// No acknowledgement within the test (json mode sends no
		// acknowledgement pings): everything is re-sent.
		c.Session.UpstreamHeartbeat.Mode = heartbeat.ModeJSON
		c.Session.UpstreamHeartbeat.Interval = 10 * time.Second
		c.Session.UpstreamHeartbeat.Timeout = 30 * time.Second
	})
	c := dial(t, tt.URL, nil)
	rcSend(t, c, "auth")
	rcExpect(t, c, "auth-ok-1")
	rcSend(t, c, "m1", "m2")
	rr.waitConn(t, 1, 3)
	sent := []string{"auth", "m1", "m2"}
	for k := 2; k <= 3; k++ {
		relay.ResetAll()
		b.waitHandshake(k)
		probe := "probe" + strconv.Itoa(k)
		rcSend(t, c, probe)
		rcExpect(t, c, probe+"-ok-"+strconv.Itoa(k)) // and not auth-ok-k
		sent = append(sent, probe)
		if got := rr.waitConn(t, k, len(sent)); !slices.Equal(got, sent) {
			t.Fatalf("connection %d got %q, want %q", k, got, sent)
		}
	}
	if got := rcMetric(t, tt, "tether_resent_messages_total"); got != 2+3 {
		t.Fatalf("resent = %v, want 5 (m1 m2, then m1 m2 probe2; auth is replayed, not re-sent)", got)
	}
}

// TETHER_NOTIFY_CLIENT: the status messages of README "Upstream loss,
// reconnect and the delivery guarantee", byte for byte: reconnecting before
// each attempt, then connected.
func TestRcNotifications(t *testing.T) {
	t.Parallel()
	b := rcNewBackend(t, nil)
	relay := rcRelay(t, b.addr)
	// The top of every jitter window: 50, 100, 200ms between attempts,
	// so the test re-opens the relay well before attempt 3 dials.
	tt := rcStartTether(t, relay.Addr(), proxy.Options{Jitter: rcTopJitter}, func(c *proxy.Config) {
		c.Session.NotifyClient = true
		c.Session.Reconnect.InitialDelay = 50 * time.Millisecond
		c.Session.Reconnect.MaxDelay = 400 * time.Millisecond
	})
	c := dial(t, tt.URL, nil)
	rcSend(t, c, "a")
	rcExpect(t, c, "a")
	rcAcked(t, tt)
	relay.ResetAll()
	rcExpect(t, c, rcReconnecting(1), rcConnected)
	relay.Refuse(true)
	relay.ResetAll()
	rcExpect(t, c, rcReconnecting(1), rcReconnecting(2), rcReconnecting(3))
	relay.Refuse(false)
	rcExpect(t, c, rcConnected)
	rcSend(t, c, "b")
	rcExpect(t, c, "b")
}

// Several upstream URLs: when the first one's backend dies, the reconnect
// rotates to the second (its first attempt already), replaying the
// original request.
func TestRcRotation(t *testing.T) {
	t.Parallel()
	first := rcNewBackend(t, nil)
	second := rcNewBackend(t, nil)
	relay := rcRelay(t, first.addr)
	tt := rcStartTether(t, relay.Addr()+","+second.addr, proxy.Options{}, nil)
	c := dial(t, tt.URL+"/room/7?x=1", http.Header{"X-Token": {"secret"}})
	rcSend(t, c, "a")
	rcExpect(t, c, "a")
	rcAcked(t, tt)
	relay.Refuse(true)
	base := relay.Accepted()
	relay.ResetAll()
	second.waitHandshake(1)
	rcSend(t, c, "b")
	rcExpect(t, c, "b")
	if got := first.handshakes(); got != 1 {
		t.Fatalf("first backend: %d handshakes, want 1", got)
	}
	// The URL whose connection was lost is not dialled first again: the
	// first attempt goes to the next URL in rotation.
	if got := relay.Accepted() - base; got != 0 {
		t.Fatalf("%d dials to the URL that had just failed, want 0", got)
	}
	r := second.request(1)
	if r.URL.Path != "/room/7" || r.URL.RawQuery != "x=1" || r.Header.Get("X-Token") != "secret" {
		t.Fatalf("reconnect request %s ? %s, X-Token %q; want the original /room/7?x=1 with its headers", r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Token"))
	}
}

// A client that closes while tether is reconnecting (relay refusing,
// long backoff) ends the session at once: no dial after the close, and no
// goroutine left behind. Not parallel: leakcheck.Check counts every
// goroutine of the process.
func TestRcCloseDuringReconnect(t *testing.T) {
	leakcheck.Check(t)
	b := rcNewBackend(t, nil)
	relay := rcRelay(t, b.addr)
	tt := rcStartTether(t, relay.Addr(), proxy.Options{Jitter: rcTopJitter}, func(c *proxy.Config) {
		c.Session.NotifyClient = true
		c.Session.Reconnect.InitialDelay = 100 * time.Millisecond
		c.Session.Reconnect.MaxDelay = 400 * time.Millisecond
		c.Session.Reconnect.MaxAttempts = 0
	})
	c := dial(t, tt.URL, nil)
	rcSend(t, c, "a")
	rcExpect(t, c, "a")
	relay.Refuse(true)
	base := relay.Accepted()
	relay.ResetAll()
	// Attempt 1 dials at 100ms and is refused; attempt 2 would dial 200ms
	// after its notice.
	rcExpect(t, c, rcReconnecting(1), rcReconnecting(2))
	if got := relay.Accepted() - base; got != 1 {
		t.Fatalf("%d dials before the close, want 1", got)
	}
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	rcExpectClose(t, c, 1000, "bye")
	deadline := time.Now().Add(5 * time.Second)
	for tt.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("session still registered 5s after the client closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if stacks := rcStacks("session.(*Session).reconnectLoop"); stacks != "" {
		t.Fatalf("reconnect loop still running after the session ended:\n%s", stacks)
	}
	time.Sleep(time.Second) // several backoff windows: must NOT dial
	if got := relay.Accepted() - base; got != 1 {
		t.Fatalf("%d dials, want 1 (none after the close)", got)
	}
}

// rcStacks returns the stacks of goroutines whose stack mentions fn.
func rcStacks(fn string) string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// Loss reports that race each other (a heartbeat timeout against a reset,
// an upstream Close 1001 against a reset or a FIN, write failures from the
// client's stream) start one reconnect: the backend, whose handshakes are
// slow, never sees two of this session's handshakes at once, and each
// outage costs exactly one handshake.
func TestRcSingleLoopSockets(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var cur *websocket.Conn
	b := rcNewBackend(t, func(b *rcBackend) {
		b.hsDelay = 30 * time.Millisecond
		b.handle = func(c *websocket.Conn, _ int) {
			mu.Lock()
			cur = c
			mu.Unlock()
			echo(c, nil)
		}
	})
	relay := rcRelay(t, b.addr)
	tt := rcStartTether(t, relay.Addr(), proxy.Options{}, func(c *proxy.Config) {
		c.Session.UpstreamHeartbeat.Interval = 40 * time.Millisecond
		c.Session.UpstreamHeartbeat.Timeout = 400 * time.Millisecond
		c.Session.Reconnect.InitialDelay = time.Millisecond
		c.Session.Reconnect.MaxDelay = 5 * time.Millisecond
		c.Session.Reconnect.MaxAttempts = 0
	})
	c := dial(t, tt.URL, nil)
	rcSend(t, c, "start")
	rcExpect(t, c, "start")
	const rounds = 9
	for i := range rounds {
		rcAcked(t, tt) // nothing older than this round can be re-sent
		before := b.handshakes()
		mu.Lock()
		up := cur
		mu.Unlock()
		var wg sync.WaitGroup
		switch i % 3 {
		case 0: // heartbeat timeout and reset at the same moment
			relay.Stall()
			time.Sleep(400 * time.Millisecond)
			wg.Go(relay.ResetAll)
		case 1: // Close 1001 and reset
			wg.Go(func() {
				_ = up.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1001, "restart"), time.Now().Add(time.Second))
			})
			wg.Go(relay.ResetAll)
		case 2: // Close 1001 and FIN
			wg.Go(func() {
				_ = up.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1001, "restart"), time.Now().Add(time.Second))
			})
			wg.Go(relay.CloseAll)
		}
		prefix := "r" + strconv.Itoa(i) + "-"
		wg.Go(func() {
			for k := range 20 {
				_ = c.WriteMessage(websocket.TextMessage, []byte(prefix+strconv.Itoa(k)))
			}
		})
		wg.Wait()
		relay.Resume()
		// Everything sent is delivered and echoed, the old connection's
		// echoes and re-sent duplicates aside.
		seen := make(map[string]bool)
		for len(seen) < 20 {
			_, p, err := rcNext(t, c)
			if err != nil {
				t.Fatalf("round %d: %v after %d of 20 echoes", i, err, len(seen))
			}
			if strings.HasPrefix(p, prefix) {
				seen[p] = true
			}
		}
		// The echoes may all have come from the old connection before
		// the fault reached tether: wait for the reconnect, then prove
		// the new connection carries traffic, then count.
		b.waitHandshake(before + 1)
		marker := prefix + "marker"
		rcSend(t, c, marker)
		for {
			_, p, err := rcNext(t, c)
			if err != nil {
				t.Fatalf("round %d: %v waiting for the marker", i, err)
			}
			if p == marker {
				break
			}
		}
		// Usually one handshake; two when the second fault of the pair
		// lands on the replacement connection (a second, separate
		// outage). Two loops at once would show as two handshakes in
		// flight together, which maxInflight below rules out.
		if got := b.handshakes() - before; got < 1 || got > 2 {
			t.Fatalf("round %d: %d handshakes for one fault pair, want 1 (or 2 for two outages)", i, got)
		}
	}
	b.mu.Lock()
	maxIn := b.maxInflight
	b.mu.Unlock()
	if maxIn != 1 {
		t.Fatalf("%d handshakes of one session in flight at once, want 1", maxIn)
	}
}

// tether_upstream_reconnects_total by result, tether_buffered_messages
// (retained and buffered) and tether_resent_messages_total over one
// outage with two refused attempts.
func TestRcMetrics(t *testing.T) {
	t.Parallel()
	rr := rcNewRecorder()
	b := rcNewBackend(t, func(b *rcBackend) {
		b.handle = func(c *websocket.Conn, n int) {
			if n == 1 {
				// Pings unanswered: nothing is acknowledged.
				c.SetPingHandler(func(string) error { return nil })
			}
			rr.handle(c, n)
		}
	})
	relay := rcRelay(t, b.addr)
	tt := rcStartTether(t, relay.Addr(), proxy.Options{Jitter: rcTopJitter}, func(c *proxy.Config) {
		c.Session.NotifyClient = true
		c.Session.UpstreamHeartbeat.Timeout = time.Minute // unanswered pings are not fatal
		// 50, 100, 200ms: the relay re-opens well before attempt 3.
		c.Session.Reconnect.InitialDelay = 50 * time.Millisecond
		c.Session.Reconnect.MaxDelay = 400 * time.Millisecond
	})
	c := dial(t, tt.URL, nil)
	rcSend(t, c, "m1", "m2", "m3")
	rr.waitConn(t, 1, 3)
	rcWaitMetric(t, tt, 3, "tether_buffered_messages") // retained
	relay.Refuse(true)
	relay.ResetAll()
	rcExpect(t, c, rcReconnecting(1))
	rcSend(t, c, "m4", "m5")
	rcWaitMetric(t, tt, 5, "tether_buffered_messages") // 3 retained, 2 buffered
	rcExpect(t, c, rcReconnecting(2), rcReconnecting(3))
	relay.Refuse(false)
	rcExpect(t, c, rcConnected)
	if got := rr.waitConn(t, 2, 5); !slices.Equal(got, []string{"m1", "m2", "m3", "m4", "m5"}) {
		t.Fatalf("new connection got %q", got)
	}
	rcWaitMetric(t, tt, 0, "tether_buffered_messages") // acknowledged by the new connection
	for _, m := range []struct {
		want   float64
		name   string
		labels []string
	}{
		{2, "tether_upstream_reconnects_total", []string{"result=failure"}},
		{1, "tether_upstream_reconnects_total", []string{"result=success"}},
		{3, "tether_resent_messages_total", nil},
		{0, "tether_buffer_overflows_total", nil},
	} {
		if got := rcMetric(t, tt, m.name, m.labels...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
}

// With the upstream heartbeat off nothing is retained (no acknowledgement is
// possible): only messages sent while disconnected are buffered, and they are
// delivered to the new connection in order (README "Upstream loss, reconnect
// and the delivery guarantee"'s trade-off).
func TestRcHeartbeatOff(t *testing.T) {
	t.Parallel()
	rr := rcNewRecorder()
	rr.reply = func(msg string, _ int) string { return "echo " + msg }
	b := rcNewBackend(t, func(b *rcBackend) { b.handle = rr.handle })
	relay := rcRelay(t, b.addr)
	tt := rcStartTether(t, relay.Addr(), proxy.Options{Jitter: rcTopJitter}, func(c *proxy.Config) {
		c.Session.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeOff, Interval: time.Second}
		c.Session.NotifyClient = true
		c.Session.Reconnect.InitialDelay = 50 * time.Millisecond
		c.Session.Reconnect.MaxDelay = 400 * time.Millisecond
	})
	c := dial(t, tt.URL, nil)
	rcSend(t, c, "a")
	rcExpect(t, c, "echo a")
	if got := rcMetric(t, tt, "tether_buffered_messages"); got != 0 {
		t.Fatalf("%v messages held while connected with the heartbeat off, want 0", got)
	}
	relay.Refuse(true)
	relay.ResetAll()
	rcExpect(t, c, rcReconnecting(1))
	rcSend(t, c, "x", "y")
	rcWaitMetric(t, tt, 2, "tether_buffered_messages")
	rcExpect(t, c, rcReconnecting(2))
	relay.Refuse(false)
	rcExpect(t, c, rcConnected, "echo x", "echo y")
	if got := rr.conn(2); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("new connection got %q, want [x y] (a was sent, not held)", got)
	}
	rcWaitMetric(t, tt, 0, "tether_buffered_messages")
}
