package proxy_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

// lockedBuffer is a log sink tests can read while tether writes.
type lockedBuffer = testkit.LockedBuffer

// A JSON-mode upstream that echoes data but never answers the JSON ping stays
// alive and acknowledges nothing: the retention window fills, client reads
// pause (README "Upstream loss, reconnect and the delivery guarantee"), and
// tether says why in a warning, once.
func TestUpstreamNotAnsweringHeartbeatsWarns(t *testing.T) {
	t.Parallel()
	// Echoes the client's data, ignores tether's JSON pings, and pushes a
	// tick every 20 ms, which keeps the upstream leg alive.
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		var wmu sync.Mutex
		write := func(mt int, p []byte) error {
			wmu.Lock()
			defer wmu.Unlock()
			return c.WriteMessage(mt, p)
		}
		done := make(chan struct{})
		defer close(done)
		go func() {
			tk := time.NewTicker(20 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-done:
					return
				case <-tk.C:
					if write(websocket.TextMessage, []byte("tick")) != nil {
						return
					}
				}
			}
		}()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if bytes.Contains(p, []byte(`"type"`)) {
				continue
			}
			if write(mt, p) != nil {
				return
			}
		}
	})
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	tt := startTetherOpts(t, b.URL, proxy.Options{Logger: logger}, func(c *proxy.Config) {
		c.Session.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeJSON, Interval: 50 * time.Millisecond, Timeout: 150 * time.Millisecond}
		c.Session.Buffer.MaxMessages = 4
	})
	c := dial(t, tt.URL, nil)
	go func() { // drain echoes and ticks until the test closes c
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	// The backend's echoes keep the upstream leg alive; nothing is
	// acknowledged, so the fifth message waits.
	go func() {
		for i := range 8 {
			if c.WriteMessage(1, []byte("m"+strconv.Itoa(i))) != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !strings.Contains(logs.String(), "upstream is not answering heartbeats") {
		select {
		case <-ctx.Done():
			t.Fatalf("no warning; logs:\n%s", logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if n := strings.Count(logs.String(), "upstream is not answering heartbeats"); n != 1 {
		t.Fatalf("warned %d times, want once", n)
	}
	if tt.Sessions() != 1 {
		t.Fatalf("the session must stay open (backpressure, not a close)")
	}
}
