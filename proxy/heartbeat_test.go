package proxy_test

// Heartbeats end to end (README "Heartbeats", issue 3): tether on 127.0.0.1
// between gorilla/websocket peers, for both legs and all four modes. Exact
// timing is tested with fake time in session/heartbeat_test.go; these tests
// check the same behaviour over real sockets with tolerance bands.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/faultnet"
	"github.com/tether-proxy/tether/proxy"
	"github.com/tether-proxy/tether/session"
)

const (
	hbJSONPing = `{"type":"ping"}`
	hbJSONPong = `{"type":"pong"}`
)

var (
	hbLegs  = []string{session.LegClient, session.LegUpstream}
	hbModes = []heartbeat.Mode{heartbeat.ModeOff, heartbeat.ModeJSON, heartbeat.ModeWS, heartbeat.ModeBoth}
	hbOff   = heartbeat.Config{Mode: heartbeat.ModeOff, Interval: time.Hour, Timeout: 3 * time.Hour}
)

// hbOnly configures leg with mode, interval and timeout and turns the
// other leg's heartbeat off, so that only the leg under test pings.
func hbOnly(leg string, mode heartbeat.Mode, interval, timeout time.Duration) func(*proxy.Config) {
	return func(c *proxy.Config) {
		hb := heartbeat.Config{Mode: mode, Interval: interval, Timeout: timeout}
		c.Session.ClientHeartbeat, c.Session.UpstreamHeartbeat = hbOff, hbOff
		if leg == session.LegClient {
			c.Session.ClientHeartbeat = hb
		} else {
			c.Session.UpstreamHeartbeat = hb
		}
	}
}

func hbChain(mods ...func(*proxy.Config)) func(*proxy.Config) {
	return func(c *proxy.Config) {
		for _, m := range mods {
			m(c)
		}
	}
}

// hbMetric returns the value of a counter, or the sample count of a
// histogram, with label leg (or no label when leg is "").
func hbMetric(t *testing.T, tt *tether, name, leg string) float64 {
	t.Helper()
	if leg == "" {
		return metric(t, tt, name)
	}
	return metric(t, tt, name, "leg="+leg)
}

func hbHasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// hbRTTSum returns the sum of tether_heartbeat_rtt_seconds{leg}.
func hbRTTSum(t *testing.T, tt *tether, leg string) float64 {
	t.Helper()
	mfs, err := tt.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tether_heartbeat_rtt_seconds" {
			for _, m := range mf.GetMetric() {
				if hbHasLabel(m, "leg", leg) {
					return m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	return 0
}

// hbSetup is a tether between a gorilla client and a gorilla backend
// whose connections are handed to the test.
type hbSetup struct {
	tt      *tether
	b       *backend
	client  *websocket.Conn
	up      *websocket.Conn // the first upstream connection
	ups     chan *websocket.Conn
	release chan struct{}
	conns   atomic.Int32 // upstream connections accepted
}

// hbStart starts the backend, tether (configured by mod) and a client,
// and waits for the upstream connection. Backend handlers return (closing
// their connection) when the test ends.
func hbStart(t *testing.T, mod func(*proxy.Config)) *hbSetup {
	t.Helper()
	s := &hbSetup{ups: make(chan *websocket.Conn, 16), release: make(chan struct{})}
	s.b = newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		s.conns.Add(1)
		select {
		case s.ups <- c:
		case <-s.release:
			return
		}
		<-s.release
	})
	s.tt = startTether(t, s.b.URL, mod)
	s.client = dial(t, s.tt.URL, nil)
	t.Cleanup(func() {
		close(s.release)
		_ = s.client.Close()
	})
	s.up = s.nextUp(t, 5*time.Second)
	return s
}

func (s *hbSetup) nextUp(t *testing.T, d time.Duration) *websocket.Conn {
	t.Helper()
	select {
	case c := <-s.ups:
		return c
	case <-time.After(d):
		t.Fatalf("no upstream connection within %v", d)
		return nil
	}
}

