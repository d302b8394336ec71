package session

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/gobwas/ws"
)

// toUpstream relays one client message (SPEC §4): sent at once while
// connected (and retained until acknowledged when the upstream heartbeat is
// on), buffered while reconnecting. p is the client reader's buffer and is
// only valid during the call.
func (s *Session) toUpstream(op ws.OpCode, p []byte, more bool) {
	s.mu.Lock()
	seq := s.nextSeq
	s.nextSeq++
	if n := s.cfg.ReplayFirst; n > 0 && seq < uint64(n) {
		s.replay = append(s.replay, qmsg{seq: seq, op: op, p: clone(p)})
	}
	retained := false
	var waitStart time.Time
	for {
		switch s.state {
		case stateClosed:
			s.mu.Unlock()
			return
		case stateReconnecting:
			if s.overflowLocked(len(p)) {
				s.mu.Unlock()
				s.overflow()
				return
			}
			s.pushLocked(seq, op, p, false)
			s.mu.Unlock()
			return
		}
		if !s.retention() {
			break
		}
		if !s.windowFullLocked(len(p)) {
			s.pushLocked(seq, op, p, true)
			retained = true
			s.unsent = len(s.q)
			break
		}
		// Backpressure: stop reading the client until acknowledgements
		// free the window (SPEC §4), asking for one at once.
		if waitStart.IsZero() {
			waitStart = time.Now()
		} else if !s.stallWarned && time.Since(waitStart) > s.cfg.UpstreamHeartbeat.Timeout {
			// Alive (its data keeps the leg open) but not answering
			// pings: nothing can be acknowledged. Usually a JSON-mode
			// upstream that does not speak the JSON pong.
			s.stallWarned = true
			s.log.Warn("upstream is not answering heartbeats; client reads paused", "session", s.id, "leg", LegUpstream, "held", len(s.q))
		}
		s.earlyPingLocked()
		s.waitLocked(len(p))
	}
	up, gen := s.up, s.gen
	early := s.retention() && !s.earlyPinged && s.halfFullLocked()
	if early {
		s.earlyPinged = true
	}
	s.mu.Unlock()
	if early {
		up.earlyPing()
	}

	// Only a retained message may wait in the upstream leg's write buffer:
	// if that connection fails before the write, the queue re-sends it.
	more = more && retained
	for {
		if err := up.writeData(op, p, seq, more); err == nil {
			s.env.Metrics.Message(true, len(p))
			if more {
				s.client.deferFlush(up)
			}
			return
		}
		if retained {
			return // held in the queue: the reconnect re-sends it
		}
		// Not retained (upstream heartbeat off): this message was not
		// delivered, so hold it for the next connection.
		s.mu.Lock()
		switch {
		case s.state == stateClosed:
			s.mu.Unlock()
			return
		case s.state == stateConnected && s.gen != gen:
			up, gen = s.up, s.gen // a new connection is already up
			s.mu.Unlock()
			continue
		}
		s.pushLocked(seq, op, p, false)
		s.mu.Unlock()
		return
	}
}

func clone(p []byte) []byte {
	c := make([]byte, len(p))
	copy(c, p)
	return c
}

// pushLocked appends a copy of a client message to the queue.
func (s *Session) pushLocked(seq uint64, op ws.OpCode, p []byte, sent bool) {
	b, box := getBuf(p)
	s.q = append(s.q, qmsg{seq: seq, op: op, p: b, box: box, sent: sent})
	s.qBytes += int64(len(p))
	s.env.total.Add(int64(len(p)))
	s.env.Metrics.Buffered(1)
}

// windowFullLocked reports whether one more message of n bytes would pass
// a limit while connected. An empty window always takes a message.
func (s *Session) windowFullLocked(n int) bool {
	if len(s.q) == 0 {
		return false
	}
	b := &s.cfg.Buffer
	return len(s.q) >= b.MaxMessages || s.qBytes+int64(n) > b.MaxBytes ||
		s.env.total.Load()+int64(n) > b.TotalMaxBytes
}

// overflowLocked reports whether buffering n more bytes while reconnecting
// passes a limit.
func (s *Session) overflowLocked(n int) bool {
	b := &s.cfg.Buffer
	return len(s.q) >= b.MaxMessages || s.qBytes+int64(n) > b.MaxBytes ||
		s.env.total.Load()+int64(n) > b.TotalMaxBytes
}

