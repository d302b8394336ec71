package session

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/replay"
)

// The tests in this file drive the reconnect state machine of
// reconnect.go inside synctest bubbles: both legs are net.Pipe
// connections whose far ends are played by rcPeer, and the upstream is
// re-dialled through a fake DialFunc, so time (backoff, heartbeats) is
// fake and every interleaving the test sets up is exact.

// rcMetrics is a Metrics that counts what the session reports.
type rcMetrics struct {
	up, down             atomic.Int64
	reconnOK, reconnFail atomic.Int64
	buffered             atomic.Int64
	overflows, resent    atomic.Int64
	timeouts             atomic.Int64
}

func (m *rcMetrics) Message(toUpstream bool, _ int) {
	if toUpstream {
		m.up.Add(1)
	} else {
		m.down.Add(1)
	}
}
func (m *rcMetrics) PingSent(string)           {}
func (m *rcMetrics) PongReceived(string)       {}
func (m *rcMetrics) RTT(string, time.Duration) {}
func (m *rcMetrics) HeartbeatTimeout(string)   { m.timeouts.Add(1) }
func (m *rcMetrics) Reconnect(ok bool) {
	if ok {
		m.reconnOK.Add(1)
	} else {
		m.reconnFail.Add(1)
	}
}
func (m *rcMetrics) Buffered(d int) { m.buffered.Add(int64(d)) }
func (m *rcMetrics) Overflow()      { m.overflows.Add(1) }
func (m *rcMetrics) Resent(n int)   { m.resent.Add(int64(n)) }

// rcConfig is a valid config with both heartbeats off, a 100ms..1s backoff, no
// dial rate limit and the default buffer limits (README "Configuration").
func rcConfig() Config {
	return Config{
		MaxMessageBytes:   1 << 20,
		WriteTimeout:      10 * time.Second,
		ClientHeartbeat:   heartbeat.Config{Mode: heartbeat.ModeOff, Interval: 15 * time.Second},
		UpstreamHeartbeat: heartbeat.Config{Mode: heartbeat.ModeOff, Interval: 15 * time.Second},
		PingMessage:       `{"type":"ping"}`,
		PongMessage:       `{"type":"pong"}`,
		Reconnect: ReconnectConfig{
			InitialDelay: 100 * time.Millisecond,
			MaxDelay:     time.Second,
			MaxAttempts:  20,
			OnCodes:      CloseCodes{1001, 1006, 1011, 1012, 1013, 1014},
		},
		Buffer: BufferConfig{MaxMessages: 1024, MaxBytes: 4 << 20, TotalMaxBytes: 256 << 20},
		Replay: replay.Defaults(),
	}
}

// rcEnv builds an Env for cfg; jitter may be nil (math/rand).
func rcEnv(t *testing.T, cfg Config, jitter func(int64) int64) (*Env, *rcMetrics) {
	t.Helper()
	m := &rcMetrics{}
	var log *slog.Logger
	if os.Getenv("TETHER_TEST_LOG") == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	env, err := NewEnv(cfg, log, m)
	if err != nil {
		t.Fatal(err)
	}
	env.Jitter = jitter
	return env, m
}

// rcFrame is a data or Close frame a peer received.
type rcFrame struct {
	op   ws.OpCode
	p    string
	code CloseCode // Close frames; 0 when the Close had no code
}

// rcPeer plays the far end of one leg over a net.Pipe: the client
// (masked frames) or the upstream. Its read loop answers pings when pong is
// set and echoes a Close it did not start.
type rcPeer struct {
	t       *testing.T
	conn    net.Conn
	client  bool
	pong    atomic.Bool
	msgs    chan rcFrame  // data and Close frames in arrival order; closed at EOF
	pings   chan []byte   // ping payloads received (dropped when full)
	wlock   chan struct{} // 1-slot write lock (durably blocking under synctest)
	closed  atomic.Bool   // a Close was sent
	started atomic.Bool   // read loop started
	done    chan struct{} // read loop returned
}