// peer returns the gorilla end of leg, and the other end.
func (s *hbSetup) peer(leg string) (this, other *websocket.Conn) {
	if leg == session.LegClient {
		return s.client, s.up
	}
	return s.up, s.client
}

// hbPeer reads a gorilla conn in the background: it records tether's
// RFC and JSON pings and the pongs it gets, optionally answers pings, and
// passes every other message to msgs.
type hbPeer struct {
	c          *websocket.Conn
	answerRFC  bool
	answerJSON bool
	msgs       chan hbMsg
	done       chan struct{}

	wmu sync.Mutex // data writes (gorilla allows one writer)

	mu        sync.Mutex
	rfcPings  []time.Time
	jsonPings []time.Time
	pongs     []string
	err       error
}

type hbMsg struct {
	typ int
	p   []byte
}

func hbRead(t *testing.T, c *websocket.Conn, answerRFC, answerJSON bool) *hbPeer {
	return hbReadAs(t, c, answerRFC, answerJSON, true)
}

// hbReadAs is hbRead; with jsonPings false, text messages that look like
// tether's JSON pings are data (for legs whose heartbeat is off).
func hbReadAs(t *testing.T, c *websocket.Conn, answerRFC, answerJSON, jsonPings bool) *hbPeer {
	p := &hbPeer{c: c, answerRFC: answerRFC, answerJSON: answerJSON, msgs: make(chan hbMsg, 4096), done: make(chan struct{})}
	c.SetPingHandler(func(data string) error {
		p.mu.Lock()
		p.rfcPings = append(p.rfcPings, time.Now())
		p.mu.Unlock()
		if p.answerRFC {
			err := c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
			if err != nil && !errors.Is(err, websocket.ErrCloseSent) && !isNetErr(err) {
				return err
			}
		}
		return nil
	})
	c.SetPongHandler(func(data string) error {
		p.mu.Lock()
		p.pongs = append(p.pongs, data)
		p.mu.Unlock()
		return nil
	})
	go func() {
		defer close(p.done)
		for {
			typ, b, err := c.ReadMessage()
			if err != nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
				return
			}
			if jsonPings && typ == websocket.TextMessage && string(b) == hbJSONPing {
				p.mu.Lock()
				p.jsonPings = append(p.jsonPings, time.Now())
				p.mu.Unlock()
				if p.answerJSON {
					_ = p.write(websocket.TextMessage, []byte(hbJSONPong))
				}
				continue
			}
			p.msgs <- hbMsg{typ, b}
		}
	}()
	t.Cleanup(func() {
		_ = c.Close()
		<-p.done
	})
	return p
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed)
}

func (p *hbPeer) write(typ int, b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return p.c.WriteMessage(typ, b)
}

// counts returns the RFC and JSON pings received in [from, to].
func (p *hbPeer) counts(from, to time.Time) (rfc, json int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	in := func(ts []time.Time) int {
		n := 0
		for _, at := range ts {
			if !at.Before(from) && !at.After(to) {
				n++
			}
		}
		return n
	}
	return in(p.rfcPings), in(p.jsonPings)
}

func (p *hbPeer) gotPongs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.pongs...)
}

// next returns the next data message, failing after d.
func (p *hbPeer) next(t *testing.T, d time.Duration) hbMsg {
	t.Helper()
	select {
	case m := <-p.msgs:
		return m
	case <-p.done:
		t.Fatalf("connection ended: %v", p.readErr())
	case <-time.After(d):
		t.Fatalf("no message within %v", d)
	}
	return hbMsg{}
}

func (p *hbPeer) readErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// hbCloseCode waits up to d for c's reader to end and returns the close
// code it got (-1 for another error).
func hbCloseCode(t *testing.T, p *hbPeer, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("connection still open after %v", d)
	}
	err := p.readErr()
	if code, _ := closeCode(err); code != -1 {
		return code
	}
	t.Logf("connection ended with %v", err)
	return -1
}

