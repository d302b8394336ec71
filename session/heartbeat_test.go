package session

// Heartbeat tests of README "Heartbeats" with fake time: every test runs in a
// testing/synctest bubble over net.Pipe legs, plays both peers itself and
// builds the session with New, so cadence, timeouts and round-trip times
// are exact to the nanosecond.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/replay"
)

// hbCfg returns README "Configuration"'s defaults with the given heartbeat
// settings.
func hbCfg(client, upstream heartbeat.Config) Config {
	return Config{
		MaxMessageBytes:   1 << 20,
		WriteTimeout:      10 * time.Second,
		ClientHeartbeat:   client,
		UpstreamHeartbeat: upstream,
		PingMessage:       `{"type":"ping"}`,
		PongMessage:       `{"type":"pong"}`,
		Reconnect: ReconnectConfig{
			InitialDelay: 250 * time.Millisecond,
			MaxDelay:     10 * time.Second,
			MaxAttempts:  20,
			Rate:         500,
			OnCodes:      CloseCodes{1001, 1006, 1011, 1012, 1013, 1014},
		},
		Buffer: BufferConfig{MaxMessages: 1024, MaxBytes: 4 << 20, TotalMaxBytes: 256 << 20},
		Replay: replay.Defaults(),
	}
}

// hbLeg is a leg's heartbeat config; a zero timeout means 3 × interval.
func hbLeg(mode heartbeat.Mode, interval, timeout time.Duration) heartbeat.Config {
	return heartbeat.Config{Mode: mode, Interval: interval, Timeout: timeout}
}

var hbOff = hbLeg(heartbeat.ModeOff, time.Hour, 0)

// hbMetrics is a Metrics that counts, for assertions.
type hbMetrics struct {
	mu         sync.Mutex
	pings      map[string]int
	pongs      map[string]int
	timeouts   map[string]int
	rtts       map[string][]time.Duration
	messages   map[bool]int
	reconnects map[bool]int
}

func newHBMetrics() *hbMetrics {
	return &hbMetrics{
		pings: map[string]int{}, pongs: map[string]int{}, timeouts: map[string]int{},
		rtts: map[string][]time.Duration{}, messages: map[bool]int{}, reconnects: map[bool]int{},
	}
}

func (m *hbMetrics) Message(up bool, _ int) { m.mu.Lock(); m.messages[up]++; m.mu.Unlock() }
func (m *hbMetrics) PingSent(l string)      { m.mu.Lock(); m.pings[l]++; m.mu.Unlock() }
func (m *hbMetrics) PongReceived(l string)  { m.mu.Lock(); m.pongs[l]++; m.mu.Unlock() }
func (m *hbMetrics) RTT(l string, d time.Duration) {
	m.mu.Lock()
	m.rtts[l] = append(m.rtts[l], d)
	m.mu.Unlock()
}
func (m *hbMetrics) HeartbeatTimeout(l string) { m.mu.Lock(); m.timeouts[l]++; m.mu.Unlock() }
func (m *hbMetrics) Reconnect(ok bool)         { m.mu.Lock(); m.reconnects[ok]++; m.mu.Unlock() }
func (m *hbMetrics) Buffered(int)              {}
func (m *hbMetrics) Overflow()                 {}
func (m *hbMetrics) Resent(int)                {}

func (m *hbMetrics) get(f func(m *hbMetrics) int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return f(m)
}

func (m *hbMetrics) timeoutsOf(leg string) int {
	return m.get(func(m *hbMetrics) int { return m.timeouts[leg] })
}

// hbFrame is a frame a test peer received from tether, unmasked.
type hbFrame struct {
	at  time.Time
	op  ws.OpCode
	fin bool
	p   []byte
}

func (f hbFrame) String() string {
	names := map[ws.OpCode]string{ws.OpContinuation: "Continuation", ws.OpText: "Text", ws.OpBinary: "Binary",
		ws.OpClose: "Close", ws.OpPing: "Ping", ws.OpPong: "Pong"}
	return fmt.Sprintf("%s %q", names[f.op], f.p)
}

// hbPeer plays one peer of a leg over a net.Pipe: a read loop records
// every frame tether writes (checking its masking), optionally answers RFC
// pings like a browser, and always answers a Close.
type hbPeer struct {
	t        testing.TB
	conn     net.Conn
	client   bool // we play the client: we mask, tether must not
	autoPong bool

	wmu sync.Mutex // one frame write at a time

	mu     sync.Mutex
	frames []hbFrame
	gate   chan struct{} // while open (not closed), reading waits
	done   chan struct{} // closed when the read loop ends
	closed bool          // a Close was received
}