func rcNewPeer(t *testing.T, conn net.Conn, client bool) *rcPeer {
	return &rcPeer{
		t:      t,
		conn:   conn,
		client: client,
		msgs:   make(chan rcFrame, 4096),
		pings:  make(chan []byte, 64),
		wlock:  make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

// start starts the read loop, once.
func (p *rcPeer) start() {
	if p.started.CompareAndSwap(false, true) {
		go p.readLoop()
	}
}

func (p *rcPeer) readLoop() {
	defer close(p.done)
	defer close(p.msgs)
	for {
		h, err := ws.ReadHeader(p.conn)
		if err != nil {
			return
		}
		b := make([]byte, h.Length)
		if _, err := io.ReadFull(p.conn, b); err != nil {
			return
		}
		if h.Masked {
			ws.Cipher(b, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			select {
			case p.pings <- b:
			default:
			}
			if p.pong.Load() {
				_ = p.send(ws.OpPong, b)
			}
		case ws.OpPong:
		case ws.OpClose:
			f := rcFrame{op: ws.OpClose}
			if len(b) >= 2 {
				f.code = CloseCode(binary.BigEndian.Uint16(b))
				f.p = string(b[2:])
			}
			if p.closed.CompareAndSwap(false, true) {
				_ = p.send(ws.OpClose, b)
			}
			p.msgs <- f
		default:
			p.msgs <- rcFrame{op: h.OpCode, p: string(b)}
		}
	}
}

// send writes one frame in a single Write.
func (p *rcPeer) send(op ws.OpCode, b []byte) error {
	f := ws.NewFrame(op, true, append([]byte(nil), b...))
	if p.client {
		f = ws.MaskFrameInPlace(f)
	}
	var buf bytes.Buffer
	if err := ws.WriteFrame(&buf, f); err != nil {
		return err
	}
	p.wlock <- struct{}{}
	defer func() { <-p.wlock }()
	_, err := p.conn.Write(buf.Bytes())
	return err
}

// text sends a text message and fails the test if it cannot.
func (p *rcPeer) text(s string) {
	p.t.Helper()
	if err := p.send(ws.OpText, []byte(s)); err != nil {
		p.t.Fatalf("send %q: %v", s, err)
	}
}

// close sends a Close frame with code and reason.
func (p *rcPeer) close(code CloseCode, reason string) {
	p.t.Helper()
	p.closed.Store(true)
	if err := p.send(ws.OpClose, closePayload(CloseError{Code: code, Reason: reason})); err != nil {
		p.t.Fatalf("send Close %d: %v", code, err)
	}
}

// next returns the next data or Close frame; it fails the test at EOF or
// after a (fake) minute.
func (p *rcPeer) next() rcFrame {
	p.t.Helper()
	select {
	case f, ok := <-p.msgs:
		if !ok {
			p.t.Fatal("connection closed, want a frame")
		}
		return f
	case <-time.After(time.Minute):
		p.t.Fatal("no frame within a minute")
	}
	return rcFrame{}
}

// expect reads the next frames and checks they are the text messages want.
func (p *rcPeer) expect(want ...string) {
	p.t.Helper()
	for _, w := range want {
		f := p.next()
		if f.op != ws.OpText || f.p != w {
			p.t.Fatalf("got %v %q (code %d), want text %q", f.op, f.p, f.code, w)
		}
	}
}

// expectClose reads the next frame and checks it is a Close with code.
func (p *rcPeer) expectClose(code CloseCode) rcFrame {
	p.t.Helper()
	f := p.next()
	if f.op != ws.OpClose || f.code != code {
		p.t.Fatalf("got %v %q (code %d), want Close %d", f.op, f.p, f.code, code)
	}
	return f
}

// expectNothing checks that no frame arrived and the connection is open,
// once every goroutine of the bubble is idle.
func (p *rcPeer) expectNothing() {
	p.t.Helper()
	synctest.Wait()
	select {
	case f, ok := <-p.msgs:
		if !ok {
			p.t.Fatal("connection closed, want it open")
		}
		p.t.Fatalf("got %v %q (code %d), want nothing", f.op, f.p, f.code)
	default:
	}
}

// expectEOF checks that the connection ends without any further frame.
func (p *rcPeer) expectEOF() {
	p.t.Helper()
	select {
	case f, ok := <-p.msgs:
		if ok {
			p.t.Fatalf("got %v %q (code %d), want EOF", f.op, f.p, f.code)
		}
	case <-time.After(time.Minute):
		p.t.Fatal("connection still open after a minute")
	}
}

// rcHarness runs one Session between a client peer and a sequence of
// upstream peers, with a fake dialer that records when it is called.
type rcHarness struct {
	t      *testing.T
	env    *Env
	m      *rcMetrics
	s      *Session
	client *rcPeer
	ups    chan *rcPeer // peers of upstream connections in dial order, the first included
	done   chan struct{}

	mu     sync.Mutex
	dialAt []time.Time
	peers  []*rcPeer
	// dialFn, when set, replaces the default dial (a new started pipe
	// upstream); n counts dials from 1.
	dialFn func(ctx context.Context, n int) (Upstream, error)
}

// rcStart starts a session over env. setup, if not nil, runs before the
// session starts (to set dialFn).
func rcStart(t *testing.T, env *Env, m *rcMetrics, setup func(h *rcHarness)) *rcHarness {
	t.Helper()
	h := &rcHarness{t: t, env: env, m: m, ups: make(chan *rcPeer, 64), done: make(chan struct{})}
	if setup != nil {
		setup(h)
	}
	cc, ct := net.Pipe()
	h.client = h.track(rcNewPeer(t, ct, true))
	h.client.start()
	up, _ := h.upstream(true)
	h.s = New(env, "rc", cc, nil, up, h.dial)
	go func() {
		defer close(h.done)
		h.s.Run(context.Background())
	}()
	t.Cleanup(h.cleanup)
	return h
}

func (h *rcHarness) track(p *rcPeer) *rcPeer {
	h.mu.Lock()
	h.peers = append(h.peers, p)
	h.mu.Unlock()
	return p
}

// upstream makes a pipe upstream connection whose peer answers pings;
// its read loop starts now if start is set, else when the test calls
// start (so that tether's writes to it block until then).
func (h *rcHarness) upstream(start bool) (Upstream, *rcPeer) {
	tc, pc := net.Pipe()
	p := h.track(rcNewPeer(h.t, pc, false))
	p.pong.Store(true)
	if start {
		p.start()
	}
	h.ups <- p
	return Upstream{Conn: tc, Host: "pipe"}, p
}

func (h *rcHarness) dial(ctx context.Context) (Upstream, error) {
	h.mu.Lock()
	h.dialAt = append(h.dialAt, time.Now())
	n := len(h.dialAt)
	fn := h.dialFn
	h.mu.Unlock()
	if fn != nil {
		return fn(ctx, n)
	}
	up, _ := h.upstream(true)
	return up, nil
}

// dials returns the times of the dials so far.
func (h *rcHarness) dials() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.dialAt...)
}

// nextUp returns the peer of the next upstream connection.
func (h *rcHarness) nextUp() *rcPeer {
	h.t.Helper()
	select {
	case p := <-h.ups:
		return p
	case <-time.After(time.Hour):
		h.t.Fatal("no upstream connection within an hour")
	}
	return nil
}

// waitDone waits for Run to return.
func (h *rcHarness) waitDone() {
	h.t.Helper()
	select {
	case <-h.done:
	case <-time.After(time.Hour):
		h.t.Fatal("session still running after an hour")
	}
}

func (h *rcHarness) cleanup() {
	h.mu.Lock()
	peers := h.peers
	h.mu.Unlock()
	_ = h.client.conn.Close() // client gone: the session ends
	select {
	case <-h.done:
	case <-time.After(time.Hour):
		h.t.Error("session still running an hour after its client left")
		for _, p := range peers {
			_ = p.conn.Close()
		}
		<-h.done
	}
	for _, p := range peers {
		_ = p.conn.Close()
	}
	for _, p := range peers {
		p.start() // a peer never started still has a loop to end
		<-p.done
	}
}

// current returns the session's current upstream leg (nil while
// reconnecting).
func (h *rcHarness) current() *leg {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return h.s.up
}

func rcFail(context.Context, int) (Upstream, error) {
	return Upstream{}, errors.New("connection refused")
}

// An upstream Close whose code is not in RECONNECT_ON_CODES, and every way
// the client ends the session, end it without a reconnect, however long
// one waits; a reconnect code does reconnect (control).
func TestRcIntentionalCloseNoReconnect(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		noAbn   bool // 1006 removed from RECONNECT_ON_CODES
		act     func(h *rcHarness, up *rcPeer)
		client  CloseCode // what the client gets; 0: nothing
		upClose CloseCode // what the upstream gets; 0: nothing
		dials   int
	}{
		{name: "upstream 1000", act: func(_ *rcHarness, up *rcPeer) { up.close(CloseNormal, "bye") }, client: CloseNormal},
		{name: "upstream 4000", act: func(_ *rcHarness, up *rcPeer) { up.close(4000, "app") }, client: 4000},
		{name: "upstream 1008", act: func(_ *rcHarness, up *rcPeer) { up.close(ClosePolicyViolation, "no") }, client: ClosePolicyViolation},
		{name: "client close", act: func(h *rcHarness, _ *rcPeer) { h.client.close(CloseNormal, "done") }, upClose: CloseNormal},
		{name: "client gone", act: func(h *rcHarness, _ *rcPeer) { _ = h.client.conn.Close() }, upClose: CloseGoingAway},
		{name: "reset without 1006 in codes", noAbn: true, act: func(_ *rcHarness, up *rcPeer) { _ = up.conn.Close() }, client: CloseBadGateway},
		{name: "control: upstream 1001", act: func(_ *rcHarness, up *rcPeer) { up.close(CloseGoingAway, "restart") }, dials: 1},
		{name: "control: reset", act: func(_ *rcHarness, up *rcPeer) { _ = up.conn.Close() }, dials: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				cfg := rcConfig()
				if tc.noAbn {
					cfg.Reconnect.OnCodes = CloseCodes{1001, 1011, 1012, 1013, 1014}
				}
				env, _ := rcEnv(t, cfg, nil)
				h := rcStart(t, env, nil, nil)
				up := h.nextUp()
				tc.act(h, up)
				if tc.client != 0 {
					h.client.expectClose(tc.client)
				}
				if tc.upClose != 0 {
					up.expectClose(tc.upClose)
				}
				time.Sleep(time.Hour)
				if got := len(h.dials()); got != tc.dials {
					t.Fatalf("%d dials, want %d", got, tc.dials)
				}
				if tc.dials == 0 {
					h.waitDone()
				} else {
					h.nextUp().expectNothing()
				}
			})
		})
	}
}

