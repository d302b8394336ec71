package session

import (
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
)

// toUpstream relays one client message (README "Upstream loss, reconnect
// and the delivery guarantee"): sent at once while connected (and retained
// in upLog until acknowledged when the upstream heartbeat is on), buffered
// in upLog while reconnecting. p is the client reader's buffer and is only
// valid during the call; a binary message may still be masked with the
// client's key (mk, leg_write.go): it is relayed and retained that way.
func (s *Session) toUpstream(c *leg, op ws.OpCode, p []byte, mk maskKey, more bool) {
	a := s.admit(c, false, op, p, &mk) // may unmask p: mk is read after
	s.forward(c, a, op, p, mk, more)
}

// forward carries out admit's decision a for one client message.
func (s *Session) forward(c *leg, a admission, op ws.OpCode, p []byte, mk maskKey, more bool) {
	switch a.verdict {
	case admitOverflow:
		s.overflow()
		return
	case admitStateFull:
		s.stateFull()
		return
	case admitHeld, admitDropped:
		return
	}
	// Only a retained message may wait in the upstream leg's write buffer:
	// if that connection fails before the write, the log re-sends it.
	more = more && a.retained
	if a.retained && !more && !a.askAck {
		if done, err := a.up.writeDataAcked(op, p, a.seq, mk); done {
			if err == nil {
				s.env.Metrics.Message(true, len(p))
			}
			return // written, or held in the log for the reconnect
		}
	}
	for {
		// p is the client reader's buffer: it may be left masked once
		// written (nothing reads it after this).
		if err := a.up.writeDataConsumed(op, p, a.seq, more, mk); err == nil {
			s.env.Metrics.Message(true, len(p))
			switch {
			case a.askAck && more && a.up.hb.Mode.SendsWS():
				a.up.deferPing() // in the same write as the data
			case a.askAck:
				a.up.earlyPing()
			}
			if a.retained {
				a.up.armAck()
			}
			if more {
				c.deferFlush(a.up)
			}
			return
		}
		if a.retained {
			return // held in the log: the reconnect re-sends it
		}
		// Not retained (upstream heartbeat off): this message was not
		// delivered, so hold it for the next connection.
		if a.up = s.holdUndelivered(a.up, a.seq, op, p, mk); a.up == nil {
			return
		}
	}
}

type admitVerdict uint8

const (
	admitSend     admitVerdict = iota // write it to up now
	admitHeld                         // buffered in upLog for the next connection
	admitDropped                      // the session is closed
	admitOverflow                     // upLog is full while reconnecting: 1013
)

// admission is what admit decided for one client message.
type admission struct {
	verdict  admitVerdict
	up       *leg   // the connection to write to (admitSend)
	seq      uint64 // the message's sequence number
	retained bool   // upLog holds a copy until acknowledged
	askAck   bool   // ask up for an acknowledgement (a ping) now
	// A counted message of a resumable session (resume.go): tell the
	// client what tether has now (tellNow), or arm the timer that will
	// (tellLater).
	tellNow, tellLater bool
}

