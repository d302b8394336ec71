package session

import (
	"errors"
	"os"
	"strconv"
)

// Cause is why a session ended, or why its upstream connection was lost.
type Cause uint8

// Causes. The first five concern one leg (Outcome.Leg says which).
const (
	CauseClosed             Cause = iota + 1 // the leg's peer sent a Close
	CauseWriteFailed                         // a write to the leg failed
	CauseProtocolError                       // the leg's peer broke RFC 6455
	CauseHeartbeatTimeout                    // nothing came from the leg's peer within its heartbeat timeout
	CauseConnectionLost                      // the leg's connection broke without a Close
	CauseBufferOverflow                      // the client's messages filled the buffer while reconnecting
	CauseAttemptsExhausted                   // TETHER_RECONNECT_MAX_ATTEMPTS dials failed
	CauseRejected                            // the upstream answered a reconnect with a 4xx
	CauseSubprotocolChanged                  // the upstream chose another subprotocol on a reconnect
	CauseShutdown                            // the process drains (Drain)
	CauseForced                              // Close: torn down at once
	CausePanic                               // a bug in tether
	CauseOperator                            // closed through the admin API (CloseWith)
	CauseResumeExpired                       // a detached session's client did not resume within TETHER_RESUME_WINDOW
	CauseResumeOverflow                      // the messages held for a detached client passed TETHER_RESUME_MAX_*
	CauseReplayStateFull                     // the client's kept replay state passed TETHER_REPLAY_MAX_BYTES
)

// Outcome is how a session ended, as a value: why, and the Close each leg
// got (Code 1006 for a leg whose connection was closed without one).
type Outcome struct {
	Cause    Cause
	Leg      string // LegClient or LegUpstream for the leg causes
	Err      error  // the error behind Cause, if any
	Client   CloseError
	Upstream CloseError
}

// Why describes the cause in words, for logs.
func (o Outcome) Why() string {
	switch o.Cause {
	case CauseClosed:
		var ce *CloseError
		if errors.As(o.Err, &ce) {
			return o.Leg + " closed with " + strconv.Itoa(int(ce.code()))
		}
		return o.Leg + " closed"
	case CauseWriteFailed:
		return o.Leg + " write failed: " + o.errText()
	case CauseProtocolError:
		return o.Leg + " protocol error: " + o.errText()
	case CauseHeartbeatTimeout:
		return o.Leg + " heartbeat timeout"
	case CauseConnectionLost:
		if o.Err == nil {
			return o.Leg + " connection lost"
		}
		return o.Leg + " connection lost: " + o.errText()
	case CauseBufferOverflow:
		return "buffer overflow"
	case CauseAttemptsExhausted:
		return "reconnect attempts exhausted"
	case CauseRejected:
		return "upstream rejected the reconnect"
	case CauseSubprotocolChanged:
		return "upstream subprotocol changed"
	case CauseShutdown:
		return "shutdown"
	case CauseForced:
		return "forced"
	case CausePanic:
		return "panic"
	case CauseOperator:
		return "closed by the admin API"
	case CauseResumeExpired:
		return "resume window passed"
	case CauseResumeOverflow:
		return "resume buffer full while detached"
	case CauseReplayStateFull:
		return "replay state full"
	}
	return "unknown"
}

func (o Outcome) errText() string {
	if o.Err == nil {
		return ""
	}
	return o.Err.Error()
}

// code is the close code as received: 1005 for a Close without one.
func (c *CloseError) code() CloseCode {
	if c.NoCode {
		return CloseNoStatus
	}
	return c.Code
}

// legEnd is how a leg's read loop ended, classified the same way for both
// legs.
type legEnd struct {
	cause Cause
	err   error
	own   act // what the leg itself gets, if the session ends
}

// classify tells why l's read loop returned err: a failed write (recorded
// by fail), a protocol violation by its peer, a heartbeat timeout, or a
// broken connection.
func classify(l *leg, err error) legEnd {
	var pe *protocolError
	switch {
	case l.failure() != nil:
		return legEnd{cause: CauseWriteFailed, err: l.failure(), own: act{kind: actDrop}}
	case errors.As(err, &pe):
		return legEnd{cause: CauseProtocolError, err: pe, own: act{kind: actSendLinger, ce: CloseError{Code: pe.Code, Reason: pe.msg}}}
	case errors.Is(err, os.ErrDeadlineExceeded) && !l.closing.Load():
		return legEnd{cause: CauseHeartbeatTimeout, own: act{kind: actSendNoWait, ce: CloseError{Code: CloseGoingAway, Reason: "heartbeat timeout"}}}
	}
	return legEnd{cause: CauseConnectionLost, err: err, own: act{kind: actDrop}}
}