// A client that leaves while a reconnect is under way cancels it: no dial
// happens after the close, a dial in flight is cancelled, and a
// connection that completes anyway is closed unused.
func TestRcNoDialAfterClose(t *testing.T) {
	t.Parallel()
	t.Run("during backoff", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			cfg := rcConfig()
			cfg.Reconnect.InitialDelay = time.Second
			env, _ := rcEnv(t, cfg, func(n int64) int64 { return n - 1 })
			h := rcStart(t, env, nil, func(h *rcHarness) { h.dialFn = rcFail })
			_ = h.nextUp().conn.Close()
			time.Sleep(500 * time.Millisecond) // half the first backoff
			h.client.close(CloseNormal, "bye")
			h.client.expectClose(CloseNormal)
			h.waitDone()
			time.Sleep(time.Hour)
			if got := len(h.dials()); got != 0 {
				t.Fatalf("%d dials after the client closed during the backoff, want 0", got)
			}
		})
	})
	t.Run("during dial", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			env, _ := rcEnv(t, rcConfig(), func(int64) int64 { return 0 })
			cancelled := make(chan struct{})
			h := rcStart(t, env, nil, func(h *rcHarness) {
				h.dialFn = func(ctx context.Context, _ int) (Upstream, error) {
					<-ctx.Done()
					close(cancelled)
					return Upstream{}, ctx.Err()
				}
			})
			_ = h.nextUp().conn.Close()
			synctest.Wait() // the dial is in flight
			if got := len(h.dials()); got != 1 {
				t.Fatalf("%d dials in flight, want 1", got)
			}
			_ = h.client.conn.Close() // client leg dies
			select {
			case <-cancelled:
			case <-time.After(time.Minute):
				t.Fatal("the dial in flight was not cancelled")
			}
			h.waitDone()
			time.Sleep(time.Hour)
			if got := len(h.dials()); got != 1 {
				t.Fatalf("%d dials, want 1", got)
			}
		})
	})
	t.Run("dial completes after close", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			env, _ := rcEnv(t, rcConfig(), func(int64) int64 { return 0 })
			release := make(chan struct{})
			var late *rcPeer
			h := rcStart(t, env, nil, func(h *rcHarness) {
				h.dialFn = func(context.Context, int) (Upstream, error) {
					<-release // ignores ctx, like a dial that just completed
					up, p := h.upstream(true)
					late = p
					return up, nil
				}
			})
			h.nextUp()
			h.client.text("m0")
			first := h.current()
			_ = first.conn.Close()
			synctest.Wait()
			h.client.close(CloseNormal, "bye")
			h.client.expectClose(CloseNormal)
			close(release)
			h.waitDone()
			<-h.ups
			late.expectEOF()
			time.Sleep(time.Hour)
			if got := len(h.dials()); got != 1 {
				t.Fatalf("%d dials, want 1", got)
			}
		})
	})
}

