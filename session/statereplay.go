package session

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/replay"
)

// stateReplay is README "State replay on upstream reconnect" for one
// session: the protocol resolved for it and, for a recognised protocol,
// the replay.State that keeps the client messages building the
// upstream's state. A session whose protocol is none, opaque or auto left
// at none has no State and pays a nil check per message.
type stateReplay struct {
	// proto is the resolved protocol: fixed by New and SetRequestQuery
	// (before Start), then under Session.mu (the client's first message
	// may turn none into opaque: a SignalR handshake).
	proto replay.Protocol
	// strict: no message tether adds may enter the session's stream: MQTT
	// or STOMP (by its subprotocol or TETHER_REPLAY_PROTOCOL, set by New),
	// or an opaque protocol (Engine.IO by its query, before Start; SignalR
	// by its handshake, the client's first message). Its legs send RFC
	// pings in place of JSON pings (README "Heartbeats"); atomic, since
	// the heartbeat timers read it.
	strict atomic.Bool
	// st is nil unless proto is recognised; fixed by New.
	st *replay.State
	// mu serialises st: FromClient (taken under Session.mu, in admit),
	// FromUpstream (the current upstream connection's read loop) and
	// Replay (the reconnect loop). Order: Session.mu, then mu.
	mu sync.Mutex

	// The wait for the upstream's answer to a replayed opening, under
	// Session.mu: awaitGen is the connection waited on (0: none), event
	// what its read loop reported, timedOut set by the wait's timer.
	awaitGen uint64
	event    replay.Event
	timedOut bool

	// replayed is the number of state messages the last plan sent; owned
	// by the reconnect loop.
	replayed int
}

// ReplayMetrics is implemented by a Metrics that counts replayed state
// messages (tether_replayed_messages_total).
type ReplayMetrics interface {
	Replayed(n int)
}

// initReplay resolves the session's protocol from the configuration and
// the subprotocol the upstream chose. A recognised protocol replaces
// TETHER_REPLAY_FIRST and TETHER_REPLAY_DROP_REPLIES, which apply to none
// only. Call it before the first leg is made: an MQTT or STOMP session's
// legs send no JSON pings (whatever TETHER_REPLAY_PROTOCOL says, the
// subprotocol tells what the stream is).
func (s *Session) initReplay(subprotocol string) {
	s.sr.proto = replay.Resolve(s.cfg.Replay.Protocol, subprotocol, "")
	s.sr.strict.Store(s.sr.proto.Strict() || replay.Resolve(replay.Auto, subprotocol, "").Strict())
	s.sr.st = replay.New(s.sr.proto, &s.cfg.Replay)
	if s.sr.st != nil {
		s.replay.keep, s.replay.dropN = 0, 0
	}
}

// SetRequestQuery tells the session its client request's raw query, for
// TETHER_REPLAY_PROTOCOL=auto (Engine.IO's EIO parameter: opaque). Call it
// before Start.
func (s *Session) SetRequestQuery(rawQuery string) {
	if s.sr.proto == replay.None && replay.Resolve(s.cfg.Replay.Protocol, s.protocol, rawQuery) == replay.Opaque {
		s.sr.proto = replay.Opaque
	}
	if replay.Resolve(replay.Auto, s.protocol, rawQuery) == replay.Opaque {
		// Engine.IO, whatever TETHER_REPLAY_PROTOCOL says: it reads a
		// JSON ping as a bad packet and closes.
		s.sr.strict.Store(true)
	}
}