// newHBPeer starts the read loop of conn. paused peers read nothing until
// resume.
func newHBPeer(t testing.TB, conn net.Conn, client, autoPong, paused bool) *hbPeer {
	p := &hbPeer{t: t, conn: conn, client: client, autoPong: autoPong, done: make(chan struct{})}
	if paused {
		p.gate = make(chan struct{})
	}
	go p.readLoop()
	return p
}

// Read gates every socket read on p.gate.
func (p *hbPeer) Read(b []byte) (int, error) {
	p.mu.Lock()
	g := p.gate
	p.mu.Unlock()
	if g != nil {
		<-g
	}
	return p.conn.Read(b)
}

func (p *hbPeer) resume() {
	p.mu.Lock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
	p.mu.Unlock()
}

func (p *hbPeer) readLoop() {
	defer close(p.done)
	for {
		f, err := ws.ReadFrame(p)
		if err != nil {
			return
		}
		if f.Header.Masked == p.client {
			p.t.Errorf("frame %v from tether: masked=%v, want %v", f.Header.OpCode, f.Header.Masked, !p.client)
		}
		if f.Header.Masked {
			f = ws.UnmaskFrameInPlace(f)
		}
		p.mu.Lock()
		p.frames = append(p.frames, hbFrame{at: time.Now(), op: f.Header.OpCode, fin: f.Header.Fin, p: f.Payload})
		first := f.Header.OpCode == ws.OpClose && !p.closed
		if first {
			p.closed = true
		}
		p.mu.Unlock()
		switch {
		case f.Header.OpCode == ws.OpPing && p.autoPong:
			go func() { _ = p.send(ws.NewPongFrame(f.Payload)) }()
		case first:
			go func() { _ = p.send(ws.NewCloseFrame(f.Payload)) }()
		}
	}
}

// send writes frames in one conn write, masked when we are the client.
func (p *hbPeer) send(fs ...ws.Frame) error {
	var b bytes.Buffer
	for _, f := range fs {
		f.Payload = bytes.Clone(f.Payload)
		if p.client {
			f = ws.MaskFrameInPlace(f)
		}
		if err := ws.WriteFrame(&b, f); err != nil {
			return err
		}
	}
	return p.write(b.Bytes())
}

func (p *hbPeer) write(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.conn.Write(b)
	return err
}

func (p *hbPeer) text(s string) {
	p.t.Helper()
	if err := p.send(ws.NewTextFrame([]byte(s))); err != nil {
		p.t.Fatalf("send %q: %v", s, err)
	}
}

// got returns the frames received so far.
func (p *hbPeer) got() []hbFrame {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.frames)
}

// take returns and forgets the frames received so far.
func (p *hbPeer) take() []hbFrame {
	p.mu.Lock()
	defer p.mu.Unlock()
	fs := p.frames
	p.frames = nil
	return fs
}

func hbOps(fs []hbFrame, ops ...ws.OpCode) []hbFrame {
	var out []hbFrame
	for _, f := range fs {
		if slices.Contains(ops, f.op) {
			out = append(out, f)
		}
	}
	return out
}

// hbData returns the data frames of fs.
func hbData(fs []hbFrame) []hbFrame {
	return hbOps(fs, ws.OpText, ws.OpBinary, ws.OpContinuation)
}

// hbCloseCode returns the code of the first Close in fs, or 0.
func hbCloseCode(fs []hbFrame) int {
	for _, f := range fs {
		if f.op == ws.OpClose {
			if len(f.p) < 2 {
				return 1005
			}
			return int(binary.BigEndian.Uint16(f.p))
		}
	}
	return 0
}

// hbRig is a session between two test peers, inside a synctest bubble.
type hbRig struct {
	t          *testing.T
	env        *Env
	m          *hbMetrics
	s          *Session
	client, up *hbPeer
	start      time.Time
	done       chan struct{} // closed when Run returns

	mu    sync.Mutex
	dials []time.Time
	ups   []*hbPeer // upstream peers of successful reconnect dials
}

type hbOpts struct {
	clientPaused bool // the client peer reads nothing until resume
	// dialOK makes reconnect dials succeed with a new upstream peer that
	// answers pings; by default they are rejected.
	dialOK bool
	// upAutoPong: the first upstream peer answers pings.
	upAutoPong bool
	// subprotocol: the one the upstream selected (Upstream.Protocol).
	subprotocol string
	// dialDelay: each reconnect dial takes this long.
	dialDelay time.Duration
	// hooks: the Env's test hooks.
	hooks *testHooks
	// log, if set, receives the session's log (text).
	log io.Writer
}

