package faultnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// silence is how long a read must see nothing to count as "no bytes
// arrived". Only used with read deadlines.
const silence = 200 * time.Millisecond

// server is a TCP server on 127.0.0.1 that hands each accepted connection to
// the test (or, when echo is set, echoes everything back itself).
type server struct {
	ln       net.Listener
	accepted chan *net.TCPConn
	count    atomic.Int32
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startServer(t *testing.T, echo bool) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, accepted: make(chan *net.TCPConn, 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.count.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			if !echo {
				s.accepted <- c.(*net.TCPConn)
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func (s *server) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// next returns the next server-side connection.
func (s *server) next(t *testing.T) *net.TCPConn {
	t.Helper()
	select {
	case c := <-s.accepted:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("target did not accept a connection")
		return nil
	}
}

func newRelay(t *testing.T, target string) *Relay {
	t.Helper()
	r, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitConns(t *testing.T, r *Relay, n int) {
	t.Helper()
	if err := r.WaitConns(testCtx(t), n); err != nil {
		t.Fatalf("WaitConns(%d): %v (Conns()=%d)", n, err, r.Conns())
	}
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// expect reads exactly len(want) bytes and compares them.
func expect(t *testing.T, c net.Conn, want string) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %q: %v (got %q)", want, err, got)
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
}

// expectSilence checks that nothing arrives on c for a while.
func expectSilence(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(silence)); err != nil {
		t.Fatal(err)
	}
	var b [64]byte
	n, err := c.Read(b[:])
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("expected silence, got %q, %v", b[:n], err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
}

// readErr reads from c until an error and returns it.
func readErr(t *testing.T, c net.Conn) error {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var b [64]byte
	for {
		n, err := c.Read(b[:])
		if err != nil {
			return err
		}
		t.Fatalf("unexpected data %q", b[:n])
	}
}

func expectReset(t *testing.T, c net.Conn) {
	t.Helper()
	if err := readErr(t, c); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want ECONNRESET, got %v", err)
	}
}

func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	if err := readErr(t, c); !errors.Is(err, io.EOF) {
		t.Fatalf("want EOF, got %v", err)
	}
}

// dialReset dials addr and expects the connection to be reset. On loopback
// the relay's RST can arrive before the dialler has finished connecting, in
// which case Dial itself fails with ECONNRESET; otherwise the first read
// does.
func dialReset(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("want ECONNRESET, got %v", err)
		}
		return
	}
	defer c.Close()
	expectReset(t, c)
}

func TestForward(t *testing.T) {
	echo := startServer(t, true)
	r := newRelay(t, echo.addr())
	if host, _, err := net.SplitHostPort(r.Addr()); err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q", r.Addr())
	}
	c := dial(t, r.Addr())
	write(t, c, "hello")
	expect(t, c, "hello")
	waitConns(t, r, 1)
	if got := r.Accepted(); got != 1 {
		t.Fatalf("Accepted() = %d, want 1", got)
	}
}

