package session

import "time"

// State is a session's state as Info reports it (README "Admin
// endpoints").
type State string

const (
	// StateConnected: both legs are up.
	StateConnected State = "connected"
	// StateReconnecting: the client leg is up and the upstream leg is
	// being re-established (including re-sending on a new connection).
	StateReconnecting State = "reconnecting"
	// StateDetached: a resumable session whose client leg dropped; the
	// upstream leg is kept while the client is away (README "Client
	// session resume").
	StateDetached State = "detached"
	// StateClosing: the session has ended and its Close handshakes are
	// finishing.
	StateClosing State = "closing"
)

// Info is a read-only snapshot of one session, for the admin endpoints.
// It costs nothing unless asked for: every field is read from state the
// session keeps anyway.
type Info struct {
	ID       string
	Remote   string // the client's address
	State    State
	Upstream string // host of the current (or last) upstream connection
	// ClientRTT and UpstreamRTT are the latest heartbeat round trips of
	// each leg (the upstream's on its current connection); 0 before the
	// first pong, or while reconnecting for the upstream.
	ClientRTT, UpstreamRTT time.Duration
	// Retained counts client messages written to the upstream and not
	// yet acknowledged by a heartbeat round trip; Buffered counts those
	// waiting to be written (while reconnecting). Together they are the
	// session's part of tether_buffered_messages.
	Retained, Buffered int
	// HeldBytes is the payload bytes of Retained and Buffered.
	HeldBytes int64
	// Reconnects counts completed upstream reconnects (upgrades that
	// replaced a lost connection).
	Reconnects int
}

// Info returns a snapshot of the session. Safe from any goroutine, at any
// time after New.
func (s *Session) Info() Info {
	cl := s.clientLeg()
	in := Info{ID: s.id, Remote: cl.conn.RemoteAddr().String()}
	s.mu.Lock()
	switch s.state {
	case stateConnected:
		in.State = StateConnected
	case stateReconnecting:
		in.State = StateReconnecting
	default:
		in.State = StateClosing
	}
	if s.rs != nil && s.rs.detached && s.state != stateClosed {
		in.State = StateDetached
	}
	in.Upstream = s.upHost
	in.Retained = s.upLog.next
	in.Buffered = s.upLog.len() - s.upLog.next
	in.HeldBytes = s.upLog.bytes
	// Each connection that is installed gets the next generation; the
	// first is 1.
	in.Reconnects = int(s.gen) - 1
	up := s.up
	s.mu.Unlock()
	in.ClientRTT = cl.lastRTT()
	if up != nil {
		in.UpstreamRTT = up.lastRTT()
	}
	return in
}

// lastRTT is the leg's latest heartbeat round trip (0: none yet).
func (l *leg) lastRTT() time.Duration {
	l.ctl.Lock()
	rtt, _ := l.tracker.LastRTT()
	l.ctl.Unlock()
	return rtt
}

// CloseWith ends the session on an operator's request: the client gets
// Close(code, reason), the upstream Close 1001, each waiting (bounded)
// for the peer's reply, as on a drain. code must be valid on the wire.
// Safe from any goroutine, at any time after Start; it does nothing once
// the session is ending.
func (s *Session) CloseWith(code CloseCode, reason string) {
	s.end(act{kind: actSend, ce: CloseError{Code: code, Reason: reason}},
		act{kind: actSend, ce: CloseError{Code: CloseGoingAway, Reason: "session closed by tether's operator"}}, Outcome{Cause: CauseOperator})
}
