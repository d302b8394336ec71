package session

import (
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tether-proxy/tether/heartbeat"
)

// Probes of legs that can park (README "Upstream loss, reconnect and the
// delivery guarantee"): over loopback sockets, the sweeper sends them
// while the upstream leg runs and its timer once it has parked, and no
// message moves the timer.

// peerFrame is a frame the upstream peer got, unmasked, and when.
type peerFrame struct {
	op ws.OpCode
	p  []byte
	at time.Time
}

// answerPings reads every frame tether writes to the upstream peer c,
// answers each ping with a pong, and reports each frame on the channel
// (closed when the connection ends).
func answerPings(c net.Conn) <-chan peerFrame { return upstreamPeer(c, false) }

// upstreamPeer is answerPings that, with echo, also sends every text
// message back, as a backend does (its leg then runs until IdleAfter
// passes, woken by data, not only by pongs).
func upstreamPeer(c net.Conn, echo bool) <-chan peerFrame {
	ch := make(chan peerFrame, 1024)
	go func() {
		defer close(ch)
		for {
			f, err := ws.ReadFrame(c)
			if err != nil {
				return
			}
			if f.Header.Masked {
				ws.Cipher(f.Payload, f.Header.Mask, 0)
			}
			reply, send := ws.Frame{}, false
			switch {
			case f.Header.OpCode == ws.OpPing:
				reply, send = ws.NewPongFrame(f.Payload), true
			case echo && f.Header.OpCode == ws.OpText:
				reply, send = ws.NewTextFrame(f.Payload), true
			}
			if send {
				if err := ws.WriteFrame(c, reply); err != nil {
					return
				}
			}
			ch <- peerFrame{op: f.Header.OpCode, p: f.Payload, at: time.Now()}
		}
	}()
	return ch
}

// nextFrame returns the next frame of op the upstream peer got, counting
// the pings it skips in *pings (if not nil), or fails after 5 s (the
// legs' heartbeat interval is 10 s).
func nextFrame(t *testing.T, ch <-chan peerFrame, op ws.OpCode, pings *int) peerFrame {
	t.Helper()
	limit := time.After(5 * time.Second)
	for {
		select {
		case f, ok := <-ch:
			if !ok {
				t.Fatal("the upstream connection ended")
			}
			if f.op == op {
				return f
			}
			if f.op == ws.OpPing && pings != nil {
				*pings++
			}
		case <-limit:
			name := "text"
			if op == ws.OpPing {
				name = "ping"
			}
			t.Fatalf("no %s frame within 5 s", name)
		}
	}
}

// probeRig is a park rig whose upstream leg sends RFC pings every 10 s
// and whose client leg has no heartbeat, with the upstream leg's timer
// firings and Resets counted.
func newProbeRig(t *testing.T, idle time.Duration) (r *parkRig, ticks, sets *atomic.Int32) {
	t.Helper()
	ticks, sets = new(atomic.Int32), new(atomic.Int32)
	count := func(n *atomic.Int32) func(*leg) {
		return func(l *leg) {
			if l.upstream() {
				n.Add(1)
			}
		}
	}
	r = newParkRigWith(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 30*time.Second)), func(env *Env) {
		env.IdleAfter = idle
		env.test.tick, env.test.timerSet = count(ticks), count(sets)
	})
	return r, ticks, sets
}