// TestHBCadence: each leg gets its pings at its interval (ws: RFC, json:
// JSON, both: one of each) and the other leg none; pings, pongs and
// round-trip times are in the metrics.
func TestHBCadence(t *testing.T) {
	t.Parallel()
	const interval, window = 100 * time.Millisecond, time.Second
	for _, leg := range hbLegs {
		for _, mode := range hbModes {
			t.Run(leg+"/"+mode.String(), func(t *testing.T) {
				t.Parallel()
				s := hbStart(t, hbOnly(leg, mode, interval, 20*interval))
				this, other := s.peer(leg)
				p := hbRead(t, this, true, true)
				o := hbRead(t, other, true, true)
				from := time.Now()
				time.Sleep(window)
				to := time.Now()
				rfc, json := p.counts(from, to)
				orfc, ojson := o.counts(from, time.Now())
				want := int(window / interval)
				inBand := func(n int) bool { return n >= want-3 && n <= want+1 }
				if mode.SendsWS() != inBand(rfc) || (!mode.SendsWS() && rfc != 0) {
					t.Errorf("%d RFC pings in %v, want %v", rfc, window, map[bool]string{true: fmt.Sprintf("%d..%d", want-3, want+1), false: "0"}[mode.SendsWS()])
				}
				if mode.SendsJSON() != inBand(json) || (!mode.SendsJSON() && json != 0) {
					t.Errorf("%d JSON pings in %v, want %v", json, window, map[bool]string{true: fmt.Sprintf("%d..%d", want-3, want+1), false: "0"}[mode.SendsJSON()])
				}
				if orfc+ojson != 0 {
					t.Errorf("the other leg (off) got %d RFC and %d JSON pings", orfc, ojson)
				}
				// Metrics count real traffic.
				pings := hbMetric(t, s.tt, "tether_heartbeat_pings_sent_total", leg)
				pongs := hbMetric(t, s.tt, "tether_heartbeat_pongs_received_total", leg)
				rtts := hbMetric(t, s.tt, "tether_heartbeat_rtt_seconds", leg)
				if got := float64(rfc + json); pings < got {
					t.Errorf("pings_sent_total{leg=%q} = %v, below the %v received", leg, pings, got)
				}
				if !mode.On() {
					if pings+pongs+rtts != 0 {
						t.Errorf("mode off: pings=%v pongs=%v rtt samples=%v", pings, pongs, rtts)
					}
					return
				}
				if pongs < float64(want-4) || rtts < float64(want-4) {
					t.Errorf("pongs_received_total{leg=%q} = %v, rtt samples = %v, want about %d each (the peer answers every ping)", leg, pongs, rtts, want*map[bool]int{true: 2, false: 1}[mode == heartbeat.ModeBoth])
				}
				if avg := hbRTTSum(t, s.tt, leg) / rtts; !(avg > 0 && avg < 0.5) {
					t.Errorf("mean RTT on loopback %vs", avg)
				}
				if n := hbMetric(t, s.tt, "tether_heartbeat_timeouts_total", leg); n != 0 {
					t.Errorf("timeouts_total{leg=%q} = %v", leg, n)
				}
				otherLeg := session.LegClient
				if leg == otherLeg {
					otherLeg = session.LegUpstream
				}
				if n := hbMetric(t, s.tt, "tether_heartbeat_pings_sent_total", otherLeg); n != 0 {
					t.Errorf("pings_sent_total{leg=%q} = %v for a leg that is off", otherLeg, n)
				}
			})
		}
	}
}