// admit numbers a client message and decides, under mu, where it goes.
// While connected with retention on and upLog full, it waits for
// acknowledgements to make room (backpressure: the client leg is not read
// meanwhile), asking for one at once. c is the client leg whose read loop
// calls. counted: c is a resumable session's and the message counts
// (resume.go): it is dropped unless c is attached, and counted under the
// same lock.
//
// A message still masked with the client's key (mk) is unmasked here, in
// place, when its content is read: the first message (protocol
// recognition) and every message of a session whose state is replayed;
// mk then tells forward it is plaintext. The replay opening keeps its
// copies masked, like the delivery log.
//
// upLog takes a large message's buffer from c's frame reader instead of
// copying it (frameReader.give) when the message stays masked (then
// nothing writes to those bytes).
func (s *Session) admit(c *leg, counted bool, op ws.OpCode, p []byte, mk *maskKey) (a admission) {
	src := &c.fr
	s.mu.Lock()
	defer s.mu.Unlock()
	if counted && !s.countLocked(c, &a) {
		a.verdict = admitDropped
		return a
	}
	a.seq = s.upLog.newSeq()
	s.replay.record(a.seq, op, p, *mk)
	cut := false // the message ends inside an MQTT packet or STOMP frame
	if s.sr.st != nil || a.seq == 0 {
		mk.unmask(p) // read for its content
		var err error
		if cut, err = s.replayFromClientLocked(op, p, a.seq); err != nil {
			a.verdict = admitStateFull
			return a
		}
	}
	var waitStart time.Time
	for {
		switch s.state {
		case stateClosed:
			a.verdict = admitDropped
			return a
		case stateReconnecting:
			if !s.upLog.fits(len(p)) {
				a.verdict = admitOverflow
				return a
			}
			s.retain(a.seq, op, p, false, cut, *mk, src)
			s.env.Metrics.Buffered(1)
			a.verdict = admitHeld
			return a
		}
		if !s.retention() {
			break
		}
		if !s.upLog.full(len(p)) {
			if s.holding || s.up.suspect() {
				// The upstream is suspect (ack.go): wait in the log.
				s.holding = true
				s.retain(a.seq, op, p, false, cut, *mk, src)
				s.env.Metrics.Buffered(1)
				a.verdict = admitHeld
				return a
			}
			s.env.Metrics.Buffered(1) // before the copy (see push)
			s.retain(a.seq, op, p, true, cut, *mk, src)
			a.retained = true
			break
		}
		if waitStart.IsZero() {
			waitStart = time.Now()
		} else if !s.upLog.stallWarned && time.Since(waitStart) > s.cfg.UpstreamHeartbeat.Timeout {
			s.upLog.stallWarned = true
			// Alive (its data keeps the leg open) but not answering
			// pings: nothing can be acknowledged. Usually a JSON-mode
			// upstream that does not speak the JSON pong.
			s.log.Warn("upstream is not answering heartbeats; client reads paused", "session", s.id, "leg", LegUpstream, "held", s.upLog.len())
		}
		if s.state == stateConnected && s.up != nil && s.upLog.askAck() {
			// Ask for an acknowledgement now, once per
			// acknowledgement; pings may be written at once, and
			// writes never happen under mu.
			up := s.up
			s.mu.Unlock()
			up.earlyPing()
			s.mu.Lock()
			continue // the state may have changed meanwhile
		}
		if s.flushBeforeWait(c) {
			continue // the state may have changed meanwhile
		}
		s.waitForWindow(len(p))
	}
	a.verdict, a.up = admitSend, s.up
	a.askAck = a.retained && s.upLog.ackDue() && s.upLog.askAck()
	return a
}

// retain puts a client message in upLog: its buffer when src gives it
// (a masked message assembled in the reader's own buffer), else a copy.
// cut: the message ends inside an MQTT packet or a STOMP frame (see
// deliveryLog.ack).
func (s *Session) retain(seq uint64, op ws.OpCode, p []byte, sent, cut bool, mk maskKey, src *frameReader) {
	if mk.set && src != nil {
		if b, box, ok := src.give(p); ok {
			s.upLog.pushOwned(seq, op, b, box, sent, mk)
		} else {
			s.upLog.push(seq, op, p, sent, mk)
		}
	} else {
		s.upLog.push(seq, op, p, sent, mk)
	}
	if cut {
		s.upLog.markCut()
	}
}

// holdUndelivered puts a client message whose write to failed did not
// happen (retention off) in upLog for the next connection. It returns the
// connection to write it to instead when a new one is up already, or nil.
func (s *Session) holdUndelivered(failed *leg, seq uint64, op ws.OpCode, p []byte, mk maskKey) *leg {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == stateClosed:
		return nil
	case s.state == stateConnected && s.gen != failed.gen:
		return s.up
	}
	s.upLog.push(seq, op, p, false, mk)
	s.env.Metrics.Buffered(1)
	return nil
}

// flushBeforeWait writes the frames l's read loop deferred (more input
// was buffered), releasing mu meanwhile, and reports whether there were
// any: the caller, about to wait on cond for its peer to acknowledge,
// checks its condition again. A read loop never waits with frames
// deferred: they may hold what the wait is for (the ping asking for the
// acknowledgement, deferPing; the messages the client is to
// acknowledge, holdForClient). Waiting with them unwritten stalled a
// client sending small messages as fast as it could until the
// acknowledgement timer's ping, 75 ms, at every full window.
func (s *Session) flushBeforeWait(l *leg) bool {
	if l == nil || l.flushTo == nil {
		return false
	}
	s.mu.Unlock()
	l.flushDeferred()
	s.mu.Lock()
	return true
}

