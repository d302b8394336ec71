//go:build unix

package session

// Benchmarks of the heartbeat timers at scale and of the relay, and
// allocation pins for the relay's steady state.
//
//	go test -run x -bench IdleHeartbeats -benchtime 1x ./session/
//	go test -run x -bench Relay ./session/

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/replay"
)

// hbBenchConn is a net.Conn for idle legs: writes are counted and
// discarded, reads block until Close, deadlines are ignored (an idle leg
// never reads, so no timeout would fire in the measured window anyway).
type hbBenchConn struct {
	closed chan struct{}
	once   sync.Once
	writes *atomic.Int64 // Write calls: a frame is two (header, payload)
}

func newHBBenchConn(writes *atomic.Int64) *hbBenchConn {
	return &hbBenchConn{closed: make(chan struct{}), writes: writes}
}

func (c *hbBenchConn) Read([]byte) (int, error) {
	<-c.closed
	return 0, net.ErrClosed
}

func (c *hbBenchConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.writes.Add(1)
	return len(p), nil
}

func (c *hbBenchConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

var hbBenchAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}

func (c *hbBenchConn) LocalAddr() net.Addr              { return hbBenchAddr }
func (c *hbBenchConn) RemoteAddr() net.Addr             { return hbBenchAddr }
func (c *hbBenchConn) SetDeadline(time.Time) error      { return nil }
func (c *hbBenchConn) SetReadDeadline(time.Time) error  { return nil }
func (c *hbBenchConn) SetWriteDeadline(time.Time) error { return nil }

func hbCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIdleHeartbeats drives 10k idle sessions (20k legs: client in
// both mode, upstream in ws mode, 1 s interval) for 3 s and reports the
// process CPU time per leg per second, goroutines, heap and stack per
// session, and the heartbeat frames written per leg per second.
func BenchmarkIdleHeartbeats(b *testing.B) {
	sessions := 10000
	if testing.Short() {
		sessions = 1000
	}
	const run = 3 * time.Second
	hb := heartbeat.Config{Interval: time.Second, Timeout: 3 * time.Second}
	client, upstream := hb, hb
	client.Mode, upstream.Mode = heartbeat.ModeBoth, heartbeat.ModeWS
	env, err := NewEnv(hbCfg(client, upstream), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	env.CloseWait = time.Millisecond
	dial := func(context.Context) (Upstream, error) { return Upstream{}, errors.New("no") }
	var cpuPerLeg, gPerSession, heapPerSession, stackPerSession, framesPerLeg float64
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var frames atomic.Int64
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		g0 := runtime.NumGoroutine()
		ss := make([]*Session, sessions)
		var wg sync.WaitGroup
		for k := range ss {
			ss[k] = New(env, "bench", newHBBenchConn(&frames), nil, Upstream{Conn: newHBBenchConn(&frames)}, dial)
			wg.Add(1)
			go func() {
				defer wg.Done()
				ss[k].Run(context.Background())
			}()
		}
		// Let every session reach its parked state, spread the timers'
		// phases as real sessions would be (they start at different
		// times), then measure.
		time.Sleep(200 * time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&m1)
		g1 := runtime.NumGoroutine()
		f0 := frames.Load()
		b.StartTimer()
		c0, t0 := hbCPU(), time.Now()
		time.Sleep(run)
		c1, el := hbCPU(), time.Since(t0)
		b.StopTimer()
		f1 := frames.Load()
		for _, s := range ss {
			s.Close()
		}
		wg.Wait()
		legs := float64(2 * sessions)
		cpuPerLeg += float64(c1-c0) / legs / el.Seconds()
		gPerSession += float64(g1-g0) / float64(sessions)
		heapPerSession += float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(sessions)
		stackPerSession += float64(int64(m1.StackInuse)-int64(m0.StackInuse)) / float64(sessions)
		framesPerLeg += float64(f1-f0) / 2 / legs / el.Seconds()
	}
	n := float64(b.N)
	b.ReportMetric(cpuPerLeg/n, "cpu-ns/leg/s")
	b.ReportMetric(gPerSession/n, "goroutines/session")
	b.ReportMetric(heapPerSession/n, "heap-B/session")
	b.ReportMetric(stackPerSession/n, "stack-B/session")
	b.ReportMetric(framesPerLeg/n, "pings/leg/s")
}

// hbWirePeer writes and reads frames without allocating, for benchmark
// peers: reused buffers, a fixed mask.
type hbWirePeer struct {
	conn net.Conn
	mask bool // we are the client side
	br   *inbuf
	out  []byte
	in   []byte
}

func newHBWirePeer(c net.Conn, mask bool) *hbWirePeer {
	return &hbWirePeer{conn: c, mask: mask, br: newInbuf(c, 32<<10)}
}

// encode builds one final frame in p.out.
func (p *hbWirePeer) encode(op ws.OpCode, payload []byte) []byte {
	var hdr [14]byte
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	h := putHeader(&hdr, op, false, len(payload), p.mask, key)
	p.out = append(append(p.out[:0], h...), payload...)
	if p.mask {
		ws.Cipher(p.out[len(h):], key, 0)
	}
	return p.out
}

// frame returns the next frame (payload valid until the next call).
func (p *hbWirePeer) frame() (ws.OpCode, []byte, error) {
	h, err := readHeader(p.br)
	if err != nil {
		return 0, nil, err
	}
	if int64(cap(p.in)) < h.length {
		p.in = make([]byte, h.length)
	}
	b := p.in[:h.length]
	if _, err := io.ReadFull(p.br, b); err != nil {
		return 0, nil, err
	}
	if h.masked {
		ws.Cipher(b, h.mask, 0)
	}
	return h.op, b, nil
}

// read returns the next data message, skipping control frames and
// tether's JSON pings.
func (p *hbWirePeer) read() (ws.OpCode, []byte, error) {
	for {
		op, b, err := p.frame()
		if err != nil || !op.IsControl() && !(op == ws.OpText && string(b) == `{"type":"ping"}`) {
			return op, b, err
		}
	}
}

// echo answers every data message with the same message and every RFC
// ping with a pong (as backends do: tether's retention window needs the
// acknowledgements) until the connection ends.
func (p *hbWirePeer) echo() {
	for {
		op, b, err := p.frame()
		if err != nil {
			return
		}
		switch op {
		case ws.OpPing:
			op = ws.OpPong
		case ws.OpPong, ws.OpClose:
			continue
		}
		if _, err := p.conn.Write(p.encode(op, b)); err != nil {
			return
		}
	}
}

// hbTCPPair is a connected pair of loopback TCP sockets (dialed,
// accepted), closed when the test ends.
func hbTCPPair(tb testing.TB) (a, b net.Conn) {
	d, acc := testkit.LoopbackPair(tb)
	return d, acc
}

// hbRelay is a client peer, a session and an echoing upstream over
// loopback TCP, or (direct) the client peer talking to the echo at once.
type hbRelay struct {
	client *hbWirePeer
	stop   func()
}

func newHBRelay(tb testing.TB, direct bool, cfg Config) *hbRelay {
	tb.Helper()
	if direct {
		cc, ec := hbTCPPair(tb)
		echo := newHBWirePeer(ec, false)
		done := make(chan struct{})
		go func() { defer close(done); echo.echo() }()
		return &hbRelay{client: newHBWirePeer(cc, true), stop: func() {
			_ = cc.Close()
			_ = ec.Close()
			<-done
		}}
	}
	env, err := NewEnv(cfg, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	env.CloseWait = 10 * time.Millisecond
	cc, cs := hbTCPPair(tb) // client peer, tether's client leg
	uc, us := hbTCPPair(tb) // tether's upstream leg, echo
	echo := newHBWirePeer(us, false)
	s := New(env, "bench", cs, nil, Upstream{Conn: uc}, func(context.Context) (Upstream, error) {
		return Upstream{}, fmt.Errorf("%w: bench", ErrUpstreamRejected)
	})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); echo.echo() }()
	go func() { defer wg.Done(); s.Run(context.Background()) }()
	return &hbRelay{client: newHBWirePeer(cc, true), stop: func() {
		_ = cc.Close()
		_ = us.Close()
		s.Close()
		wg.Wait()
	}}
}