// TestHBAnswers: tether answers an RFC ping itself on both legs in every
// mode (same payload, not forwarded); in json and both modes it answers
// JSON pings with the JSON pong (echoing extra members) and consumes JSON
// pongs; in ws and off modes JSON heartbeats are forwarded. Look-alikes
// are always forwarded.
func TestHBAnswers(t *testing.T) {
	t.Parallel()
	for _, leg := range hbLegs {
		for _, mode := range hbModes {
			t.Run(leg+"/"+mode.String(), func(t *testing.T) {
				t.Parallel()
				s := hbStart(t, hbOnly(leg, mode, time.Hour, 2*time.Hour))
				this, other := s.peer(leg)
				// tether sends no pings (interval 1 h): every message is data.
				p := hbReadAs(t, this, false, false, false)
				o := hbReadAs(t, other, false, false, false)
				if err := this.WriteControl(websocket.PingMessage, []byte("rfc-1"), time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
				sent := []string{`{"type":"ping","id":7}`, hbJSONPong, `{"type":"pingpong"}`, `{"data":{"type":"ping"}}`}
				for _, m := range sent {
					if err := p.write(websocket.TextMessage, []byte(m)); err != nil {
						t.Fatal(err)
					}
				}
				if err := p.write(websocket.BinaryMessage, []byte(hbJSONPing)); err != nil {
					t.Fatal(err)
				}
				// A JSON ping in two fragments is an ordinary message. gorilla
				// cannot fragment on demand: write the frames by hand (no
				// gorilla write is in progress).
				p.wmu.Lock()
				err := hbWriteRaw(this.NetConn(), leg == session.LegClient,
					ws.NewFrame(ws.OpText, false, []byte(`{"type":`)), ws.NewFrame(ws.OpContinuation, true, []byte(`"ping"}`)))
				p.wmu.Unlock()
				if err != nil {
					t.Fatal(err)
				}
				if err := p.write(websocket.TextMessage, []byte("marker")); err != nil {
					t.Fatal(err)
				}

				// What reaches the other peer, in order, up to the marker.
				var fwd []string
				for {
					m := o.next(t, 5*time.Second)
					s := string(m.p)
					if m.typ == websocket.BinaryMessage {
						s = "binary:" + s
					}
					fwd = append(fwd, s)
					if s == "marker" {
						break
					}
				}
				want := []string{`{"type":"pingpong"}`, `{"data":{"type":"ping"}}`, "binary:" + hbJSONPing, hbJSONPing, "marker"}
				if !mode.AnswersJSON() {
					want = append([]string{`{"type":"ping","id":7}`, hbJSONPong}, want...)
				}
				if strings.Join(fwd, " ") != strings.Join(want, " ") {
					t.Errorf("forwarded\n%q\nwant\n%q", fwd, want)
				}
				// What came back to this peer: only the answers.
				if err := o.write(websocket.TextMessage, []byte("done")); err != nil {
					t.Fatal(err)
				}
				var back []string
				for {
					m := p.next(t, 5*time.Second)
					if string(m.p) == "done" {
						break
					}
					back = append(back, string(m.p))
				}
				var wantBack []string
				if mode.AnswersJSON() {
					wantBack = []string{`{"type":"pong","id":7}`}
				}
				if strings.Join(back, " ") != strings.Join(wantBack, " ") {
					t.Errorf("answered with %q, want %q", back, wantBack)
				}
				if pongs := p.gotPongs(); len(pongs) != 1 || pongs[0] != "rfc-1" {
					t.Errorf("RFC pongs %q, want [rfc-1]", pongs)
				}
				if pongs := o.gotPongs(); len(pongs) != 0 {
					t.Errorf("the other peer got pongs %q", pongs)
				}
				// A consumed JSON pong counts as received.
				if n := hbMetric(t, s.tt, "tether_heartbeat_pongs_received_total", leg); mode.AnswersJSON() != (n == 1) {
					t.Errorf("pongs_received_total{leg=%q} = %v", leg, n)
				}
			})
		}
	}
}

// hbWriteRaw writes frames to c, masked when masked is set (client side).
func hbWriteRaw(c net.Conn, masked bool, fs ...ws.Frame) error {
	var b bytes.Buffer
	for _, f := range fs {
		if masked {
			f = ws.MaskFrame(f)
		}
		if err := ws.WriteFrame(&b, f); err != nil {
			return err
		}
	}
	_, err := c.Write(b.Bytes())
	return err
}

// TestHBSilentClient: a client that never reads (so gorilla never answers
// pings) and never writes is closed within its timeout, the upstream gets
// 1001; in mode off it is kept.
func TestHBSilentClient(t *testing.T) {
	t.Parallel()
	const interval, timeout = 50 * time.Millisecond, 300 * time.Millisecond
	for _, mode := range hbModes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			s := hbStart(t, hbOnly(session.LegClient, mode, interval, timeout))
			o := hbRead(t, s.up, true, true)
			if !mode.On() {
				select {
				case <-o.done:
					t.Fatalf("upstream closed in mode off: %v", o.readErr())
				case <-time.After(3 * timeout):
				}
				if err := s.client.WriteMessage(websocket.TextMessage, []byte("alive")); err != nil {
					t.Fatal(err)
				}
				if m := o.next(t, 5*time.Second); string(m.p) != "alive" {
					t.Fatalf("upstream got %q", m.p)
				}
				return
			}
			code := hbCloseCode(t, o, timeout+5*time.Second)
			elapsed := time.Since(start)
			if code != websocket.CloseGoingAway {
				t.Errorf("upstream got close code %d, want 1001", code)
			}
			if elapsed < timeout-20*time.Millisecond || elapsed > timeout+time.Second {
				t.Errorf("silent client closed after %v, want about %v", elapsed, timeout)
			}
			if n := hbMetric(t, s.tt, "tether_heartbeat_timeouts_total", session.LegClient); n != 1 {
				t.Errorf("timeouts_total{leg=client} = %v, want 1", n)
			}
			// The client gets a Close 1001 too when it reads at last
			// (without answering the pings it finds on the way).
			s.client.SetPingHandler(func(string) error { return nil })
			_ = s.client.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				_, m, err := s.client.ReadMessage()
				if err != nil {
					if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
						t.Errorf("client: %v, want close 1001", err)
					}
					break
				}
				if string(m) != hbJSONPing {
					t.Errorf("client got %q", m)
				}
			}
		})
	}
}

