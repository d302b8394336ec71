package session

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/testkit"
)

// writeCounter counts the writes tether makes on a connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int64
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// coalesceRun sends n small client messages that arrive in one read and
// returns how many writes tether made on the upstream connection to relay
// them (all n must arrive, without any further client input).
func coalesceRun(t *testing.T, upstreamHB heartbeat.Config, n int) int64 {
	t.Helper()
	env, err := NewEnv(hbCfg(hbOff, upstreamHB), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.CloseWait = 50 * time.Millisecond
	ct, cp := net.Pipe()
	ut, up := net.Pipe()
	wc := &writeCounter{Conn: ut}
	dial := func(context.Context) (Upstream, error) { return Upstream{}, errors.New("no") }
	s := New(env, "coalesce", ct, nil, Upstream{Conn: wc}, dial)
	done := make(chan struct{})
	go func() { s.Run(context.Background()); close(done) }()
	defer func() {
		s.Close()
		cp.Close()
		up.Close()
		<-done
	}()

	var burst bytes.Buffer
	for i := range n {
		if err := ws.WriteFrame(&burst, ws.MaskFrame(ws.NewTextFrame([]byte("m"+strconv.Itoa(i))))); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _, _ = cp.Write(burst.Bytes()) }() // one write: one read on tether's side
	for i := range n {
		_ = up.SetReadDeadline(time.Now().Add(10 * time.Second))
		p, err := wsutil.ReadClientText(up)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if want := "m" + strconv.Itoa(i); string(p) != want {
			t.Fatalf("got %q, want %q", p, want)
		}
	}
	return wc.writes.Load()
}

// Small messages that arrive together go upstream together: while the
// client leg has more input buffered, relayed frames wait in the upstream
// leg's write buffer, and they are flushed before the client leg reads
// its socket again, so none waits for more input.
func TestCoalesceRelayedFrames(t *testing.T) {
	const n = 32
	w := coalesceRun(t, hbLeg(heartbeat.ModeWS, time.Hour, 0), n)
	if w > 4 {
		t.Fatalf("%d messages that arrived in one read took %d writes upstream, want a few", n, w)
	}
}

// Without retention (upstream heartbeat off) a client message counts as
// delivered once written, so none waits in a buffer: each is written on
// its own (header and payload as two writes on a conn without writev).
func TestNoCoalesceWithoutRetention(t *testing.T) {
	const n = 8
	if w := coalesceRun(t, hbOff, n); w < n {
		t.Fatalf("%d messages took %d writes upstream, want at least one each", n, w)
	}
}

// armWrite keeps a write deadline between d and d + d/4 from now, setting
// a new one only when the one set leaves that range (a shorter d, as for a
// Close, or time passing).
func TestArmWriteKeepsDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	l := &leg{conn: a}
	const d = 10 * time.Second
	l.armWrite(d)
	first := l.wdl
	if left := time.Until(time.Unix(0, first)); left < d || left > d+d/4 {
		t.Fatalf("deadline %v from now, want within [%v, %v]", left, d, d+d/4)
	}
	l.armWrite(d)
	if l.wdl != first {
		t.Fatal("a second write right after set a new deadline")
	}
	l.armWrite(time.Second) // a goodbye: shorter
	if left := time.Until(time.Unix(0, l.wdl)); left > time.Second+time.Second/4 {
		t.Fatalf("deadline %v from now after armWrite(1s)", left)
	}
	// The deadline is on the connection: a blocked write fails by it.
	l.armWrite(50 * time.Millisecond)
	start := time.Now()
	if _, err := a.Write([]byte("x")); err == nil { // nobody reads b
		t.Fatal("write to a pipe nobody reads succeeded")
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Fatalf("blocked write failed after %v, before its timeout", took)
	}
}

