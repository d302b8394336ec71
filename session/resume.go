package session

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/jsonscan"
	"github.com/tether-proxy/tether/internal/resume"
)

// ResumeMetrics is what resumable sessions count (README "Client session
// resume"). Env.Metrics implements it or not: a Metrics without it counts
// nothing of resume.
type ResumeMetrics interface {
	Detached(delta int)                  // sessions detached now
	ClientResume(resumed bool)           // a resume, resumed or refused
	ResumeResent(toUpstream bool, n int) // messages sent again on a resume
}

// Errors of Claim: why a resume is refused (README "Client session
// resume"). The handshake goes on as a new session.
var (
	ErrResumeEnded = errors.New("the session has ended")
	ErrResumeBusy  = errors.New("another resume of the session is under way")
	ErrResumeAck   = errors.New("tether_ack is out of range")
	errNotResumed  = errors.New("the session is not resumable")
)

// ackEvery and ackDelay pace tether's tether.ack messages: one once this
// many client messages are unacknowledged, or this long after the first
// unacknowledged one. An idle session sends none. Each is a write of its
// own on the client leg: at 64 they cost a busy resumable session about
// 10 % of its messages per CPU second (README "Client session resume").
const (
	ackEvery = 256
	ackDelay = 100 * time.Millisecond
)

// resumeState is a resumable session's part of README "Client session
// resume", behind Session.rs, which is nil for a session that did not ask
// (so such a session pays one pointer). The client leg becomes replaceable:
// cur is the attached one, and events from any other client leg are
// ignored.
type resumeState struct {
	// fwd is held by a client read loop from counting a client message
	// until it has gone to the upstream, so that a client leg taking
	// over cannot overtake the one it replaces.
	fwd sync.Mutex
	// send serialises data messages to the client: numbering, logging and
	// writing happen in one order, and a resume's re-send comes before
	// anything newer.
	send sync.Mutex
	// ackMu orders tether.ack writes, and guards ackBuf.
	ackMu  sync.Mutex
	ackBuf [48]byte

	// cur is the attached client leg, nil while detached; last is the
	// latest client leg, attached or not (end closes it). Written under
	// Session.mu, read lock-free by the read loops.
	cur, last atomic.Pointer[leg]

	// Under Session.mu.
	log        deliveryLog // upstream messages until the client's ack covers them
	written    uint64      // messages written to a client leg (the highest seq + 1)
	recv       uint64      // data messages received from the client
	acked      uint64      // recv as tether last reported it
	ackArmed   bool        // ackT is set
	claimed    bool        // a resume is completing its handshake
	detached   bool
	detachedAt time.Time
	window     *time.Timer // the resume window while detached
	ackT       *time.Timer // the delayed tether.ack

	// Fixed by EnableResume: the Origin of the first handshake, which a
	// resume must present again.
	origin string
	// key is the SHA-256 of the current token, for the owner of the
	// token table (proxy), under its lock.
	key resume.Key
}

// EnableResume makes s resumable (README "Client session resume") and
// sends the client its tether.session message with token, which s does
// not keep. Call it before Start.
func (s *Session) EnableResume(token string, key resume.Key, origin string) {
	rc := &s.cfg.Resume
	rs := &resumeState{log: newDeliveryLog(rc.MaxMessages, rc.MaxBytes, &s.env.total, s.cfg.Buffer.TotalMaxBytes)}
	rs.origin, rs.key = origin, key
	rs.cur.Store(s.client)
	rs.last.Store(s.client)
	rs.ackT = time.AfterFunc(time.Hour, s.ackTimer)
	rs.ackT.Stop()
	s.rs = rs
	s.writeSessionMsg(s.client, token, false, 0)
}

// ResumeKey and SetResumeKey keep the key of the session's current token
// for the owner of the token table, which serialises them.
func (s *Session) ResumeKey() resume.Key     { return s.rs.key }
func (s *Session) SetResumeKey(k resume.Key) { s.rs.key = k }

// SameOrigin reports whether origin is the Origin the session began with.
func (s *Session) SameOrigin(origin string) bool { return s.rs.origin == origin }

// Protocol is the subprotocol of the session.
func (s *Session) Protocol() string { return s.protocol }

// Resumable reports whether the client asked for a resumable session.
func (s *Session) Resumable() bool { return s.rs != nil }

// clientLeg is the current client leg: the only one unless resumable.
func (s *Session) clientLeg() *leg {
	if s.rs != nil {
		return s.rs.last.Load()
	}
	return s.client
}

