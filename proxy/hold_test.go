package proxy_test

import (
	"testing"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/proxy"
)

// Holding while the upstream is silent (README "Upstream loss, reconnect
// and the delivery guarantee"), with real sockets: the path to the backend stalls (a faultnet relay holds
// every byte) for longer than the upstream heartbeat timeout while a client
// streams 100 messages a second, then recovers, delivering what it held.
// tether holds client messages once a ping is overdue, so only those
// written before that are delivered twice (by the stalled connection and
// by the re-send), not the whole timeout's worth.
func TestHoldLimitsDuplicatesOnStall(t *testing.T) {
	t.Parallel()
	const n = 300 // 3 s at 100 msg/s
	rr := rcNewRecorder()
	b := rcNewBackend(t, func(b *rcBackend) { b.handle = rr.handle })
	relay := rcRelay(t, b.addr)
	tt := rcStartTether(t, relay.Addr(), proxy.Options{}, func(c *proxy.Config) {
		c.Session.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: 200 * time.Millisecond, Timeout: time.Second}
		c.Session.Reconnect.MaxAttempts = 0
	})
	c := dial(t, tt.URL, nil)
	errc := make(chan error, 1)
	go func() { errc <- rcStream(c, n, 1, 10*time.Millisecond) }()
	time.Sleep(500 * time.Millisecond)
	relay.Stall()
	rcWaitMetric(t, tt, 1, "tether_heartbeat_timeouts_total", "leg=upstream")
	time.Sleep(300 * time.Millisecond) // the reconnect's dial is held too
	relay.Resume()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	rcWaitAll(t, rr, n, 20*time.Second)
	dups := rcCheckStream(t, rr, n)
	// Without holding, every message of the timeout (about 100) comes
	// twice; with it, about ackHoldMin's worth (100 ms: ~10), some more on
	// a loaded machine.
	if dups > 40 {
		t.Fatalf("%d duplicates, want at most 40", dups)
	}
	t.Logf("%d messages through a stall past the heartbeat timeout: %d duplicates, %d upstream connections", n, dups, b.handshakes())
}
