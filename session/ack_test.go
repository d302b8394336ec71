package session

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/replay"
)

// retained returns how many client messages the session holds.
func (r *hbRig) retained() int {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.upLog.len()
}

// Acknowledgement pings (README "Upstream loss, reconnect and the delivery
// guarantee"): a message sent alone carries its acknowledgement ping right
// behind it, in the same write; the messages of a burst behind it share
// the next one, ackSpacing plus ackGrace after the last when no message
// comes to carry it; nothing waits for the interval ping.
func TestAckPingSoonAfterSend(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0)), hbOpts{})
		r.at(time.Second)
		r.client.text("m1")
		synctest.Wait()
		fs := r.up.got()
		if len(fs) != 2 || fs[0].op != ws.OpText || fs[1].op != ws.OpPing || !fs[1].at.Equal(fs[0].at) {
			t.Fatalf("upstream got %v, want m1 and its ping at once", fs)
		}
		if r.retained() != 1 {
			t.Fatal("message not retained while its ping is unanswered")
		}
		if err := r.up.send(ws.NewPongFrame(fs[1].p)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := r.retained(); n != 0 {
			t.Fatalf("%d messages retained after the pong, want 0", n)
		}
		// A burst (before the first probe): the first message carries
		// a ping; the others wait for the next one, after its pong.
		r.up.take()
		r.at(time.Second + 200*time.Millisecond)
		for _, m := range []string{"b1", "b2", "b3"} {
			r.client.text(m)
		}
		synctest.Wait()
		pings := hbOps(r.up.take(), ws.OpPing)
		if len(pings) != 1 {
			t.Fatalf("%d pings with the burst, want 1", len(pings))
		}
		if err := r.up.send(ws.NewPongFrame(pings[0].p)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := r.retained(); n != 2 {
			t.Fatalf("%d messages retained after the first pong, want 2 (b2, b3)", n)
		}
		// The spacing allows the next ping ackSpacing after the first;
		// it waits ackGrace more for a message to ride on, then goes
		// alone.
		time.Sleep(ackSpacing)
		synctest.Wait()
		if pings = hbOps(r.up.take(), ws.OpPing); len(pings) != 0 {
			t.Fatalf("%d pings %v after the burst, want none before ackGrace more", len(pings), ackSpacing)
		}
		time.Sleep(ackGrace)
		synctest.Wait()
		pings = hbOps(r.up.take(), ws.OpPing)
		if len(pings) != 1 {
			t.Fatalf("%d pings %v after the burst, want one acknowledgement ping", len(pings), ackSpacing+ackGrace)
		}
		if err := r.up.send(ws.NewPongFrame(pings[0].p)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := r.retained(); n != 0 {
			t.Fatalf("%d messages retained after the second pong, want 0", n)
		}
	})
}

// An active session's upstream is probed every probeEvery while its
// client has sent within activeFor (README "Upstream loss, reconnect and the delivery guarantee"); then,
// idle, it gets only the interval's pings.
func TestAckProbeWhileActive(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0)), hbOpts{upAutoPong: true})
		r.at(time.Second)
		r.client.text("m1")
		r.at(10*time.Second - time.Millisecond)
		pings := hbOps(r.up.got(), ws.OpPing)
		// The acknowledgement, then probes from its pong for activeFor.
		want := 1 + int(activeFor/probeEvery)
		if len(pings) < want-1 || len(pings) > want+1 {
			t.Fatalf("%d pings after one message, want about %d", len(pings), want)
		}
		for i, p := range pings[1:] {
			if gap := p.at.Sub(pings[i].at); gap < probeEvery {
				t.Fatalf("probe %d after %v, want at least %v", i+1, gap, probeEvery)
			}
		}
		if last := pings[len(pings)-1].at.Sub(r.start); last > time.Second+activeFor+probeEvery {
			t.Fatalf("last probe at %v: still probing %v after the message", last, last-time.Second)
		}
		r.at(10 * time.Second)
		if n := len(hbOps(r.up.got(), ws.OpPing)); n != len(pings)+1 {
			t.Fatalf("%d pings at the interval, want %d", n, len(pings)+1)
		}
	})
}

