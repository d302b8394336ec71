package proxy_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/proxy"
)

// The delivery property of README "Upstream loss, reconnect and the delivery
// guarantee", under fire: a client streams 3000 numbered messages while the
// upstream connection is reset at random moments, 15 times. Each fault first
// stalls the relay for a few milliseconds, so that the reset destroys bytes
// tether had already written (as when a backend dies with data in flight):
// only the retained copies can bring those messages back. The backend must
// receive every number at least once, and each backend connection must receive
// its numbers in increasing order. Duplicates (messages of the last
// unacknowledged round trip before each reset) are allowed and reported.
//
// Acknowledgements need the upstream heartbeat: ws mode (the backend's
// library answers RFC pings) and json mode (the backend answers
// {"type":"ping"} with {"type":"pong"}), every 50ms.
func TestRcLossProperty(t *testing.T) {
	t.Parallel()
	for _, mode := range []heartbeat.Mode{heartbeat.ModeWS, heartbeat.ModeJSON} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			const n, resets = 3000, 15
			rr := rcNewRecorder()
			rr.json = mode == heartbeat.ModeJSON
			b := rcNewBackend(t, func(b *rcBackend) { b.handle = rr.handle })
			relay := rcRelay(t, b.addr)
			tt := rcStartTether(t, relay.Addr(), proxy.Options{}, func(c *proxy.Config) {
				c.Session.UpstreamHeartbeat.Mode = mode
				c.Session.Reconnect.MaxAttempts = 0
			})
			c := dial(t, tt.URL, nil)

			errc := make(chan error, 1)
			start := time.Now()
			// About 2 s of stream: 10 messages every 7 ms.
			go func() { errc <- rcStream(c, n, 10, 7*time.Millisecond) }()
			for range resets {
				time.Sleep(time.Duration(50+rand.IntN(120)) * time.Millisecond)
				relay.Stall()
				time.Sleep(time.Duration(1+rand.IntN(20)) * time.Millisecond)
				relay.ResetAll()
				relay.Resume()
			}
			resetsDone := time.Since(start)
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			streamed := time.Since(start)
			rcWaitAll(t, rr, n, 20*time.Second)
			dups := rcCheckStream(t, rr, n)
			if got := tt.Sessions(); got != 1 {
				t.Fatalf("%d sessions after the stream, want 1 (the client was closed)", got)
			}
			t.Logf("heartbeat %v: %d messages, %d resets in %v (stream took %v), %d upstream connections, %d duplicates, %v re-sent",
				mode, n, resets, resetsDone.Round(time.Millisecond), streamed.Round(time.Millisecond),
				b.handshakes(), dups, rcMetric(t, tt, "tether_resent_messages_total"))
			if got := b.handshakes(); got < resets/2 {
				t.Fatalf("only %d upstream connections for %d resets: the faults missed the stream", got, resets)
			}
		})
	}
}