// writeSession is a session, never started, to make legs of for testing
// their write path alone.
func writeSession(t *testing.T) *Session {
	t.Helper()
	env, err := NewEnv(hbCfg(hbOff, hbOff), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := net.Pipe()
	t.Cleanup(func() { ct.Close() })
	return New(env, "write", ct, nil, Upstream{}, nil)
}

// A masked leg masks a consumed payload in place and leaves it so once
// written (one pass over the bytes, not two), but restores it when the
// write fails: forward then holds those bytes for the next connection.
func TestWriteConsumedRestoresOnFailure(t *testing.T) {
	s := writeSession(t)
	msg := bytes.Repeat([]byte("payload "), 4096) // past what a write copies (coalesceBuf/4)
	p := append([]byte(nil), msg...)

	ok, peer := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	u := newLeg(s, ok, nil, false, hbOff)
	if err := u.writeData(ws.OpBinary, p, 1, false); err != nil || !bytes.Equal(p, msg) {
		t.Fatalf("writeData: err %v, payload kept: %v", err, bytes.Equal(p, msg))
	}
	if err := u.writeDataConsumed(ws.OpBinary, p, 2, false, maskKey{}); err != nil || bytes.Equal(p, msg) {
		t.Fatalf("writeDataConsumed: err %v, payload still plain: %v (want masked in place)", err, bytes.Equal(p, msg))
	}
	ok.Close()
	peer.Close()

	p = append(p[:0], msg...)
	bad, other := net.Pipe()
	other.Close()
	u = newLeg(s, bad, nil, false, hbOff)
	if err := u.writeDataConsumed(ws.OpBinary, p, 3, false, maskKey{}); err == nil {
		t.Fatal("write to a closed pipe succeeded")
	}
	if !bytes.Equal(p, msg) {
		t.Fatal("a failed consumed write left the payload masked")
	}
}

// checkConn calls check before each write.
type checkConn struct {
	net.Conn
	check func()
}

func (c *checkConn) Write(p []byte) (int, error) {
	c.check()
	return c.Conn.Write(p)
}

// Bytes a writer keeps (here a delivery log's plaintext message) are
// masked in a copy on a masked leg: they never change, even during the
// write (another goroutine may be writing the same message to the next
// connection).
func TestWriteLoggedLeavesMessage(t *testing.T) {
	s := writeSession(t)
	msg := bytes.Repeat([]byte("logged "), 2000)
	p := bytes.Clone(msg)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _, _ = io.Copy(io.Discard, b) }()
	changed := false
	u := newLeg(s, &checkConn{Conn: a, check: func() { changed = changed || !bytes.Equal(p, msg) }}, nil, false, hbOff)
	for _, n := range []int{10, len(p)} {
		if err := u.writeLogged(ws.OpText, p[:n], 1, maskKey{}); err != nil {
			t.Fatal(err)
		}
	}
	if changed || !bytes.Equal(p, msg) {
		t.Fatal("a logged message's bytes changed while written")
	}
}

// writeSizes records the size of each write tether makes on a connection.
type writeSizes struct {
	net.Conn
	mu    sync.Mutex
	sizes []int
}

