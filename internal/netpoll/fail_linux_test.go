//go:build linux

package netpoll

import (
	"net"
	"testing"
	"time"

	"github.com/tether-proxy/tether/internal/testkit"
)

// If the epoll instance breaks under the poller goroutine (its wait
// fails), every armed socket's callback runs, so that no parked leg waits
// on an instance that no longer reports, and the next Arm starts a new
// instance that reports readiness again.
func TestBrokenInstanceWakesEveryWaiter(t *testing.T) {
	pair := func() (peer, ours *net.TCPConn) { return testkit.LoopbackPair(t) }
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
	}

	p := New()
	const n = 3
	woken := make(chan struct{}, n)
	handles := make([]Handle, n)
	for i := range handles {
		_, ours := pair()
		rc, err := ours.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Arm(&handles[i], rc.Control, func() { woken <- struct{}{} }); err != nil {
			t.Fatal(err)
		}
	}
	// Break the instance: its wait fails as if epoll_wait had.
	p.mu.Lock()
	broken := p.impl.(*epoll)
	p.mu.Unlock()
	broken.f.Close()
	for i := range n {
		wait(woken, "waiter "+string(rune('0'+i))+" woken by the failure")
	}
	p.mu.Lock()
	gone := p.impl == nil
	p.mu.Unlock()
	if !gone {
		t.Fatal("the broken instance is still the poller's")
	}

	// The next Arm (a parked leg re-arming) gets a working instance.
	peer, ours := pair()
	rc, err := ours.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var h Handle
	ready := make(chan struct{}, 1)
	if err := p.Arm(&h, rc.Control, func() { ready <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	wait(ready, "readiness from the new instance")
	p.Release(&h)
	for i := range handles {
		p.Release(&handles[i])
	}
}