// newHBRig starts a session. Its DialFunc records each attempt and, unless
// o.dialOK, rejects it (ErrUpstreamRejected), so an upstream loss ends the
// session with a client Close 1014 after exactly one dial. The session is
// shut down and every goroutine awaited in a cleanup.
func newHBRig(t *testing.T, cfg Config, o hbOpts) *hbRig {
	t.Helper()
	r := &hbRig{t: t, m: newHBMetrics(), done: make(chan struct{})}
	var logger *slog.Logger
	if o.log != nil {
		logger = slog.New(slog.NewTextHandler(o.log, nil))
	}
	env, err := NewEnv(cfg, logger, r.m)
	if err != nil {
		t.Fatal(err)
	}
	env.Jitter = func(int64) int64 { return 0 }
	env.test = o.hooks
	r.env = env
	cs, cp := net.Pipe()
	us, up := net.Pipe()
	r.client = newHBPeer(t, cp, true, false, o.clientPaused)
	r.up = newHBPeer(t, up, false, o.upAutoPong, false)
	r.s = New(env, "hbtest", cs, nil, Upstream{Conn: us, Host: "upstream.test", Protocol: o.subprotocol}, func(ctx context.Context) (Upstream, error) {
		time.Sleep(o.dialDelay)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.dials = append(r.dials, time.Now())
		if !o.dialOK {
			return Upstream{}, fmt.Errorf("%w: test dialer", ErrUpstreamRejected)
		}
		s, c := net.Pipe()
		r.ups = append(r.ups, newHBPeer(t, c, false, true, false))
		return Upstream{Conn: s, Host: "upstream.test", Protocol: o.subprotocol}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	r.start = time.Now()
	go func() {
		defer close(r.done)
		r.s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		r.client.resume()
		<-r.done
		_ = cp.Close()
		_ = up.Close()
		<-r.client.done
		<-r.up.done
		for _, p := range r.newUps() {
			_ = p.conn.Close()
			<-p.done
		}
	})
	return r
}

func (r *hbRig) newUps() []*hbPeer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ups)
}

// at sleeps until d after the session started, then waits for the bubble
// to settle.
func (r *hbRig) at(d time.Duration) {
	time.Sleep(time.Until(r.start.Add(d)))
	synctest.Wait()
}

func (r *hbRig) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *hbRig) dialTimes() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for _, at := range r.dials {
		out = append(out, at.Sub(r.start))
	}
	return out
}

func (r *hbRig) peer(leg string) *hbPeer {
	if leg == LegClient {
		return r.client
	}
	return r.up
}

func (r *hbRig) other(leg string) *hbPeer {
	if leg == LegClient {
		return r.up
	}
	return r.client
}

// hbLegs configures leg with hb and the other leg off.
func hbLegs(leg string, hb heartbeat.Config) Config {
	if leg == LegClient {
		return hbCfg(hb, hbOff)
	}
	return hbCfg(hbOff, hb)
}

var hbLegNames = []string{LegClient, LegUpstream}

var hbModes = []heartbeat.Mode{heartbeat.ModeOff, heartbeat.ModeJSON, heartbeat.ModeWS, heartbeat.ModeBoth}

// TestHeartbeatCadence: a leg in ws mode gets one RFC Ping per interval,
// json one JSON ping, both one of each (the RFC ping first), off nothing;
// each ping is counted in PingSent.
func TestHeartbeatCadence(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	for _, leg := range hbLegNames {
		for _, mode := range hbModes {
			t.Run(leg+"/"+mode.String(), func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					r := newHBRig(t, hbLegs(leg, hbLeg(mode, interval, 1000*interval)), hbOpts{})
					p := r.peer(leg)
					const n = 5
					r.at(n*interval + interval/2)
					var want []string
					for k := 1; k <= n && mode.On(); k++ {
						if mode.SendsWS() {
							want = append(want, fmt.Sprintf("%v ping", time.Duration(k)*interval))
						}
						if mode.SendsJSON() {
							want = append(want, fmt.Sprintf(`%v {"type":"ping"}`, time.Duration(k)*interval))
						}
					}
					var got []string
					for _, f := range p.got() {
						switch {
						case f.op == ws.OpPing:
							got = append(got, fmt.Sprintf("%v ping", f.at.Sub(r.start)))
						case f.op == ws.OpText && f.fin:
							got = append(got, fmt.Sprintf("%v %s", f.at.Sub(r.start), f.p))
						default:
							t.Errorf("unexpected frame %v", f)
						}
					}
					if !slices.Equal(got, want) {
						t.Errorf("peer got\n%q\nwant\n%q", got, want)
					}
					for _, f := range hbOps(p.got(), ws.OpPing) {
						if len(f.p) != 8 {
							t.Errorf("RFC ping payload %x: want 8 bytes (an id for round trips)", f.p)
						}
					}
					if got, want := r.m.get(func(m *hbMetrics) int { return m.pings[leg] }), len(want); got != want {
						t.Errorf("PingSent(%s) = %d, want %d", leg, got, want)
					}
					if fs := r.other(leg).got(); len(fs) != 0 {
						t.Errorf("the other leg (off) got %v", fs)
					}
				})
			})
		}
	}
}

