package faultnet

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

func TestSetDelay(t *testing.T) {
	t.Parallel()
	srv := startServer(t, true)
	r := newRelay(t, srv.addr())
	c := dial(t, r.Addr())
	waitConns(t, r, 1)

	// With a delay of up to 300 ms per chunk, each way, 20 round trips
	// average 300 ms of waiting each; all of them arrive, in order.
	const maxDelay = 300 * time.Millisecond
	r.SetDelay(maxDelay)
	start := time.Now()
	for i := range 20 {
		msg := fmt.Sprintf("msg-%02d;", i)
		write(t, c, msg)
		expect(t, c, msg)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("20 delayed round trips took %v, want about 6 s (at least 2 s)", took)
	}

	// Off again: round trips are immediate.
	r.SetDelay(0)
	start = time.Now()
	for range 20 {
		write(t, c, "x")
		expect(t, c, "x")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("20 round trips without delay took %v", took)
	}
}

func TestSetDelayTeardown(t *testing.T) {
	t.Parallel()
	srv := startServer(t, true)
	r := newRelay(t, srv.addr())
	c := dial(t, r.Addr())
	waitConns(t, r, 1)
	r.SetDelay(time.Hour)
	write(t, c, "held")
	// A reset while a chunk waits ends the wait at once.
	done := make(chan struct{})
	go func() { r.ResetAll(); close(done) }()
	<-done
	expectReset(t, c)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestResetSome(t *testing.T) {
	t.Parallel()
	srv := startServer(t, true)
	r := newRelay(t, srv.addr())
	all := make([]*net.TCPConn, 5)
	for i := range all {
		all[i] = dial(t, r.Addr())
	}
	waitConns(t, r, 5)
	picks := 0
	n := r.ResetSome(3, func(k int) int { picks++; return k - 1 })
	if n != 3 || picks != 3 {
		t.Fatalf("ResetSome(3) = %d with %d picks, want 3 and 3", n, picks)
	}
	if got := r.Conns(); got != 2 {
		t.Fatalf("Conns() = %d after resetting 3 of 5", got)
	}
	reset, alive := 0, 0
	for _, c := range all {
		if _, err := c.Write([]byte("ping")); err == nil {
			if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 4)
			if _, err := io.ReadFull(c, b); err == nil && string(b) == "ping" {
				alive++
				continue
			}
		}
		reset++
	}
	if reset != 3 || alive != 2 {
		t.Fatalf("%d connections reset and %d alive, want 3 and 2", reset, alive)
	}
	// More than there are: all of them.
	if n := r.ResetSome(10, func(k int) int { return 0 }); n != 2 {
		t.Fatalf("ResetSome(10) with 2 conns = %d", n)
	}
	waitConns(t, r, 0)
}
