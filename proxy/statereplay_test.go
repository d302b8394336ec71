package proxy_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/proxy"
	"github.com/tether-proxy/tether/replay"
)

// The tests of README "State replay on upstream reconnect" wired into the
// session. The backends here are small Go servers of each protocol's
// rules that matter (an answer before anything else, 4401 otherwise); the
// tests against the real npm and broker implementations are in interop.

// srGQL is a graphql-transport-ws server as strict as the graphql-ws
// library: a subscribe before connection_ack closes with 4401, a second
// connection_init with 4429, and the ack comes 20 ms after the init (the
// library authenticates asynchronously), so a proxy that pipelines the
// replay is closed. Each subscribe is answered with one next event naming
// the connection, and every message is recorded per connection as
// type:id.
type srGQL struct {
	*rcRecorder
	// ack decides whether connection n answers connection_init (false:
	// it stays silent) or refuses it (an error message).
	ack func(n int) string
}

func newSRGQL() *srGQL { return &srGQL{rcRecorder: rcNewRecorder()} }

type srMsg struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

// readMsg reads the next JSON message of connection n and records it.
func (rr *rcRecorder) readMsg(c *websocket.Conn, n int) (srMsg, bool) {
	var m srMsg
	_, p, err := c.ReadMessage()
	if err != nil || json.Unmarshal(p, &m) != nil {
		return m, false
	}
	rr.add(n, m.Type+":"+m.ID)
	return m, true
}

func (g *srGQL) handle(c *websocket.Conn, n int) {
	var wmu sync.Mutex // writes, acked
	acked, inited := false, false
	write := func(s string) error {
		wmu.Lock()
		defer wmu.Unlock()
		return c.WriteMessage(websocket.TextMessage, []byte(s))
	}
	refuse := func(code int, why string) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(code, why))
	}
	for {
		m, ok := g.readMsg(c, n)
		if !ok {
			return
		}
		var out string
		switch m.Type {
		case "connection_init":
			if inited {
				refuse(4429, "Too many initialisation requests")
				return
			}
			inited = true
			ans := `{"type":"connection_ack"}`
			if g.ack != nil {
				ans = g.ack(n)
			}
			if ans != "" {
				time.AfterFunc(20*time.Millisecond, func() {
					wmu.Lock()
					acked = ans == `{"type":"connection_ack"}`
					wmu.Unlock()
					_ = write(ans)
				})
			}
		case "subscribe", "start": // graphql-transport-ws, graphql-ws
			wmu.Lock()
			ok := acked
			wmu.Unlock()
			if !ok {
				refuse(4401, "Unauthorized")
				return
			}
			out = `{"type":"next","id":"` + m.ID + `","payload":{"data":{"conn":` + strconv.Itoa(n) + `}}}`
		case "ping":
			out = `{"type":"pong"}`
		}
		if out != "" && write(out) != nil {
			return
		}
	}
}

// srBackend starts a backend that selects subprotocol and serves each
// connection with handle.
func srBackend(t *testing.T, subprotocol string, handle func(c *websocket.Conn, n int)) *rcBackend {
	return rcNewBackend(t, func(b *rcBackend) {
		b.handle = handle
		b.answer = func(*http.Request, int) (int, http.Header) {
			if subprotocol == "" {
				return 0, nil
			}
			return 0, http.Header{"Sec-Websocket-Protocol": {subprotocol}}
		}
	})
}