// Every report of a loss (many at once, stale ones, and losses of the new
// connection while the reconnect re-sends on it) leads to exactly one
// dial at a time per session.
func TestRcSingleLoop(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := rcConfig()
		// Heartbeat on with a long interval: messages stay retained, so
		// every resume has something to re-send (json mode: no
		// acknowledgement pings either).
		cfg.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeJSON, Interval: time.Hour, Timeout: 3 * time.Hour}
		env, m := rcEnv(t, cfg, func(n int64) int64 { return n / 2 })
		var inFlight, maxInFlight atomic.Int32
		type dialReq struct {
			n       int
			proceed chan bool // true: connect, false: fail
		}
		reqs := make(chan dialReq, 16)
		h := rcStart(t, env, m, func(h *rcHarness) {
			h.dialFn = func(ctx context.Context, n int) (Upstream, error) {
				if v := inFlight.Add(1); v > maxInFlight.Load() {
					maxInFlight.Store(v)
				}
				defer inFlight.Add(-1)
				r := dialReq{n: n, proceed: make(chan bool)}
				reqs <- r
				select {
				case ok := <-r.proceed:
					if !ok {
						return Upstream{}, errors.New("refused")
					}
				case <-ctx.Done():
					return Upstream{}, ctx.Err()
				}
				up, _ := h.upstream(false) // read only when the test says
				return up, nil
			}
		})
		up := h.nextUp()
		up.start()
		seq := 0
		send := func(k int) {
			for range k {
				h.client.text(strconv.Itoa(seq))
				seq++
			}
		}
		// storm reports the loss of l from many goroutines at once, with
		// the client sending meanwhile (its writes fail on the dead leg).
		storm := func(l *leg, closeConn net.Conn) {
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() { h.s.upstreamLost(l, Outcome{Cause: CauseConnectionLost, Leg: LegUpstream}) })
			}
			wg.Go(func() { _ = closeConn.Close() })
			wg.Go(func() { send(3) })
			wg.Wait()
		}
		take := func() dialReq {
			t.Helper()
			select {
			case r := <-reqs:
				return r
			case <-time.After(time.Hour):
				t.Fatal("no dial")
			}
			return dialReq{}
		}
		noDial := func() {
			t.Helper()
			time.Sleep(10 * time.Second) // past every backoff
			select {
			case r := <-reqs:
				t.Fatalf("unexpected dial %d", r.n)
			default:
			}
		}
		send(3)
		for round := range 5 {
			l := h.current()
			storm(l, up.conn)
			r := take()
			noDial()
			if round%2 == 1 {
				// A failed attempt, then the next one succeeds.
				r.proceed <- false
				r = take()
				noDial()
			}
			r.proceed <- true
			up = h.nextUp()
			synctest.Wait() // resume is blocked re-sending on the new connection
			newLeg := h.current()
			if newLeg == nil || newLeg == l {
				t.Fatal("the new connection is not installed")
			}
			// The new connection dies while the reconnect re-sends on it
			// (its peer does not read yet), reported many times over.
			storm(newLeg, up.conn)
			up.start()
			r = take()
			noDial()
			// Stale reports about the older connection change nothing.
			for range 10 {
				h.s.upstreamLost(l, Outcome{Cause: CauseConnectionLost, Leg: LegUpstream})
			}
			r.proceed <- true
			up = h.nextUp()
			up.start()
			synctest.Wait()
			noDial()
			// Stale reports after the reconnect completed start nothing.
			for range 10 {
				h.s.upstreamLost(l, Outcome{Cause: CauseConnectionLost, Leg: LegUpstream})
				h.s.upstreamLost(newLeg, Outcome{Cause: CauseConnectionLost, Leg: LegUpstream})
			}
			noDial()
		}
		if got := maxInFlight.Load(); got != 1 {
			t.Fatalf("%d dials in flight at once, want 1", got)
		}
		// Everything the client sent reached the last connection, in
		// order (nothing was acknowledged, so all of it is re-sent).
		want := make([]string, seq)
		for i := range want {
			want[i] = strconv.Itoa(i)
		}
		up.expect(want...)
		up.expectNothing()
	})
}

