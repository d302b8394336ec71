package proxy_test

import (
	"bytes"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/proxy"
)

// A reconnect whose re-send is cut short (the new upstream stops reading,
// the write passes TETHER_WRITE_TIMEOUT) still counts the messages it did
// re-send: tether_resent_messages_total counts every write of a message
// after its first (found by cmd/tethersoak, whose backend saw more
// duplicates than tether reported re-sends).
func TestResentCountsCutReplay(t *testing.T) {
	t.Parallel()
	const n, size = 400, 16 << 10
	var conns atomic.Int32
	release := make(chan struct{})
	first := make(chan struct{})
	third := make(chan struct{})
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		switch conns.Add(1) {
		case 1: // reads everything, then breaks without a Close
			for range n {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
			close(first)
			_ = c.UnderlyingConn().Close()
		case 2: // accepts the reconnect and never reads
			<-release
		case 3: // reads the re-send
			for range n {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
			close(third)
			<-release
		default:
			<-release
		}
	})
	t.Cleanup(func() { close(release) })
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		c.Session.WriteTimeout = time.Second
		// No acknowledgement during the test (json mode sends no
		// acknowledgement pings): every message is retained.
		c.Session.UpstreamHeartbeat.Mode = heartbeat.ModeJSON
		c.Session.UpstreamHeartbeat.Interval = time.Minute
		c.Session.UpstreamHeartbeat.Timeout = 3 * time.Minute
		c.Session.Buffer.MaxBytes = 64 << 20
	})
	c := dial(t, tt.URL, nil)
	msg := bytes.Repeat([]byte("x"), size)
	for range n {
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []chan struct{}{first, third} {
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("backend connection %d did not get all %d messages", conns.Load(), n)
		}
	}
	c2u := metric(t, tt, "tether_messages_total", "direction=client_to_upstream")
	resent := metric(t, tt, "tether_resent_messages_total")
	// n first writes on connection 1, k on connection 2 before its write
	// timed out, n on connection 3: every write but the first n is a re-send.
	if c2u <= 2*n {
		t.Fatalf("client_to_upstream = %v: no write completed on the connection that stopped reading; the test proves nothing", c2u)
	}
	if resent != c2u-n {
		t.Fatalf("resent = %v, want %v (client_to_upstream %v minus the %d first sends)", resent, c2u-n, c2u, n)
	}
}
