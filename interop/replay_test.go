package interop

import (
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

// The state replay tests of README "State replay on upstream reconnect"
// against implementations nobody here wrote: the npm graphql-ws server and
// client (graphql-transport-ws), subscriptions-transport-ws server and
// client (graphql-ws) and socket.io server and client (opaque), run by
// replaynode/peers.js. Each backend is killed (SIGKILL: a crash, no Close)
// and started again on the same port while events flow.

var replayNodeCheck = sync.OnceValues(func() (string, string) {
	return nodeModuleCheck("replaynode", "graphql-ws", "state replay interop tests")
})

// startRPeer runs peers.js in the given mode with args.
func startRPeer(t *testing.T, name string, args ...string) *peer {
	t.Helper()
	return startPeer(t, name, "replaynode", nil, args...)
}

// crash kills the process without a goodbye, as a crashing backend.
func (p *peer) crash() {
	_ = p.proc.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *peer) command(t *testing.T, line string) {
	t.Helper()
	if _, err := p.stdin.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

// until reads events until match returns true, calling seen for each
// event read (the matching one included). It fails after 15 s.
func (p *peer) until(t *testing.T, what string, seen func(ev event), match func(ev event) bool) event {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				t.Fatalf("%s exited while the test waited for %s\nstderr:\n%s", p.name, what, p.stderr.String())
			}
			if seen != nil {
				seen(ev)
			}
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("%s: no %s within 15 s", p.name, what)
		}
	}
}

// evIs matches events of kind whose name, data and id (where given, not
// empty) start with those.
func evIs(kind string, name, data, id string) func(event) bool {
	return func(ev event) bool {
		return ev.Ev == kind && strings.HasPrefix(ev.Name, name) && strings.HasPrefix(ev.Data, data) && strings.HasPrefix(ev.ID, id)
	}
}

// startRServer starts a server mode of peers.js on port (0: any) as
// generation gen and returns it with its port.
func startRServer(t *testing.T, mode string, port, gen int) (*peer, int) {
	t.Helper()
	p := startRPeer(t, mode+" "+strconv.Itoa(gen), mode, strconv.Itoa(port), strconv.Itoa(gen))
	return p, p.until(t, "listening", nil, evIs("listening", "", "", "")).Port
}

// The GraphQL clients through tether with its defaults, the backend
// crashing and coming back while events flow: subscription a resumes with
// the new server's events, the completed b is not revived, the client
// hears of one connection only (no second connection_ack), and the new
// server sees one connection_init and one subscribe (a).
func TestReplayGraphQL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, server, client string }{
		{"graphql-ws library (graphql-transport-ws)", "gql-server", "gql-client"},
		{"subscriptions-transport-ws (graphql-ws)", "stws-server", "stws-client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv1, port := startRServer(t, tc.server, 0, 1)
			tt := startTether(t, "ws://127.0.0.1:"+strconv.Itoa(port), func(c *proxy.Config) {
				c.Session.Reconnect.InitialDelay = 50 * time.Millisecond
				c.Session.Reconnect.MaxDelay = 200 * time.Millisecond
			})
			cl := startRPeer(t, tc.client, tc.client, tt.URL)
			connected := 0
			count := func(ev event) {
				switch ev.Ev {
				case "connected", "reconnected":
					connected++
				case "complete":
					if ev.Name != "b" { // b: the client ended it
						t.Fatalf("client: %s", ev.line)
					}
				case "closed", "error", "unparsable":
					t.Fatalf("client: %s", ev.line)
				}
			}
			cl.until(t, "events of a and b from server 1", count, evIs("next", "b", "b:1:", ""))
			cl.until(t, "an event of a from server 1", count, evIs("next", "a", "a:1:", ""))
			ids := map[string]string{} // server 1's subscription ids by name
			for len(ids) < 2 {
				ev := srv1.until(t, "the subscribes", nil, evIs("subscribe", "", "", ""))
				ids[ev.Name] = ev.ID
			}
			cl.command(t, "complete b")
			srv1.until(t, "b completed", nil, evIs("complete", "", "", ids["b"]))
			// Drain b's events in flight, then nothing more of b.
			time.Sleep(100 * time.Millisecond)
			srv1.crash()
			srv2, _ := startRServer(t, tc.server, port, 2)
			bAfter := 0
			cl.until(t, "events of a from server 2", func(ev event) {
				count(ev)
				if evIs("next", "b", "", "")(ev) {
					bAfter++
				}
			}, evIs("next", "a", "a:2:", ""))
			// Some more of a from server 2, and still nothing of b.
			for range 5 {
				cl.until(t, "more of a", func(ev event) {
					count(ev)
					if evIs("next", "b", "b:2:", "")(ev) {
						t.Fatalf("completed subscription b revived: %s", ev.line)
					}
				}, evIs("next", "a", "a:2:", ""))
			}
			if connected != 1 {
				t.Fatalf("client heard of %d connections (connection_ack), want 1", connected)
			}
			if bAfter > 0 {
				t.Logf("%d events of b were in flight at the completion", bAfter)
			}
			srv2.until(t, "one connection", nil, evIs("connect", "", "", ""))
			sub := srv2.until(t, "the replayed subscribe", nil, evIs("subscribe", "", "", ""))
			if sub.Name != "a" {
				t.Fatalf("server 2 got %s, want the subscribe of a only", sub.line)
			}
			select {
			case ev := <-srv2.events:
				t.Fatalf("server 2 got %s after the replay, want nothing more", ev.line)
			case <-time.After(200 * time.Millisecond):
			}
			if got := testkit.Metric(t, tt.reg, "tether_replayed_messages_total"); got != 2 {
				t.Fatalf("tether_replayed_messages_total = %v, want 2 (the opening and a)", got)
			}
		})
	}
}

