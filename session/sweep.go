package session

import (
	"math"
	"sync"
	"time"
)

// sweeper finds the running legs that have been quiet for IdleAfter, to
// park, or for their heartbeat timeout, to end, and sends their due
// probes (see README "Architecture"): one per Env, for every leg that
// can park. Such a leg
// then reads with no deadline at all while it runs, instead of moving a
// runtime timer to now + IdleAfter (or the heartbeat timeout, inside a
// frame) at nearly every message. Each such move marks a timer
// of the Go runtime modified, and the first one after the runtime has
// tidied its timers makes it walk all of the process's timers again when
// that moved timer would have fired: measured at 1,000 sessions sending
// 5,000 msg/s, a walk of 127-240 µs every 250 ms, in which nothing else
// runs on the process's processor. With the sweeper the walks came half
// as often and took half as long (no read deadline timers to walk),
// tether's CPU fell 3-10 % and its p99 was lower in 14 of 18 rounds
// (BENCHMARKS.md, ninth sitting). The walks left came from the
// acknowledgement probes' timer moves, one per message; the sweeper now
// sends the probes of the legs it lists too (sweptProbes), and the
// runtime no longer walks its timers at that load (tenth sitting).
//
// A parked leg with a probe armed is listed too (addProbe, as it parks),
// and a sweep sends its probe when due; it stays listed while its probe
// is armed (a probe may arm itself anew for later), so that parking is
// the one place that lists it.
//
// Every IdleAfter/sweepsPerIdle, sweep looks at the time of each running
// leg's last received bytes; a leg quiet for IdleAfter, and again one
// quiet for its heartbeat timeout, has its read deadline set in the past
// (interrupt), and its read loop decides from its own state
// (readExpired) whether to park, end or go on (a leg inside a frame, or
// whose read loop is busy elsewhere, goes on). A dead peer is thus found
// up to IdleAfter/sweepsPerIdle after its timeout. A leg parks IdleAfter to
// IdleAfter + IdleAfter/sweepsPerIdle after its last bytes. The sweeper's
// timer runs only while some leg that can park is running (a fired timer
// set again is added anew, not moved): a process of parked sessions has
// none.
type sweeper struct {
	mu sync.Mutex
	// legs are the running legs that can park (leg.sweepAt is the index
	// of each, plus one); done holds for each the time of the last bytes
	// it had received when a sweep interrupted it as idle (negated when
	// as dead; 0: none since it began to run), so that a leg that did not
	// park (inside a frame) is not interrupted again until it receives
	// more or its heartbeat timeout passes. A slice, not a map: a
	// sweep over 2,000 legs took 18 µs against the map's 89 (cold caches).
	legs []*leg
	done []int64
	// probes are the parked legs with a probe armed (leg.sweepAt is
	// minus the index of each, minus one): a sweep sends the probes that
	// are due.
	probes []*leg
	timer  *time.Timer // nil until the first leg runs
	armed  bool        // timer is set: some leg ran or parked with a probe since the last sweep
	every  time.Duration
	idle   int64 // IdleAfter in nanoseconds
	test   *testHooks
}

// sweepsPerIdle is how many sweeps look at a leg within IdleAfter (and
// at least 8 within probeEvery, for the probes: 62.5 ms either way with
// the default IdleAfter).
const sweepsPerIdle = 4

// add registers l, whose read loop starts running.
func (w *sweeper) add(l *leg) {
	w.mu.Lock()
	w.setUpLocked(l.s.env)
	w.removeProbeLocked(l) // the legs' sweep sends it now
	if l.sweepAt <= 0 {
		w.legs = append(w.legs, l)
		w.done = append(w.done, 0)
		l.sweepAt = int32(len(w.legs))
	}
	w.armLocked()
	w.mu.Unlock()
}

// addProbe registers l, which parked with a probe armed: a sweep sends
// it when it is due, unless l runs again first (add). Its heartbeat timer
// did before: at a session sending about every probeEvery, the timer
// fired at nearly every message for a probe that the message's own ping
// had made needless, a goroutine and a wake each time (BENCHMARKS.md,
// eleventh sitting).
func (w *sweeper) addProbe(l *leg) {
	w.mu.Lock()
	w.setUpLocked(l.s.env)
	if l.sweepAt == 0 {
		w.probes = append(w.probes, l)
		l.sweepAt = -int32(len(w.probes))
		w.armLocked()
	}
	w.mu.Unlock()
}

// setUpLocked sets the sweeper up from its Env on first use (tests set
// the Env's fields after NewEnv).
func (w *sweeper) setUpLocked(e *Env) {
	if w.every == 0 {
		w.every = max(min(e.idleAfter()/sweepsPerIdle, probeEvery/8), time.Millisecond)
		w.idle = int64(e.idleAfter())
		w.test = e.test
	}
}

// armLocked sets the timer for the next sweep unless it is set.
func (w *sweeper) armLocked() {
	if !w.armed {
		w.armed = true
		if w.timer == nil {
			w.timer = time.AfterFunc(w.every, w.sweep)
		} else {
			w.timer.Reset(w.every)
		}
	}
}