// TestHeartbeatStrictProtocols: an MQTT or STOMP session (by the
// subprotocol, or by TETHER_REPLAY_PROTOCOL) gets RFC pings in place of
// JSON pings on both legs, in json and both mode alike: a JSON text
// message in an MQTT stream is a malformed packet (mqtt.js: "Invalid header
// flag bits, must be 0x0 for pubcomp packet") and in a STOMP stream eats
// the next frame (README "Heartbeats"). Other sessions keep their JSON
// pings.
func TestHeartbeatStrictProtocols(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	for _, tc := range []struct {
		name, sub string
		proto     replay.Protocol
		strict    bool
	}{
		{"mqtt", "mqtt", replay.Auto, true},
		{"mqttv3.1", "mqttv3.1", replay.Auto, true},
		{"v12.stomp", "v12.stomp", replay.Auto, true},
		{"mqtt with replay none", "mqtt", replay.None, true},
		{"replay mqtt without subprotocol", "", replay.MQTT, true},
		{"replay stomp without subprotocol", "", replay.STOMP, true},
		{"graphql-ws (subscriptions-transport-ws)", "graphql-ws", replay.Auto, true},
		{"graphql-transport-ws (its own ping type)", "graphql-transport-ws", replay.Auto, false},
		{"no subprotocol", "", replay.Auto, false},
		{"chat with replay json", "chat", replay.JSON, false},
	} {
		for _, leg := range hbLegNames {
			for _, mode := range []heartbeat.Mode{heartbeat.ModeJSON, heartbeat.ModeBoth} {
				t.Run(tc.name+"/"+leg+"/"+mode.String(), func(t *testing.T) {
					t.Parallel()
					synctest.Test(t, func(t *testing.T) {
						cfg := hbLegs(leg, hbLeg(mode, interval, 1000*interval))
						cfg.Replay.Protocol = tc.proto
						if tc.proto == replay.JSON {
							cfg.Replay.JSONKeep = []string{"subscribe"}
						}
						r := newHBRig(t, cfg, hbOpts{subprotocol: tc.sub})
						const n = 3
						r.at(n*interval + interval/2)
						pings, texts := 0, 0
						for _, f := range r.peer(leg).got() {
							switch f.op {
							case ws.OpPing:
								pings++
							case ws.OpText:
								texts++
							}
						}
						wantPings, wantTexts := 0, 0
						switch {
						case tc.strict:
							wantPings = n
						case mode == heartbeat.ModeBoth:
							wantPings, wantTexts = n, n
						default:
							wantTexts = n
						}
						if pings != wantPings || texts != wantTexts {
							t.Errorf("%s leg got %d RFC pings and %d text messages, want %d and %d", leg, pings, texts, wantPings, wantTexts)
						}
					})
				})
			}
		}
	}
}

// TestHeartbeatTimeoutBoundary: with nothing received, a leg is alive at
// TIMEOUT-1ns and dead at TIMEOUT. A dead client leg ends the session
// (upstream Close 1001); a dead upstream leg is "upstream lost": one
// reconnect dial at exactly TIMEOUT, whatever RECONNECT_ON_CODES says, and
// the (rejected) dial closes the client with 1014.
func TestHeartbeatTimeoutBoundary(t *testing.T) {
	t.Parallel()
	const interval, timeout = time.Second, 3500 * time.Millisecond
	type tc struct {
		leg     string
		mode    heartbeat.Mode
		onCodes CloseCodes
	}
	var cases []tc
	for _, leg := range hbLegNames {
		for _, mode := range hbModes[1:] {
			cases = append(cases, tc{leg, mode, CloseCodes{1001, 1006, 1011, 1012, 1013, 1014}})
		}
	}
	cases = append(cases, tc{LegUpstream, heartbeat.ModeWS, CloseCodes{}}, tc{LegUpstream, heartbeat.ModeJSON, CloseCodes{4000}})
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%v/oncodes=%v", c.leg, c.mode, c.onCodes), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				cfg := hbLegs(c.leg, hbLeg(c.mode, interval, timeout))
				cfg.Reconnect.OnCodes = c.onCodes
				r := newHBRig(t, cfg, hbOpts{})
				r.at(timeout - 1)
				if n := r.m.timeoutsOf(c.leg); n != 0 || r.ended() || len(r.dialTimes()) != 0 {
					t.Fatalf("at TIMEOUT-1ns: timeouts=%d ended=%v dials=%v, want a live leg", n, r.ended(), r.dialTimes())
				}
				if fs := hbOps(append(r.client.got(), r.up.got()...), ws.OpClose); len(fs) != 0 {
					t.Fatalf("at TIMEOUT-1ns: Close sent: %v", fs)
				}
				r.at(timeout)
				if n := r.m.timeoutsOf(c.leg); n != 1 {
					t.Fatalf("at TIMEOUT: HeartbeatTimeout(%s) counted %d times, want 1", c.leg, n)
				}
				if n := r.m.timeoutsOf(r.otherName(c.leg)); n != 0 {
					t.Errorf("HeartbeatTimeout of the other leg counted %d times", n)
				}
				<-r.done
				switch c.leg {
				case LegClient:
					if code := hbCloseCode(r.up.got()); code != 1001 {
						t.Errorf("upstream got Close %d, want 1001", code)
					}
					if code := hbCloseCode(r.client.got()); code != 1001 {
						t.Errorf("client got Close %d, want 1001 (it is still writable)", code)
					}
					if d := r.dialTimes(); len(d) != 0 {
						t.Errorf("dead client leg dialed the upstream: %v", d)
					}
				case LegUpstream:
					if d := r.dialTimes(); !slices.Equal(d, []time.Duration{timeout}) {
						t.Errorf("reconnect dials at %v, want one at %v", d, timeout)
					}
					if code := hbCloseCode(r.client.got()); code != 1014 {
						t.Errorf("client got Close %d, want 1014", code)
					}
				}
			})
		})
	}
}