// staleClient reports whether l is a client leg that is not attached: its
// data and its end are ignored.
func (s *Session) staleClient(l *leg) bool {
	return s.rs != nil && !l.upstream() && s.rs.cur.Load() != l
}

func (s *Session) resumeMetrics() ResumeMetrics {
	m, _ := s.env.Metrics.(ResumeMetrics)
	return m
}

// writeSessionMsg writes the tether.session message on l.
func (s *Session) writeSessionMsg(l *leg, token string, resumed bool, ack uint64) {
	b := make([]byte, 0, 96)
	b = append(b, `{"type":"tether.session","token":"`...)
	b = append(b, token...) // URL-safe base64: nothing to escape
	b = append(b, `","resumed":`...)
	b = strconv.AppendBool(b, resumed)
	b = append(b, `,"ack":`...)
	b = strconv.AppendUint(b, ack, 10)
	b = append(b, '}')
	_ = l.writeData(ws.OpText, b, 0, false)
}

// fromClient handles a data message from client leg l of a resumable
// session: a tether.ack frees what the client has; anything else is
// counted and relayed (toUpstream), and tether acknowledges it in time.
func (s *Session) fromClient(l *leg, op ws.OpCode, p []byte, mk maskKey, more bool) {
	rs := s.rs
	if op == ws.OpText {
		if n, ok := parseTetherAck(p); ok {
			s.clientAck(l, n)
			return
		}
		if s.uncounted(p) {
			s.toUpstream(l, op, p, mk, more)
			return
		}
	}
	rs.fwd.Lock()
	a := s.admit(l, true, op, p, &mk)
	s.forward(l, a, op, p, mk, more)
	rs.fwd.Unlock()
	if a.tellNow {
		s.sendAck()
	} else if a.tellLater {
		rs.ackT.Reset(ackDelay)
	}
}

// countLocked counts a data message from client leg l (under mu, in
// admit) and says in a when to acknowledge it. It reports false if l is
// not attached: the client re-sends the message after tether's count.
func (s *Session) countLocked(l *leg, a *admission) bool {
	rs := s.rs
	if rs.cur.Load() != l || s.state == stateClosed {
		return false
	}
	rs.recv++
	a.tellNow = rs.recv-rs.acked >= ackEvery
	a.tellLater = !a.tellNow && !rs.ackArmed
	rs.ackArmed = rs.ackArmed || a.tellLater
	return true
}

func (s *Session) ackTimer() {
	s.mu.Lock()
	s.rs.ackArmed = false
	s.mu.Unlock()
	s.sendAck()
}

// sendAck tells the attached client how many of its messages tether has,
// if that changed.
func (s *Session) sendAck() {
	rs := s.rs
	rs.ackMu.Lock()
	defer rs.ackMu.Unlock()
	s.mu.Lock()
	n, c := rs.recv, rs.cur.Load()
	if c == nil || n == rs.acked || s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	rs.acked = n
	s.mu.Unlock()
	b := append(rs.ackBuf[:0], `{"type":"tether.ack","ack":`...)
	b = strconv.AppendUint(b, n, 10)
	b = append(b, '}')
	_ = c.writeData(ws.OpText, b, 0, false)
}

// clientAck frees the messages the client on leg l has received.
func (s *Session) clientAck(l *leg, n uint64) {
	rs := s.rs
	s.mu.Lock()
	if rs.cur.Load() == l && s.state != stateClosed && n <= rs.written {
		if dropped, _ := rs.log.ack(n); dropped > 0 {
			s.cond.Broadcast()
		}
	}
	s.mu.Unlock()
}

var ackType = []byte(`"tether.ack"`)

// parseTetherAck recognises {"type":"tether.ack","ack":n}. A message
// that is not one costs a length check or a search for its type.
func parseTetherAck(p []byte) (uint64, bool) {
	if len(p) > 256 || !bytes.Contains(p, ackType) {
		return 0, false
	}
	m := jsonscan.NewMembers(p)
	var n uint64
	isAck, hasN := false, false
	for {
		k, v, ok := m.Next()
		if !ok {
			break
		}
		switch {
		case jsonscan.StringEqual(k, "type"):
			isAck = jsonscan.StringEqual(v, "tether.ack")
		case jsonscan.StringEqual(k, "ack"):
			n, hasN = parseCount(v)
		}
	}
	if !m.Valid() || !isAck {
		return 0, false
	}
	return n, hasN
}