func TestForwardLarge(t *testing.T) {
	echo := startServer(t, true)
	r := newRelay(t, echo.addr())
	c := dial(t, r.Addr())
	payload := pattern(1 << 20)
	go func() { _, _ = c.Write(payload) }()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("payload corrupted")
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestStallResume(t *testing.T) {
	echo := startServer(t, true)
	r := newRelay(t, echo.addr())
	c := dial(t, r.Addr())
	write(t, c, "ping")
	expect(t, c, "ping")

	r.Stall()
	r.Stall() // idempotent
	write(t, c, "one,")
	write(t, c, "two,")
	expectSilence(t, c)
	write(t, c, "three")
	if got := r.Conns(); got != 1 {
		t.Fatalf("stalled conn was dropped: Conns() = %d", got)
	}
	r.Resume()
	r.Resume() // idempotent
	expect(t, c, "one,two,three")
}

func TestStallBothDirections(t *testing.T) {
	srv := startServer(t, false)
	r := newRelay(t, srv.addr())
	c := dial(t, r.Addr())
	s := srv.next(t)

	r.Stall()
	write(t, c, "to-server")
	write(t, s, "to-client")
	expectSilence(t, s)
	expectSilence(t, c)

	// A FIN is held back as well.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectSilence(t, s)

	r.Resume()
	expect(t, s, "to-server")
	expect(t, c, "to-client")
	expectEOF(t, s)
}

func TestStallFutureConns(t *testing.T) {
	echo := startServer(t, true)
	r := newRelay(t, echo.addr())
	r.Stall()
	c := dial(t, r.Addr())
	waitConns(t, r, 1) // accepted and dialled despite the stall
	write(t, c, "held")
	expectSilence(t, c)
	r.Resume()
	expect(t, c, "held")
}

func TestStallToggleNoLoss(t *testing.T) {
	echo := startServer(t, true)
	r := newRelay(t, echo.addr())
	c := dial(t, r.Addr())
	payload := pattern(2 << 20)

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for off := 0; off < len(payload); off += 10000 {
			end := min(off+10000, len(payload))
			if _, err := c.Write(payload[off:end]); err != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			r.Stall()
			time.Sleep(time.Millisecond)
			r.Resume()
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	got := make([]byte, len(payload))
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadFull(c, got)
	close(done)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("bytes lost or reordered across Stall/Resume")
	}
}

func TestResetAll(t *testing.T) {
	srv := startServer(t, false)
	r := newRelay(t, srv.addr())
	c := dial(t, r.Addr())
	s := srv.next(t)
	write(t, c, "x")
	expect(t, s, "x")

	r.ResetAll()
	if got := r.Conns(); got != 0 {
		t.Fatalf("Conns() after ResetAll = %d", got)
	}
	expectReset(t, c)
	expectReset(t, s)

	// The relay keeps serving new connections.
	c2 := dial(t, r.Addr())
	s2 := srv.next(t)
	write(t, c2, "again")
	expect(t, s2, "again")
}

func TestResetAllWhileStalled(t *testing.T) {
	srv := startServer(t, false)
	r := newRelay(t, srv.addr())
	c := dial(t, r.Addr())
	s := srv.next(t)
	waitConns(t, r, 1)
	r.Stall()
	write(t, c, "held")
	r.ResetAll()
	expectReset(t, c)
	expectReset(t, s)
	waitConns(t, r, 0)
}

// TestResetAllRacingDial resets right after the target has accepted, when
// the relay may still be finishing its dial. Both sides must be reset either
// way.
func TestResetAllRacingDial(t *testing.T) {
	srv := startServer(t, false)
	r := newRelay(t, srv.addr())
	for range 20 {
		c := dial(t, r.Addr())
		s := srv.next(t)
		r.ResetAll()
		expectReset(t, c)
		expectReset(t, s)
	}
	waitConns(t, r, 0)
}

// TestCloseAllRacingDial is TestResetAllRacingDial for CloseAll.
func TestCloseAllRacingDial(t *testing.T) {
	srv := startServer(t, false)
	r := newRelay(t, srv.addr())
	for range 20 {
		c := dial(t, r.Addr())
		s := srv.next(t)
		r.CloseAll()
		expectEOF(t, c)
		expectEOF(t, s)
	}
	waitConns(t, r, 0)
}

func TestCloseAll(t *testing.T) {
	srv := startServer(t, false)
	r := newRelay(t, srv.addr())
	c := dial(t, r.Addr())
	s := srv.next(t)
	write(t, c, "x")
	expect(t, s, "x")
	write(t, s, "y")
	expect(t, c, "y")

	r.CloseAll()
	if got := r.Conns(); got != 0 {
		t.Fatalf("Conns() after CloseAll = %d", got)
	}
	expectEOF(t, c)
	expectEOF(t, s)
}

func TestPeerResetPropagates(t *testing.T) {
	srv := startServer(t, false)
	r := newRelay(t, srv.addr())
	c := dial(t, r.Addr())
	s := srv.next(t)
	write(t, c, "x")
	expect(t, s, "x")
	_ = s.SetLinger(0)
	_ = s.Close()
	expectReset(t, c)
	waitConns(t, r, 0)
}

func TestHalfClose(t *testing.T) {
	srv := startServer(t, false)
	r := newRelay(t, srv.addr())
	c := dial(t, r.Addr())
	s := srv.next(t)

	write(t, c, "request")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "request")
	expectEOF(t, s)
	// The other direction still works after the half-close.
	write(t, s, "response")
	expect(t, c, "response")
	if got := r.Conns(); got != 1 {
		t.Fatalf("half-closed conn dropped: Conns() = %d", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, c)
	waitConns(t, r, 0)
}

func TestRefuse(t *testing.T) {
	srv := startServer(t, false)
	r := newRelay(t, srv.addr())

	r.Refuse(true)
	dialReset(t, r.Addr())
	if got := r.Accepted(); got != 1 {
		t.Fatalf("Accepted() = %d, want 1", got)
	}
	if got := r.Conns(); got != 0 {
		t.Fatalf("Conns() = %d, want 0", got)
	}

	r.Refuse(false)
	c2 := dial(t, r.Addr())
	s2 := srv.next(t)
	write(t, c2, "ok")
	expect(t, s2, "ok")
	// Only the second connection reached the target.
	if got := srv.count.Load(); got != 1 {
		t.Fatalf("target accepted %d connections, want 1", got)
	}
	if got := r.Accepted(); got != 2 {
		t.Fatalf("Accepted() = %d, want 2", got)
	}
}

func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()

	r := newRelay(t, dead)
	dialReset(t, r.Addr())
	if got := r.Conns(); got != 0 {
		t.Fatalf("Conns() = %d, want 0", got)
	}
}