// replayFromClientLocked shows client message seq to the State (the
// caller holds mu, and calls it only when st is set or seq is 0). Under
// auto, a session left at none whose first message is a SignalR
// handshake becomes opaque. cut reports that the client's stream is
// inside a packet after this message (mqtt.js cuts an MQTT packet into
// several messages, @stomp/stompjs with splitLargeFrames a long STOMP
// frame): the delivery log acknowledges such a message only
// with the one that ends its packet, so that a re-send on a new
// connection starts at a packet.
func (s *Session) replayFromClientLocked(op ws.OpCode, p []byte, seq uint64) (cut bool, err error) {
	rs := &s.sr
	if rs.st == nil {
		if rs.proto == replay.None && s.cfg.Replay.Protocol == replay.Auto && replay.SignalRHandshake(p) {
			rs.proto = replay.Opaque
		}
		if seq == 0 && replay.SignalRHandshake(p) {
			// SignalR's framing has no room for a JSON ping either.
			rs.strict.Store(true)
		}
		return false, nil
	}
	rs.mu.Lock()
	err = rs.st.FromClient(replay.Opcode(op), p, seq)
	cut = !rs.st.AtBoundary()
	rs.mu.Unlock()
	return cut, err
}

// opaqueLocked reports whether an upstream loss must close the client
// with 1012 instead of reconnecting: the protocol is opaque, or the MQTT
// recognition stopped (the state cannot be rebuilt), or the MQTT upstream
// stream stopped inside a packet the client has the start of (no new
// connection continues it), or the client messages held for re-sending
// begin inside a packet (deliveryLog.ack let go of its opening).
func (s *Session) opaqueLocked() bool {
	if s.sr.proto == replay.Opaque || s.upLog.midPacket {
		return true
	}
	if s.sr.st == nil {
		return false
	}
	s.sr.mu.Lock()
	defer s.sr.mu.Unlock()
	return s.sr.st.Broken() || s.sr.st.UpstreamCut()
}

// endOpaque ends a session whose upstream was lost and whose state no
// replay can rebuild: the client gets Close 1012, and its library's own
// reconnect (and recovery) takes over.
func (s *Session) endOpaque(proto replay.Protocol, why Outcome) {
	s.log.Info("upstream lost; its session cannot be replayed: client closed with 1012", "session", s.id,
		"upstream", s.upHost, "protocol", proto.String(), "err", why.Why())
	s.end(act{kind: actSend, ce: CloseError{Code: CloseServiceRestart, Reason: "upstream restarted"}},
		act{kind: actDrop}, why)
}

// stateFull closes the client with 1013: its kept state passed
// TETHER_REPLAY_MAX_BYTES.
func (s *Session) stateFull() {
	s.log.Warn("replay state over TETHER_REPLAY_MAX_BYTES: client closed with 1013", "session", s.id,
		"leg", LegClient, "protocol", s.sr.proto.String(), "max_bytes", s.cfg.Replay.MaxBytes)
	s.end(act{kind: actSend, ce: CloseError{Code: CloseTryAgainLater, Reason: "tether replay state full"}},
		act{kind: actSend, ce: CloseError{Code: CloseGoingAway, Reason: "client replay state full"}}, Outcome{Cause: CauseReplayStateFull})
}

// toClientState relays upstream message p of connection u through the
// State: replies to a replay are dropped, and the opening's answer is
// reported to the reconnect loop waiting for it. It reports whether the
// message was written.
func (s *Session) toClientState(u *leg, op ws.OpCode, p []byte) bool {
	rs := &s.sr
	rs.mu.Lock()
	if s.curGen.Load() != u.gen { // replaced meanwhile: its replies are not the State's business
		rs.mu.Unlock()
		return false
	}
	v := rs.st.FromUpstream(replay.Opcode(op), p)
	ok := false
	if v.Drop {
		rs.mu.Unlock()
	} else if len(v.Msg) > 0 && len(p) > 0 && &v.Msg[0] != &p[0] {
		// A rewritten message in the State's buffer, valid until its
		// next call: write it before another call can come.
		ok = s.writeToClient(u, op, v.Msg)
		rs.mu.Unlock()
	} else {
		rs.mu.Unlock()
		ok = s.writeToClient(u, op, v.Msg)
	}
	if v.Event != replay.EventNone {
		// After the write: a refusal reaches the client before its Close.
		s.replayEvent(u.gen, v.Event)
	}
	return ok
}

// replayEvent tells the reconnect loop waiting on connection gen what the
// upstream answered to the replayed opening.
func (s *Session) replayEvent(gen uint64, ev replay.Event) {
	s.mu.Lock()
	if s.sr.awaitGen == gen && s.sr.event == replay.EventNone {
		s.sr.event = ev
		s.cond.Broadcast()
	}
	s.mu.Unlock()
}

