package session

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/internal/ctxtime"
)

// upstreamLost starts the reconnect loop for the upstream leg u, unless u
// is stale or the session is ending. It is the single place where a
// reconnect begins; the generation check makes every other report of the
// same loss a no-op.
func (s *Session) upstreamLost(u *leg, why Outcome) {
	u.stopHeartbeat()
	u.closeConn()
	s.mu.Lock()
	if s.state == stateClosed || u.gen != s.gen {
		s.mu.Unlock()
		return
	}
	if s.opaqueLocked() {
		proto := s.sr.proto
		s.mu.Unlock()
		s.endOpaque(proto, why)
		return
	}
	if s.state == stateReconnecting {
		// Lost while the reconnect loop re-sends on it (or waits for
		// the answer to a replayed opening): that loop notices and
		// dials again.
		s.lostInFlush = true
		s.cond.Broadcast()
		s.mu.Unlock()
		return
	}
	s.state = stateReconnecting
	s.holding = false // the reconnect sends what waited
	s.lostAt = time.Now()
	s.up = nil
	s.cond.Broadcast()
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
	s.addPart()
	s.mu.Unlock()
	s.log.Info("upstream lost", "session", s.id, "upstream", s.upHost, "err", why.Why())
	go s.reconnectLoop()
}

// errStreamCut: an upstream loss left the client's MQTT stream where no
// replay can continue it (README "State replay on upstream reconnect").
var errStreamCut = errors.New("the lost upstream connection cut an MQTT packet the client had begun, or the client's stream stopped parsing")

// backoff returns the delay before attempt n (n = 0, 1, …): a random value in
// [0, d] with d = min(MaxDelay, InitialDelay × 2ⁿ) (README "Upstream loss,
// reconnect and the delivery guarantee").
func (s *Session) backoff(n int) time.Duration {
	return Backoff(s.cfg.Reconnect.InitialDelay, s.cfg.Reconnect.MaxDelay, n, s.env.jitter)
}

// Backoff is full-jitter exponential backoff: a random delay in [0, d], d =
// min(max, initial × 2ⁿ). jitter returns a random number in [0, k).
func Backoff(initial, max time.Duration, n int, jitter func(k int64) int64) time.Duration {
	d := max
	if n < 62 && initial <= max>>uint(n) {
		d = initial << uint(n)
	}
	k := int64(d) + 1 // [0, d] inclusive
	if k < 0 {
		k = int64(d) // d is the largest Duration: d+1 does not fit
	}
	return time.Duration(jitter(k))
}

// reconnectLoop is the session's only reconnect loop (README "Upstream loss,
// reconnect and the delivery guarantee"). It owns the upstream leg until it is
// connected again or the session ends.
func (s *Session) reconnectLoop() {
	defer s.partDone()
	_ = s.guard(func() error { s.reconnect(); return nil })
}

func (s *Session) reconnect() {
	ctx := s.ctx
	rc := s.cfg.Reconnect
	for attempt := 0; ; attempt++ {
		if rc.MaxAttempts > 0 && attempt >= rc.MaxAttempts {
			s.giveUp(CauseAttemptsExhausted, attempt)
			return
		}
		s.notify(statusReconnecting(attempt + 1))
		delay := s.backoff(attempt)
		if !ctxtime.Sleep(ctx, delay) {
			return
		}
		if l := s.env.Limiter; l != nil {
			if err := l.Wait(ctx); err != nil {
				return
			}
		}
		s.log.Info("upstream reconnect attempt", "session", s.id, "attempt", attempt+1, "delay", delay)
		up, err := s.dial(ctx)
		if ctx.Err() != nil {
			if err == nil {
				_ = up.Conn.Close()
			}
			return
		}
		if err != nil {
			s.env.Metrics.Reconnect(false)
			if errors.Is(err, ErrUpstreamRejected) {
				s.log.Error("upstream reconnect rejected", "session", s.id, "attempt", attempt+1, "err", err)
				s.giveUp(CauseRejected, attempt+1)
				return
			}
			s.log.Info("upstream reconnect failed", "session", s.id, "attempt", attempt+1, "err", err)
			continue
		}
		if up.Protocol != s.protocol {
			_ = up.Conn.Close()
			s.env.Metrics.Reconnect(false)
			s.log.Error("upstream reconnect chose another subprotocol", "session", s.id, "attempt", attempt+1, "protocol", up.Protocol, "want", s.protocol)
			s.giveUp(CauseSubprotocolChanged, attempt+1)
			return
		}
		s.env.Metrics.Reconnect(true)
		switch s.resume(up) {
		case resumeOK:
			s.mu.Lock()
			down := time.Since(s.lostAt)
			s.mu.Unlock()
			s.log.Info("upstream reconnected", "session", s.id, "attempt", attempt+1, "upstream", up.Host, "downtime", down, "replayed", s.sr.replayed)
			return
		case resumeClosed:
			return
		case resumeLost:
			attempt = -1 // the upgrade completed: the counter restarts
		case resumeNoAnswer:
			s.log.Info("upstream reconnect failed", "session", s.id, "attempt", attempt+1, "err", "no answer to the replayed opening within TETHER_DIAL_TIMEOUT")
		case resumeRefused:
			s.log.Error("upstream reconnect rejected", "session", s.id, "attempt", attempt+1, "err", "the upstream refused the replayed opening")
			s.giveUp(CauseRejected, attempt+1)
			return
		}
	}
}