// socket.io behind tether with its defaults (auto: EIO= in the query is
// opaque): a crashing backend reaches the client as a close it recovers
// from by itself (Close 1012: "transport close"), never as a silent swap
// onto a server that never saw its namespace connect; the client's emits
// work again on the new server.
func TestReplaySocketIOOpaque(t *testing.T) {
	t.Parallel()
	srv1, port := startRServer(t, "sio-server", 0, 1)
	tt := startTether(t, "ws://127.0.0.1:"+strconv.Itoa(port), nil)
	cl := startRPeer(t, "sio-client", "sio-client", tt.URL)
	cl.until(t, "connected", nil, evIs("connected", "", "", ""))
	cl.until(t, "a tick from server 1", nil, evIs("tick", "", "1", ""))
	cl.command(t, "emit")
	cl.until(t, "the emit acknowledged by server 1", nil, evIs("emitted", "", "1:1", ""))
	srv1.crash()
	srv2, _ := startRServer(t, "sio-server", port, 2)
	dis := cl.until(t, "the disconnect", nil, evIs("disconnect", "", "", ""))
	if dis.Reason != "transport close" {
		t.Fatalf("disconnect %s, want transport close (tether's Close 1012)", dis.line)
	}
	if ev := cl.until(t, "the client's own reconnect", nil, evIs("connected", "", "", "")); ev.Recovered == nil || *ev.Recovered {
		t.Fatalf("reconnect %s: a crashed server cannot have recovered the session", ev.line)
	}
	cl.until(t, "a tick from server 2", nil, evIs("tick", "", "2", ""))
	cl.command(t, "emit")
	cl.until(t, "the emit acknowledged by server 2", func(ev event) {
		if ev.Ev == "emit-failed" {
			t.Fatalf("emit failed: %s", ev.line)
		}
	}, evIs("emitted", "", "2:2", ""))
	// Server 2 saw one Engine.IO connection, the client's own, which
	// connected its namespace: tether swapped nothing under the client.
	srv2.until(t, "the client's connection", nil, evIs("engine", "", "", ""))
	srv2.until(t, "its namespace connect", func(ev event) {
		if ev.Ev == "engine" {
			t.Fatalf("server 2 got a second Engine.IO connection before the namespace connect: a silent swap")
		}
	}, evIs("connect", "", "", ""))
	select {
	case ev := <-srv2.events:
		t.Fatalf("server 2 got %s, want nothing more", ev.line)
	case <-time.After(100 * time.Millisecond):
	}
}

// socket.io behind tether with client heartbeats in `both` mode (README
// "Heartbeats"): an Engine.IO client reads a JSON ping as a bad packet
// and closes ("parser error"), so its session gets RFC pings only, which
// the browser's (here Node's) WebSocket answers by itself; the client stays
// connected through many heartbeat intervals.
func TestSocketIOClientHeartbeats(t *testing.T) {
	t.Parallel()
	_, port := startRServer(t, "sio-server", 0, 1)
	tt := startTether(t, "ws://127.0.0.1:"+strconv.Itoa(port), func(c *proxy.Config) {
		c.Session.ClientHeartbeat = heartbeat.Config{Mode: heartbeat.ModeBoth, Interval: 100 * time.Millisecond, Timeout: 10 * time.Second}
	})
	cl := startRPeer(t, "sio-client", "sio-client", tt.URL)
	cl.until(t, "connected", nil, evIs("connected", "", "", ""))
	for range 4 { // every 10th tick is reported: about 2 s, 20 heartbeats
		cl.until(t, "ticks", func(ev event) {
			if ev.Ev == "disconnect" || ev.Ev == "connected" {
				t.Fatalf("%s while tether sent client heartbeats", ev.line)
			}
		}, evIs("tick", "", "1", ""))
	}
	if got := testkit.Metric(t, tt.reg, "tether_heartbeat_pings_sent_total", "leg=client"); got < 10 {
		t.Fatalf("%v client pings sent, want at least 10 (the heartbeat ran)", got)
	}
}
