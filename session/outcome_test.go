package session

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// How a session ended travels as a value: Run returns it, and the end
// callback hears it twice, at Ending and then at Finished, with the cause,
// the leg it concerns and the Close each leg got.
func TestOutcome(t *testing.T) {
	closeFrame := func(code CloseCode, reason string) ws.Frame {
		return ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), reason))
	}
	cases := []struct {
		name     string
		act      func(s *Session, client, up net.Conn) error
		cause    Cause
		leg      string
		why      string
		client   CloseError
		upstream CloseError
	}{
		{
			name: "client Close",
			act: func(_ *Session, c, _ net.Conn) error {
				return ws.WriteFrame(c, ws.MaskFrame(closeFrame(CloseNormal, "bye")))
			},
			cause: CauseClosed, leg: LegClient, why: "client closed",
			client: CloseError{Code: CloseNormal, Reason: "bye"}, upstream: CloseError{Code: CloseNormal, Reason: "bye"},
		},
		{
			name: "upstream Close not reconnected",
			act: func(_ *Session, _, u net.Conn) error {
				return ws.WriteFrame(u, closeFrame(4000, "done"))
			},
			cause: CauseClosed, leg: LegUpstream, why: "upstream closed",
			client: CloseError{Code: 4000, Reason: "done"}, upstream: CloseError{Code: 4000, Reason: "done"},
		},
		{
			name: "client protocol error",
			act: func(_ *Session, c, _ net.Conn) error {
				return ws.WriteFrame(c, ws.NewTextFrame([]byte("unmasked")))
			},
			cause: CauseProtocolError, leg: LegClient, why: "client protocol error: unmasked frame from client",
			client: CloseError{Code: CloseProtocolError, Reason: "unmasked frame from client"}, upstream: CloseError{Code: CloseGoingAway, Reason: "client gone"},
		},
		{
			name:  "client connection lost",
			act:   func(_ *Session, c, _ net.Conn) error { return c.Close() },
			cause: CauseConnectionLost, leg: LegClient,
			client: CloseError{Code: CloseAbnormal}, upstream: CloseError{Code: CloseGoingAway, Reason: "client gone"},
		},
		{
			name:  "drain",
			act:   func(s *Session, _, _ net.Conn) error { s.Drain(); return nil },
			cause: CauseShutdown, why: "shutdown",
			client: CloseError{Code: CloseServiceRestart, Reason: "tether shutting down"}, upstream: CloseError{Code: CloseGoingAway, Reason: "tether shutting down"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env, err := NewEnv(hbCfg(hbOff, hbOff), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			env.CloseWait = 50 * time.Millisecond
			ct, cp := parkPair(t)
			ut, up := parkPair(t)
			s := New(env, "outcome", ct, nil, Upstream{Conn: ut}, func(context.Context) (Upstream, error) {
				return Upstream{}, errors.New("no reconnects here")
			})
			type heard struct {
				st Stage
				o  Outcome
			}
			ends := make(chan heard, 2)
			s.Start(context.Background(), func(st Stage, o Outcome) { ends <- heard{st, o} })
			if err := c.act(s, cp, up); err != nil {
				t.Fatal(err)
			}
			var got []heard
			for len(got) < 2 {
				select {
				case h := <-ends:
					got = append(got, h)
				case <-time.After(10 * time.Second):
					t.Fatalf("heard %d of the 2 end stages", len(got))
				}
			}
			if got[0].st != Ending || got[1].st != Finished {
				t.Fatalf("stages %v then %v, want Ending then Finished", got[0].st, got[1].st)
			}
			for _, h := range got {
				o := h.o
				if o.Cause != c.cause || o.Leg != c.leg || o.Client != c.client || o.Upstream != c.upstream {
					t.Errorf("stage %v: outcome %+v, want cause %v leg %q client %+v upstream %+v",
						h.st, o, c.cause, c.leg, c.client, c.upstream)
				}
				if c.why != "" && o.Why() != c.why {
					t.Errorf("stage %v: why %q, want %q", h.st, o.Why(), c.why)
				}
			}
		})
	}
}

// Why keeps the words the session log has always used, including the
// close code an upstream closed with when it is reconnected.
func TestOutcomeWhy(t *testing.T) {
	for _, c := range []struct {
		o    Outcome
		want string
	}{
		{Outcome{Cause: CauseClosed, Leg: LegUpstream, Err: &CloseError{Code: CloseGoingAway}}, "upstream closed with 1001"},
		{Outcome{Cause: CauseClosed, Leg: LegUpstream, Err: &CloseError{NoCode: true}}, "upstream closed with 1005"},
		{Outcome{Cause: CauseWriteFailed, Leg: LegClient, Err: errors.New("broken pipe")}, "client write failed: broken pipe"},
		{Outcome{Cause: CauseHeartbeatTimeout, Leg: LegUpstream}, "upstream heartbeat timeout"},
		{Outcome{Cause: CauseConnectionLost, Leg: LegUpstream, Err: errors.New("EOF")}, "upstream connection lost: EOF"},
		{Outcome{Cause: CauseBufferOverflow}, "buffer overflow"},
		{Outcome{Cause: CauseAttemptsExhausted}, "reconnect attempts exhausted"},
		{Outcome{Cause: CauseRejected}, "upstream rejected the reconnect"},
		{Outcome{Cause: CauseSubprotocolChanged}, "upstream subprotocol changed"},
		{Outcome{Cause: CauseForced}, "forced"},
		{Outcome{Cause: CausePanic}, "panic"},
	} {
		if got := c.o.Why(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.o, got, c.want)
		}
	}
}