// A session whose messages each carry their own acknowledgement ping is
// probed by those pings: no probe goes out between them, and no timer
// fires.
func TestAckNoProbeBetweenAckedMessages(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var ticks atomic.Int32
		hooks := &testHooks{tick: func(l *leg) {
			if l.upstream() {
				ticks.Add(1)
			}
		}}
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0)), hbOpts{upAutoPong: true, hooks: hooks})
		const n = 15 // one every 200 ms for 3 s
		for i := range n {
			r.at(time.Second + time.Duration(i)*200*time.Millisecond)
			r.client.text(strconv.Itoa(i))
		}
		r.at(time.Second + n*200*time.Millisecond)
		fs := r.up.got()
		if pings, msgs := len(hbOps(fs, ws.OpPing)), len(hbOps(fs, ws.OpText)); msgs != n || pings != n {
			t.Fatalf("%d pings with %d messages, want one per message and no probe", pings, msgs)
		}
		// Nor a timer firing between them: each ping moves the probe,
		// and the timer with it.
		if k := ticks.Load(); k != 0 {
			t.Fatalf("the upstream leg's timer fired %d times between messages, want 0", k)
		}
	})
}

// A session sending every 20 ms, more often than ackSpacing allows pings,
// has each acknowledgement ping carried by a message (the first written
// once the spacing allows), never one written alone by the timer, and
// still at most one per ackSpacing; every message is acknowledged within
// ackSpacing plus ackGrace.
func TestAckPingRidesOnNextMessage(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0)), hbOpts{upAutoPong: true})
		const n, every = 50, 20 * time.Millisecond
		r.at(time.Second)
		for i := range n {
			r.client.text(strconv.Itoa(i))
			if i < n-1 {
				time.Sleep(every)
			}
		}
		synctest.Wait()
		fs := r.up.got()
		var pings []time.Time
		for i, f := range fs {
			if f.op != ws.OpPing {
				continue
			}
			if i == 0 || fs[i-1].op != ws.OpText || !fs[i-1].at.Equal(f.at) {
				t.Fatalf("ping %d at %v not behind a message in its write", len(pings), f.at.Sub(r.start))
			}
			if k := len(pings); k > 0 && f.at.Sub(pings[k-1]) < ackSpacing {
				t.Fatalf("pings %v apart, want at least %v", f.at.Sub(pings[k-1]), ackSpacing)
			}
			pings = append(pings, f.at)
		}
		// One per three messages: 0, 60, 120 ms…
		if want := n / 3; len(pings) < want-1 || len(pings) > want+1 {
			t.Fatalf("%d acknowledgement pings for %d messages %v apart, want about %d", len(pings), n, every, want)
		}
		time.Sleep(ackSpacing + ackGrace)
		synctest.Wait()
		if k := r.retained(); k != 0 {
			t.Fatalf("%d messages retained %v after the last, want 0", k, ackSpacing+ackGrace)
		}
	})
}

// A busy session sends at most one acknowledgement ping per ackSpacing, and
// its messages are acknowledged within about that.
func TestAckPingBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0)), hbOpts{upAutoPong: true})
		const n = 1000 // one per ms for a second
		for i := range n {
			r.client.text(strconv.Itoa(i))
			time.Sleep(time.Millisecond)
		}
		synctest.Wait()
		pings := len(hbOps(r.up.got(), ws.OpPing))
		if max := int(time.Second/ackSpacing) + 1; pings > max || pings < max/2 {
			t.Fatalf("%d acknowledgement pings in a busy second, want at most %d (and not far fewer)", pings, max)
		}
		time.Sleep(ackSpacing + ackGrace)
		synctest.Wait()
		if k := r.retained(); k != 0 {
			t.Fatalf("%d messages retained %v after the last send, want 0", k, ackSpacing+ackGrace)
		}
		t.Logf("%d acknowledgement pings for %d messages in 1s", pings, n)
	})
}

// json mode: pings are messages the backend sees; no acknowledgement
// pings, only the interval's.
func TestAckPingNotInJSONMode(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeJSON, 10*time.Second, 0)), hbOpts{})
		r.client.text("m1")
		r.at(time.Second)
		for _, f := range r.up.got() {
			if f.op == ws.OpPing || string(f.p) == `{"type":"ping"}` {
				t.Fatalf("upstream got %v before the interval", f)
			}
		}
	})
}

