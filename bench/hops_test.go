package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-proxy/tether/internal/testkit"
)

// TestHopsAnalysis feeds the analysis what bpftrace prints for a made-up
// run whose every hop is known: 60 sessions opened 500 µs apart, then
// sending every 20 ms at random phases (so that messages of different
// sessions overlap, some always), each session's hops fixed (to the
// backend 30 µs plus its index, the backend 50 µs, to the client 20 µs),
// the proxy's last read known for the first ten messages of each
// session only (and once wrong), one message whose segment to the
// backend was not recorded, and a map that was full. Every session must
// be paired with its own upstream connection, every whole round trip
// measured exactly, and the lost event's message dropped, not measured
// into the next one.
func TestHopsAnalysis(t *testing.T) {
	const (
		proxy, backend = 19802, 19801
		sessions       = 60
		periods        = 40
		period         = 20 * time.Millisecond
	)
	type ev struct {
		t            int64
		sport, dport int
		saddr, daddr string
		sk, from     int // sockets: the receiving one; the one the proxy read last
	}
	var evs []ev
	r := rand.New(rand.NewPCG(1, 2))
	for i := range sessions {
		load := fmt.Sprintf("127.0.0.%d", 1+i%16) // the tool dials from 16 addresses
		lport, uport := 40000+i/16, 50000+i       // load ports repeat across addresses
		phase := r.Int64N(int64(period))
		toB := int64(30+i) * 1000
		// The handshake: the client's upgrade request, the proxy's
		// upstream, the upstream's reply, the proxy's reply.
		// Sockets: the proxy's client one, the backend's, the proxy's
		// upstream one, the load tool's.
		pc, bs, pu, lc := 1000+i, 2000+i, 3000+i, 4000+i
		h := int64(i) * 500_000
		evs = append(evs, ev{h, proxy, lport, "127.0.0.1", load, pc, 0}, ev{h + 150_000, backend, uport, "127.0.0.1", "127.0.0.1", bs, pc},
			ev{h + 250_000, uport, backend, "127.0.0.1", "127.0.0.1", pu, 0}, ev{h + 300_000, lport, proxy, load, "127.0.0.1", lc, pu})
		for k := range periods {
			a := int64(sessions)*500_000 + int64(k)*int64(period) + phase
			b, c := a+toB, a+toB+50_000
			d := c + 20_000
			from := pc
			switch {
			case k > 10:
				from = 0 // past the pairing window
			case i == 9 && k == 2:
				from = 1000 + 11 // a read of another session between
			}
			evs = append(evs, ev{a, proxy, lport, "127.0.0.1", load, pc, 0})
			if i == 7 && k == 3 {
				// Not recorded: this message has no whole chain.
			} else {
				evs = append(evs, ev{b, backend, uport, "127.0.0.1", "127.0.0.1", bs, from})
			}
			evs = append(evs, ev{c, uport, backend, "127.0.0.1", "127.0.0.1", pu, 0})
			evs = append(evs, ev{d, lport, proxy, load, "127.0.0.1", lc, pu})
		}
	}
	r.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] }) // per-CPU order
	var out strings.Builder
	out.WriteString("Attaching 1 probe...\n\n\n")
	for i, e := range evs {
		// Odd sessions' sockets are IPv6 (IPv4-mapped addresses), as
		// Caddy's are.
		s := strings.ReplaceAll(e.saddr, ".", ", ")
		d := strings.ReplaceAll(e.daddr, ".", ", ")
		if e.sk%2 == 1 {
			fmt.Fprintf(&out, "@ev[%d, %d]: (%d, %d, %d, 10, 0, 0, 0, 0, %s, 0, 0, 0, 0, %s, %d, %d)\n", i%2, i/2, e.t, e.sport, e.dport, s, d, e.sk, e.from)
		} else {
			fmt.Fprintf(&out, "@ev[%d, %d]: (%d, %d, %d, 2, %s, 9, 9, 9, 9, %s, 9, 9, 9, 9, %d, %d)\n", i%2, i/2, e.t, e.sport, e.dport, s, d, e.sk, e.from)
		}
	}
	fmt.Fprintf(&out, "\n@n[0]: %d\n@n[1]: %d\n", (len(evs)+1)/2+5, len(evs)/2) // 5 more than the map held

	h, err := readHops(out.String(), proxy, backend, period/4)
	if err != nil {
		t.Fatal(err)
	}
	if h.Sessions != sessions {
		t.Errorf("paired %d sessions, want %d", h.Sessions, sessions)
	}
	if n := sessions*periods - 1; h.Msgs != n {
		t.Errorf("measured %d round trips, want %d (the one with a lost event dropped)", h.Msgs, n)
	}
	if h.Lost != 5 {
		t.Errorf("lost %d events, want 5", h.Lost)
	}
	// to-backend is 30..89 µs, each value on 40 messages (39 for 37):
	// the 1,200th of 2,399 is 60.
	if h.ToBackend.P50 != 60 || h.ToBackend.P99 != 89 {
		t.Errorf("to-backend p50 %v p99 %v µs, want 60 and 89", h.ToBackend.P50, h.ToBackend.P99)
	}
	if h.Backend.P50 != 50 || h.Backend.P999 != 50 || h.ToClient.P99 != 20 {
		t.Errorf("backend %+v, to-client %+v: want 50 and 20 µs throughout", h.Backend, h.ToClient)
	}
	if h.Proxy.P50 != 80 || h.Wire.P99 != 159 {
		t.Errorf("proxy p50 %v, wire p99 %v µs: want 80 and 159", h.Proxy.P50, h.Wire.P99)
	}
}

