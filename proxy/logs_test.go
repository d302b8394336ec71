package proxy_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/proxy"
)

// README "Metrics and logs" for heartbeats: ping sent and pong received at
// debug, a heartbeat timeout at warn, each with the session id and the leg;
// session open and close at info with the close codes.
func TestHeartbeatLogs(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	var logs lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tt := startTetherOpts(t, b.URL, proxy.Options{Logger: logger}, func(c *proxy.Config) {
		c.Session.ClientHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: 50 * time.Millisecond, Timeout: 300 * time.Millisecond}
		c.Session.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: 50 * time.Millisecond, Timeout: time.Second}
	})
	c, resp, err := websocket.DefaultDialer.Dial(tt.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := resp.Header.Get("X-Tether-Session")
	// The client never reads, so it never answers pings: after 300 ms
	// tether finds it dead.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !strings.Contains(logs.String(), `"msg":"session closed"`) {
		select {
		case <-ctx.Done():
			t.Fatalf("no session close; logs:\n%s", logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	type line struct {
		Level, Msg, Session, Leg string
		Code                     int
		RTT                      any `json:"rtt"`
	}
	seen := map[string]line{}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var x line
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		if x.Session != id {
			t.Fatalf("line without session=%s: %s", id, l)
		}
		seen[x.Level+" "+x.Msg+" "+x.Leg] = x
	}
	for _, want := range []string{
		"INFO session open ",
		"DEBUG ping sent client",
		"DEBUG ping sent upstream",
		"DEBUG pong received upstream",
		"WARN heartbeat timeout client",
		"INFO session closed ",
	} {
		if _, ok := seen[want]; !ok {
			t.Errorf("no %q line; logs:\n%s", want, logs.String())
		}
	}
	if x := seen["DEBUG pong received upstream"]; x.RTT == nil {
		t.Errorf("pong line without rtt")
	}
	if x := seen["INFO session closed "]; x.Code != 1001 {
		t.Errorf("session closed with code %d, want 1001 (client heartbeat timeout)", x.Code)
	}
}