// BenchmarkRelay relays messages client → upstream (an echo) → client,
// pipelined, through a session with the default configuration, and
// directly (client to echo, no tether) as the baseline for a ratio. One op
// is one message each way; allocations are the whole process's (the
// peers do not allocate).
func BenchmarkRelay(b *testing.B) {
	def := hbCfg(hbLeg(heartbeat.ModeBoth, 15*time.Second, 0), hbLeg(heartbeat.ModeWS, 15*time.Second, 0))
	noRetain := hbCfg(hbLeg(heartbeat.ModeBoth, 15*time.Second, 0), hbOff)
	for _, size := range []int{128, 1 << 10, 16 << 10} {
		for _, v := range []struct {
			name   string
			direct bool
			cfg    Config
		}{
			{"direct", true, def},
			{"tether", false, def},
			{"tether-upstream-hb-off", false, noRetain},
			// A preset recognising messages that are not state
			// (README "State replay on upstream reconnect").
			{"tether-graphql-transport-ws", false, withReplay(def, replay.GraphQLTransportWS)},
		} {
			b.Run(fmt.Sprintf("%s/%dB", v.name, size), func(b *testing.B) {
				r := newHBRelay(b, v.direct, v.cfg)
				defer r.stop()
				msg := make([]byte, size)
				for i := range msg {
					msg[i] = 'a' + byte(i%26)
				}
				// The writer has its own encoder: one frame, written b.N times.
				frame := append([]byte(nil), newHBWirePeer(nil, true).encode(ws.OpText, msg)...)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				errc := make(chan error, 1)
				go func() {
					for range b.N {
						if _, err := r.client.conn.Write(frame); err != nil {
							errc <- err
							return
						}
					}
					errc <- nil
				}()
				for i := range b.N {
					_, p, err := r.client.read()
					if err != nil || len(p) != size {
						b.Fatalf("message %d: %d bytes %.40q, %v", i, len(p), p, err)
					}
				}
				b.StopTimer()
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// newHBTCPRelay is a session between two peers over loopback TCP, for
// allocation counts. (Not net.Pipe: its deadlines allocate a timer per
// call, sockets' do not.)
func newHBTCPRelay(t testing.TB, cfg Config) (client, up *hbWirePeer) {
	t.Helper()
	env, err := NewEnv(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.CloseWait = 10 * time.Millisecond
	cs, cc := hbTCPPair(t)
	us, uc := hbTCPPair(t)
	s := New(env, "allocs", cs, nil, Upstream{Conn: us}, func(context.Context) (Upstream, error) {
		return Upstream{}, fmt.Errorf("%w: test", ErrUpstreamRejected)
	})
	done := make(chan struct{})
	go func() { defer close(done); s.Run(context.Background()) }()
	t.Cleanup(func() {
		s.Close()
		_ = cc.Close()
		_ = uc.Close()
		<-done
	})
	return newHBWirePeer(cc, true), newHBWirePeer(uc, false)
}

// withReplay sets TETHER_REPLAY_PROTOCOL (json: keep subscribe, end
// complete).
func withReplay(c Config, p replay.Protocol) Config {
	c.Replay.Protocol = p
	if p == replay.JSON {
		c.Replay.JSONKeep, c.Replay.JSONEnd = []string{"subscribe"}, []string{"complete"}
	}
	return c
}

// TestRelaySteadyStateAllocs pins the steady-state allocations of relaying one
// text message: upstream → client allocates nothing, with and without JSON
// heartbeat recognition on the upstream leg; client → upstream allocates
// nothing when the upstream heartbeat is off (no retention); answering the
// upstream's RFC or JSON pings allocates nothing (the JSON pong is built in a
// pooled buffer). With retention (README "Upstream loss, reconnect and the
// delivery guarantee"), each client message is copied until acknowledged, and
// here nothing acknowledges it: that count is logged, not pinned.
func TestRelaySteadyStateAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	msg := []byte(`{"op":"update","id":12345,"data":{"price":101.25,"qty":3,"side":"buy"},"ts":1700000000123}`)
	long := time.Hour
	for _, c := range []struct {
		name       string
		cfg        Config
		toUpstream bool
		max        float64   // -1: log only
		ping       ws.OpCode // the upstream pings tether instead (OpPing, or OpText for a JSON ping)
	}{
		{"upstream-to-client/ws", hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbLeg(heartbeat.ModeWS, long, 0)), false, 0, 0},
		{"upstream-to-client/json", hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbLeg(heartbeat.ModeJSON, long, 0)), false, 0, 0},
		{"upstream-to-client/off", hbCfg(hbOff, hbOff), false, 0, 0},
		{"client-to-upstream/upstream-hb-off", hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbOff), true, 0, 0},
		{"client-to-upstream/retained", hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbLeg(heartbeat.ModeWS, long, 0)), true, -1, 0},
		{"upstream-rfc-ping-answered", hbCfg(hbOff, hbLeg(heartbeat.ModeWS, long, 0)), false, 0, ws.OpPing},
		{"upstream-json-ping-answered", hbCfg(hbOff, hbLeg(heartbeat.ModeJSON, long, 0)), false, 0, ws.OpText},
		// README "State replay on upstream reconnect": a message that is
		// not state costs no allocation under a preset.
		{"upstream-to-client/graphql-transport-ws", withReplay(hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbLeg(heartbeat.ModeWS, long, 0)), replay.GraphQLTransportWS), false, 0, 0},
		{"client-to-upstream/graphql-transport-ws", withReplay(hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbOff), replay.GraphQLTransportWS), true, 0, 0},
		{"upstream-to-client/stomp", withReplay(hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbLeg(heartbeat.ModeWS, long, 0)), replay.STOMP), false, 0, 0},
		{"client-to-upstream/stomp", withReplay(hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbOff), replay.STOMP), true, 0, 0},
		{"upstream-to-client/replay-json", withReplay(hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbLeg(heartbeat.ModeWS, long, 0)), replay.JSON), false, 0, 0},
		{"client-to-upstream/replay-json", withReplay(hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbOff), replay.JSON), true, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, up := newHBTCPRelay(t, c.cfg)
			from, to := up, client
			if c.toUpstream {
				from, to = client, up
			}
			frame := append([]byte(nil), from.encode(ws.OpText, msg)...)
			want := msg
			if c.ping != 0 {
				to = up
				ping := []byte(`{"type":"ping","id":7}`)
				if c.ping == ws.OpPing {
					ping = []byte("12345678")
				}
				frame = append([]byte(nil), from.encode(c.ping, ping)...)
				want = []byte(`{"type":"pong","id":7}`)
				if c.ping == ws.OpPing {
					want = ping
				}
			}
			step := func() {
				if _, err := from.conn.Write(frame); err != nil {
					t.Fatal(err)
				}
				next := to.frame
				if c.toUpstream {
					next = to.read // past an acknowledgement ping
				}
				if _, p, err := next(); err != nil || string(p) != string(want) {
					t.Fatalf("read: %q, %v", p, err)
				}
			}
			for range 10 { // warm up buffers
				step()
			}
			// Retention allows 1024 messages: stay below it.
			got := testing.AllocsPerRun(500, step)
			if c.max >= 0 && got > c.max {
				t.Errorf("%v allocations per message, want at most %v", got, c.max)
			}
			t.Logf("%v allocations per message", got)
		})
	}
}