// waitForWindow waits on cond, releasing mu meanwhile, for room in upLog
// for a message of n bytes. Acknowledgements from this session wake it; a
// timer covers the rest.
func (s *Session) waitForWindow(n int) {
	// Only the process-wide limit needs polling (other sessions free it);
	// otherwise wake once per upstream timeout, for the stall warning.
	d := s.cfg.UpstreamHeartbeat.Timeout
	if s.upLog.overBudget(n) || d <= 0 {
		d = 50 * time.Millisecond
	}
	t := time.AfterFunc(d, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	s.cond.Wait()
	t.Stop()
}

// overflow closes the client with 1013 (README "Upstream loss, reconnect
// and the delivery guarantee").
func (s *Session) overflow() {
	s.env.Metrics.Overflow()
	s.log.Warn("buffer overflow", "session", s.id, "leg", LegClient)
	s.end(act{kind: actSend, ce: CloseError{Code: CloseTryAgainLater, Reason: "tether buffer full"}},
		act{kind: actSend, ce: CloseError{Code: CloseGoingAway, Reason: "client buffer overflow"}}, Outcome{Cause: CauseBufferOverflow})
}

// ackNext is what a pong leaves to do (ack.go).
type ackNext uint8

const (
	ackIdle   ackNext = iota // nothing
	ackHeld                  // messages written are still retained: ask again soon
	ackActive                // the client is active: probe the upstream in a while
)

// ack drops the retained messages that the upstream of generation gen has
// provably received: those with seq < ackSeq. It reports whether messages
// written to that connection are still retained, or else whether the
// client has been active lately.
func (s *Session) ack(gen, ackSeq uint64) ackNext {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.state == stateClosed {
		return ackIdle
	}
	n, cutLoose := s.upLog.ack(ackSeq)
	if n > 0 {
		s.env.Metrics.Buffered(-n)
		s.cond.Broadcast()
	}
	if cutLoose && !s.upLog.cutWarned {
		// README "State replay on upstream reconnect".
		s.upLog.cutWarned = true
		s.log.Warn("client messages acknowledged inside a packet: none ends at a packet boundary; an upstream loss now closes the client with 1012 until one does",
			"session", s.id, "leg", LegClient, "protocol", s.sr.proto.String())
	}
	if s.holding && !s.flushing && s.state == stateConnected {
		// The acknowledgement came: write what waited (ack.go).
		s.flushing = true
		s.addPart()
		go s.flushHeld()
	}
	if s.upLog.next > 0 {
		return ackHeld
	}
	now := time.Now().UnixNano()
	if s.upLog.seq != s.probeSeq {
		s.probeSeq, s.activeUntil = s.upLog.seq, now+int64(activeFor)
	}
	if now < s.activeUntil {
		return ackActive
	}
	return ackIdle
}

// flushHeld writes, in order, the client messages that waited in upLog
// while the upstream's acknowledgement was overdue (ack.go), then lets
// client messages go straight to the upstream again. It stops when the
// upstream is suspect again (the next acknowledgement restarts it) or
// lost (the reconnect re-sends them).
func (s *Session) flushHeld() {
	defer s.partDone()
	for {
		s.mu.Lock()
		up := s.up
		if s.state != stateConnected || !s.holding || up.suspect() {
			s.flushing = false
			s.mu.Unlock()
			return
		}
		m, ok := s.upLog.take()
		if !ok {
			s.holding, s.flushing = false, false
			s.cond.Broadcast()
			s.mu.Unlock()
			up.armAck()
			return
		}
		s.mu.Unlock()
		if up.writeLogged(m.op, m.p, m.seq, m.mask) != nil {
			// Lost: its read loop reports it, and the reconnect
			// re-sends everything from the log.
			s.mu.Lock()
			s.flushing = false
			s.mu.Unlock()
			return
		}
		s.env.Metrics.Message(true, len(m.p))
	}
}

// run runs l's read loop (either leg's: the direction is l.upstream())
// until the leg parks or ends. When it ends, run classifies why, lets end
// finish the leg's Close, closes the connection and finishes its part.
func (s *Session) run(l *leg) {
	if t := s.env.test; t != nil && t.running != nil {
		t.running(l)
	}
	if l.parks {
		s.env.sweep.add(l)
	}
	err := s.guard(func() error { return s.readLoop(l) })
	if err == errParked {
		return // the leg is another goroutine's now: touch nothing
	}
	if l.parks {
		s.env.sweep.remove(l)
	}
	l.flushDeferred()
	l.readDone()
	s.legEnded(l, err)
	s.waitActed(l.actedBit())
	l.closeConn()
	s.partDone()
}

// readLoop reads l until it ends or parks (errParked): it answers pings,
// records pongs and relays messages (handle). A leg read raw waits for its
// socket in pump, which handles the messages each read completes inside
// the read itself; the frame reader's own reads (next) take over from it
// for what pump leaves: a frame read in part or longer than the buffer.
func (s *Session) readLoop(l *leg) error {
	l.acquireReader()
	for {
		if l.grow {
			l.growReader()
		}
		if l.pumps() {
			if stop, err := s.pump(l); stop {
				return err
			} else if err == errIdle {
				if l.park() {
					return errParked
				}
			} else if err != nil {
				return err
			}
			continue
		}
		ev, op, p, frag, ce, err := l.fr.next()
		if err != nil {
			if err == errIdle {
				if l.park() {
					return errParked
				}
				continue
			}
			return err
		}
		if s.handle(l, ev, op, p, frag, ce) {
			return nil
		}
	}
}

// handle does what the read loop of l does with one event of its frame
// reader; stop: the loop ends (a Close came).
func (s *Session) handle(l *leg, ev event, op ws.OpCode, p []byte, frag bool, ce *CloseError) (stop bool) {
	switch ev {
	case evPing:
		l.queuePong(p)
	case evPong:
		s.pong(l, p, false)
	case evClose:
		if !l.closing.Load() { // else the reply to our Close
			s.peerClosed(l, ce)
		}
		return true
	case evData:
		// Nothing is relayed once the session ends, nor from an
		// upstream connection that is no longer current.
		if s.closed.Load() || (l.upstream() && s.curGen.Load() != l.gen) || s.staleClient(l) {
			return false
		}
		if l.hb.Mode.AnswersJSON() && op == ws.OpText && !frag {
			switch s.env.Messages.Classify(p) {
			case heartbeat.KindPing:
				l.queueJSONPong(p)
				return false
			case heartbeat.KindPong:
				s.pong(l, nil, true)
				return false
			}
		}
		l.quiet = false
		if !l.upstream() {
			if s.rs != nil {
				s.fromClient(l, op, p, l.fr.mk, l.moreInput())
			} else {
				s.toUpstream(l, op, p, l.fr.mk, l.moreInput())
			}
		} else if !s.toClient(l, op, p) {
			return false
		}
		l.fr.release()
	}
	return false
}

// toClient relays one message from the upstream connection u to the
// client. It reports false for a message not written: dropped (TETHER_
// REPLAY_DROP_REPLIES) or the client leg failing (its loop ends the
// session).
func (s *Session) toClient(u *leg, op ws.OpCode, p []byte) bool {
	if s.sr.st != nil {
		return s.toClientState(u, op, p)
	}
	if s.replay.dropReply() {
		return false
	}
	return s.writeToClient(u, op, p)
}

// writeToClient writes one message of the upstream connection u to the
// client.
func (s *Session) writeToClient(u *leg, op ws.OpCode, p []byte) bool {
	more := u.moreInput()
	if s.rs != nil {
		return s.toClientHeld(u, op, p, more)
	}
	if err := s.client.writeData(op, p, 0, more); err != nil {
		return false
	}
	if more {
		u.deferFlush(s.client)
	}
	s.env.Metrics.Message(false, len(p))
	return true
}

// peerClosed handles a Close from l's peer: the session ends, the other
// leg getting the same Close, unless an upstream closed with a code of
// TETHER_RECONNECT_ON_CODES, which is answered and reconnected.
func (s *Session) peerClosed(l *leg, ce *CloseError) {
	o := Outcome{Cause: CauseClosed, Leg: l.name()}
	if s.staleClient(l) {
		return // a client leg replaced by a resume
	}
	if !l.upstream() {
		s.end(act{kind: actReply, ce: *ce}, act{kind: actSend, ce: *ce}, o)
		return
	}
	if s.cfg.Reconnect.OnCodes.Has(ce.code()) {
		l.writeClose(*ce, s.goodbye())
		o.Err = ce
		s.upstreamLost(l, o)
		return
	}
	s.end(act{kind: actSend, ce: *ce}, act{kind: actReply, ce: *ce}, o)
}

// legEnded handles the end of l's read loop with err (nil after a Close
// exchange: nothing left to do). A client leg's end ends the session; an
// upstream connection's end reconnects or ends it (README "Close codes").
// Reports about a session that is ending, or about an upstream connection
// that is no longer current, are ignored.
func (s *Session) legEnded(l *leg, err error) {
	if err == nil || s.closed.Load() || (l.upstream() && s.curGen.Load() != l.gen) {
		return
	}
	e := classify(l, err)
	o := Outcome{Cause: e.cause, Leg: l.name(), Err: e.err}
	if e.cause == CauseHeartbeatTimeout {
		s.env.Metrics.HeartbeatTimeout(l.name())
		s.log.Warn("heartbeat timeout", "session", s.id, "leg", l.name(), "timeout", l.hb.Timeout)
	}
	if !l.upstream() {
		if s.detach(l, e.cause, o.Why()) {
			return
		}
		s.end(e.own, act{kind: actSend, ce: CloseError{Code: CloseGoingAway, Reason: "client gone"}}, o)
		return
	}
	switch e.cause {
	case CauseWriteFailed, CauseHeartbeatTimeout:
		s.upstreamLost(l, o)
	case CauseProtocolError:
		s.end(act{kind: actSend, ce: CloseError{Code: CloseBadGateway, Reason: "upstream protocol error"}}, e.own, o)
	default:
		if s.cfg.Reconnect.OnCodes.Has(CloseAbnormal) {
			s.upstreamLost(l, o)
			return
		}
		s.end(act{kind: actSend, ce: CloseError{Code: CloseBadGateway, Reason: "upstream connection lost"}}, e.own, o)
	}
}
