package session

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Simultaneous close (RFC 6455 §7.1.3): while tether is still writing its
// Close to a peer (the peer is not reading yet), that peer's own Close
// arrives. The read loop takes it for the reply, but it must not close the
// connection under the Close being written: the peer still gets tether's
// Close frame, not a bare TCP close. FuzzSession found this (client leg).
func TestSimultaneousCloseKeepsOurClose(t *testing.T) {
	t.Parallel()
	for _, first := range []string{"upstream", "client"} {
		t.Run(first+" closes first", func(t *testing.T) {
			t.Parallel()
			env, err := NewEnv(hbCfg(hbOff, hbOff), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			env.CloseWait = 2 * time.Second
			cc, cs := net.Pipe()
			uc, us := net.Pipe()
			defer cc.Close()
			defer us.Close()
			// The leg that closes second is the one tether writes a Close
			// to; its peer does not read until it has sent its own Close.
			cp := newHBPeer(t, cc, true, false, first == "upstream")
			up := newHBPeer(t, us, false, false, first == "client")
			// Tether's first write to the second leg is its Close (no
			// heartbeats, no data): it signals when tether begins it.
			var tc, tu net.Conn = cs, uc
			writing := make(chan struct{})
			if first == "upstream" {
				tc = &firstWrite{Conn: cs, ch: writing}
			} else {
				tu = &firstWrite{Conn: uc, ch: writing}
			}
			s := New(env, "race", tc, nil, Upstream{Conn: tu}, func(context.Context) (Upstream, error) {
				return Upstream{}, fmt.Errorf("%w: test", ErrUpstreamRejected)
			})
			ran := make(chan struct{})
			go func() { defer close(ran); s.Run(context.Background()) }()

			opener, second := up, cp
			if first == "client" {
				opener, second = cp, up
			}
			if err := opener.send(ws.NewCloseFrame(ws.NewCloseFrameBody(4000, "first"))); err != nil {
				t.Fatal(err)
			}
			<-writing // blocked: the second peer is not reading
			if err := second.send(ws.NewCloseFrame(ws.NewCloseFrameBody(4001, "second"))); err != nil {
				t.Fatal(err)
			}
			second.resume()
			<-second.done
			if code := hbCloseCode(second.got()); code != 4000 {
				t.Errorf("%s peer got frames %v, want tether's Close 4000", map[bool]string{true: "client", false: "upstream"}[second == cp], second.got())
			}
			<-ran
			_ = cc.Close()
			_ = us.Close()
			<-cp.done
			<-up.done
		})
	}
}

// firstWrite closes ch when the first Write begins.
type firstWrite struct {
	net.Conn
	once sync.Once
	ch   chan struct{}
}

func (c *firstWrite) Write(p []byte) (int, error) {
	c.once.Do(func() { close(c.ch) })
	return c.Conn.Write(p)
}