func (s *Session) giveUp(c Cause, attempts int) {
	o := Outcome{Cause: c}
	s.log.Error("upstream gave up", "session", s.id, "attempt", attempts, "err", o.Why())
	s.notify(statusUnavailable)
	s.end(act{kind: actSend, ce: CloseError{Code: CloseBadGateway, Reason: "upstream unavailable"}},
		act{kind: actDrop}, o)
}

type resumeResult uint8

const (
	resumeOK resumeResult = iota
	resumeClosed
	resumeLost
)

// resume installs a new upstream connection and sends, in order, the
// replayed opening, then every message of the delivery log: those not
// provably received and those buffered during the outage (README
// "Upstream loss, reconnect and the delivery guarantee"). The session
// stays "reconnecting" (client messages keep going to the log) until the
// log's re-send cursor reaches its end.
func (s *Session) resume(up Upstream) resumeResult {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		_ = up.Conn.Close()
		return resumeClosed
	}
	u := s.installLocked(up)
	s.lostInFlush = false
	s.upLog.restart()
	// The replay covers the opening messages received so far; one that
	// arrives later is in the log and sent from there.
	replay, covered := s.replay.start()
	plan := s.replayPlanLocked(u) // before u's read loop starts
	if s.opaqueLocked() {
		// The MQTT recognition stopped since the loss was handled: the
		// lost connection's last message, relayed while the loss was
		// being reported, ended inside a packet, or the client's
		// stream stopped parsing meanwhile. No replay continues the
		// client's stream.
		s.mu.Unlock()
		s.endOpaque(s.sr.proto, Outcome{Cause: CauseConnectionLost, Leg: LegUpstream, Err: errStreamCut})
		return resumeClosed
	}
	s.addPart()
	s.mu.Unlock()
	// Tell the client first: anything the new upstream sends comes after.
	s.notify(statusConnected)
	s.env.workers.run(job{l: u})
	u.startHeartbeat()

	for _, m := range replay {
		if u.writeLogged(m.op, m.p, m.seq, m.mask) != nil {
			return s.resumeFailed(u)
		}
	}
	if r := s.sendPlan(u, &plan); r != resumeOK {
		return r
	}
	resent := false // a retained message was written to u
	for {
		m, ok, r := s.nextResend(u)
		switch {
		case r == resumeLost:
			return s.resumeFailed(u)
		case r != resumeOK:
			return r
		case !ok:
			// Everything is written: connected again. Have the re-sent
			// messages acknowledged soon (ack.go).
			if resent {
				u.armAck()
			}
			return resumeOK
		}
		if m.seq >= covered && !plan.Skip(m.seq) { // else the replay above covered it
			if u.writeLogged(m.op, m.p, m.seq, m.mask) != nil {
				return s.resumeFailed(u)
			}
			s.env.Metrics.Message(true, len(m.p))
			if m.sent {
				// Counted per write: a re-send cut short by
				// another loss re-sent these all the same.
				s.env.Metrics.Resent(1)
			}
		}
		if !s.retention() {
			s.dropWritten(m.seq)
		} else {
			resent = true
		}
	}
}

// nextResend takes the next held message to write on the new connection
// u. When every message is written (ok false, r resumeOK) the session is
// connected again: from then on client messages go straight to u. r is
// resumeClosed when the session ended, resumeLost when u was lost.
func (s *Session) nextResend(u *leg) (m logMsg, ok bool, r resumeResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == stateClosed:
		return m, false, resumeClosed
	case s.lostInFlush || s.gen != u.gen:
		return m, false, resumeLost
	}
	if m, ok = s.upLog.take(); !ok {
		s.state = stateConnected
		s.cond.Broadcast()
	}
	return m, ok, resumeOK
}

// dropWritten drops the message seq once written, for an upstream without
// heartbeats (nothing acknowledges: writing is delivering).
func (s *Session) dropWritten(seq uint64) {
	s.mu.Lock()
	if s.state != stateClosed && s.upLog.dropWritten(seq) {
		s.env.Metrics.Buffered(-1)
	}
	s.mu.Unlock()
}

func (s *Session) resumeFailed(u *leg) resumeResult {
	u.stopHeartbeat()
	u.closeConn()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateClosed {
		return resumeClosed
	}
	s.up = nil
	s.lostInFlush = false
	s.upLog.rewind()
	return resumeLost
}

// Upstream status messages (README "Upstream loss, reconnect and the delivery
// guarantee").
var (
	statusConnected   = []byte(`{"type":"upstream","status":"connected"}`)
	statusUnavailable = []byte(`{"type":"upstream","status":"unavailable"}`)
)

func statusReconnecting(attempt int) []byte {
	b := append([]byte(nil), `{"type":"upstream","status":"reconnecting","attempt":`...)
	b = strconv.AppendInt(b, int64(attempt), 10)
	return append(b, '}')
}

// notify sends a status message to the client when TETHER_NOTIFY_CLIENT is
// on, except in a stream that takes no message of tether's (stateReplay.strict:
// MQTT, STOMP, Engine.IO, SignalR).
func (s *Session) notify(msg []byte) {
	if !s.cfg.NotifyClient || s.sr.strict.Load() || s.closed.Load() {
		return
	}
	if s.rs != nil {
		s.toClientHeld(nil, ws.OpText, msg, false)
		return
	}
	_ = s.client.writeData(ws.OpText, msg, 0, false)
}