// "Provably received" (README "Upstream loss, reconnect and the delivery
// guarantee"): a message is acknowledged only by a heartbeat round trip that
// started after it was sent; acknowledged messages are never sent again, the
// others are re-sent in order.
func TestRcAcknowledgement(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := rcConfig()
		cfg.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: time.Second, Timeout: time.Hour}
		env, m := rcEnv(t, cfg, func(int64) int64 { return 0 })
		h := rcStart(t, env, m, nil)
		up := h.nextUp()
		up.pong.Store(false) // the test answers pings itself
		h.client.text("a")
		h.client.text("b")
		up.expect("a", "b")
		// The pings sent with and after a and b, answered at once,
		// acknowledge both.
		var ping []byte
		for m.buffered.Load() != 0 {
			select {
			case ping = <-up.pings:
			case <-time.After(2 * time.Second):
				t.Fatalf("%d messages retained and no ping", m.buffered.Load())
			}
			if err := up.send(ws.OpPong, ping); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		h.client.text("c")
		up.expect("c")
		// t=2s: ping 2, after c; c is acknowledged only by its pong.
		select {
		case ping = <-up.pings:
		case <-time.After(2 * time.Second):
			t.Fatal("no ping")
		}
		h.client.text("d") // sent after ping 2 started
		up.expect("d")
		if err := up.send(ws.OpPong, ping); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := m.buffered.Load(); got != 1 {
			t.Fatalf("%d messages retained, want 1 (d)", got)
		}
		_ = up.conn.Close()
		up = h.nextUp()
		up.expect("d") // a, b, c acknowledged: never sent again
		up.expectNothing()
		if got := m.resent.Load(); got != 1 {
			t.Fatalf("resent = %d, want 1", got)
		}
		// The new connection's pongs acknowledge d.
		time.Sleep(1500 * time.Millisecond)
		if got := m.buffered.Load(); got != 0 {
			t.Fatalf("%d messages retained after a pong on the new connection, want 0", got)
		}
		h.client.text("e")
		up.expect("e")
	})
}

