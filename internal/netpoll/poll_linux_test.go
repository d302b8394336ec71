//go:build linux

package netpoll

import (
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-proxy/tether/internal/testkit"
)

// Each wake of the poller polls the ready events once: a poll that took
// fewer than it could has emptied the ready list, and the poller waits
// for readiness again instead of polling once more into nothing (two
// polls per wake before).
func TestOnePollPerWake(t *testing.T) {
	var mu sync.Mutex
	var polls []int
	seen := func(n int) {
		mu.Lock()
		polls = append(polls, n)
		mu.Unlock()
	}
	pollSeen.Store(&seen)
	defer pollSeen.Store(nil)

	peer, ours := testkit.LoopbackPair(t)
	rc, err := ours.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}

	p := New()
	var h Handle
	fired := make(chan struct{}, 1)
	const wakes = 5
	for i := range wakes {
		if err := p.Arm(&h, rc.Control, func() { fired <- struct{}{} }); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-fired:
		case <-time.After(10 * time.Second):
			t.Fatalf("wake %d not reported", i)
		}
		var b [1]byte
		if _, err := syscall.Read(fdOf(t, rc), b[:]); err != nil {
			t.Fatal(err)
		}
	}
	p.Release(&h)
	mu.Lock()
	defer mu.Unlock()
	empty := 0
	for _, n := range polls {
		if n == 0 {
			empty++
		}
	}
	// The first poll, when the poller starts, may find nothing yet.
	if empty > 1 {
		t.Fatalf("polls returned %v events: %d found nothing, want at most the first", polls, empty)
	}
}

func fdOf(t *testing.T, rc syscall.RawConn) int {
	var fd int
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}