func (c *writeSizes) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.sizes = append(c.sizes, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// Control frames flushed together join the frames pending in the write
// buffer only while it has room: a buffer that would overflow its pool's
// size class is written first (flushControlLocked, as writeFrameRSV
// does), so no write grows it and every frame still goes out in order.
func TestControlFlushBounded(t *testing.T) {
	env, err := NewEnv(hbCfg(hbLeg(heartbeat.ModeBoth, time.Hour, time.Hour), hbOff), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, cp := net.Pipe()
	ut, up := net.Pipe()
	defer cp.Close()
	defer up.Close()
	rec := &writeSizes{Conn: ct}
	dial := func(context.Context) (Upstream, error) { return Upstream{}, errors.New("no") }
	s := New(env, "bounded", rec, nil, Upstream{Conn: ut}, dial)
	l := s.client

	got := make(chan []ws.Frame, 1)
	go func() {
		var fs []ws.Frame
		for len(fs) == 0 || fs[len(fs)-1].Header.OpCode != ws.OpText {
			f, err := ws.ReadFrame(cp)
			if err != nil {
				break
			}
			fs = append(fs, f)
		}
		got <- fs
	}()

	data := bytes.Repeat([]byte{'d'}, 1000)
	l.lock()
	sent := 0
	for len(l.wbuf)+len(data)+4 <= coalesceBuf-12-130 {
		l.appendFrameLocked(ws.OpBinary, false, data)
		sent++
	}
	// A last frame leaves 12 bytes free: too few for a pong's frame.
	pad := bytes.Repeat([]byte{'d'}, coalesceBuf-12-len(l.wbuf)-4)
	l.appendFrameLocked(ws.OpBinary, false, pad)
	sent++
	l.queuePong([]byte("rfc-pong")) // the lock is held: both left pending
	l.queueJSONPong([]byte(`{"type":"ping","n":7}`))
	l.unlock()

	var fs []ws.Frame
	select {
	case fs = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("frames not written")
	}
	if len(fs) != sent+2 {
		t.Fatalf("client got %d frames, want %d data frames and two pongs", len(fs), sent)
	}
	for i, f := range fs[:sent] {
		want := data
		if i == sent-1 {
			want = pad
		}
		if f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, want) {
			t.Fatalf("frame %d: op %v, %d bytes: want the data frame", i, f.Header.OpCode, len(f.Payload))
		}
	}
	if f := fs[sent]; f.Header.OpCode != ws.OpPong || string(f.Payload) != "rfc-pong" {
		t.Fatalf("then op %v %q, want the RFC pong", f.Header.OpCode, f.Payload)
	}
	if f := fs[sent+1]; f.Header.OpCode != ws.OpText || !bytes.Contains(f.Payload, []byte(`"n":7`)) {
		t.Fatalf("then op %v %q, want the JSON pong echoing the ping", f.Header.OpCode, f.Payload)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.sizes) != 2 {
		t.Fatalf("writes of %v bytes, want two: the full buffer, then the pongs", rec.sizes)
	}
	for _, n := range rec.sizes {
		if n > coalesceBuf {
			t.Fatalf("writes of %v bytes: one grew the %d-byte write buffer", rec.sizes, coalesceBuf)
		}
	}
}

// Over TLS each write is a record of its own (and a system call): a small
// frame's header and payload go in one write, not two, on both legs.
func TestTLSFrameOneWrite(t *testing.T) {
	certFile, keyFile, pool := testkit.SelfSigned(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	env, err := NewEnv(hbCfg(hbLeg(heartbeat.ModeBoth, time.Hour, 0), hbLeg(heartbeat.ModeWS, time.Hour, 0)), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, cc := hbTCPPair(t)
	us, uc := hbTCPPair(t)
	cw, uw := &writeCounter{Conn: cs}, &writeCounter{Conn: us}
	serverCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	clientCfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	// tether's ends: the TLS server on the client leg, the TLS client
	// upstream; each over a socket that counts tether's writes.
	clientLeg, clientPeer := tls.Server(cw, serverCfg), tls.Client(cc, clientCfg)
	upLeg, upPeer := tls.Client(uw, clientCfg), tls.Server(uc, serverCfg)
	for _, hs := range [][2]*tls.Conn{{clientLeg, clientPeer}, {upLeg, upPeer}} {
		errc := make(chan error, 1)
		go func() { errc <- hs[1].Handshake() }()
		if err := hs[0].Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	dial := func(context.Context) (Upstream, error) { return Upstream{}, errors.New("no") }
	s := New(env, "tls", clientLeg, nil, Upstream{Conn: upLeg}, dial)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(context.Background()) }()
	defer func() {
		s.Close()
		_ = clientPeer.Close()
		_ = upPeer.Close()
		<-done
	}()
	go newHBWirePeer(upPeer, false).echo()
	client := newHBWirePeer(clientPeer, true)

	const n = 50
	msg := bytes.Repeat([]byte{'m'}, 128)
	c0, u0 := cw.writes.Load(), uw.writes.Load()
	for i := range n {
		_ = clientPeer.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := clientPeer.Write(client.encode(ws.OpBinary, msg)); err != nil {
			t.Fatal(err)
		}
		// One at a time: each message is a write of its own each way.
		if _, p, err := client.read(); err != nil || !bytes.Equal(p, msg) {
			t.Fatalf("message %d: %q, %v", i, p, err)
		}
	}
	// Each message is one write each way (its acknowledgement ping, when
	// one goes, in the same write upstream); a probe or the tracker's
	// timing may add a write or two.
	if c, u := cw.writes.Load()-c0, uw.writes.Load()-u0; c > n+n/5 || u > n+n/5 {
		t.Fatalf("%d messages took %d writes to the client and %d upstream, want about %d each", n, c, u, n)
	}
}
