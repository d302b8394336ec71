package netpoll_test

import (
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-proxy/tether/internal/netpoll"
	"github.com/tether-proxy/tether/internal/testkit"
)

func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	return testkit.LoopbackPair(t)
}

func control(t *testing.T, c syscall.Conn) func(func(uintptr)) error {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc.Control
}

func pollerGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "netpoll.(*epoll).wait")
}

// waitFor polls cond (goroutine exit has no event to wait on).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestArmReportsReadinessOnce(t *testing.T) {
	if !netpoll.Supported() {
		t.Skip("netpoll: no epoll on this system")
	}
	a, b := tcpPair(t)
	p := netpoll.New()
	var h netpoll.Handle
	fired := make(chan struct{}, 4)
	if err := p.Arm(&h, control(t, b), func() { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
		t.Fatal("reported readiness before any byte arrived")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := a.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	<-fired
	// One-shot: more data and no re-arm gives no second report.
	if _, err := a.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
		t.Fatal("reported twice without being re-armed")
	case <-time.After(50 * time.Millisecond):
	}
	// Re-armed while data is waiting: reported at once (level-triggered).
	if err := p.Arm(&h, control(t, b), func() { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	<-fired
	var buf [2]byte
	if n, err := b.Read(buf[:]); err != nil || string(buf[:n]) != "xy" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	p.Release(&h)
	waitFor(t, "the poller goroutine to exit", func() bool { return pollerGoroutines() == 0 })
}

func TestHangupIsReported(t *testing.T) {
	if !netpoll.Supported() {
		t.Skip("netpoll: no epoll on this system")
	}
	a, b := tcpPair(t)
	p := netpoll.New()
	var h netpoll.Handle
	defer p.Release(&h)
	fired := make(chan struct{}, 1)
	if err := p.Arm(&h, control(t, b), func() { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	a.Close()
	<-fired
}

func TestArmClosedConnFails(t *testing.T) {
	if !netpoll.Supported() {
		t.Skip("netpoll: no epoll on this system")
	}
	_, b := tcpPair(t)
	ctl := control(t, b)
	b.Close()
	p := netpoll.New()
	var h netpoll.Handle
	if err := p.Arm(&h, ctl, func() {}); err == nil {
		t.Fatal("Arm on a closed connection succeeded")
	}
	p.Release(&h)
	if p.Registered() != 0 {
		t.Fatalf("%d handles registered after Release", p.Registered())
	}
}

// The poller's goroutine and epoll instance exist only while something is
// registered, and come back for the next registration.
func TestPollerRestarts(t *testing.T) {
	if !netpoll.Supported() {
		t.Skip("netpoll: no epoll on this system")
	}
	p := netpoll.New()
	for round := 0; round < 3; round++ {
		a, b := tcpPair(t)
		var h netpoll.Handle
		fired := make(chan struct{}, 1)
		if err := p.Arm(&h, control(t, b), func() { fired <- struct{}{} }); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		<-fired
		p.Release(&h)
		waitFor(t, "the poller goroutine to exit", func() bool { return pollerGoroutines() == 0 })
	}
}

// A released handle's late readiness is dropped, and many sockets share
// one goroutine.
func TestManySockets(t *testing.T) {
	if !netpoll.Supported() {
		t.Skip("netpoll: no epoll on this system")
	}
	p := netpoll.New()
	const n = 200
	hs := make([]netpoll.Handle, n)
	fired := make(chan int, n)
	writers := make([]*net.TCPConn, n)
	for i := range hs {
		a, b := tcpPair(t)
		writers[i] = a
		if err := p.Arm(&hs[i], control(t, b), func() { fired <- i }); err != nil {
			t.Fatal(err)
		}
	}
	if g := pollerGoroutines(); g != 1 {
		t.Fatalf("%d poller goroutines for %d sockets, want 1", g, n)
	}
	seen := make(map[int]bool)
	for i := range writers {
		if _, err := writers[i].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for len(seen) < n {
		seen[<-fired] = true
	}
	for i := range hs {
		p.Release(&hs[i])
	}
	waitFor(t, "the poller goroutine to exit", func() bool { return pollerGoroutines() == 0 })
}