// srDial dials tether offering subprotocol.
func srDial(t *testing.T, url, subprotocol string) *websocket.Conn {
	t.Helper()
	d := *websocket.DefaultDialer
	if subprotocol != "" {
		d.Subprotocols = []string{subprotocol}
	}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// graphql-transport-ws under auto: after a backend restart the new
// connection gets connection_init, and only after its connection_ack the
// live subscription (not the completed one); the new ack never reaches the
// client, the replayed subscription's events do, and the metric and the
// log count two replayed messages.
func TestStateReplayGraphQLRestart(t *testing.T) {
	t.Parallel()
	g := newSRGQL()
	b := srBackend(t, "graphql-transport-ws", g.handle)
	tt := rcStartTether(t, b.URL, proxy.Options{}, nil)
	c := srDial(t, tt.URL, "graphql-transport-ws")
	rcSend(t, c, `{"type":"connection_init","payload":{"token":"t"}}`)
	rcExpect(t, c, `{"type":"connection_ack"}`)
	rcSend(t, c, `{"type":"subscribe","id":"1","payload":{"query":"subscription{a}"}}`,
		`{"id":"2","type":"subscribe","payload":{"query":"subscription{b}"}}`)
	rcExpect(t, c, `{"type":"next","id":"1","payload":{"data":{"conn":1}}}`, `{"type":"next","id":"2","payload":{"data":{"conn":1}}}`)
	rcSend(t, c, `{"type":"complete","id":"2"}`)
	g.waitConn(t, 1, 4)
	rcAcked(t, tt)

	b.restart()
	b.waitHandshake(2)
	// The first thing the client gets after the restart is the event of
	// the replayed subscription: no connection_ack, nothing for id 2.
	rcExpect(t, c, `{"type":"next","id":"1","payload":{"data":{"conn":2}}}`)
	if got, want := g.waitConn(t, 2, 2), []string{"connection_init:", "subscribe:1"}; !slices.Equal(got, want) {
		t.Fatalf("new connection got %q, want %q", got, want)
	}
	// The session goes on: a new subscription on the new connection.
	rcSend(t, c, `{"type":"subscribe","id":"3","payload":{"query":"subscription{c}"}}`)
	rcExpect(t, c, `{"type":"next","id":"3","payload":{"data":{"conn":2}}}`)
	if got := rcMetric(t, tt, "tether_replayed_messages_total"); got != 2 {
		t.Fatalf("tether_replayed_messages_total = %v, want 2", got)
	}
	if got := rcMetric(t, tt, "tether_resent_messages_total"); got != 0 {
		t.Fatalf("tether_resent_messages_total = %v, want 0 (everything was acknowledged)", got)
	}
}

// A subscribe not yet acknowledged when the upstream dies is re-sent once,
// after the replayed opening's answer, not replayed and re-sent twice.
func TestStateReplayHeldSubscribeOnce(t *testing.T) {
	t.Parallel()
	g := newSRGQL()
	b := srBackend(t, "graphql-transport-ws", g.handle)
	tt := rcStartTether(t, b.URL, proxy.Options{}, func(c *proxy.Config) {
		// No acknowledgement within the test (json mode sends no
		// acknowledgement pings): the subscribe is held.
		c.Session.UpstreamHeartbeat.Mode = heartbeat.ModeJSON
		c.Session.UpstreamHeartbeat.Interval = 10 * time.Second
		c.Session.UpstreamHeartbeat.Timeout = 30 * time.Second
	})
	c := srDial(t, tt.URL, "graphql-transport-ws")
	rcSend(t, c, `{"type":"connection_init"}`)
	rcExpect(t, c, `{"type":"connection_ack"}`)
	rcSend(t, c, `{"type":"subscribe","id":"1","payload":{}}`)
	rcExpect(t, c, `{"type":"next","id":"1","payload":{"data":{"conn":1}}}`)
	b.restart()
	b.waitHandshake(2)
	rcExpect(t, c, `{"type":"next","id":"1","payload":{"data":{"conn":2}}}`)
	if got, want := g.waitConn(t, 2, 2), []string{"connection_init:", "subscribe:1"}; !slices.Equal(got, want) {
		t.Fatalf("new connection got %q, want %q", got, want)
	}
	// Give a duplicate the time to arrive: a probe round trip after it.
	rcSend(t, c, `{"type":"subscribe","id":"9","payload":{}}`)
	rcExpect(t, c, `{"type":"next","id":"9","payload":{"data":{"conn":2}}}`)
	if got, want := g.conn(2), []string{"connection_init:", "subscribe:1", "subscribe:9"}; !slices.Equal(got, want) {
		t.Fatalf("new connection got %q, want %q", got, want)
	}
}

// An upstream that never answers the replayed opening: the attempt fails
// after TETHER_DIAL_TIMEOUT and the next connection (which answers) gets
// the state.
func TestStateReplayNoAnswerIsFailedAttempt(t *testing.T) {
	t.Parallel()
	g := newSRGQL()
	g.ack = func(n int) string {
		if n == 2 {
			return "" // silent
		}
		return `{"type":"connection_ack"}`
	}
	b := srBackend(t, "graphql-transport-ws", g.handle)
	tt := rcStartTether(t, b.URL, proxy.Options{}, func(c *proxy.Config) {
		c.DialTimeout = 300 * time.Millisecond
	})
	c := srDial(t, tt.URL, "graphql-transport-ws")
	rcSend(t, c, `{"type":"connection_init"}`)
	rcExpect(t, c, `{"type":"connection_ack"}`)
	rcSend(t, c, `{"type":"subscribe","id":"1","payload":{}}`)
	rcExpect(t, c, `{"type":"next","id":"1","payload":{"data":{"conn":1}}}`)
	rcAcked(t, tt)
	b.restart()
	b.waitHandshake(3)
	rcExpect(t, c, `{"type":"next","id":"1","payload":{"data":{"conn":3}}}`)
	if got := g.conn(2); !slices.Equal(got, []string{"connection_init:"}) {
		t.Fatalf("silent connection got %q, want the opening only", got)
	}
}

// An upstream that refuses the replayed opening (graphql-ws
// connection_error): the client gets the refusal as the backend sent it,
// then Close 1014, and tether dials no more.
func TestStateReplayRefused(t *testing.T) {
	t.Parallel()
	g := newSRGQL()
	g.ack = func(n int) string {
		if n == 2 {
			return `{"type":"connection_error","payload":{"message":"token expired"}}`
		}
		return `{"type":"connection_ack"}`
	}
	b := srBackend(t, "graphql-ws", g.handle)
	tt := rcStartTether(t, b.URL, proxy.Options{}, nil)
	c := srDial(t, tt.URL, "graphql-ws")
	rcSend(t, c, `{"type":"connection_init"}`)
	rcExpect(t, c, `{"type":"connection_ack"}`)
	rcSend(t, c, `{"type":"start","id":"1","payload":{}}`)
	rcExpect(t, c, `{"type":"next","id":"1","payload":{"data":{"conn":1}}}`) // data, in graphql-ws: the same here
	rcAcked(t, tt)
	b.restart()
	rcExpect(t, c, `{"type":"connection_error","payload":{"message":"token expired"}}`)
	rcExpectClose(t, c, 1014, "*")
	b.noHandshakeWithin(300 * time.Millisecond)
	if got := g.conn(2); !slices.Equal(got, []string{"connection_init:"}) {
		t.Fatalf("refusing connection got %q, want the opening only", got)
	}
}

// opaque, chosen by auto: an Engine.IO request (EIO= in the query) and a
// SignalR session (its handshake as the first message) get Close 1012 on
// an upstream loss instead of a silent swap; none (a plain session)
// reconnects.
func TestStateReplayOpaque(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, path, first string
		opaque            bool
	}{
		{"engine.io", "/socket.io/?EIO=4&transport=websocket", "40", true},
		{"signalr", "/hub", "{\"protocol\":\"json\",\"version\":1}\x1e", true},
		{"none", "/plain?x=1", "hello", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := rcNewBackend(t, nil) // echo
			tt := rcStartTether(t, b.URL, proxy.Options{}, nil)
			c := dial(t, tt.URL+tc.path, nil)
			rcSend(t, c, tc.first)
			rcExpect(t, c, tc.first)
			rcAcked(t, tt)
			b.restart()
			if tc.opaque {
				rcExpectClose(t, c, 1012, "*")
				b.noHandshakeWithin(300 * time.Millisecond)
				return
			}
			b.waitHandshake(2)
			rcSend(t, c, "after")
			rcExpect(t, c, "after")
		})
	}
}