func TestSetTarget(t *testing.T) {
	a := startServer(t, false)
	b := startServer(t, false)
	r := newRelay(t, a.addr())

	c1 := dial(t, r.Addr())
	s1 := a.next(t)

	r.SetTarget(b.addr())
	c2 := dial(t, r.Addr())
	s2 := b.next(t)

	write(t, c1, "to-a")
	write(t, c2, "to-b")
	expect(t, s1, "to-a")
	expect(t, s2, "to-b")
	if a.count.Load() != 1 || b.count.Load() != 1 {
		t.Fatalf("target counts a=%d b=%d, want 1 each", a.count.Load(), b.count.Load())
	}
}

func TestWaitConns(t *testing.T) {
	echo := startServer(t, true)
	r := newRelay(t, echo.addr())

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.WaitConns(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConns with no conns: %v", err)
	}
	if err := r.WaitConns(testCtx(t), 0); err != nil {
		t.Fatalf("WaitConns(0) with no conns: %v", err)
	}

	res := make(chan error, 1)
	go func() { res <- r.WaitConns(testCtx(t), 3) }()
	var cs []net.Conn
	for range 3 {
		cs = append(cs, dial(t, r.Addr()))
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}

	// Closing the clients propagates through the echo server and back.
	for _, c := range cs {
		_ = c.Close()
	}
	waitConns(t, r, 0)
}

func TestCloseNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echo := &server{ln: ln, accepted: make(chan *net.TCPConn, 16)}
	echo.wg.Add(1)
	go func() {
		defer echo.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			echo.mu.Lock()
			echo.conns = append(echo.conns, c)
			echo.mu.Unlock()
			echo.wg.Add(1)
			go func() {
				defer echo.wg.Done()
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()

	r, err := New(echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", r.Addr())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	write(t, clients[0], "hi")
	expect(t, clients[0], "hi")
	waitConns(t, r, 3)
	// Leave one stalled with bytes held when Close runs.
	r.Stall()
	write(t, clients[1], "held")

	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := r.Conns(); got != 0 {
		t.Fatalf("Conns() after Close = %d", got)
	}
	if c, err := net.Dial("tcp", r.Addr()); err == nil {
		_ = c.Close()
		t.Fatal("relay still accepting after Close")
	}
	for _, c := range clients {
		_ = c.Close()
	}
	echo.close()

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, baseline %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