// TestHBSilentUpstream: an upstream that never reads and never writes is
// lost within its timeout and replaced by a reconnect while the client
// stays open; in mode off it is kept.
func TestHBSilentUpstream(t *testing.T) {
	t.Parallel()
	const interval, timeout = 50 * time.Millisecond, 300 * time.Millisecond
	for _, mode := range hbModes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			s := hbStart(t, hbChain(hbOnly(session.LegUpstream, mode, interval, timeout), func(c *proxy.Config) {
				c.Session.Reconnect.InitialDelay = time.Millisecond
			}))
			start := time.Now()
			p := hbRead(t, s.client, true, true)
			if !mode.On() {
				select {
				case c := <-s.ups:
					t.Fatalf("reconnected in mode off (%v)", c.RemoteAddr())
				case <-time.After(3 * timeout):
				}
			} else {
				second := s.nextUp(t, timeout+5*time.Second)
				elapsed := time.Since(start)
				if elapsed < timeout-20*time.Millisecond || elapsed > timeout+time.Second {
					t.Errorf("silent upstream replaced after %v, want about %v", elapsed, timeout)
				}
				if n := hbMetric(t, s.tt, "tether_heartbeat_timeouts_total", session.LegUpstream); n < 1 {
					t.Errorf("timeouts_total{leg=upstream} = %v, want 1", n)
				}
				s.up = second
			}
			// The client is still served, by the current upstream.
			o := hbRead(t, s.up, true, true)
			if err := p.write(websocket.TextMessage, []byte("alive")); err != nil {
				t.Fatal(err)
			}
			if m := o.next(t, 5*time.Second); string(m.p) != "alive" {
				t.Fatalf("upstream got %q", m.p)
			}
			select {
			case <-p.done:
				t.Fatalf("client closed: %v", p.readErr())
			default:
			}
		})
	}
}