// MQTT (README "State replay on upstream reconnect"): a retained message
// that ends inside a packet is not acknowledged until the packet's end is
// acknowledged too, so a re-send never starts in the middle of a packet.
func TestAckMQTTPacketBoundary(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0))
		cfg.Replay.Protocol = replay.MQTT
		r := newHBRig(t, cfg, hbOpts{})
		// MQTT 3.1.1 CONNECT, keep-alive 60 s, empty client id, cut in two.
		connect := []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0}
		pong := func() {
			t.Helper()
			time.Sleep(ackSpacing + ackGrace)
			synctest.Wait()
			pings := hbOps(r.up.take(), ws.OpPing)
			if len(pings) != 1 {
				t.Fatalf("%d pings, want one acknowledgement ping", len(pings))
			}
			if err := r.up.send(ws.NewPongFrame(pings[0].p)); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		if err := r.client.send(ws.NewBinaryFrame(connect[:6])); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		pong()
		if n := r.retained(); n != 1 {
			t.Fatalf("%d messages retained after the pong, want 1: its packet is not complete", n)
		}
		if err := r.client.send(ws.NewBinaryFrame(connect[6:])); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		pong()
		if n := r.retained(); n != 0 {
			t.Fatalf("%d messages retained after the packet's end was acknowledged, want 0", n)
		}

		// A pong that covers the first part of a packet only, arriving
		// after the client sent the rest (the packet is whole by then):
		// the first part stays too, or a re-send would start with the
		// second (mqtt.js's PUBACKs, 0x40 then 0x02 and the packet id,
		// met a RabbitMQ restart that way: the broker read the rest of
		// the stream as one huge packet, and its deliveries stopped).
		puback := []byte{0x40, 2, 0, 7}
		if err := r.client.send(ws.NewBinaryFrame(puback[:1])); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ackSpacing + ackGrace)
		synctest.Wait()
		pings := hbOps(r.up.take(), ws.OpPing)
		if len(pings) != 1 {
			t.Fatalf("%d pings, want one acknowledgement ping", len(pings))
		}
		if err := r.client.send(ws.NewBinaryFrame(puback[1:])); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := r.up.send(ws.NewPongFrame(pings[0].p)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := r.retained(); n != 2 {
			t.Fatalf("%d messages retained after a pong covering half a packet, want 2", n)
		}
		pong()
		if n := r.retained(); n != 0 {
			t.Fatalf("%d messages retained after the packet's end was acknowledged, want 0", n)
		}
	})
}

// A client whose every message ends inside an MQTT packet (each carries
// the start of the next) cannot have its messages acknowledged at a
// packet boundary; once the window is more than half full an
// acknowledgement lets them go anyway, so its reads never pause, the log
// says so once, and an upstream loss then closes it with 1012 instead of
// re-sending from inside a packet.
func TestAckCutStreamLetGo(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0))
		cfg.Replay.Protocol = replay.MQTT
		cfg.Buffer.MaxMessages = 4
		var log testkit.LockedBuffer
		r := newHBRig(t, cfg, hbOpts{upAutoPong: true, log: &log, dialOK: true})
		connect := []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0}
		if err := r.client.send(ws.NewBinaryFrame(connect)); err != nil {
			t.Fatal(err)
		}
		// PUBLISH QoS 0, topic "t", payload "xy"; every message ends three
		// bytes into the next one. Three times the window: with the
		// messages held, the fifth would wait for room and the rest in
		// the pipe.
		pub := []byte{0x30, 5, 0, 1, 't', 'x', 'y'}
		const n = 12
		msg := slices.Concat(pub[:3])
		for i := range n {
			sent := make(chan error, 1)
			go func(m []byte) { sent <- r.client.send(ws.NewBinaryFrame(m)) }(msg)
			msg = slices.Concat(pub[3:], pub[:3])
			time.Sleep(ackSpacing + ackGrace) // each gets its ping answered
			synctest.Wait()
			select {
			case err := <-sent:
				if err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("message %d of %d not read: the client's reads paused", i+1, n)
			}
		}
		if got := len(hbOps(r.up.got(), ws.OpBinary)); got != 1+n {
			t.Fatalf("upstream got %d binary messages, want all %d: the client's reads paused", got, 1+n)
		}
		if held := r.retained(); held > cfg.Buffer.MaxMessages/2+1 {
			t.Errorf("%d messages retained: acknowledged messages were not let go", held)
		}
		out := log.String()
		if c := strings.Count(out, "client messages acknowledged inside a packet"); c != 1 {
			t.Errorf("the log says %d times that messages were acknowledged inside a packet, want once:\n%s", c, out)
		}
		if strings.Contains(out, "not answering heartbeats") {
			t.Errorf("the log blames the upstream, which answers every ping:\n%s", out)
		}
		// The held messages begin inside a packet: no re-send can start
		// there, so the loss closes the client with 1012, without a dial.
		_ = r.up.conn.Close()
		r.at(time.Minute)
		if code, dials := hbCloseCode(r.client.got()), len(r.dialTimes()); code != int(CloseServiceRestart) || !r.ended() || dials != 0 {
			t.Fatalf("client Close %d, ended %v, %d dials; want Close 1012, the session ended, no dial", code, r.ended(), dials)
		}
	})
}