func (r *hbRig) otherName(leg string) string {
	if leg == LegClient {
		return LegUpstream
	}
	return LegClient
}

// TestHeartbeatInboundResetsLiveness: anything received from the peer
// (data, ping, pong, a JSON heartbeat, bytes of a frame still arriving)
// restarts the TIMEOUT: after the last such event at t, the leg is alive
// at t+TIMEOUT-1ns and dead at t+TIMEOUT.
func TestHeartbeatInboundResetsLiveness(t *testing.T) {
	t.Parallel()
	const interval, timeout = time.Second, 3 * time.Second
	type stim struct {
		name string
		mode heartbeat.Mode
		// send is called at 2 s and at 4 s (k = 0, 1).
		send func(p *hbPeer, k int) error
	}
	partial := func(p *hbPeer, k int) error {
		// A 300-byte text frame: header and 100 bytes at 2 s, 100 more
		// at 4 s, the rest never.
		payload := bytes.Repeat([]byte("x"), 300)
		var b bytes.Buffer
		f := ws.NewTextFrame(payload)
		if p.client {
			f = ws.MaskFrameInPlace(f)
		}
		_ = ws.WriteFrame(&b, f)
		if k == 0 {
			return p.write(b.Bytes()[:b.Len()-200])
		}
		return p.write(b.Bytes()[b.Len()-200 : b.Len()-100])
	}
	stims := []stim{
		{"text", heartbeat.ModeWS, func(p *hbPeer, k int) error { return p.send(ws.NewTextFrame([]byte("hello"))) }},
		{"binary", heartbeat.ModeWS, func(p *hbPeer, k int) error { return p.send(ws.NewBinaryFrame([]byte{0, 1, 2})) }},
		{"ping", heartbeat.ModeWS, func(p *hbPeer, k int) error { return p.send(ws.NewPingFrame([]byte("are you there"))) }},
		{"unsolicited-pong", heartbeat.ModeWS, func(p *hbPeer, k int) error { return p.send(ws.NewPongFrame([]byte("x"))) }},
		{"json-ping", heartbeat.ModeJSON, func(p *hbPeer, k int) error { return p.send(ws.NewTextFrame([]byte(`{"type":"ping"}`))) }},
		{"json-pong", heartbeat.ModeBoth, func(p *hbPeer, k int) error { return p.send(ws.NewTextFrame([]byte(`{"type":"pong"}`))) }},
		{"partial-frame", heartbeat.ModeWS, partial},
	}
	for _, leg := range hbLegNames {
		for _, st := range stims {
			t.Run(leg+"/"+st.name, func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					r := newHBRig(t, hbLegs(leg, hbLeg(st.mode, interval, timeout)), hbOpts{})
					p := r.peer(leg)
					for k, at := range []time.Duration{2 * time.Second, 4 * time.Second} {
						r.at(at)
						if err := st.send(p, k); err != nil {
							t.Fatalf("send at %v: %v", at, err)
						}
					}
					last := 4 * time.Second
					r.at(last + timeout - 1)
					if n := r.m.timeoutsOf(leg); n != 0 || r.ended() || len(r.dialTimes()) != 0 {
						t.Fatalf("at last+TIMEOUT-1ns: timeouts=%d ended=%v dials=%v, want a live leg", n, r.ended(), r.dialTimes())
					}
					r.at(last + timeout)
					if n := r.m.timeoutsOf(leg); n != 1 {
						t.Fatalf("at last+TIMEOUT: timeouts=%d, want 1", n)
					}
				})
			})
		}
	}
}

