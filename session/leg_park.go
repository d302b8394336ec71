package session

import "time"

// Read-loop states of a leg (leg.state).
const (
	legRunning uint32 = iota // a goroutine runs the leg's read loop
	legParked                // no goroutine: waiting in the poller
	legDone                  // the read loop has ended for good
	// The read loop is arming the poller: it still owns the leg, and a
	// wake meanwhile is left as legWoken or legWokenExpired for it, so
	// that no other goroutine takes the leg while Arm writes its Handle.
	legParking
	legWoken        // woken while parking: the read loop goes on
	legWokenExpired // the same, by the heartbeat timeout
)

// parkMinInterval is the shortest heartbeat interval at which a leg parks.
// Since a wake runs the read loop on a worker (workers.go: no goroutine
// start, no stack growth), parking 500 ms legs costs the CPU of keeping
// their goroutines and saves 58 % of the memory: 9,000 sessions with
// 500 ms heartbeats on both legs measured 11.0-11.2 KiB and 53-55 % of a
// core parked, 26.3 KiB and 50-54 % unparked (BENCHMARKS.md "Heartbeat
// cost"); with a goroutine started per wake, parking at 500 ms had
// doubled the CPU. Legs with faster heartbeats are never quiet for
// IdleAfter long enough to gain from it, and keep their goroutine.
const parkMinInterval = 500 * time.Millisecond

// park gives up the read loop's goroutine and buffers until the socket is
// readable or wake is called. It reports whether the leg parked (the
// caller's read loop must then return errParked at once, touching nothing
// of the leg's read side) or could not (the caller goes on reading).
func (l *leg) park() bool {
	if !l.parks || l.closing.Load() || l.fr.frames != 0 || (l.fr.br != nil && l.fr.br.Buffered() != 0) || len(l.lr.pre) != 0 {
		return false
	}
	l.flushDeferred() // already done by the read that returned errIdle
	l.s.env.sweep.remove(l)
	// The deadline on conn may be a sweep's, long passed: the next run
	// sets its own before it reads.
	l.rdl = -1
	l.releaseReader()
	l.tier, l.grow = tierWake, false // the next run starts small again
	// The next run reads at least once before it may park again.
	l.quiet, l.short = true, false
	l.fr.idle()
	l.s.env.parked.Add(1)
	l.state.Store(legParking)
	err := l.s.env.poller.Arm(&l.ph, l.raw.Control, l.wakeFn)
	if err == nil && l.state.CompareAndSwap(legParking, legParked) {
		// Parked: from here on a wake hands the leg to a worker.
		l.scheduleParkedTick()
		return true
	}
	// Arm failed, or a wake came while arming: this loop goes on.
	if l.state.Swap(legRunning) == legWokenExpired {
		l.expired.Store(true)
	}
	l.s.env.parked.Add(-1)
	l.quiet = false
	l.s.env.sweep.add(l)
	l.acquireReader()
	return false
}

// wake starts the read loop of a parked leg again. Safe from any goroutine;
// it does nothing unless the leg is parked or parking.
func (l *leg) wake() { l.wakeAs(legWoken) }

// wakeExpired wakes a parked leg whose heartbeat timeout has passed: its
// read loop gets a deadline error at once.
func (l *leg) wakeExpired() { l.wakeAs(legWokenExpired) }

// wakeAs wakes the leg: a parked one on a worker goroutine, a parking one by
// leaving woken (legWoken or legWokenExpired) for its read loop.
func (l *leg) wakeAs(woken uint32) {
	for {
		switch st := l.state.Load(); st {
		case legParked:
			if l.state.CompareAndSwap(legParked, legRunning) {
				l.s.env.parked.Add(-1)
				if woken == legWokenExpired {
					l.expired.Store(true)
				}
				l.s.env.workers.run(job{l: l})
				return
			}
		case legParking:
			if l.state.CompareAndSwap(legParking, woken) {
				return
			}
		case legWoken:
			if woken == legWoken || l.state.CompareAndSwap(legWoken, woken) {
				return
			}
		default:
			return // running, done, or already woken by the timeout
		}
	}
}

// startHeartbeat arms the leg's ping timer (no goroutine until it fires).
// The timer is guarded by ctl so that start, stop and re-arming never race.
func (l *leg) startHeartbeat() {
	if !l.hb.Mode.On() {
		return
	}
	l.ctl.Lock()
	if !l.timerStop.Load() && l.timer == nil {
		l.pingDue = time.Now().Add(l.hb.Interval).UnixNano()
		l.timer = time.AfterFunc(l.hb.Interval, l.tick)
	}
	l.ctl.Unlock()
}