// ackStallCfg: RFC pings upstream every 500 ms, a leg that reads nothing for
// 1.5 s is lost.
func ackStallCfg() Config {
	cfg := rcConfig()
	cfg.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: 500 * time.Millisecond, Timeout: 1500 * time.Millisecond}
	return cfg
}

// ackStallSend starts a session with ackStallCfg whose upstream stops
// answering pings at once, and has its client send 0..n-1, one per 10 ms.
func ackStallSend(t *testing.T, n int) (*rcHarness, *rcPeer, *rcMetrics) {
	env, m := rcEnv(t, ackStallCfg(), nil)
	h := rcStart(t, env, m, nil)
	up := h.nextUp()
	up.pong.Store(false)
	for i := range n {
		h.client.text(strconv.Itoa(i))
		time.Sleep(10 * time.Millisecond)
	}
	return h, up, m
}

// drainTexts returns the text messages p received until its connection
// ended (or, with open set, until nothing more is pending).
func drainTexts(p *rcPeer, open bool) []string {
	var got []string
	for {
		if open {
			synctest.Wait()
			select {
			case f := <-p.msgs:
				if f.op == ws.OpText {
					got = append(got, f.p)
				}
				continue
			default:
				return got
			}
		}
		f, ok := <-p.msgs
		if !ok {
			return got
		}
		if f.op == ws.OpText {
			got = append(got, f.p)
		}
	}
}

// An upstream that stops answering pings for a moment and then answers
// again (README "Upstream loss, reconnect and the delivery guarantee"): once its acknowledgement is overdue,
// client messages wait in the log instead of going into the stalled
// connection, and the pong that ends the stall has them written, in
// order, once.
func TestAckHoldWhileOverdue(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const n = 40 // one per 10 ms: 400 ms, within the timeout
		h, up, m := ackStallSend(t, n)
		early := drainTexts(up, true)
		// Written until the acknowledgement (ackPingDelay after m0) was
		// overdue (ackHoldMin later); the rest waits.
		if max := int((ackPingDelay+ackHoldMin)/(10*time.Millisecond)) + 1; len(early) > max || len(early) == 0 {
			t.Fatalf("upstream got %d messages while not answering pings, want 1..%d", len(early), max)
		}
		up.pong.Store(true) // the next interval ping (at 500 ms) is answered
		time.Sleep(200 * time.Millisecond)
		got := append(early, drainTexts(up, true)...)
		for i := range n {
			if i >= len(got) || got[i] != strconv.Itoa(i) {
				t.Fatalf("upstream got %q, want 0..%d once each, in order", got, n-1)
			}
		}
		if len(got) != n {
			t.Fatalf("upstream got %d messages, want %d", len(got), n)
		}
		if h.current() != h.s.up || m.timeouts.Load() != 0 {
			t.Fatal("the connection was lost; want it kept")
		}
		// Straight through again.
		h.client.text("after")
		up.expect("after")
	})
}