// BenchmarkResumableRelay compares a resumable session (README "Client
// session resume": upstream messages kept until the client's tether.ack,
// client messages counted and acknowledged) with a plain one, 1 KiB
// messages each way over loopback TCP. On a shared machine only the
// allocation counts mean anything; time it on a quiet one.
func BenchmarkResumableRelay(b *testing.B) {
	// The upstream heartbeat off: nothing here answers pings, so client
	// messages are not retained for the upstream (BenchmarkRelay has that).
	cfg := hbCfg(hbLeg(heartbeat.ModeBoth, 15*time.Second, 0), hbOff)
	msg := make([]byte, 1<<10)
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	for _, resumable := range []bool{false, true} {
		for _, toUpstream := range []bool{false, true} {
			name := map[bool]string{false: "plain", true: "resumable"}[resumable] + map[bool]string{false: "/upstream-to-client", true: "/client-to-upstream"}[toUpstream]
			b.Run(name, func(b *testing.B) {
				var client, up *hbWirePeer
				if resumable {
					client, up = newResumableTCPRelay(b, cfg)
				} else {
					client, up = newHBTCPRelay(b, cfg)
				}
				from, to := up, client
				if toUpstream {
					from, to = client, up
					// tether's tether.acks (and pings) come back on
					// the client connection: read them.
					go func() {
						for {
							if _, _, err := client.frame(); err != nil {
								return
							}
						}
					}()
				}
				frame := append([]byte(nil), from.encode(ws.OpText, msg)...)
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				b.ResetTimer()
				errc := make(chan error, 1)
				go func() {
					for range b.N {
						if _, err := from.conn.Write(frame); err != nil {
							errc <- err
							return
						}
					}
					errc <- nil
				}()
				ack := make([]byte, 0, 64)
				for i := range b.N {
					p, err := readData(to)
					if err != nil || len(p) != len(msg) {
						b.Fatalf("message %d: %d bytes, %v", i, len(p), err)
					}
					if resumable && !toUpstream && (i+1)%32 == 0 {
						ack = client.appendAck(ack[:0], uint64(i+1))
						if _, err := client.conn.Write(ack); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StopTimer()
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkRelayTLS relays one message at a time (each waits for its
// echo: a write of its own each way) with TLS on both legs, through a
// session with the default configuration and directly (client to echo
// over TLS, no tether) as the baseline for a ratio.
func BenchmarkRelayTLS(b *testing.B) {
	certFile, keyFile, pool := testkit.SelfSigned(b)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	srv := &tls.Config{Certificates: []tls.Certificate{cert}}
	cli := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	// pair is a loopback TCP pair with TLS: a the client side, b the server.
	pair := func() (a, c *tls.Conn) {
		x, y := hbTCPPair(b)
		a, c = tls.Client(x, cli), tls.Server(y, srv)
		errc := make(chan error, 1)
		go func() { errc <- c.Handshake() }()
		if err := a.Handshake(); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		return a, c
	}
	def := hbCfg(hbLeg(heartbeat.ModeBoth, 15*time.Second, 0), hbLeg(heartbeat.ModeWS, 15*time.Second, 0))
	for _, size := range []int{128, 1 << 10} {
		for _, direct := range []bool{true, false} {
			name := map[bool]string{true: "direct", false: "tether"}[direct]
			b.Run(fmt.Sprintf("%s/%dB", name, size), func(b *testing.B) {
				var cc, ec *tls.Conn
				var wg sync.WaitGroup
				stop := func() {}
				if direct {
					cc, ec = pair()
				} else {
					env, err := NewEnv(def, nil, nil)
					if err != nil {
						b.Fatal(err)
					}
					env.CloseWait = 10 * time.Millisecond
					var cs, uc *tls.Conn
					cc, cs = pair()
					uc, ec = pair()
					s := New(env, "bench", cs, nil, Upstream{Conn: uc}, func(context.Context) (Upstream, error) {
						return Upstream{}, fmt.Errorf("%w: bench", ErrUpstreamRejected)
					})
					wg.Add(1)
					go func() { defer wg.Done(); s.Run(context.Background()) }()
					stop = s.Close
				}
				echo := newHBWirePeer(ec, false)
				wg.Add(1)
				go func() { defer wg.Done(); echo.echo() }()
				defer func() {
					_ = cc.Close()
					_ = ec.Close()
					stop()
					wg.Wait()
				}()
				client := newHBWirePeer(cc, true)
				msg := bytes.Repeat([]byte{'m'}, size)
				frame := append([]byte(nil), client.encode(ws.OpBinary, msg)...)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if _, err := cc.Write(frame); err != nil {
						b.Fatal(err)
					}
					if _, p, err := client.read(); err != nil || len(p) != size {
						b.Fatalf("message %d: %d bytes, %v", i, len(p), err)
					}
				}
			})
		}
	}
}