func (s *Session) halfFullLocked() bool {
	b := &s.cfg.Buffer
	return 2*len(s.q) > b.MaxMessages || 2*s.qBytes > b.MaxBytes
}

// earlyPingLocked asks the current upstream leg for a ping now, once per
// acknowledgement. It releases mu while signalling (a ping may be written
// at once, and writes never happen under mu), so callers re-check the
// state after it.
func (s *Session) earlyPingLocked() {
	if s.earlyPinged || s.up == nil || s.state != stateConnected {
		return
	}
	s.earlyPinged = true
	up := s.up
	// signal may write; never under mu.
	s.mu.Unlock()
	up.earlyPing()
	s.mu.Lock()
}

// waitLocked waits for the window to change for a message of n bytes.
// Acknowledgements from this session wake it; a timer covers the rest.
func (s *Session) waitLocked(n int) {
	// Only the process-wide limit needs polling (other sessions free it);
	// otherwise wake once per upstream timeout, for the stall warning.
	d := s.cfg.UpstreamHeartbeat.Timeout
	if s.env.total.Load()+int64(n) > s.cfg.Buffer.TotalMaxBytes || d <= 0 {
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

// overflow closes the client with 1013 (SPEC §4).
func (s *Session) overflow() {
	s.env.Metrics.Overflow()
	s.log.Warn("buffer overflow", "session", s.id, "leg", LegClient)
	s.end(act{kind: actSend, ce: CloseError{Code: CloseTryAgainLater, Reason: "tether buffer full"}},
		act{kind: actSend, ce: CloseError{Code: CloseGoingAway, Reason: "client buffer overflow"}}, ErrBufferOverflow.Error())
}

// dropFrontLocked removes the first n messages, keeping the queue's
// backing array (moving the rest down) so that a steady stream of
// acknowledged messages allocates nothing.
func (s *Session) dropFrontLocked(n int) {
	k := copy(s.q, s.q[n:])
	clear(s.q[k:])
	s.q = s.q[:k]
}

// ack drops the retained messages that the upstream of generation gen has
// provably received: those with seq < ackSeq.
func (s *Session) ack(gen, ackSeq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.state == stateClosed {
		return
	}
	n := 0
	var bytes int64
	for n < s.unsent && s.q[n].seq < ackSeq {
		bytes += int64(len(s.q[n].p))
		n++
	}
	s.earlyPinged = false
	if n == 0 {
		return
	}
	for i := range s.q[:n] {
		putBuf(s.q[i].box, s.q[i].p)
	}
	s.dropFrontLocked(n)
	s.unsent -= n
	s.qBytes -= bytes
	s.env.total.Add(-bytes)
	s.env.Metrics.Buffered(-n)
	s.cond.Broadcast()
}

// upstreamLost starts the reconnect loop for the upstream leg u, unless u
// is stale or the session is ending. It is the single place where a
// reconnect begins; the generation check makes every other report of the
// same loss a no-op.
func (s *Session) upstreamLost(u *leg, why string) {
	u.stopHeartbeat()
	u.closeConn()
	s.mu.Lock()
	if s.state == stateClosed || u.gen != s.gen {
		s.mu.Unlock()
		return
	}
	if s.state == stateReconnecting {
		// Lost while the reconnect loop re-sends on it: that loop
		// notices and dials again.
		s.lostInFlush = true
		s.mu.Unlock()
		return
	}
	s.state = stateReconnecting
	s.lostAt = time.Now()
	s.up = nil
	s.cond.Broadcast()
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
	s.parts.Add(1)
	s.mu.Unlock()
	s.log.Info("upstream lost", "session", s.id, "upstream", s.upHost, "err", why)
	go s.reconnectLoop()
}

// backoff returns the delay before attempt n (n = 0, 1, …): a random value
// in [0, d] with d = min(MaxDelay, InitialDelay × 2ⁿ) (SPEC §4).
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

// reconnectLoop is the session's only reconnect loop (SPEC §4). It owns
// the upstream leg until it is connected again or the session ends.
func (s *Session) reconnectLoop() {
	defer s.partDone()
	_ = s.guard(func() error { s.reconnect(); return nil })
}

func (s *Session) reconnect() {
	ctx := s.ctx
	rc := s.cfg.Reconnect
	for attempt := 0; ; attempt++ {
		if rc.MaxAttempts > 0 && attempt >= rc.MaxAttempts {
			s.giveUp(ErrAttemptsExhausted.Error(), attempt)
			return
		}
		s.notify(statusReconnecting(attempt + 1))
		delay := s.backoff(attempt)
		if !sleep(ctx, delay) {
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
				s.giveUp("upstream rejected the reconnect", attempt+1)
				return
			}
			s.log.Info("upstream reconnect failed", "session", s.id, "attempt", attempt+1, "err", err)
			continue
		}
		if up.Protocol != s.protocol {
			_ = up.Conn.Close()
			s.env.Metrics.Reconnect(false)
			s.log.Error("upstream reconnect chose another subprotocol", "session", s.id, "attempt", attempt+1, "protocol", up.Protocol, "want", s.protocol)
			s.giveUp("upstream subprotocol changed", attempt+1)
			return
		}
		s.env.Metrics.Reconnect(true)
		switch s.resume(up) {
		case resumeOK:
			s.mu.Lock()
			down := time.Since(s.lostAt)
			s.mu.Unlock()
			s.log.Info("upstream reconnected", "session", s.id, "attempt", attempt+1, "upstream", up.Host, "downtime", down)
			return
		case resumeClosed:
			return
		case resumeLost:
			attempt = -1 // the upgrade completed: the counter restarts
		}
	}
}

func (s *Session) giveUp(why string, attempts int) {
	s.log.Error("upstream gave up", "session", s.id, "attempt", attempts, "err", why)
	s.notify(statusUnavailable)
	s.end(act{kind: actSend, ce: CloseError{Code: CloseBadGateway, Reason: "upstream unavailable"}},
		act{kind: actDrop}, why)
}

type resumeResult uint8

const (
	resumeOK resumeResult = iota
	resumeClosed
	resumeLost
)

// resume installs a new upstream connection and sends, in order, the
// replayed opening, every message not provably received, then the buffer
// (SPEC §4). The session stays "reconnecting" (client messages keep going
// to the queue) until the queue is drained.
func (s *Session) resume(up Upstream) resumeResult {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		_ = up.Conn.Close()
		return resumeClosed
	}
	u := s.installLocked(up)
	s.lostInFlush = false
	s.unsent = 0
	s.earlyPinged = false
	s.dropReplies.Store(int64(s.cfg.ReplayDropReplies))
	replay := s.replay
	// The replay covers the opening messages received so far; one that
	// arrives later is in the queue and sent from there.
	n := uint64(len(replay))
	s.parts.Add(1)
	s.mu.Unlock()
	// Tell the client first: anything the new upstream sends comes after.
	s.notify(statusConnected)
	go u.resume()
	u.startHeartbeat()

	for _, m := range replay {
		if u.writeData(m.op, m.p, m.seq, false) != nil {
			return s.resumeFailed(u)
		}
	}
	for {
		s.mu.Lock()
		if s.state == stateClosed {
			s.mu.Unlock()
			return resumeClosed
		}
		if s.lostInFlush || s.gen != u.gen {
			s.mu.Unlock()
			return s.resumeFailed(u)
		}
		if s.unsent == len(s.q) {
			s.state = stateConnected
			s.cond.Broadcast()
			s.mu.Unlock()
			return resumeOK
		}
		m := s.q[s.unsent] // a copy: the queue may move while we write
		s.q[s.unsent].sent = true
		s.unsent++
		wasSent := m.sent
		s.mu.Unlock()
		if m.seq >= n { // else the replay above covered it
			if u.writeData(m.op, m.p, m.seq, false) != nil {
				return s.resumeFailed(u)
			}
			s.env.Metrics.Message(true, len(m.p))
			if wasSent {
				// Counted per write: a re-send cut short by
				// another loss re-sent these all the same.
				s.env.Metrics.Resent(1)
			}
		}
		if !s.retention() {
			s.mu.Lock()
			if s.state != stateClosed && len(s.q) > 0 && s.q[0].seq == m.seq {
				putBuf(m.box, m.p)
				s.dropFrontLocked(1)
				s.unsent--
				s.qBytes -= int64(len(m.p))
				s.env.total.Add(-int64(len(m.p)))
				s.env.Metrics.Buffered(-1)
			}
			s.mu.Unlock()
		}
	}
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
	s.unsent = 0
	return resumeLost
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Upstream status messages (SPEC §4).
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
// on.
func (s *Session) notify(msg []byte) {
	if !s.cfg.NotifyClient || s.closed.Load() {
		return
	}
	_ = s.client.writeData(ws.OpText, msg, 0, false)
}