// TETHER_REPLAY_PROTOCOL=opaque set explicitly: any session gets 1012.
func TestStateReplayOpaqueConfigured(t *testing.T) {
	t.Parallel()
	b := rcNewBackend(t, nil)
	tt := rcStartTether(t, b.URL, proxy.Options{}, func(c *proxy.Config) { c.Session.Replay.Protocol = replay.Opaque })
	c := dial(t, tt.URL, nil)
	rcSend(t, c, "x")
	rcExpect(t, c, "x")
	b.restart()
	rcExpectClose(t, c, 1012, "*")
}

// TETHER_REPLAY_MAX_BYTES: the subscribe that would pass it closes the
// client with 1013 and is not forwarded.
func TestStateReplayStateFull(t *testing.T) {
	t.Parallel()
	g := newSRGQL()
	b := srBackend(t, "graphql-transport-ws", g.handle)
	tt := rcStartTether(t, b.URL, proxy.Options{}, func(c *proxy.Config) { c.Session.Replay.MaxBytes = 100 })
	c := srDial(t, tt.URL, "graphql-transport-ws")
	rcSend(t, c, `{"type":"connection_init"}`)
	rcExpect(t, c, `{"type":"connection_ack"}`)
	rcSend(t, c, `{"type":"subscribe","id":"1","payload":{"query":"subscription{aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}"}}`)
	rcExpectClose(t, c, 1013, "*")
	if got := g.conn(1); !slices.Equal(got, []string{"connection_init:"}) {
		t.Fatalf("backend got %q, want the opening only", got)
	}
}