// A session whose messages each carry their acknowledgement ping, more
// often than probeEvery, gets no probe between them, and its upstream
// leg's timer is neither moved nor fired: each message moves only the
// probe's due time, which the sweeper reads (the timer moved at every
// message before, making the runtime walk all of its timers).
func TestProbeTimerUntouchedBySteadyTraffic(t *testing.T) {
	r, ticks, sets := newProbeRig(t, 5*time.Second) // the legs run throughout
	frames := answerPings(r.upstream)
	const n, every = 12, 150 * time.Millisecond // 1.8 s: over three probeEvery
	pings := 0
	for i := range n {
		msg := "m" + strconv.Itoa(i)
		if err := wsutil.WriteClientText(r.client, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if f := nextFrame(t, frames, ws.OpText, &pings); string(f.p) != msg {
			t.Fatalf("upstream got %q, want %q", f.p, msg)
		}
		// Its pong handled, so the next message may carry a ping too
		// however slow this machine is.
		waitAcked(t, r.up())
		time.Sleep(every)
	}
	// The last message's ping (in the same write as the message).
	if err := wsutil.WriteClientText(r.client, []byte("end")); err != nil {
		t.Fatal(err)
	}
	nextFrame(t, frames, ws.OpText, &pings)
	if pings != n {
		t.Fatalf("%d pings before the last of %d messages %v apart, want one per message and no probe", pings, n, every)
	}
	if k, s := ticks.Load(), sets.Load(); k != 0 || s != 0 {
		t.Fatalf("the upstream leg's timer fired %d times and was moved %d times; want neither", k, s)
	}
}

// waitAcked waits until no acknowledgement ping of upstream leg l is in
// flight.
func waitAcked(t *testing.T, l *leg) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.ackDue.Load() < 0 {
		if time.Now().After(deadline) {
			t.Fatal("the acknowledgement ping was not answered within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// An active session whose client goes quiet has its running upstream leg
// probed by the sweeper, probeEvery after the last ping, with no firing of
// the leg's timer.
func TestProbeBySweeperWhileRunning(t *testing.T) {
	r, ticks, _ := newProbeRig(t, 5*time.Second)
	frames := answerPings(r.upstream)
	if err := wsutil.WriteClientText(r.client, []byte("m")); err != nil {
		t.Fatal(err)
	}
	ping := nextFrame(t, frames, ws.OpPing, nil) // the message's
	probe := nextFrame(t, frames, ws.OpPing, nil)
	if gap := probe.at.Sub(ping.at); gap < probeEvery {
		t.Fatalf("probe %v after the message's ping, want at least %v", gap, probeEvery)
	}
	if u := r.up(); u.state.Load() == legParked {
		t.Fatal("the upstream leg parked; this test wants it running")
	}
	if k := ticks.Load(); k != 0 {
		t.Fatalf("the upstream leg's timer fired %d times; the sweeper should have sent the probe", k)
	}
}

// An active session whose upstream leg parks after its pong still gets
// its probe, probeEvery after the last ping, from the sweeper (parking
// lists it with its probe): the leg's timer neither fires nor moves.
func TestProbeBySweeperWhileParked(t *testing.T) {
	r, ticks, sets := newProbeRig(t, 10*time.Millisecond)
	frames := answerPings(r.upstream)
	if err := wsutil.WriteClientText(r.client, []byte("m")); err != nil {
		t.Fatal(err)
	}
	ping := nextFrame(t, frames, ws.OpPing, nil)
	r.waitParked(r.up())
	probe := nextFrame(t, frames, ws.OpPing, nil)
	if gap := probe.at.Sub(ping.at); gap < probeEvery {
		t.Fatalf("probe %v after the message's ping, want at least %v", gap, probeEvery)
	}
	if k, s := ticks.Load(), sets.Load(); k != 0 || s != 0 {
		t.Fatalf("the parked leg's timer fired %d times and was moved %d times; the sweeper should have sent the probe", k, s)
	}
}

// A parked leg's probe that finds, when due, a ping gone out since it was
// armed arms itself again for probeEvery after that ping (ackTickLocked)
// and is sent then: the leg stays on the sweeper's list while its probe
// is armed.
func TestParkedProbeArmedAnew(t *testing.T) {
	r, _, _ := newProbeRig(t, 10*time.Millisecond)
	frames := answerPings(r.upstream)
	if err := wsutil.WriteClientText(r.client, []byte("m")); err != nil {
		t.Fatal(err)
	}
	ping := nextFrame(t, frames, ws.OpPing, nil)
	u := r.up()
	r.waitParked(u)
	// As if a ping had gone out 200 ms after the message's: when the
	// probe is due, it is needless until probeEvery after that one.
	later := ping.at.Add(200 * time.Millisecond)
	u.ctl.Lock()
	u.ackLast = later.UnixNano()
	u.ctl.Unlock()
	probe := nextFrame(t, frames, ws.OpPing, nil)
	if gap := probe.at.Sub(later); gap < probeEvery-5*time.Millisecond {
		t.Fatalf("probe %v after the later ping, want about %v", gap, probeEvery)
	}
}

// A session sending a little more often than probeEvery, its legs
// parking between messages, gets no probe: each message's own ping
// probes. Its upstream leg's timer does not fire between messages (it
// fired at nearly every one before, set at each park for a probe that
// the next message's ping made needless: a goroutine and a wake each).
func TestParkedProbeNeedlessBetweenMessages(t *testing.T) {
	// Legs park 200-250 ms after their last bytes: the upstream leg
	// parks with the probe armed, and the next message, 470 ms after the
	// last, comes before the probe and wakes it after the probe's time.
	r, ticks, _ := newProbeRig(t, 200*time.Millisecond)
	frames := upstreamPeer(r.upstream, true)
	const n, every = 4, probeEvery - 30*time.Millisecond
	pings := 0
	for i := range n {
		msg := "m" + strconv.Itoa(i)
		if err := wsutil.WriteClientText(r.client, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		f := nextFrame(t, frames, ws.OpText, &pings)
		if string(f.p) != msg {
			t.Fatalf("upstream got %q, want %q", f.p, msg)
		}
		waitAcked(t, r.up())
		r.waitParked(r.up())
		time.Sleep(time.Until(f.at.Add(every)))
	}
	if err := wsutil.WriteClientText(r.client, []byte("end")); err != nil {
		t.Fatal(err)
	}
	nextFrame(t, frames, ws.OpText, &pings)
	if pings != n {
		t.Fatalf("%d pings before the last of %d messages %v apart, want one per message and no probe", pings, n, every)
	}
	if k := ticks.Load(); k != 0 {
		t.Fatalf("the upstream leg's timer fired %d times between messages; want none", k)
	}
}

// A client sending small messages as fast as it can, three times what the
// retention window holds, has them all relayed with the upstream leg's
// timer stopped: acknowledgements come from the pings the flood itself
// asks for (ackBatch), never from the timer. Frames a read loop defers
// (more input buffered) may hold such a ping; it writes them before it
// waits for the window. Before, it waited with them unwritten until the
// timer's acknowledgement ping, 75 ms later, once per window
// (BenchmarkRelay at 128 B: 35-65 µs a message instead of 3).
func TestFloodNeedsNoTimer(t *testing.T) {
	release := make(chan struct{})
	r := newParkRigWith(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 30*time.Second)), func(env *Env) {
		env.test.tick = func(l *leg) {
			if l.upstream() {
				<-release // this leg's timer sends nothing
			}
		}
	})
	t.Cleanup(func() { close(release) })
	frames := answerPings(r.upstream)
	n := 3 * r.env.Config.Buffer.MaxMessages
	var flood bytesWriter
	for i := range n {
		if err := wsutil.WriteClientText(&flood, []byte(strconv.Itoa(i)+strings.Repeat(".", 96))); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _, _ = r.client.Write(flood) }()
	for i := range n {
		f := nextFrame(t, frames, ws.OpText, nil)
		if want := strconv.Itoa(i) + "."; !strings.HasPrefix(string(f.p), want) {
			t.Fatalf("message %d: upstream got %.12q", i, f.p)
		}
	}
}

// A client leg in `both` mode writes its interval's RFC and JSON pings in
// one write, not two: the first write on the client leg carries both.
func TestBothPingsOneWrite(t *testing.T) {
	var first atomic.Int64 // bytes of the client leg's first write
	r := newParkRigWith(t, hbCfg(hbLeg(heartbeat.ModeBoth, 200*time.Millisecond, 30*time.Second), hbOff), func(env *Env) {
		env.test.write = func(l *leg, n int, err error) {
			if l.name() == LegClient && n > 0 {
				first.CompareAndSwap(0, int64(n))
			}
		}
	})
	_ = r.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ops []ws.OpCode
	total := 0
	for len(ops) < 2 {
		f, err := ws.ReadFrame(r.client)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, f.Header.OpCode)
		total += 2 + len(f.Payload) // server frames: unmasked, short
	}
	if ops[0] != ws.OpPing || ops[1] != ws.OpText {
		t.Fatalf("client got %v, want an RFC ping then a JSON ping", ops)
	}
	deadline := time.Now().Add(5 * time.Second)
	for first.Load() == 0 { // the hook runs after the write returns
		if time.Now().After(deadline) {
			t.Fatal("no write seen on the client leg")
		}
		time.Sleep(time.Millisecond)
	}
	if n := first.Load(); n != int64(total) {
		t.Fatalf("the first write carried %d bytes, want both pings' %d", n, total)
	}
}