// An upstream that stalls past its heartbeat timeout (README "Fewer
// duplicates"): what went into the stalled connection is re-sent on the
// next one, and only what was written before the acknowledgement was
// overdue can be duplicated: about ackHoldMin of traffic, not the whole
// timeout's.
func TestAckHoldLimitsDuplicatesOnStall(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		// The backend keeps reading (the stall is on the way back, or it is
		// busy), so whatever is written reaches it: 200 messages, one per
		// 10 ms, through the loss at 1.5 s.
		const n = 200
		h, up, m := ackStallSend(t, n)
		old := drainTexts(up, false) // ends with the lost connection
		up2 := h.nextUp()
		time.Sleep(time.Second)
		got := drainTexts(up2, true)
		if m.timeouts.Load() != 1 {
			t.Fatalf("%d heartbeat timeouts, want 1", m.timeouts.Load())
		}
		// The new connection gets everything not acknowledged, in order.
		if len(got) == 0 || got[len(got)-1] != strconv.Itoa(n-1) {
			t.Fatalf("new upstream got %q, want up to %d", got, n-1)
		}
		first, _ := strconv.Atoi(got[0])
		for i, s := range got {
			if s != strconv.Itoa(first+i) {
				t.Fatalf("new upstream got %q, want %d..%d in order", got, first, n-1)
			}
		}
		if first > len(old) {
			t.Fatalf("messages %d..%d lost: old upstream got %d, new from %d", len(old), first-1, len(old), first)
		}
		dups := len(old) - first
		if max := int((ackPingDelay+ackHoldMin)/(10*time.Millisecond)) + 1; dups > max {
			t.Fatalf("%d duplicates (old upstream got %d, new from %d), want at most %d", dups, len(old), first, max)
		}
		t.Logf("%d messages, %d written into the stalled connection, %d duplicated", n, len(old), dups)
	})
}

// An unanswered interval ping makes the leg suspect too (README "Fewer
// duplicates"): the first message after a quiet spell waits instead of
// going into a connection that stalled meanwhile.
func TestAckHoldAfterUnansweredIntervalPing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		env, m := rcEnv(t, ackStallCfg(), nil)
		h := rcStart(t, env, m, nil)
		up := h.nextUp()
		h.client.text("before")
		up.expect("before")
		time.Sleep(100 * time.Millisecond) // acknowledged
		up.pong.Store(false)
		time.Sleep(500*time.Millisecond + ackHoldMin) // the interval ping is overdue
		h.client.text("during")
		up.expectNothing()
		up.pong.Store(true)
		time.Sleep(500 * time.Millisecond) // the next interval ping is answered
		up.expect("during")
		if m.timeouts.Load() != 0 {
			t.Fatal("the connection was lost; want it kept")
		}
	})
}

// Probes find a stall that starts while the client is quiet but active
// (README "Upstream loss, reconnect and the delivery guarantee"): its next message waits instead of going
// into the stalled connection, though the interval ping is far off.
func TestAckProbeFindsStall(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := rcConfig()
		cfg.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: 10 * time.Second, Timeout: 30 * time.Second}
		env, m := rcEnv(t, cfg, nil)
		h := rcStart(t, env, m, nil)
		up := h.nextUp()
		h.client.text("m1")
		up.expect("m1")
		time.Sleep(100 * time.Millisecond) // acknowledged
		up.pong.Store(false)               // the stall
		time.Sleep(probeEvery + ackHoldMin + 50*time.Millisecond)
		h.client.text("m2")
		up.expectNothing()
		up.pong.Store(true)
		time.Sleep(10 * time.Second) // the interval ping is answered
		up.expect("m2")
	})
}

// Probe times are rounded up to a grid, so that the probes of sessions
// active at nearby times fire in one wake of the process.
func TestAckProbesShareTheGrid(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0))
		a := newHBRig(t, cfg, hbOpts{upAutoPong: true})
		b := newHBRig(t, cfg, hbOpts{upAutoPong: true})
		a.client.text("a")
		time.Sleep(3 * time.Millisecond)
		b.client.text("b")
		time.Sleep(probeEvery + 40*time.Millisecond)
		synctest.Wait()
		pa, pb := hbOps(a.up.got(), ws.OpPing), hbOps(b.up.got(), ws.OpPing)
		if len(pa) != 2 || len(pb) != 2 {
			t.Fatalf("%d and %d pings, want each message's and one probe", len(pa), len(pb))
		}
		if !pa[1].at.Equal(pb[1].at) {
			t.Fatalf("probes %v apart, want together", pb[1].at.Sub(pa[1].at))
		}
		if gap := pa[1].at.Sub(pa[0].at); gap < probeEvery {
			t.Fatalf("probe %v after the message's ping, want at least %v", gap, probeEvery)
		}
	})
}