// TETHER_REPLAY_FIRST: the opening is sent first on every new connection,
// once, and a message of the opening that the client sends while the
// reconnect is re-sending is not lost.
func TestRcReplayFirst(t *testing.T) {
	t.Parallel()
	for _, mode := range []heartbeat.Mode{heartbeat.ModeOff, heartbeat.ModeWS} {
		t.Run("heartbeat "+mode.String(), func(t *testing.T) {
			t.Parallel()
			t.Run("opening completed during resume", func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					cfg := rcConfig()
					cfg.ReplayFirst = 2
					cfg.UpstreamHeartbeat = heartbeat.Config{Mode: mode, Interval: time.Hour, Timeout: 3 * time.Hour}
					env, m := rcEnv(t, cfg, func(int64) int64 { return 0 })
					h := rcStart(t, env, m, func(h *rcHarness) {
						h.dialFn = func(context.Context, int) (Upstream, error) {
							up, _ := h.upstream(false)
							return up, nil
						}
					})
					up := h.nextUp()
					h.client.text("auth")
					up.expect("auth")
					_ = up.conn.Close()
					up = h.nextUp()
					synctest.Wait() // the replay of auth is being written: up does not read yet
					h.client.text("subscribe")
					synctest.Wait()
					up.start()
					up.expect("auth", "subscribe")
					h.client.text("m")
					up.expect("m")
					up.expectNothing()
				})
			})
			t.Run("opening sent while reconnecting", func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					cfg := rcConfig()
					cfg.ReplayFirst = 1
					cfg.Reconnect.InitialDelay = time.Second
					cfg.UpstreamHeartbeat = heartbeat.Config{Mode: mode, Interval: 100 * time.Millisecond, Timeout: time.Hour}
					env, m := rcEnv(t, cfg, func(n int64) int64 { return n - 1 })
					h := rcStart(t, env, m, nil)
					_ = h.nextUp().conn.Close()
					synctest.Wait() // reconnecting, first attempt in 1s
					h.client.text("auth")
					h.client.text("a")
					up := h.nextUp()
					up.expect("auth", "a")
					h.client.text("b")
					up.expect("b")
					time.Sleep(time.Second) // heartbeats acknowledge everything
					if got := m.buffered.Load(); got != 0 {
						t.Fatalf("%d messages held on a connected session after acknowledgements, want 0", got)
					}
					_ = up.conn.Close()
					up = h.nextUp()
					// Only the opening: a and b were delivered.
					up.expect("auth")
					h.client.text("c")
					up.expect("c")
					up.expectNothing()
				})
			})
		})
	}
}

