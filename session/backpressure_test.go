package session

import (
	"bytes"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
)

// README "Upstream loss, reconnect and the delivery guarantee": at the
// process-wide TETHER_BUFFER_TOTAL_MAX_BYTES while connected, a session's
// client reads pause (backpressure) instead of a close, and resume when
// another session frees bytes.
func TestProcessWideLimitPausesConnectedClient(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := rcConfig()
		// Retention on; b's upstream answers no ping until the end, so
		// nothing b sends is acknowledged (an early ping would otherwise
		// free b's own window).
		cfg.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: 10 * time.Second, Timeout: 3 * time.Hour}
		cfg.Buffer.MaxBytes = 100
		cfg.Buffer.TotalMaxBytes = 100
		cfg.Reconnect.MaxAttempts = 0
		env, m := rcEnv(t, cfg, nil)
		a := rcStart(t, env, m, func(h *rcHarness) { h.dialFn = rcFail })
		b := rcStart(t, env, m, nil)
		_ = a.nextUp().conn.Close() // a reconnects for ever and buffers
		bUp := b.nextUp()
		bUp.pong.Store(false) // b's upstream acknowledges nothing
		synctest.Wait()
		a.client.text(string(bytes.Repeat([]byte("a"), 60)))
		synctest.Wait()
		if got := env.BufferedBytes(); got != 60 {
			t.Fatalf("%d bytes held, want a's 60", got)
		}

		first := string(bytes.Repeat([]byte("b"), 30))
		b.client.text(first) // an empty window always takes a message
		bUp.expect(first)
		second := string(bytes.Repeat([]byte("c"), 20))
		b.client.text(second) // 60 + 30 + 20 > 100: b's reads pause
		time.Sleep(5 * time.Second)
		bUp.expectNothing()
		b.client.expectNothing() // not closed: backpressure, not 1013
		if got := m.overflows.Load(); got != 0 {
			t.Fatalf("overflows = %d, want 0", got)
		}

		_ = a.client.conn.Close() // a ends and frees its 60 bytes
		a.waitDone()
		time.Sleep(time.Second) // b polls the process-wide budget
		synctest.Wait()
		// b's reads resume: second is taken, and waits in the log while
		// b's upstream is suspect (its acknowledgement is overdue,
		// README "Upstream loss, reconnect and the delivery guarantee") …
		if got := env.BufferedBytes(); got != 50 {
			t.Fatalf("%d bytes held, want b's 50", got)
		}
		bUp.expectNothing()
		// … until it answers a ping again.
		bUp.pong.Store(true)
		bUp.expect(second)
		// The pong acknowledged first; second is retained.
		if got := env.BufferedBytes(); got != 20 {
			t.Fatalf("%d bytes held, want b's 20 (second, retained)", got)
		}
	})
}