// TestHBDataKeepsAlive: a peer that ignores pings (it never reads, so
// gorilla answers nothing) but sends data keeps its leg open for many
// timeouts.
func TestHBDataKeepsAlive(t *testing.T) {
	t.Parallel()
	const interval, timeout = 50 * time.Millisecond, 400 * time.Millisecond
	for _, leg := range hbLegs {
		for _, mode := range hbModes[1:] {
			t.Run(leg+"/"+mode.String(), func(t *testing.T) {
				t.Parallel()
				s := hbStart(t, hbOnly(leg, mode, interval, timeout))
				this, other := s.peer(leg)
				o := hbRead(t, other, true, true)
				const n = 16 // one per timeout/4, for 4 timeouts
				for i := range n {
					_ = this.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if err := this.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "data-%d", i)); err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
					time.Sleep(timeout / 4)
				}
				for i := range n {
					if m := o.next(t, 5*time.Second); string(m.p) != fmt.Sprintf("data-%d", i) {
						t.Fatalf("got %q, want data-%d", m.p, i)
					}
				}
				if k := hbMetric(t, s.tt, "tether_heartbeat_timeouts_total", leg); k != 0 {
					t.Errorf("timeouts_total{leg=%q} = %v while data flowed", leg, k)
				}
				if c := s.conns.Load(); c != 1 {
					t.Errorf("%d upstream connections, want 1", c)
				}
				if pings := hbMetric(t, s.tt, "tether_heartbeat_pings_sent_total", leg); pings < 5 {
					t.Errorf("pings_sent_total{leg=%q} = %v: heartbeats were not running", leg, pings)
				}
				// Once the data stops, the peer is found dead.
				if leg == session.LegClient {
					if code := hbCloseCode(t, o, timeout+5*time.Second); code != websocket.CloseGoingAway {
						t.Errorf("upstream got close code %d after the client fell silent, want 1001", code)
					}
				} else {
					s.nextUp(t, timeout+5*time.Second)
				}
			})
		}
	}
}

// hbTrickle writes b to c in small pieces spread over d.
func hbTrickle(c net.Conn, b []byte, d time.Duration) error {
	const pieces = 100
	step := (len(b) + pieces - 1) / pieces
	for off := 0; off < len(b); off += step {
		end := min(off+step, len(b))
		if _, err := c.Write(b[off:end]); err != nil {
			return err
		}
		time.Sleep(d / pieces)
	}
	return nil
}

