package session

import (
	"time"

	"github.com/gobwas/ws"
)

// Acknowledgement pings (README "Upstream loss, reconnect and the delivery
// guarantee", its paragraphs on fewer duplicates): a retained client
// message is dropped once a heartbeat round trip that started after it completes. Waiting
// for the next interval ping would leave up to an interval of traffic to
// re-send after a loss; instead, while an RFC-ping upstream leg holds
// retained messages and no acknowledgement is in flight, a ping goes out
// ackPingDelay after the oldest unacknowledged send, at most one per
// ackSpacing. What a loss can duplicate is then about one round trip of
// traffic. An idle leg (nothing retained) sends none. The leg's heartbeat
// timer sends it (tick): no timer or goroutine of its own.
//
// A ping on that leg (an acknowledgement's or the interval's) that is not
// answered within holdAfter (a few round trips) makes the leg suspect: the
// upstream may have stalled, and what is written into a stalled
// connection is delivered late or never, so after the heartbeat timeout it
// is re-sent and, if the stall was only a pause, delivered twice. While
// the leg is suspect, client messages wait in the delivery log instead of
// being written (the session is "holding"); the pong that ends the
// suspicion has them written in order (flushHeld), and a loss has the
// reconnect send them, once. Whether a ping is overdue is checked only
// when a client message comes: no timer fires for it.
const (
	// ackPingDelay lets a burst of messages share one ping.
	ackPingDelay = 5 * time.Millisecond
	// ackSpacing bounds acknowledgement pings to 1/ackSpacing per second
	// per session.
	ackSpacing = 50 * time.Millisecond
	// ackGrace: a ping that ackSpacing put off rides on the first
	// message written once the spacing allows (writeDataAcked); the
	// timer sends it on its own only if none comes within ackGrace. A
	// session sending every 20 to 37 ms then has every acknowledgement
	// in its data's writes, not a write and a wake of its own.
	ackGrace = ackSpacing / 2
	// ackHoldMin, ackHoldMax and ackHoldRTTs: a ping is overdue after
	// ackHoldRTTs times the leg's last round trip, within these bounds.
	ackHoldMin  = 100 * time.Millisecond
	ackHoldMax  = time.Second
	ackHoldRTTs = 4
	// probeEvery and activeFor: while the session's client has sent a
	// message within activeFor, the upstream is pinged at least every
	// probeEvery, so that a stall is found within about probeEvery +
	// ackHoldMin of its start, not a heartbeat interval later.
	probeEvery = 500 * time.Millisecond
	activeFor  = 2 * time.Second
)

// armAck arms an acknowledgement ping after a retained write to the
// upstream leg l, unless one is armed or in flight already (one atomic
// load per message then). Only legs that send RFC pings use them: in
// json mode the pings are messages the backend sees, and their number is
// left to the interval (README "Heartbeats").
func (l *leg) armAck() {
	if l.ackDue.Load() != 0 || !l.hb.Mode.SendsWS() {
		return
	}
	l.ctl.Lock()
	if l.ackDue.Load() == 0 && l.timer != nil && !l.timerStop.Load() {
		now := time.Now().UnixNano()
		due := now + int64(ackPingDelay)
		if spaced := l.ackLast + int64(ackSpacing); spaced > due {
			due = spaced + int64(ackGrace)
		}
		if due >= l.pingDue {
			// The interval ping comes first and acknowledges: in
			// flight from then on.
			l.ackDue.Store(-(l.pingDue + l.holdAfterLocked()))
		} else {
			l.ackDue.Store(due)
			l.resetTimerLocked(due - now)
		}
	}
	l.ctl.Unlock()
}

// armProbe arms a ping probeEvery from now on the upstream leg l, for an
// active session whose messages are all acknowledged; an acknowledgement
// ping armed meanwhile goes instead. When l can park, the sweeper sends
// it (sweep.go); otherwise its timer does.
func (l *leg) armProbe() {
	if !l.hb.Mode.SendsWS() {
		return
	}
	l.ctl.Lock()
	if l.timer != nil && !l.timerStop.Load() && l.probeDue.Load() == 0 {
		now := time.Now().UnixNano()
		p := probeGrid(now + int64(probeEvery))
		l.probeDue.Store(p)
		if p < l.pingDue && !l.sweptProbes() {
			l.resetTimerLocked(l.nextTickLocked(now))
		}
	}
	l.ctl.Unlock()
}

// sweptProbes reports whether the sweeper sends l's probes: a leg that
// can park is on the sweeper's list while it runs, which looks at it every
// IdleAfter/sweepsPerIdle anyway, and on its list of parked probes while
// parked with one armed (addProbe). Moving the leg's timer to the next
// probe instead, at every message whose ping made the armed probe
// needless, made the Go runtime walk all of its timers every probeEvery
// (BENCHMARKS.md, tenth sitting), and a parked leg's timer fired for
// nothing at nearly every message of a session sending about every
// probeEvery (eleventh sitting). A leg that never parks has its probes
// sent by its timer.
func (l *leg) sweptProbes() bool {
	return l.parks
}

// probe sends the probe of l, running or parked, if it is due: the
// sweeper's part of ackTickLocked, on a goroutine of its own (the ping's
// write may wait for a full socket).
func (l *leg) probe() {
	now := time.Now().UnixNano()
	l.ctl.Lock()
	ack := !l.timerStop.Load() && l.ackTickLocked(now, false)
	l.ctl.Unlock()
	if ack {
		l.signal(pendPingWS)
	}
}

