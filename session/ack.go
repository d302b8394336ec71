package session

import "time"

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
const (
	// ackPingDelay lets a burst of messages share one ping.
	ackPingDelay = 5 * time.Millisecond
	// ackSpacing bounds acknowledgement pings to 1/ackSpacing per second
	// per session.
	ackSpacing = 50 * time.Millisecond
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
			l.ackDue.Store(-1) // the interval ping comes first and acknowledges
		} else {
			l.ackDue.Store(due)
			l.timer.Reset(time.Duration(due - now))
		}
	}
	l.ctl.Unlock()
}

// ackAnswered is a pong on the upstream leg l: the acknowledgement in
// flight is answered. held: messages written to l are still retained (sent
// after that ping), so the next acknowledgement is armed at once.
func (l *leg) ackAnswered(held bool) {
	if l.ackDue.Load() >= 0 {
		return
	}
	l.ctl.Lock()
	if l.ackDue.Load() < 0 {
		l.ackDue.Store(0)
	}
	l.ctl.Unlock()
	if held {
		l.armAck()
	}
}

// ackTickLocked decides, in tick (under ctl), whether this firing sends
// an acknowledgement ping, and marks it in flight; an interval ping
// (ping) acknowledges an armed one too.
func (l *leg) ackTickLocked(now int64, ping bool) (ack bool) {
	d := l.ackDue.Load()
	switch {
	case d <= 0:
		return false
	case ping:
		l.ackDue.Store(-1)
		return false
	case now >= d:
		l.ackDue.Store(-1)
		l.ackLast = now
		return true
	}
	return false
}