func hbPayload(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// hbRawClient connects to tether with a hand-made upgrade and returns the
// raw connection.
func hbRawClient(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	return c, br
}

// TestHBSlowLargeMessage: a 200 KB message whose bytes keep arriving for
// 3.5 × the timeout keeps its leg alive (bytes of a partial frame are
// signs of life) and arrives intact.
func TestHBSlowLargeMessage(t *testing.T) {
	t.Parallel()
	const interval, timeout = 50 * time.Millisecond, 200 * time.Millisecond
	const spread = 7 * timeout / 2
	payload := hbPayload(200 << 10)
	for _, leg := range hbLegs {
		t.Run(leg, func(t *testing.T) {
			t.Parallel()
			if leg == session.LegClient {
				b := newBackend(t, nil, nil)
				tt := startTether(t, b.URL, hbOnly(leg, heartbeat.ModeWS, interval, timeout))
				raw, br := hbRawClient(t, tt.Addr)
				var frame bytes.Buffer
				_ = ws.WriteFrame(&frame, ws.MaskFrame(ws.NewBinaryFrame(payload)))
				if err := hbTrickle(raw, frame.Bytes(), spread); err != nil {
					t.Fatalf("trickle: %v", err)
				}
				// The echo comes back whole; skip tether's pings.
				_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
				for {
					f, err := ws.ReadFrame(br)
					if err != nil {
						t.Fatalf("read: %v", err)
					}
					if f.Header.OpCode == ws.OpPing {
						continue
					}
					if f.Header.OpCode != ws.OpBinary || !f.Header.Fin || !bytes.Equal(f.Payload, payload) {
						t.Fatalf("got %v fin=%v of %d bytes, want the 200 KB message back", f.Header.OpCode, f.Header.Fin, len(f.Payload))
					}
					break
				}
				if n := hbMetric(t, tt, "tether_heartbeat_timeouts_total", leg); n != 0 {
					t.Errorf("timeouts_total{leg=client} = %v", n)
				}
				return
			}
			sent := make(chan error, 1)
			var conns atomic.Int32
			b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
				if conns.Add(1) > 1 {
					return
				}
				// Write one server frame by hand, slowly, under gorilla.
				var frame bytes.Buffer
				_ = ws.WriteFrame(&frame, ws.NewBinaryFrame(payload))
				sent <- hbTrickle(c.NetConn(), frame.Bytes(), spread)
				_, _, _ = c.ReadMessage() // until the test ends
			})
			tt := startTether(t, b.URL, hbOnly(leg, heartbeat.ModeWS, interval, timeout))
			c := dial(t, tt.URL, nil)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			typ, p, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if typ != websocket.BinaryMessage || !bytes.Equal(p, payload) {
				t.Fatalf("client got %d bytes, want the 200 KB message", len(p))
			}
			if err := <-sent; err != nil {
				t.Fatalf("trickle: %v", err)
			}
			if n := hbMetric(t, tt, "tether_heartbeat_timeouts_total", leg); n != 0 {
				t.Errorf("timeouts_total{leg=upstream} = %v", n)
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d upstream connections, want 1", n)
			}
		})
	}
}

// hbAnswering is a backend that answers JSON pings and echoes data;
// gorilla answers RFC pings while it reads.
func hbAnswering(c *websocket.Conn, _ *http.Request) {
	for {
		typ, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		if typ == websocket.TextMessage && string(p) == hbJSONPing {
			p = []byte(hbJSONPong)
		}
		if err := c.WriteMessage(typ, p); err != nil {
			return
		}
	}
}

// TestHBStalledUpstream: a relay that stops forwarding without closing
// is found within the upstream timeout; the reconnect (one attempt, to a
// relay that now refuses) fails and the client gets 1014.
func TestHBStalledUpstream(t *testing.T) {
	t.Parallel()
	const interval, timeout = 50 * time.Millisecond, 300 * time.Millisecond
	for _, mode := range hbModes[1:] {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, nil, hbAnswering)
			relay, err := faultnet.New(strings.TrimPrefix(b.URL, "ws://"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = relay.Close() })
			tt := startTether(t, "ws://"+relay.Addr(), hbChain(hbOnly(session.LegUpstream, mode, interval, timeout), func(c *proxy.Config) {
				c.Session.Reconnect.MaxAttempts = 1
				c.Session.Reconnect.InitialDelay = time.Millisecond
			}))
			c := dial(t, tt.URL, nil)
			p := hbRead(t, c, true, true)
			if err := p.write(websocket.TextMessage, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			if m := p.next(t, 5*time.Second); string(m.p) != "hello" {
				t.Fatalf("echo %q", m.p)
			}
			// Heartbeats flow for a few intervals before the stall.
			time.Sleep(3 * interval)
			if n := hbMetric(t, tt, "tether_heartbeat_pongs_received_total", session.LegUpstream); n < 1 {
				t.Errorf("no pong from the upstream before the stall")
			}
			relay.Refuse(true)
			relay.Stall()
			stalled := time.Now()
			code := hbCloseCode(t, p, timeout+5*time.Second)
			elapsed := time.Since(stalled)
			if code != 1014 {
				t.Errorf("client got close code %d, want 1014", code)
			}
			// The last byte before the stall came at most an interval (plus
			// scheduling delays) before it.
			if elapsed < timeout/2 || elapsed > timeout+time.Second {
				t.Errorf("stall detected after %v, want about %v", elapsed, timeout)
			}
			if n := hbMetric(t, tt, "tether_heartbeat_timeouts_total", session.LegUpstream); n != 1 {
				t.Errorf("timeouts_total{leg=upstream} = %v, want 1", n)
			}
			if n := hbMetric(t, tt, "tether_heartbeat_timeouts_total", session.LegClient); n != 0 {
				t.Errorf("timeouts_total{leg=client} = %v, want 0", n)
			}
			if n := relay.Accepted(); n != 2 {
				t.Errorf("relay accepted %d connections, want 2 (the first and one reconnect attempt)", n)
			}
		})
	}
}

