package session

import (
	"math"
	"time"
)

// Acknowledgement pings (README "Upstream loss, reconnect and the delivery
// guarantee", "Fewer duplicates"): a retained client message is dropped
// once a heartbeat round trip that started after it completes. Waiting
// for the next interval ping would leave up to an interval of traffic to
// re-send after a loss; instead, while an RFC-ping upstream leg holds
// retained messages and no acknowledgement is in flight, a ping goes out
// ackPingDelay after the oldest unacknowledged send, at most one per
// ackSpacing. What a loss can duplicate is then about one round trip of
// traffic. An idle leg (nothing retained) sends none. The leg's heartbeat
// timer sends it (tick): no timer or goroutine of its own.
//
// An acknowledgement that does not come within holdAfter (a few round
// trips) makes the leg suspect: the upstream may have stalled, and what is
// written into a stalled connection is delivered late or never, so after
// the heartbeat timeout it is re-sent and, if the stall was only a pause,
// delivered twice. While the leg is suspect, client messages wait in the
// delivery log instead of being written (the session is "holding"); the
// pong that ends the suspicion has them written in order (flushHeld), and
// a loss has the reconnect send them, once.
const (
	// ackPingDelay lets a burst of messages share one ping.
	ackPingDelay = 5 * time.Millisecond
	// ackSpacing bounds acknowledgement pings to 1/ackSpacing per second
	// per session.
	ackSpacing = 50 * time.Millisecond
	// ackHoldMin and ackHoldRTTs: an acknowledgement is overdue after
	// max(ackHoldMin, ackHoldRTTs × the leg's last round trip).
	ackHoldMin  = 100 * time.Millisecond
	ackHoldRTTs = 4
	// ackOverdue is ackDue's value for an acknowledgement in flight for
	// longer than holdAfter.
	ackOverdue = math.MinInt64
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
		due := max(now+int64(ackPingDelay), l.ackLast+int64(ackSpacing))
		if due >= l.pingDue {
			// The interval ping comes first and acknowledges: in
			// flight from then on.
			l.ackDue.Store(-l.pingDue)
		} else {
			l.ackDue.Store(due)
			l.timer.Reset(time.Duration(due - now))
		}
	}
	l.ctl.Unlock()
}

// ackAnswered is a pong on the upstream leg l: the acknowledgement in
// flight, overdue or not, is answered.
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

// suspect reports whether l's acknowledgement is overdue: client messages
// wait instead of being written to it. One atomic load.
func (l *leg) suspect() bool { return l.ackDue.Load() == ackOverdue }

// ackTickLocked decides, in tick (under ctl), whether this firing sends
// an acknowledgement ping, and marks it in flight (since now); an
// interval ping (ping) acknowledges an armed one too. An acknowledgement
// in flight past holdAfter becomes overdue.
func (l *leg) ackTickLocked(now int64, ping bool) (ack bool) {
	d := l.ackDue.Load()
	switch {
	case d == 0 || d == ackOverdue:
		return false
	case d < 0:
		if now >= -d+l.holdAfterLocked() {
			l.ackDue.Store(ackOverdue)
		}
		return false
	case ping:
		l.ackDue.Store(-now)
		return false
	case now >= d:
		l.ackDue.Store(-now)
		l.ackLast = now
		return true
	}
	return false
}

// ackNextLocked is when the timer must fire next for acknowledgements
// (under ctl): the armed ping, or the moment the one in flight becomes
// overdue; 0 for neither.
func (l *leg) ackNextLocked() int64 {
	switch d := l.ackDue.Load(); {
	case d > 0:
		return d
	case d < 0 && d != ackOverdue:
		return -d + l.holdAfterLocked()
	}
	return 0
}

// holdAfterLocked is how long an acknowledgement may take before it is
// overdue: a few of the leg's round trips, at least ackHoldMin.
func (l *leg) holdAfterLocked() int64 {
	rtt, _ := l.tracker.LastRTT()
	return int64(max(ackHoldMin, ackHoldRTTs*rtt))
}