// removeProbeLocked unregisters l's parked probe, if registered.
func (w *sweeper) removeProbeLocked(l *leg) {
	if i := -int(l.sweepAt) - 1; i >= 0 {
		last := len(w.probes) - 1
		m := w.probes[last]
		w.probes[i] = m
		m.sweepAt = -int32(i + 1)
		w.probes[last] = nil
		w.probes = w.probes[:last]
		l.sweepAt = 0
	}
}

// remove unregisters l, whose read loop parks or ends.
func (w *sweeper) remove(l *leg) {
	w.mu.Lock()
	if i := int(l.sweepAt) - 1; i >= 0 {
		last := len(w.legs) - 1
		m := w.legs[last]
		w.legs[i], w.done[i] = m, w.done[last]
		m.sweepAt = int32(i + 1)
		w.legs[last] = nil
		w.legs, w.done = w.legs[:last], w.done[:last]
		l.sweepAt = 0
	}
	w.mu.Unlock()
}

// asked reports whether a sweep has interrupted l since its read loop
// began to run (armRead, when it replaces the deadline a sweep may have
// just set). A lock and a load, once per deadline a read loop sets.
func (w *sweeper) asked(l *leg) bool {
	w.mu.Lock()
	i := int(l.sweepAt) - 1
	asked := i >= 0 && w.done[i] != 0
	w.mu.Unlock()
	return asked
}

// sweep interrupts the reads of the legs quiet for IdleAfter and starts
// the probes that are due (sweptProbes); it runs on the timer's goroutine
// and sets the timer again while legs run.
func (w *sweeper) sweep() {
	now := time.Now().UnixNano()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.legs) == 0 && len(w.probes) == 0 {
		w.armed = false
		return
	}
	for i := 0; i < len(w.probes); {
		l := w.probes[i]
		p := l.probeDue.Load()
		if p == 0 || l.state.Load() != legParked {
			// Sent or disarmed, or the leg runs again (add) or ended.
			w.removeProbeLocked(l)
			continue
		}
		if now >= p {
			// Listed until it is sent: the probe may find a ping gone
			// out since and arm itself anew for later (ackTickLocked).
			l.s.env.workers.run(job{l: l, probe: true})
		}
		i++
	}
	interrupted, more := 0, false
	for i, l := range w.legs {
		if p := l.probeDue.Load(); p > 0 && now >= p {
			l.s.env.workers.run(job{l: l, probe: true}) // sweptProbes
		}
		last := l.lastRead.Load()
		quiet, done := now-last, w.done[i]
		mark := int64(0)
		switch {
		case quiet >= w.idle && done != last && done != -last:
			mark = last // interrupted as idle
		case quiet >= l.timeout() && done != -last:
			mark = -last // interrupted as dead
		default:
			continue
		}
		if interrupted == maxInterrupts {
			more = true // the next sweep, sweepBacklog from now
			continue
		}
		w.done[i] = mark
		interrupted++
		if w.test != nil && w.test.sweep != nil {
			w.test.sweep(l)
		}
		l.interrupt()
	}
	if w.test != nil && w.test.swept != nil {
		w.test.swept(interrupted)
	}
	next := w.every
	if more {
		next = sweepBacklog
	}
	w.timer.Reset(next)
}

// maxInterrupts bounds the legs one sweep interrupts, and sweepBacklog is
// how soon the next sweep comes when more were due. Each interrupted leg
// wakes its read loop, which parks or ends: a few microseconds each, in
// which the process's processor relays nothing. Sessions that each send
// every 500 ms park about a quarter of their legs per sweep; at 500 such
// sessions, 125 at once put the messages of that moment behind them, and
// tether's part of the round trip had a p99 of 0.68 ms against Caddy's
// 0.25, its slow round trips every 62.9 ms (BENCHMARKS.md, eleventh
// sitting).
const (
	maxInterrupts = 16
	sweepBacklog  = 2 * time.Millisecond
)

// timeout is the leg's heartbeat timeout in nanoseconds, or the largest
// int64 when it has none.
func (l *leg) timeout() int64 {
	if !l.hb.Mode.On() || l.hb.Timeout <= 0 {
		return math.MaxInt64
	}
	return int64(l.hb.Timeout)
}

// aLongTimeAgo is a read deadline that has passed: it ends a read at once.
var aLongTimeAgo = time.Unix(1, 0)

// interrupt ends the read l's loop is waiting in (or its next one) with
// a deadline error, unless the leg is closing: its Close wait keeps its
// own deadline (beginClose stores closing before setting it, so either
// this sees closing or beginClose's deadline comes after this one).
func (l *leg) interrupt() {
	_ = l.conn.SetReadDeadline(aLongTimeAgo)
	if l.closing.Load() {
		_ = l.conn.SetReadDeadline(time.Unix(0, l.closeDL.Load()))
	}
}