// README "Upstream loss, reconnect and the delivery guarantee": with the
// default 15 s upstream heartbeat, acknowledgement pings keep what a
// backend restart duplicates to about one round trip: sessions sending 10
// messages per second see at most two duplicates each.
func TestAckFewDuplicatesOnRestart(t *testing.T) {
	t.Parallel()
	rr := rcNewRecorder()
	b := rcNewBackend(t, func(b *rcBackend) { b.handle = rr.handle })
	tt := rcStartTether(t, b.URL, proxy.Options{}, func(c *proxy.Config) {
		c.Session.UpstreamHeartbeat.Interval = 15 * time.Second
		c.Session.UpstreamHeartbeat.Timeout = 45 * time.Second
	})
	const sessions, n = 5, 30
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	restart := make(chan struct{})
	for s := range sessions {
		c := dial(t, tt.URL, nil)
		wg.Go(func() {
			for i := range n {
				if i == n/2 && s == 0 {
					close(restart)
				}
				if err := c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(s)+":"+strconv.Itoa(i))); err != nil {
					errs <- err
					return
				}
				time.Sleep(100 * time.Millisecond) // the workload's pace: 10 msg/s
			}
		})
	}
	<-restart
	b.restart()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rcWaitAll(t, rr, sessions*n, 10*time.Second)
	rr.mu.Lock()
	defer rr.mu.Unlock()
	seen := map[string]int{}
	for _, msgs := range rr.byCon {
		for _, m := range msgs {
			seen[m]++
		}
	}
	total := 0
	for s := range sessions {
		dups := 0
		for i := range n {
			dups += seen[strconv.Itoa(s)+":"+strconv.Itoa(i)] - 1
		}
		if dups > 2 {
			t.Errorf("session %d: %d duplicates, want at most 2", s, dups)
		}
		total += dups
	}
	t.Logf("%d duplicates over %d sessions", total, sessions)
}

// srJSON is a backend of a custom JSON protocol: hello → welcome; watch
// (id) → watching (id), then one event naming the connection; unwatch
// (id) ends a watch. Every message is recorded per connection as type:id.
type srJSON struct{ *rcRecorder }

func (j *srJSON) handle(c *websocket.Conn, n int) {
	for {
		m, ok := j.readMsg(c, n)
		if !ok {
			return
		}
		var out []string
		switch m.Type {
		case "hello":
			out = []string{`{"type":"welcome"}`}
		case "watch":
			out = []string{`{"type":"watching","id":"` + m.ID + `"}`, `{"type":"event","id":"` + m.ID + `","conn":` + strconv.Itoa(n) + `}`}
		}
		for _, o := range out {
			if c.WriteMessage(websocket.TextMessage, []byte(o)) != nil {
				return
			}
		}
	}
}

// TETHER_REPLAY_PROTOCOL=json with rules for that protocol: after a
// backend restart the new connection gets hello and the live watch (not
// the ended one), in order; its welcome and watching never reach the
// client, its events do.
func TestStateReplayJSONRules(t *testing.T) {
	t.Parallel()
	j := &srJSON{rcNewRecorder()}
	b := rcNewBackend(t, func(b *rcBackend) { b.handle = j.handle })
	tt := rcStartTether(t, b.URL, proxy.Options{}, func(c *proxy.Config) {
		c.Session.Replay = replay.Config{Protocol: replay.JSON, JSONKeep: []string{"hello", "watch"}, JSONEnd: []string{"unwatch"},
			JSONReplies: []string{"welcome", "watching"}, JSONID: "id", MaxBytes: 1 << 16}
	})
	c := dial(t, tt.URL, nil)
	rcSend(t, c, `{"type":"hello","token":"t"}`)
	rcExpect(t, c, `{"type":"welcome"}`)
	rcSend(t, c, `{"type":"watch","id":"a"}`, `{"type":"watch","id":"b"}`)
	rcExpect(t, c, `{"type":"watching","id":"a"}`, `{"type":"event","id":"a","conn":1}`,
		`{"type":"watching","id":"b"}`, `{"type":"event","id":"b","conn":1}`)
	rcSend(t, c, `{"type":"unwatch","id":"b"}`)
	j.waitConn(t, 1, 4)
	rcAcked(t, tt)
	b.restart()
	b.waitHandshake(2)
	rcExpect(t, c, `{"type":"event","id":"a","conn":2}`)
	if got, want := j.waitConn(t, 2, 2), []string{"hello:", "watch:a"}; !slices.Equal(got, want) {
		t.Fatalf("new connection got %q, want %q", got, want)
	}
	// A new watch on the new connection is answered as usual.
	rcSend(t, c, `{"type":"watch","id":"c"}`)
	rcExpect(t, c, `{"type":"watching","id":"c"}`, `{"type":"event","id":"c","conn":2}`)
}