// replayPlanLocked is the State's plan for the new connection u, before
// its read loop starts (the caller holds mu). pendingFrom is the first
// message the delivery log holds (re-sent after the plan), or the next
// sequence number.
func (s *Session) replayPlanLocked(u *leg) replay.Plan {
	rs := &s.sr
	if rs.st == nil {
		return replay.Plan{}
	}
	pendingFrom := s.upLog.seq
	if len(s.upLog.msgs) > 0 {
		pendingFrom = s.upLog.msgs[0].seq
	}
	rs.mu.Lock()
	pl := rs.st.Replay(pendingFrom)
	rs.mu.Unlock()
	rs.awaitGen, rs.event, rs.timedOut = u.gen, replay.EventNone, false
	return pl
}

// admitStateFull: the client's message would pass TETHER_REPLAY_MAX_BYTES
// (1013).
const admitStateFull admitVerdict = 16

// Results of sendPlan besides resume's.
const (
	resumeNoAnswer resumeResult = iota + 16 // the opening got no answer in time: a failed attempt
	resumeRefused                           // the upstream refused the opening: end as rejected
)

// sendPlan writes the plan on the new connection u: the opening, then,
// once the upstream accepted it (bounded by TETHER_DIAL_TIMEOUT), the rest
// (README "State replay on upstream reconnect").
func (s *Session) sendPlan(u *leg, pl *replay.Plan) resumeResult {
	s.sr.replayed = 0
	defer s.countReplayed()
	if pl.Len() == 0 {
		s.clearAwait()
		return resumeOK
	}
	for _, m := range pl.Opening {
		if u.writeData(ws.OpCode(m.Op), m.P, m.Seq, false) != nil {
			s.clearAwait()
			return s.resumeFailed(u)
		}
		s.sr.replayed++
	}
	if len(pl.Opening) > 0 {
		if r := s.awaitAnswer(u); r != resumeOK {
			if r == resumeLost || r == resumeNoAnswer {
				if s.resumeFailed(u) == resumeClosed {
					return resumeClosed
				}
			}
			return r
		}
	} else {
		s.clearAwait()
	}
	for _, m := range pl.Rest {
		if u.writeData(ws.OpCode(m.Op), m.P, m.Seq, false) != nil {
			return s.resumeFailed(u)
		}
		s.sr.replayed++
	}
	return resumeOK
}

// clearAwait ends the wait for an answer.
func (s *Session) clearAwait() {
	s.mu.Lock()
	s.sr.awaitGen = 0
	s.mu.Unlock()
}

// awaitAnswer waits until the upstream answers the replayed opening on
// connection u, for at most the dial timeout.
func (s *Session) awaitAnswer(u *leg) resumeResult {
	t := time.AfterFunc(s.env.dialTimeout(), func() {
		s.mu.Lock()
		if s.sr.awaitGen == u.gen {
			s.sr.timedOut = true
			s.cond.Broadcast()
		}
		s.mu.Unlock()
	})
	defer t.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() { s.sr.awaitGen = 0 }()
	for {
		switch {
		case s.state == stateClosed:
			return resumeClosed
		case s.lostInFlush || s.gen != u.gen:
			return resumeLost
		case s.sr.event == replay.EventAccepted:
			return resumeOK
		case s.sr.event == replay.EventRejected:
			return resumeRefused
		case s.sr.timedOut:
			return resumeNoAnswer
		}
		s.cond.Wait()
	}
}

// countReplayed counts the state messages the last plan wrote (also
// those of an attempt that failed after writing them).
func (s *Session) countReplayed() {
	if m, ok := s.env.Metrics.(ReplayMetrics); ok && s.sr.replayed > 0 {
		m.Replayed(s.sr.replayed)
	}
}

func (e *Env) dialTimeout() time.Duration {
	if e.DialTimeout > 0 {
		return e.DialTimeout
	}
	return 10 * time.Second
}