// TestHeartbeatRTT: the round-trip time of tether's own pings is the fake
// time between the ping and its pong, for RFC and JSON pings on both legs.
func TestHeartbeatRTT(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	for _, leg := range hbLegNames {
		for _, mode := range hbModes[1:] {
			t.Run(leg+"/"+mode.String(), func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					r := newHBRig(t, hbLegs(leg, hbLeg(mode, interval, 10*interval)), hbOpts{})
					p := r.peer(leg)
					r.at(interval)
					fs := p.take()
					var want []time.Duration
					// RFC pong first: a JSON pong answers the newest JSON
					// ping and forgets older pings (heartbeat.Tracker).
					if mode.SendsWS() {
						pings := hbOps(fs, ws.OpPing)
						if len(pings) != 1 {
							t.Fatalf("got %v at 1s, want one RFC ping", fs)
						}
						r.at(interval + 120*time.Millisecond)
						if err := p.send(ws.NewPongFrame(pings[0].p)); err != nil {
							t.Fatal(err)
						}
						want = append(want, 120*time.Millisecond)
					}
					if mode.SendsJSON() {
						if len(hbOps(fs, ws.OpText)) != 1 {
							t.Fatalf("got %v at 1s, want one JSON ping", fs)
						}
						r.at(interval + 370*time.Millisecond)
						p.text(`{"type":"pong"}`)
						want = append(want, 370*time.Millisecond)
					}
					r.at(interval + 500*time.Millisecond)
					r.m.mu.Lock()
					got, pongs := slices.Clone(r.m.rtts[leg]), r.m.pongs[leg]
					r.m.mu.Unlock()
					if !slices.Equal(got, want) {
						t.Errorf("RTT(%s) = %v, want %v", leg, got, want)
					}
					if pongs != len(want) {
						t.Errorf("PongReceived(%s) = %d, want %d", leg, pongs, len(want))
					}
					if fs := hbData(r.other(leg).got()); len(fs) != 0 {
						t.Errorf("pong forwarded to the other leg: %v", fs)
					}
				})
			})
		}
	}
}

// TestHeartbeatUnmatchedPong: a pong that answers no ping of tether's is
// counted as received (and keeps the leg alive) but gives no RTT sample.
func TestHeartbeatUnmatchedPong(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbLeg(heartbeat.ModeBoth, time.Second, 0), hbOff), hbOpts{})
		r.at(500 * time.Millisecond)
		if err := r.client.send(ws.NewPongFrame([]byte("12345678"))); err != nil {
			t.Fatal(err)
		}
		r.client.text(`{"type":"pong"}`)
		r.at(600 * time.Millisecond)
		r.m.mu.Lock()
		defer r.m.mu.Unlock()
		if len(r.m.rtts[LegClient]) != 0 {
			t.Errorf("RTT samples %v from unsolicited pongs", r.m.rtts[LegClient])
		}
	})
}