// tick runs when the leg's timer fires: at the ping interval, and for a
// parked leg also when its heartbeat timeout is due (nothing else reads
// the socket then, so no read deadline can fire).
func (l *leg) tick() {
	if l.timerStop.Load() {
		return
	}
	if t := l.s.env.test; t != nil && t.tick != nil {
		t.tick(l)
	}
	now := time.Now().UnixNano()
	l.ctl.Lock()
	ping := now >= l.pingDue
	if ping {
		l.pingDue = now + int64(l.hb.Interval)
	}
	ack := l.ackTickLocked(now, ping)
	l.ctl.Unlock()
	if ack {
		l.signal(pendPingWS)
	}
	if ping {
		l.signal(l.pingFlags())
	}
	if l.state.Load() == legParked && l.hb.Timeout > 0 && now >= l.lastRead.Load()+int64(l.hb.Timeout) {
		l.wakeExpired()
	}
	l.ctl.Lock()
	if !l.timerStop.Load() {
		l.resetTimerLocked(l.nextTickLocked(now))
	}
	l.ctl.Unlock()
}

// nextTickLocked is the time from now to the timer's next firing: the next
// ping, an armed acknowledgement ping or probe (ack.go), or the heartbeat
// timeout of a parked leg, whichever comes first.
func (l *leg) nextTickLocked(now int64) int64 {
	next := l.pingDue
	if d := l.ackDue.Load(); d > 0 && d < next {
		next = d
	}
	if d := l.probeDue.Load(); d > 0 && d < next && !l.sweptProbes() {
		next = d
	}
	if l.state.Load() == legParked && l.hb.Timeout > 0 {
		if due := l.lastRead.Load() + int64(l.hb.Timeout); due < next {
			next = due
		}
	}
	if next < now {
		next = now
	}
	return next - now
}

// scheduleParkedTick makes the timer of a leg that just parked fire by
// what only the timer can now do for it, end it at its heartbeat timeout,
// and has the sweeper send its probe if one is armed.
func (l *leg) scheduleParkedTick() {
	if !l.hb.Mode.On() {
		return
	}
	if l.probeDue.Load() > 0 {
		l.s.env.sweep.addProbe(l)
	}
	l.ctl.Lock()
	if l.timer != nil && !l.timerStop.Load() {
		now := time.Now().UnixNano()
		set := l.pingDue // what the running leg's timer was set for
		if d := l.ackDue.Load(); d > 0 && d < set {
			set = d
		}
		if next := l.nextTickLocked(now); now+next < set {
			l.resetTimerLocked(next)
		}
	}
	l.ctl.Unlock()
}

// resetTimerLocked sets l's timer to fire after d nanoseconds. Moving a
// timer that has not fired marks it modified in the Go runtime, which
// then walks all of the process's timers when it would have fired: the
// per-message paths move none (sweptProbes).
func (l *leg) resetTimerLocked(d int64) {
	if t := l.s.env.test; t != nil && t.timerSet != nil {
		t.timerSet(l)
	}
	l.timer.Reset(time.Duration(d))
}

// pingFlags is the pings l's heartbeat sends: its mode's, with an RFC
// ping in place of a JSON one once the session's stream turned out to
// take no message of tether's (stateReplay.strict: SignalR is known only
// from the client's first message, after the leg was made).
func (l *leg) pingFlags() uint32 {
	var f uint32
	if l.hb.Mode.SendsWS() {
		f |= pendPingWS
	}
	if l.hb.Mode.SendsJSON() {
		if l.s.sr.strict.Load() {
			f |= pendPingWS
		} else {
			f |= pendPingJSON
		}
	}
	return f
}

// earlyPing sends a ping now (README "Upstream loss, reconnect and the
// delivery guarantee": retained bytes past half the limit).
func (l *leg) earlyPing() {
	f := l.pingFlags()
	if f&pendPingWS != 0 {
		f = pendPingWS
	}
	if f != 0 {
		l.signal(f)
	}
}

func (l *leg) stopHeartbeat() {
	l.ctl.Lock()
	l.timerStop.Store(true)
	if l.timer != nil {
		l.timer.Stop()
	}
	l.ctl.Unlock()
}
