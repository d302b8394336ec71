package session

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/resume"
)

// newResumableTCPRelay is newHBTCPRelay with the session made resumable:
// the client peer has read its tether.session message.
func newResumableTCPRelay(tb testing.TB, cfg Config) (client, up *hbWirePeer) {
	tb.Helper()
	if cfg.Resume.Window == 0 {
		cfg.Resume = ResumeConfig{Window: time.Minute, MaxMessages: 1024, MaxBytes: 1 << 20}
	}
	if cfg.Buffer.TotalMaxBytes == 0 {
		cfg.Buffer = BufferConfig{MaxMessages: 1024, MaxBytes: 4 << 20, TotalMaxBytes: 256 << 20}
	}
	env, err := NewEnv(cfg, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	env.CloseWait = 10 * time.Millisecond
	cs, cc := hbTCPPair(tb)
	us, uc := hbTCPPair(tb)
	s := New(env, "resumable", cs, nil, Upstream{Conn: us}, func(context.Context) (Upstream, error) {
		return Upstream{}, fmt.Errorf("%w: test", ErrUpstreamRejected)
	})
	token, key := resume.NewToken()
	s.EnableResume(token, key, "")
	done := make(chan struct{})
	go func() { defer close(done); s.Run(context.Background()) }()
	tb.Cleanup(func() {
		s.Close()
		_ = cc.Close()
		_ = uc.Close()
		<-done
	})
	client, up = newHBWirePeer(cc, true), newHBWirePeer(uc, false)
	_, p, err := client.read()
	if err != nil || !strings.HasPrefix(string(p), `{"type":"tether.session","token":"`+token+`","resumed":false,"ack":0}`) {
		tb.Fatalf("first message %q, %v; want the tether.session message", p, err)
	}
	return client, up
}

var ackPrefix = []byte(`{"type":"tether.ack"`)

// readData reads the next data message, skipping heartbeats and, on the
// client side, tether.ack messages.
func readData(p *hbWirePeer) ([]byte, error) {
	for {
		_, b, err := p.read()
		if err != nil || !bytes.HasPrefix(b, ackPrefix) {
			return b, err
		}
	}
}

// TestResumableRelaySteadyStateAllocs: a resumable session relays without
// allocating, both ways: upstream messages are copied into pooled buffers
// until the client's tether.ack frees them, client messages are counted
// and acknowledged from a buffer of the session's.
func TestResumableRelaySteadyStateAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	msg := []byte(`{"op":"update","id":12345,"data":{"price":101.25,"qty":3,"side":"buy"},"ts":1700000000123}`)
	long := time.Hour
	cfg := hbCfg(hbLeg(heartbeat.ModeBoth, long, 0), hbOff)
	for _, toUpstream := range []bool{false, true} {
		t.Run("to-upstream="+strconv.FormatBool(toUpstream), func(t *testing.T) {
			client, up := newResumableTCPRelay(t, cfg)
			from, to := up, client
			if toUpstream {
				from, to = client, up
			}
			frame := append([]byte(nil), from.encode(ws.OpText, msg)...)
			var recv uint64
			ackFrame := make([]byte, 0, 64)
			step := func() {
				if _, err := from.conn.Write(frame); err != nil {
					t.Fatal(err)
				}
				if p, err := readData(to); err != nil || string(p) != string(msg) {
					t.Fatalf("read: %q, %v", p, err)
				}
				if toUpstream {
					return
				}
				// The client acknowledges every 16 messages.
				if recv++; recv%16 == 0 {
					ackFrame = client.appendAck(ackFrame[:0], recv)
					if _, err := client.conn.Write(ackFrame); err != nil {
						t.Fatal(err)
					}
				}
			}
			for range 100 { // warm up buffers and the log's array
				step()
			}
			got := testing.AllocsPerRun(2000, step)
			if got > 0 {
				t.Errorf("%v allocations per message, want 0", got)
			}
		})
	}
}

// appendAck appends a client tether.ack frame (masked) to b.
func (p *hbWirePeer) appendAck(b []byte, n uint64) []byte {
	var body [64]byte
	m := append(body[:0], `{"type":"tether.ack","ack":`...)
	m = strconv.AppendUint(m, n, 10)
	m = append(m, '}')
	return append(b, p.encode(ws.OpText, m)...)
}

// TestParseTetherAck: only a JSON object of type tether.ack with a count
// is an ack; an application's own messages pass.
func TestParseTetherAck(t *testing.T) {
	for in, want := range map[string]int64{
		`{"type":"tether.ack","ack":12}`:         12,
		` { "ack" : 0 , "type" : "tether.ack" }`: 0,
		`{"type":"tether.ack","ack":-1}`:         -1,
		`{"type":"tether.ack","ack":1.5}`:        -1,
		`{"type":"tether.ack"}`:                  -1,
		`{"type":"ack","ack":3}`:                 -1,
		`{"type":"tether.ack","ack":3`:           -1,
		`["tether.ack",3]`:                       -1,
		`{"type":"tether.acks","ack":3}`:         -1,
	} {
		n, ok := parseTetherAck([]byte(in))
		if got := int64(n); !ok {
			got = -1
		} else if got != want {
			t.Errorf("%s: %d, want %d", in, got, want)
		}
		if ok != (want >= 0) {
			t.Errorf("%s: ok %v, want %v", in, ok, want >= 0)
		}
	}
}

// A burst from the upstream larger than the resume log, in one write
// (README "Client session resume"): the upstream reader waits for the
// client's ack once the log is full, and first writes what it had left
// pending for the client, or the client, which acknowledges only what it
// received, would never get them (both sides waiting for ever).
func TestResumableBurstPastLogBound(t *testing.T) {
	t.Parallel()
	cfg := hbCfg(hbOff, hbOff)
	cfg.Resume = ResumeConfig{Window: time.Minute, MaxMessages: 4, MaxBytes: 1 << 20}
	client, up := newResumableTCPRelay(t, cfg)
	const n = 12
	var burst []byte
	for i := range n {
		burst = append(burst, up.encode(ws.OpText, []byte(strconv.Itoa(i)))...)
	}
	if _, err := up.conn.Write(burst); err != nil {
		t.Fatal(err)
	}
	_ = client.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ack []byte
	for i := range n {
		p, err := readData(client)
		if err != nil || string(p) != strconv.Itoa(i) {
			t.Fatalf("message %d: %q, %v", i, p, err)
		}
		// Acknowledge everything received so far (as tether.js does when
		// its ack timer fires).
		ack = client.appendAck(ack[:0], uint64(i+1))
		if _, err := client.conn.Write(ack); err != nil {
			t.Fatal(err)
		}
	}
}