// TestHeartbeatJSONPing: in json and both modes a JSON ping from the peer
// is answered with the JSON pong echoing its extra members and is not
// forwarded; a JSON pong is consumed too. What is not a heartbeat (other
// types, nested types, binary, fragmented, over 4 KiB) is forwarded
// unchanged, and in ws and off modes JSON heartbeats are ordinary data.
func TestHeartbeatJSONPing(t *testing.T) {
	t.Parallel()
	big := `{"type":"ping","pad":"` + string(bytes.Repeat([]byte("a"), heartbeat.MaxHeartbeatSize)) + `"}`
	type msg struct {
		name  string
		frags []ws.Frame // as sent
		text  bool
		body  string // the whole message
	}
	fragmented := func(a, b string) []ws.Frame {
		return []ws.Frame{ws.NewFrame(ws.OpText, false, []byte(a)), ws.NewFrame(ws.OpContinuation, true, []byte(b))}
	}
	one := func(name, s string) msg {
		return msg{name, []ws.Frame{ws.NewTextFrame([]byte(s))}, true, s}
	}
	heartbeats := []struct {
		msg
		pong string // the answer in json/both modes; "" = consumed silently
	}{
		{one("ping", `{"type":"ping"}`), `{"type":"pong"}`},
		{one("ping-id", `{"type":"ping","id":7}`), `{"type":"pong","id":7}`},
		{one("ping-members", `{"ts":1700000000123,"type":"ping","tag":{"a":[1,2]}}`), `{"type":"pong","ts":1700000000123,"tag":{"a":[1,2]}}`},
		{one("ping-spaces", " { \"type\" : \"ping\" } "), `{"type":"pong"}`},
		{one("pong", `{"type":"pong"}`), ""},
		{one("pong-id", `{"type":"pong","id":3}`), ""},
	}
	data := []msg{
		one("pingpong", `{"type":"pingpong"}`),
		one("nested", `{"data":{"type":"ping"}}`),
		one("array", `[{"type":"ping"}]`),
		one("type-number", `{"type":1}`),
		one("not-json", `type ping`),
		one("over-4KiB", big),
		{"binary", []ws.Frame{ws.NewBinaryFrame([]byte(`{"type":"ping"}`))}, false, `{"type":"ping"}`},
		{"fragmented", fragmented(`{"type":`, `"ping"}`), true, `{"type":"ping"}`},
	}
	for _, leg := range hbLegNames {
		for _, mode := range hbModes {
			t.Run(leg+"/"+mode.String(), func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					r := newHBRig(t, hbLegs(leg, hbLeg(mode, time.Hour, 0)), hbOpts{})
					p, o := r.peer(leg), r.other(leg)
					check := func(m msg, wantPong string, forwarded bool) {
						t.Helper()
						if err := p.send(m.frags...); err != nil {
							t.Fatalf("%s: send: %v", m.name, err)
						}
						synctest.Wait()
						back, fwd := hbData(p.take()), hbData(o.take())
						var gotPong string
						if len(back) == 1 && back[0].op == ws.OpText {
							gotPong = string(back[0].p)
						} else if len(back) != 0 {
							t.Errorf("%s: peer got back %v", m.name, back)
						}
						if gotPong != wantPong {
							t.Errorf("%s: answer %q, want %q", m.name, gotPong, wantPong)
						}
						switch {
						case !forwarded && len(fwd) != 0:
							t.Errorf("%s: forwarded %v, want it consumed", m.name, fwd)
						case forwarded && (len(fwd) != 1 || string(fwd[0].p) != m.body || (fwd[0].op == ws.OpText) != m.text || !fwd[0].fin):
							t.Errorf("%s: forwarded %v, want one message %q", m.name, fwd, m.body)
						}
					}
					for _, h := range heartbeats {
						if mode.AnswersJSON() {
							check(h.msg, h.pong, false)
						} else {
							check(h.msg, "", true)
						}
					}
					for _, m := range data {
						check(m, "", true)
					}
				})
			})
		}
	}
}

// TestHeartbeatRFCPing: an RFC Ping from either peer is answered with a
// Pong carrying the same payload, in every mode, and never forwarded.
func TestHeartbeatRFCPing(t *testing.T) {
	t.Parallel()
	for _, leg := range hbLegNames {
		for _, mode := range hbModes {
			t.Run(leg+"/"+mode.String(), func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					r := newHBRig(t, hbLegs(leg, hbLeg(mode, time.Hour, 0)), hbOpts{})
					p, o := r.peer(leg), r.other(leg)
					for _, payload := range [][]byte{nil, []byte("hello-7"), bytes.Repeat([]byte{0xfe}, 125)} {
						if err := p.send(ws.NewPingFrame(payload)); err != nil {
							t.Fatal(err)
						}
						synctest.Wait()
						back := p.take()
						if len(back) != 1 || back[0].op != ws.OpPong || !bytes.Equal(back[0].p, payload) {
							t.Errorf("ping %q answered with %v, want one pong with the same payload", payload, back)
						}
						if fs := o.take(); len(fs) != 0 {
							t.Errorf("ping %q: other leg got %v", payload, fs)
						}
					}
				})
			})
		}
	}
}

// TestHeartbeatPingBetweenFragments: a Ping (RFC 6455 §5.4 allows it
// between the fragments of a message) is answered at once, and the
// message is still forwarded whole.
func TestHeartbeatPingBetweenFragments(t *testing.T) {
	t.Parallel()
	for _, leg := range hbLegNames {
		t.Run(leg, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				r := newHBRig(t, hbLegs(leg, hbLeg(heartbeat.ModeWS, time.Hour, 0)), hbOpts{})
				p, o := r.peer(leg), r.other(leg)
				if err := p.send(ws.NewFrame(ws.OpText, false, []byte("hello, "))); err != nil {
					t.Fatal(err)
				}
				if err := p.send(ws.NewPingFrame([]byte("mid"))); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if fs := p.take(); len(fs) != 1 || fs[0].String() != `Pong "mid"` {
					t.Errorf("ping between fragments answered with %v, want one pong", fs)
				}
				if err := p.send(ws.NewFrame(ws.OpContinuation, true, []byte("world"))); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if fs := o.got(); len(fs) != 1 || fs[0].String() != `Text "hello, world"` {
					t.Errorf("other leg got %v, want the whole message", fs)
				}
				if r.ended() {
					t.Error("session ended")
				}
			})
		})
	}
}