// probeGrid rounds a probe's time up to a multiple of 1<<24 ns (16.8
// ms), so that the probe timers of many sessions fire in one wake of the
// process: one wake per session and probe cost ~20 % of tether's CPU at
// 5,000 msg/s over 1,000 connections (README "Upstream loss, reconnect
// and the delivery guarantee"). A 67 ms grid made bursts that raised p99.
func probeGrid(t int64) int64 {
	const g = 1<<24 - 1
	return (t + g) &^ g
}

// ackAnswered is a pong on the upstream leg l: the ping in flight is
// answered.
func (l *leg) ackAnswered() {
	if l.ackDue.Load() >= 0 {
		return
	}
	l.ctl.Lock()
	if l.ackDue.Load() < 0 {
		l.ackDue.Store(0)
	}
	l.ctl.Unlock()
}

// suspect reports whether a ping on l is overdue: client messages wait
// instead of being written to it. One atomic load, and a clock reading
// while a ping is in flight.
func (l *leg) suspect() bool {
	d := l.ackDue.Load()
	return d < 0 && time.Now().UnixNano() > -d
}

// ackTickLocked decides, in tick (under ctl), whether this firing sends
// an acknowledgement ping or a probe, and marks the ping it sends, or the
// interval ping (ping), in flight. An interval ping acknowledges an armed
// acknowledgement too, and any ping makes a probe needless.
func (l *leg) ackTickLocked(now int64, ping bool) (ack bool) {
	d := l.ackDue.Load()
	if p := l.probeDue.Load(); p > 0 && (now >= p || d != 0 || ping) {
		l.probeDue.Store(0)
		if d == 0 && !ping {
			if next := l.ackLast + int64(probeEvery); next > now {
				// A ping went out with a message since the probe was
				// armed (writeDataAcked, or an acknowledgement's): it
				// probed. Probe probeEvery after it instead.
				l.probeDue.Store(probeGrid(next))
			} else {
				// The probe: an acknowledgement ping with nothing to
				// acknowledge.
				d = now
			}
		}
	}
	switch {
	case d < 0:
		return false
	case ping:
		if d > 0 || (l.upstream() && l.hb.Mode.SendsWS()) {
			l.ackDue.Store(-(now + l.holdAfterLocked()))
		}
		return false
	case d > 0 && now >= d:
		l.ackDue.Store(-(now + l.holdAfterLocked()))
		l.ackLast = now
		return true
	}
	return false
}

// holdAfterLocked is how long a ping may take before it is overdue: a few
// of the leg's round trips, within bounds.
func (l *leg) holdAfterLocked() int64 {
	rtt, _ := l.tracker.LastRTT()
	return int64(min(max(ackHoldMin, ackHoldRTTs*rtt), ackHoldMax))
}

// writeDataAcked writes one retained client message to the upstream leg
// l followed, in the same write, by an acknowledgement ping, when none is
// in flight and the spacing allows: a session that sends now and then
// gets its acknowledgement without a timer firing or a write of its own
// for the ping, and a ping armed meanwhile (armAck) goes with the message
// instead of from the timer. It reports done false, having written
// nothing, when the message must go the usual way (writeData, then
// armAck).
func (l *leg) writeDataAcked(op ws.OpCode, p []byte, seq uint64, mk maskKey) (done bool, err error) {
	if l.ackDue.Load() < 0 || len(p) > 4096 || !l.hb.Mode.SendsWS() || l.deflate {
		return false, nil
	}
	l.lock()
	defer l.unlock()
	if l.closed || l.werr != nil || len(l.wbuf) > 0 {
		return false, nil
	}
	l.ctl.Lock()
	now := time.Now()
	ns := now.UnixNano()
	armed := l.ackDue.Load()
	if armed < 0 || l.timer == nil || l.timerStop.Load() || ns < l.ackLast+int64(ackSpacing) {
		l.ctl.Unlock()
		return false, nil
	}
	id := l.tracker.SentWS(now, seq+1)
	l.ackDue.Store(-(ns + l.holdAfterLocked()))
	l.ackLast = ns
	moved := armed > 0 // the timer was set for the armed ping
	if l.probeDue.Load() > 0 {
		// This ping probes too: the probe is due probeEvery after it.
		l.probeDue.Store(probeGrid(ns + int64(probeEvery)))
		moved = true
	}
	if moved && !l.parks {
		// Set the timer for what is next now, so that it does not fire
		// for nothing: a session whose messages carry their pings has
		// no timer firing between them (a firing costs a goroutine and
		// came in bursts on the probe grid; a Reset is a heap update).
		// A leg that can park moves no timer here: the sweeper sends
		// its probes while it runs (sweptProbes), and a timer set for
		// an armed ping or a parked leg's probe fires once for nothing,
		// which is cheaper than the walk of all timers that moving
		// one sets off.
		l.resetTimerLocked(l.nextTickLocked(ns))
	}
	l.ctl.Unlock()
	l.appendFrameKey(op, false, p, mk)
	l.appendFrameLocked(ws.OpPing, false, id[:])
	if err = l.flushLocked(l.wt); err == nil && seq >= l.ackMark {
		l.ackMark = seq + 1
	}
	l.s.pingSent(l)
	return true, err
}
