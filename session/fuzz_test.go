package session

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
)

// fuzzScript turns fuzz bytes into frames a peer writes: each record is a
// first header byte as on the wire (FIN, RSV, opcode), a byte whose high
// bit flips the masking (unmasked from the client, masked from the
// upstream) and whose low 7 bits are the payload length, then the
// payload. Masking and lengths are thus right unless the record asks
// otherwise, so the fuzzer reaches the session's logic instead of failing
// at the first header.
func fuzzScript(b []byte, client bool) []byte {
	var out []byte
	for len(b) >= 2 {
		b0, b1 := b[0], b[1]
		b = b[2:]
		n := min(int(b1&0x7f), len(b))
		p := bytes.Clone(b[:n])
		b = b[n:]
		mask := client != (b1&0x80 != 0)
		var mb byte
		if mask {
			mb = 0x80
		}
		out = append(out, b0)
		if n < 126 {
			out = append(out, mb|byte(n))
		} else {
			out = binary.BigEndian.AppendUint16(append(out, mb|126), uint16(n))
		}
		if mask {
			key := [4]byte{0xa1, 0x02, 0x7c, 0x39}
			out = append(out, key[:]...)
			ws.Cipher(p, key, 0)
		}
		out = append(out, p...)
	}
	return out
}

// panicFlag is a slog handler that records whether a session logged a
// recovered panic.
type panicFlag struct{ hit *atomic.Bool }

func (h panicFlag) Enabled(context.Context, slog.Level) bool { return true }
func (h panicFlag) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "session panic" {
		h.hit.Store(true)
	}
	return nil
}
func (h panicFlag) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panicFlag) WithGroup(string) slog.Handler      { return h }

// fuzzCloseCode returns the payload of the first Close in fs and whether
// there is one.
func fuzzCloseCode(fs []hbFrame) ([]byte, bool) {
	for _, f := range fs {
		if f.op == ws.OpClose {
			return f.p, true
		}
	}
	return nil, false
}

// FuzzSession writes fuzzed frame scripts from a fake client and a fake
// upstream over net.Pipe through a whole session (New, Run), followed by a
// Close 1000 from each. Invariants: no panic (not even one Run recovers),
// Run returns, and every Close tether sends carries a code that may go on
// the wire (or none), at most 123 bytes of valid UTF-8 reason; the client
// always gets one.
func FuzzSession(f *testing.F) {
	rec := func(b0 byte, p string) []byte { return append([]byte{b0, byte(len(p))}, p...) }
	cat := func(rs ...[]byte) []byte { return bytes.Join(rs, nil) }
	f.Add(cat(rec(0x81, "hello"), rec(0x89, "p")), cat(rec(0x82, "\x00\x01")))
	f.Add(cat(rec(0x01, "frag"), rec(0x89, ""), rec(0x80, "ment")), []byte{})
	f.Add(cat(rec(0x81, `{"type":"ping","id":1}`), rec(0x81, `{"type":"pong"}`)), cat(rec(0x8a, "x")))
	f.Add(cat(rec(0x88, "\x03\xe8bye")), cat(rec(0x81, "late")))
	f.Add([]byte{}, cat(rec(0x88, "\x0f\xa0app")))
	f.Add([]byte{}, cat(rec(0x88, "\x03\xe9")))        // 1001: reconnect, dial rejected
	f.Add(cat(rec(0xc1, "x")), cat(rec(0x81, "\xff"))) // RSV1; invalid UTF-8 upstream
	f.Add(cat(rec(0x81, strings.Repeat("a", 120)), rec(0x00, strings.Repeat("b", 100))), []byte{})
	f.Add([]byte{0x81, 0x81, 'x'}, []byte{0x81, 0x81, 'y'}) // wrong masking on both legs
	f.Fuzz(func(t *testing.T, client, upstream []byte) {
		cfg := hbCfg(hbLeg(heartbeat.ModeBoth, time.Hour, 0), hbLeg(heartbeat.ModeJSON, time.Hour, 0))
		cfg.MaxMessageBytes = 200
		var panicked atomic.Bool
		env, err := NewEnv(cfg, slog.New(panicFlag{&panicked}), nil)
		if err != nil {
			t.Fatal(err)
		}
		env.CloseWait = 50 * time.Millisecond
		cc, cs := net.Pipe()
		uc, us := net.Pipe()
		defer cc.Close()
		defer us.Close()
		cp := newHBPeer(t, cc, true, false, false)
		up := newHBPeer(t, us, false, false, false)
		s := New(env, "fuzz", cs, nil, Upstream{Conn: uc}, func(context.Context) (Upstream, error) {
			return Upstream{}, fmt.Errorf("%w: fuzz", ErrUpstreamRejected)
		})
		ran := make(chan struct{})
		go func() { defer close(ran); s.Run(context.Background()) }()
		var wg sync.WaitGroup
		for _, w := range []struct {
			p      *hbPeer
			script []byte
		}{{cp, fuzzScript(client, true)}, {up, fuzzScript(upstream, false)}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if w.p.write(w.script) == nil {
					_ = w.p.send(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "end")))
				}
			}()
		}
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatalf("session did not end\nclient script % x\nupstream script % x", client, upstream)
		}
		_ = cc.Close()
		_ = us.Close()
		wg.Wait()
		<-cp.done
		<-up.done
		if panicked.Load() {
			t.Fatal("the session recovered from a panic")
		}
		for _, peer := range []struct {
			name string
			p    *hbPeer
		}{{"client", cp}, {"upstream", up}} {
			p, ok := fuzzCloseCode(peer.p.got())
			if !ok {
				if peer.name == "client" {
					t.Fatal("the client got no Close")
				}
				continue
			}
			if len(p) == 0 {
				continue
			}
			if ce, err := parseClose(p); err != nil || len(ce.Reason) > 123 {
				t.Fatalf("%s got an invalid Close % x: %v", peer.name, p, err)
			}
		}
	})
}