// TestHeartbeatPingFlood: pings that arrive while a long write holds the
// leg's write lock are answered once, with the latest payload (RFC 6455
// §5.5.3), so a flood queues nothing.
func TestHeartbeatPingFlood(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbOff), hbOpts{clientPaused: true})
		// An upstream message to the client that cannot be written while
		// the client does not read: upstreamLoop holds the client's write
		// lock.
		big := bytes.Repeat([]byte("b"), 64<<10)
		go func() { _ = r.up.send(ws.NewBinaryFrame(big)) }()
		synctest.Wait()
		const n = 10000
		for i := range n {
			if err := r.client.send(ws.NewPingFrame(fmt.Appendf(nil, "ping-%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait() // the last ping handled, not only read
		r.client.resume()
		synctest.Wait()
		fs := r.client.got()
		if len(fs) != 2 || fs[0].op != ws.OpBinary || len(fs[0].p) != len(big) {
			t.Fatalf("client got %d frames %v, want the message and one pong", len(fs), fs)
		}
		if want := fmt.Sprintf("ping-%d", n-1); fs[1].op != ws.OpPong || string(fs[1].p) != want {
			t.Errorf("got %v, want one pong %q (the latest ping)", fs[1], want)
		}
	})
}

// TestHeartbeatPongOvertakesData: a pong is written as soon as the frame
// being written when its ping arrived is done, not after the queue of
// relayed messages behind it: the pong overtakes the next data message.
func TestHeartbeatPongOvertakesData(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbOff), hbOpts{clientPaused: true})
		go func() {
			_ = r.up.send(ws.NewBinaryFrame([]byte("first")))
			_ = r.up.send(ws.NewBinaryFrame([]byte("second")))
		}()
		synctest.Wait()
		if err := r.client.send(ws.NewPingFrame([]byte("p"))); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the ping handled, not only read
		r.client.resume()
		synctest.Wait()
		var got []string
		for _, f := range r.client.got() {
			got = append(got, f.String())
		}
		want := []string{`Binary "first"`, `Pong "p"`, `Binary "second"`}
		if !slices.Equal(got, want) {
			t.Errorf("client got %q, want %q", got, want)
		}
	})
}

// TestHeartbeatUpstreamLostReconnects: a dead upstream leg starts the
// reconnect at once; a successful dial keeps the client open, and
// heartbeats and messages go on on the new connection.
func TestHeartbeatUpstreamLostReconnects(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const interval, timeout = time.Second, 3 * time.Second
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, interval, timeout)), hbOpts{dialOK: true})
		r.at(timeout)
		if n := r.m.timeoutsOf(LegUpstream); n != 1 {
			t.Fatalf("timeouts = %d, want 1", n)
		}
		if d := r.dialTimes(); !slices.Equal(d, []time.Duration{timeout}) {
			t.Fatalf("dials at %v, want one at %v", d, timeout)
		}
		next := r.newUps()[0]
		// The new connection answers pings: no more timeouts or dials.
		r.at(timeout + 10*timeout)
		if r.ended() || r.m.timeoutsOf(LegUpstream) != 1 || len(r.dialTimes()) != 1 {
			t.Fatalf("after the reconnect: ended=%v timeouts=%d dials=%v", r.ended(), r.m.timeoutsOf(LegUpstream), r.dialTimes())
		}
		if n := len(hbOps(next.got(), ws.OpPing)); n != 30 {
			t.Errorf("new upstream got %d pings in 30 intervals, want 30", n)
		}
		if fs := r.client.got(); len(fs) != 0 {
			t.Errorf("client got %v during a reconnect", fs)
		}
		r.client.text("still here")
		synctest.Wait()
		if fs := hbData(next.got()); len(fs) != 1 || string(fs[0].p) != "still here" {
			t.Errorf("new upstream got %v, want the client's message", fs)
		}
	})
}

// A SignalR session (README "Heartbeats"): its framing has no room for a
// JSON ping, and it is known only from the client's first message, after
// the legs were made: from then on a `both` or `json` client leg sends RFC
// pings only.
func TestHeartbeatStrictAfterSignalRHandshake(t *testing.T) {
	t.Parallel()
	for _, mode := range []heartbeat.Mode{heartbeat.ModeJSON, heartbeat.ModeBoth} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				const interval = time.Second
				r := newHBRig(t, hbLegs(LegClient, hbLeg(mode, interval, 1000*interval)), hbOpts{})
				r.client.text("{\"protocol\":\"json\",\"version\":1}\x1e")
				r.at(3*interval + interval/2)
				pings, jsonPings := 0, 0
				for _, f := range r.client.got() {
					switch {
					case f.op == ws.OpPing:
						pings++
					case f.op == ws.OpText && bytes.Contains(f.p, []byte(`"ping"`)):
						jsonPings++
					}
				}
				if pings != 3 || jsonPings != 0 {
					t.Fatalf("client got %d RFC pings and %d JSON pings, want 3 and 0", pings, jsonPings)
				}
			})
		})
	}
}