// Buffer overflow while reconnecting closes the client with 1013, per
// session and for the process-wide byte limit; the other session is
// untouched.
func TestRcOverflow(t *testing.T) {
	t.Parallel()
	t.Run("per session", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			cfg := rcConfig()
			cfg.Buffer.MaxMessages = 3
			env, m := rcEnv(t, cfg, nil)
			h := rcStart(t, env, m, func(h *rcHarness) { h.dialFn = rcFail })
			_ = h.nextUp().conn.Close()
			synctest.Wait()
			for i := range 3 {
				h.client.text(strconv.Itoa(i))
			}
			h.client.expectNothing()
			h.client.text("3")
			h.client.expectClose(CloseTryAgainLater)
			h.waitDone()
			if got := m.overflows.Load(); got != 1 {
				t.Fatalf("overflows = %d, want 1", got)
			}
			if got, b := m.buffered.Load(), env.BufferedBytes(); got != 0 || b != 0 {
				t.Fatalf("after the session: %d messages, %d bytes held, want 0", got, b)
			}
		})
	})
	t.Run("process-wide bytes", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			cfg := rcConfig()
			cfg.Buffer.MaxBytes = 100
			cfg.Buffer.TotalMaxBytes = 100
			env, m := rcEnv(t, cfg, nil)
			a := rcStart(t, env, m, func(h *rcHarness) { h.dialFn = rcFail })
			b := rcStart(t, env, m, func(h *rcHarness) { h.dialFn = rcFail })
			_ = a.nextUp().conn.Close()
			_ = b.nextUp().conn.Close()
			synctest.Wait()
			a.client.text(string(bytes.Repeat([]byte("a"), 60)))
			synctest.Wait()
			b.client.text(string(bytes.Repeat([]byte("b"), 30)))
			b.client.expectNothing()
			b.client.text(string(bytes.Repeat([]byte("b"), 30))) // 120 > 100
			b.client.expectClose(CloseTryAgainLater)
			a.client.expectNothing()
			if got := env.BufferedBytes(); got != 60 {
				t.Fatalf("%d bytes held after b ended, want a's 60", got)
			}
		})
	})
}

// With TETHER_NOTIFY_CLIENT the client sees the status messages of README
// "Upstream loss, reconnect and the delivery guarantee", byte for byte.
func TestRcNotify(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := rcConfig()
		cfg.NotifyClient = true
		cfg.Reconnect.MaxAttempts = 0
		env, _ := rcEnv(t, cfg, nil)
		h := rcStart(t, env, nil, func(h *rcHarness) {
			h.dialFn = func(_ context.Context, n int) (Upstream, error) {
				if n <= 2 {
					return Upstream{}, errors.New("refused")
				}
				up, _ := h.upstream(true)
				return up, nil
			}
		})
		_ = h.nextUp().conn.Close()
		h.client.expect(
			`{"type":"upstream","status":"reconnecting","attempt":1}`,
			`{"type":"upstream","status":"reconnecting","attempt":2}`,
			`{"type":"upstream","status":"reconnecting","attempt":3}`,
			`{"type":"upstream","status":"connected"}`,
		)
		h.client.expectNothing()
	})
}

// An MQTT or STOMP session gets no status messages, TETHER_NOTIFY_CLIENT
// or not: a text message in its stream breaks the client (README "Upstream
// loss, reconnect and the delivery guarantee"). The reconnect itself is
// the same.
func TestRcNotifyStrict(t *testing.T) {
	t.Parallel()
	for _, p := range []replay.Protocol{replay.MQTT, replay.STOMP} {
		t.Run(p.String(), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				cfg := rcConfig()
				cfg.NotifyClient = true
				cfg.Replay.Protocol = p
				cfg.Reconnect.MaxAttempts = 0
				env, _ := rcEnv(t, cfg, nil)
				h := rcStart(t, env, nil, func(h *rcHarness) {
					h.dialFn = func(_ context.Context, n int) (Upstream, error) {
						if n == 1 {
							return Upstream{}, errors.New("refused")
						}
						up, _ := h.upstream(true)
						return up, nil
					}
				})
				_ = h.nextUp().conn.Close()
				h.nextUp()
				h.client.expectNothing()
			})
		})
	}
}