// parseCount parses a JSON number that is a count (digits only).
func parseCount(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// uncounted reports whether a text message is a JSON heartbeat (the
// configured ping or pong type): never counted on a resumable client leg,
// in either direction and whatever the heartbeat modes, so that both ends
// count the same messages (README "Client session resume").
func (s *Session) uncounted(p []byte) bool {
	return s.env.Messages.Classify(p) != heartbeat.KindData
}

// toClientHeld relays one message to the client of a resumable session
// (README "Client session resume"): numbered and kept until the client
// acknowledges it; while detached, only kept. u is the upstream leg whose
// read loop relays it (nil for tether's status messages). It reports
// false for a message not written.
func (s *Session) toClientHeld(u *leg, op ws.OpCode, p []byte, more bool) bool {
	rs := s.rs
	if op == ws.OpText && s.uncounted(p) {
		// Not counted, not kept: a heartbeat lost with a connection
		// is not missed.
		c := rs.cur.Load()
		if c == nil {
			return false
		}
		return c.writeData(op, p, 0, false) == nil
	}
	rs.send.Lock()
	defer rs.send.Unlock()
	c := s.holdForClient(u, op, p)
	if c == nil {
		return false
	}
	if err := c.writeData(op, p, 0, more); err != nil {
		return false // kept: re-sent on a resume
	}
	if more && u != nil {
		u.deferFlush(c)
	}
	s.env.Metrics.Message(false, len(p))
	return true
}

// holdForClient numbers and keeps a message for the client and returns
// the leg to write it to, or nil: kept while detached, or the session is
// closed (or closes now, the held messages passing their bounds while
// detached). While attached, a full log waits for the client's ack
// (backpressure on the upstream's reads), after writing the messages u's
// read loop left pending (the client cannot acknowledge what it has not
// got).
func (s *Session) holdForClient(u *leg, op ws.OpCode, p []byte) *leg {
	rs := s.rs
	s.mu.Lock()
	for {
		if s.state == stateClosed {
			s.mu.Unlock()
			return nil
		}
		if rs.cur.Load() == nil {
			if !rs.log.fits(len(p)) {
				s.mu.Unlock()
				s.detachedEnd(CauseResumeOverflow)
				return nil
			}
			rs.log.push(rs.log.newSeq(), op, p, false, maskKey{})
			s.mu.Unlock()
			return nil
		}
		if !rs.log.full(len(p)) {
			break
		}
		if s.flushBeforeWait(u) {
			continue
		}
		s.waitForClientAck(len(p))
	}
	seq := rs.log.newSeq()
	rs.log.push(seq, op, p, true, maskKey{})
	rs.written = seq + 1
	c := rs.cur.Load()
	s.mu.Unlock()
	return c
}

// waitForClientAck waits on cond for room in the log: the client's ack,
// a detach or the end wake it; the process-wide budget, which other
// sessions free, is polled.
func (s *Session) waitForClientAck(n int) {
	if !s.rs.log.overBudget(n) {
		s.cond.Wait()
		return
	}
	t := time.AfterFunc(50*time.Millisecond, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	s.cond.Wait()
	t.Stop()
}

// detach handles the end of client leg l of a resumable session. It
// reports false when the session ends as without resume (a protocol
// error, or a session not resumable); true when l was stale or the session
// is now detached.
func (s *Session) detach(l *leg, cause Cause, why string) bool {
	rs := s.rs
	if rs == nil {
		return false
	}
	s.mu.Lock()
	if s.state == stateClosed || rs.cur.Load() != l {
		s.mu.Unlock()
		return true
	}
	if cause == CauseProtocolError {
		s.mu.Unlock()
		return false
	}
	s.detachLocked()
	s.mu.Unlock()
	l.stopHeartbeat()
	s.log.Info("client detached", "session", s.id, "why", why, "window", s.cfg.Resume.Window)
	return true
}

// detachLocked detaches the attached client leg and starts the window.
func (s *Session) detachLocked() {
	rs := s.rs
	rs.cur.Store(nil)
	rs.detached = true
	rs.detachedAt = time.Now()
	if rs.window == nil {
		rs.window = time.AfterFunc(s.cfg.Resume.Window, s.windowPassed)
	} else {
		rs.window.Reset(s.cfg.Resume.Window)
	}
	s.cond.Broadcast()
	if m := s.resumeMetrics(); m != nil {
		m.Detached(1)
	}
}

func (s *Session) windowPassed() {
	s.mu.Lock()
	expired := s.state != stateClosed && s.rs.detached && !s.rs.claimed &&
		time.Since(s.rs.detachedAt) >= s.cfg.Resume.Window
	s.mu.Unlock()
	if expired {
		s.detachedEnd(CauseResumeExpired)
	}
}

// detachedEnd ends a detached session: its client did not come back in
// time, or the messages held for it passed their bounds.
func (s *Session) detachedEnd(c Cause) {
	s.end(act{kind: actDrop}, act{kind: actSend, ce: CloseError{Code: CloseGoingAway, Reason: "client gone"}}, Outcome{Cause: c})
}

// endResumeLocked frees what the resume state holds when the session
// ends with o.
func (s *Session) endResumeLocked(o Outcome) {
	rs := s.rs
	rs.log.release()
	rs.ackT.Stop()
	if rs.window != nil {
		rs.window.Stop()
	}
	if rs.detached {
		rs.detached = false
		s.log.Info("detached session ended", "session", s.id, "why", o.Why())
		if m := s.resumeMetrics(); m != nil {
			m.Detached(-1)
		}
	}
}

// Claim begins a resume by a client that has received ack of tether's
// messages (README "Client session resume"). It refuses (an error saying
// why) a session that ended or is being resumed, or an ack outside what
// tether sent and still holds. Otherwise the client leg, if still
// attached (a half-open connection), is closed and the session waits for
// Attach or Unclaim, its window paused.
func (s *Session) Claim(ack uint64) error {
	rs := s.rs
	if rs == nil {
		return errNotResumed
	}
	s.mu.Lock()
	first := rs.log.seq
	if rs.log.len() > 0 {
		first = rs.log.msgs[0].seq
	}
	switch {
	case s.state == stateClosed:
		s.mu.Unlock()
		return ErrResumeEnded
	case rs.claimed:
		s.mu.Unlock()
		return ErrResumeBusy
	case ack < first || ack > rs.written:
		s.mu.Unlock()
		return ErrResumeAck
	}
	old := rs.cur.Load()
	if old != nil {
		s.detachLocked()
	}
	rs.claimed = true
	s.mu.Unlock()
	if old != nil {
		old.stopHeartbeat()
		old.closeConn()
		s.log.Info("client detached", "session", s.id, "why", "resumed over a client leg still open")
	}
	return nil
}

// Unclaim gives up a resume begun by Claim (the client's upgrade failed):
// the session stays detached for what is left of its window.
func (s *Session) Unclaim() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateClosed || !s.rs.claimed {
		return
	}
	s.rs.claimed = false
	s.rs.window.Reset(max(0, s.cfg.Resume.Window-time.Since(s.rs.detachedAt)))
}

// Attach completes a resume begun by Claim with the client's upgraded
// connection (buffered: bytes read past its handshake; deflate: as
// negotiated): it becomes the client leg, gets the tether.session message
// with token and tether's count, then every message after ack, and the
// session goes on. ErrResumeEnded: the session ended meanwhile; the
// caller closes conn.
func (s *Session) Attach(conn net.Conn, buffered []byte, deflate bool, token string, ack uint64) error {
	rs := s.rs
	rs.send.Lock()
	s.mu.Lock()
	if s.state == stateClosed || !rs.claimed {
		s.mu.Unlock()
		rs.send.Unlock()
		return ErrResumeEnded
	}
	l := newLeg(s, conn, buffered, true, s.cfg.ClientHeartbeat)
	l.deflate, l.fr.deflate = deflate, deflate
	l.resume = func() { s.run(l) }
	// What the client has is freed; the rest is written again.
	rs.log.next = rs.log.len()
	rs.log.ack(ack)
	rs.log.rewind()
	rs.claimed, rs.detached = false, false
	rs.window.Stop()
	away := time.Since(rs.detachedAt)
	rs.cur.Store(l)
	rs.last.Store(l)
	recv := rs.recv
	rs.acked = recv
	s.parts.Add(1) // the session is not closed: it holds parts
	s.mu.Unlock()

	s.writeSessionMsg(l, token, true, recv)
	resent := 0
	for {
		s.mu.Lock()
		m, ok := rs.log.take()
		if ok {
			rs.written = m.seq + 1
		}
		s.mu.Unlock()
		if !ok || l.writeData(m.op, m.p, 0, false) != nil { // plaintext: upstream messages
			break
		}
		if m.sent {
			resent++
		}
		s.env.Metrics.Message(false, len(m.p))
	}
	rs.send.Unlock()
	if m := s.resumeMetrics(); m != nil {
		m.Detached(-1)
		m.ClientResume(true)
		m.ResumeResent(false, resent)
	}
	s.log.Info("client resumed", "session", s.id, "detached_for", away, "resent_to_client", resent, "client_count", recv)
	s.env.workers.run(job{l: l})
	l.startHeartbeat()
	return nil
}