// TestHopsTraced runs the latency workload with -hops through a TCP relay
// (this process, reading with read(2): the relay that does not splice)
// with bpftrace tracing the kernel: every session is paired and nearly
// every round trip traced, and the hops add up (the proxy's part and the
// backend's within the wire's round trip, which is within the tool's).
func TestHopsTraced(t *testing.T) {
	if _, err := exec.LookPath("bpftrace"); err != nil {
		testkit.Missing(t, "bpftrace not found; install it with `apt-get install -y bpftrace` to test bench latency -hops")
	}
	if os.Geteuid() != 0 {
		testkit.Missing(t, "bench latency -hops needs root (bpftrace)")
	}
	backend := startBackend(t)
	relay := startRelay(t, backend, true)
	trips := filepath.Join(t.TempDir(), "trips")
	lat := runJSON(t, "latency", "-url", "ws://"+relay+"/", "-target", "relay", "-conns", "20", "-rate", "400",
		"-size", "128", "-duration", "2s", "-sources", "4", "-hops", backend, "-hops-out", trips, "-proxy-pid", itoa(os.Getpid()))
	h := lat.Hops
	if h == nil {
		t.Fatalf("no hops in %+v", lat)
	}
	if h.Sessions != 20 || h.Lost != 0 || float64(h.Msgs) < 0.9*float64(lat.Msgs) {
		t.Fatalf("traced %d round trips of %d sessions (%d events lost); the tool counted %d in the window", h.Msgs, h.Sessions, h.Lost, lat.Msgs)
	}
	b, err := os.ReadFile(trips)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != h.Msgs {
		t.Errorf("-hops-out has %d lines for %d round trips traced", n, h.Msgs)
	}
	if h.Proxy.P50 <= 0 || h.Backend.P50 <= 0 || h.Proxy.P50+h.Backend.P50 > h.Wire.P99 || h.Wire.P50 > lat.P99ms*1000 {
		t.Errorf("hops do not add up: proxy p50 %.1f µs, backend %.1f, wire p50 %.1f p99 %.1f, the tool's p99 %.1f", h.Proxy.P50, h.Backend.P50, h.Wire.P50, h.Wire.P99, lat.P99ms*1000)
	}
}

// A run that fails after the tracer started (the load tool's dial, say)
// leaves no bpftrace behind: kill ends it. stop returns even when
// bpftrace does not end on its SIGINT. (Kill after a stop that ended
// bpftrace, the deferred one in latency, runs in TestHopsTraced.)
func TestHopsTracerKilled(t *testing.T) {
	if _, err := exec.LookPath("bpftrace"); err != nil {
		testkit.Missing(t, "bpftrace not found; install it with `apt-get install -y bpftrace` to test bench latency -hops")
	}
	if os.Geteuid() != 0 {
		testkit.Missing(t, "bench latency -hops needs root (bpftrace)")
	}
	ctx := context.Background()
	h, err := startHops(ctx, "127.0.0.1:19891", "127.0.0.1:19892", os.Getpid(), 1024, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pid := h.cmd.Process.Pid
	h.kill()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("bpftrace (pid %d) still there after kill: %v", pid, err)
	}
	h.kill() // a second time: nothing

	// A SIGINT just after "Attaching" can go unseen by bpftrace 0.17:
	// stop then gives up after hopsStopWait and kills it.
	defer func(d time.Duration) { hopsStopWait = d }(hopsStopWait)
	hopsStopWait = 2 * time.Second
	h, err = startHops(ctx, "127.0.0.1:19891", "127.0.0.1:19892", os.Getpid(), 1024, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pid = h.cmd.Process.Pid
	if hs, err := h.stop(time.Second); err == nil && (hs == nil || hs.Msgs != 0) {
		t.Fatalf("stop with no traffic: %+v", hs)
	} else if err != nil {
		t.Logf("stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("bpftrace (pid %d) still there after stop: %v", pid, err)
	}
}