// TestHBStress: heartbeats every 20 ms in both modes on both legs while 5
// MB stream each way; a heartbeat written inside a relayed frame would
// corrupt the stream, which gorilla reports as a protocol error.
//
// Not parallel: it uses all the CPU it gets, and it runs before the
// timing-sensitive parallel tests start.
func TestHBStress(t *testing.T) {
	const interval = 20 * time.Millisecond
	const total = 5 << 20
	s := hbStart(t, func(c *proxy.Config) {
		hb := heartbeat.Config{Mode: heartbeat.ModeBoth, Interval: interval, Timeout: 5 * time.Second}
		c.Session.ClientHeartbeat, c.Session.UpstreamHeartbeat = hb, hb
	})
	// Message i: its index in 16 decimal digits, then letters derived
	// from it; sizes vary up to 64 KiB. Odd messages are binary.
	msg := func(i int) (int, []byte) {
		r := rand.New(rand.NewPCG(uint64(i), 7))
		n := 16 + r.IntN(64<<10)
		b := make([]byte, n)
		copy(b, fmt.Sprintf("%016d", i))
		for k := 16; k < n; k++ {
			b[k] = 'a' + byte(r.IntN(26))
		}
		if i%2 == 1 {
			return websocket.BinaryMessage, b
		}
		return websocket.TextMessage, b
	}
	stream := func(p *hbPeer, errc chan<- error) int {
		sent, i := 0, 0
		for ; sent < total; i++ {
			typ, b := msg(i)
			if err := p.write(typ, b); err != nil {
				errc <- fmt.Errorf("write %d: %w", i, err)
				return i
			}
			sent += len(b)
		}
		return i
	}
	check := func(t *testing.T, p *hbPeer, n int) {
		for i := range n {
			m := p.next(t, 10*time.Second)
			typ, want := msg(i)
			if m.typ != typ || !bytes.Equal(m.p, want) {
				t.Fatalf("message %d: got type %d, %d bytes (%.16q), want type %d, %d bytes", i, m.typ, len(m.p), m.p, typ, len(want))
			}
		}
	}
	// Both peers answer pings of both kinds.
	cp := hbRead(t, s.client, true, true)
	up := hbRead(t, s.up, true, true)
	errc := make(chan error, 2)
	counts := make(chan [2]int, 2)
	go func() { counts <- [2]int{0, stream(cp, errc)} }()
	go func() { counts <- [2]int{1, stream(up, errc)} }()
	var n [2]int
	for range 2 {
		select {
		case c := <-counts:
			n[c[0]] = c[1]
		case err := <-errc:
			t.Fatal(err)
		}
	}
	check(t, up, n[0]) // client → upstream
	check(t, cp, n[1]) // upstream → client
	for _, p := range []*hbPeer{cp, up} {
		select {
		case <-p.done:
			t.Fatalf("connection ended: %v", p.readErr())
		default:
		}
	}
	for _, leg := range hbLegs {
		if pings := hbMetric(t, s.tt, "tether_heartbeat_pings_sent_total", leg); pings < 4 {
			t.Errorf("pings_sent_total{leg=%q} = %v: heartbeats did not run during the stream", leg, pings)
		}
	}
	rfc, json := cp.counts(time.Time{}, time.Now())
	t.Logf("streamed %d and %d messages; the client got %d RFC and %d JSON pings meanwhile", n[0], n[1], rfc, json)
}
