package interop

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "node not found on PATH; install it with `apt-get install -y nodejs` to run the state replay interop tests"
	}
	if _, err := os.Stat(filepath.Join("replaynode", "node_modules", "graphql-ws", "package.json")); err != nil {
		return "", "interop/replaynode/node_modules missing; run `(cd interop/replaynode && npm ci --no-audit --no-fund)` to run the state replay interop tests"
	}
	return node, ""
})

// rpeer is a running peers.js process; its events are JSON objects.
type rpeer struct {
	name   string
	cmd    *exec.Cmd
	stdin  interface{ Write([]byte) (int, error) }
	events chan map[string]any // closed when stdout ends
	stderr *testkit.LockedBuffer
	done   chan struct{}
}

func startRPeer(t *testing.T, name string, args ...string) *rpeer {
	t.Helper()
	node, why := replayNodeCheck()
	if why != "" {
		testkit.Missing(t, why)
	}
	cmd := exec.Command(node, append([]string{filepath.Join("replaynode", "peers.js")}, args...)...)
	p := &rpeer{name: name, cmd: cmd, events: make(chan map[string]any, 4096), stderr: &testkit.LockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				ev = map[string]any{"ev": "unparsable", "line": sc.Text()}
			}
			p.events <- ev
		}
		close(p.events)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

// crash kills the process without a goodbye, as a crashing backend.
func (p *rpeer) crash() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *rpeer) command(t *testing.T, line string) {
	t.Helper()
	if _, err := p.stdin.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

// until reads events until match returns true, calling seen for each
// event read (the matching one included). It fails after 15 s.
func (p *rpeer) until(t *testing.T, what string, seen func(ev map[string]any), match func(ev map[string]any) bool) map[string]any {
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

func evIs(kind string, kv ...string) func(map[string]any) bool {
	return func(ev map[string]any) bool {
		if ev["ev"] != kind {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if s, _ := ev[kv[i]].(string); !strings.HasPrefix(s, kv[i+1]) {
				return false
			}
		}
		return true
	}
}

// startRServer starts a server mode of peers.js on port (0: any) as
// generation gen and returns it with its port.
func startRServer(t *testing.T, mode string, port, gen int) (*rpeer, int) {
	t.Helper()
	p := startRPeer(t, mode+" "+strconv.Itoa(gen), mode, strconv.Itoa(port), strconv.Itoa(gen))
	ev := p.until(t, "listening", nil, evIs("listening"))
	return p, int(ev["port"].(float64))
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
			count := func(ev map[string]any) {
				switch ev["ev"] {
				case "connected", "reconnected":
					connected++
				case "complete":
					if ev["name"] != "b" { // b: the client ended it
						t.Fatalf("client: %v", ev)
					}
				case "closed", "error", "unparsable":
					t.Fatalf("client: %v", ev)
				}
			}
			cl.until(t, "events of a and b from server 1", count, evIs("next", "name", "b", "data", "b:1:"))
			cl.until(t, "an event of a from server 1", count, evIs("next", "name", "a", "data", "a:1:"))
			ids := map[string]string{} // server 1's subscription ids by name
			for len(ids) < 2 {
				ev := srv1.until(t, "the subscribes", nil, evIs("subscribe"))
				ids[ev["name"].(string)] = ev["id"].(string)
			}
			cl.command(t, "complete b")
			srv1.until(t, "b completed", nil, evIs("complete", "id", ids["b"]))
			// Drain b's events in flight, then nothing more of b.
			time.Sleep(100 * time.Millisecond)
			srv1.crash()
			srv2, _ := startRServer(t, tc.server, port, 2)
			bAfter := 0
			cl.until(t, "events of a from server 2", func(ev map[string]any) {
				count(ev)
				if evIs("next", "name", "b")(ev) {
					bAfter++
				}
			}, evIs("next", "name", "a", "data", "a:2:"))
			// Some more of a from server 2, and still nothing of b.
			for range 5 {
				cl.until(t, "more of a", func(ev map[string]any) {
					count(ev)
					if evIs("next", "name", "b", "data", "b:2:")(ev) {
						t.Fatalf("completed subscription b revived: %v", ev)
					}
				}, evIs("next", "name", "a", "data", "a:2:"))
			}
			if connected != 1 {
				t.Fatalf("client heard of %d connections (connection_ack), want 1", connected)
			}
			if bAfter > 0 {
				t.Logf("%d events of b were in flight at the completion", bAfter)
			}
			srv2.until(t, "one connection", nil, evIs("connect"))
			sub := srv2.until(t, "the replayed subscribe", nil, evIs("subscribe"))
			if sub["name"] != "a" {
				t.Fatalf("server 2 got subscribe %v, want a only", sub)
			}
			select {
			case ev := <-srv2.events:
				t.Fatalf("server 2 got %v after the replay, want nothing more", ev)
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
	cl.until(t, "connected", nil, evIs("connected"))
	cl.until(t, "a tick from server 1", nil, evIs("tick", "data", "1"))
	cl.command(t, "emit")
	cl.until(t, "the emit acknowledged by server 1", nil, evIs("emitted", "data", "1:1"))
	srv1.crash()
	srv2, _ := startRServer(t, "sio-server", port, 2)
	dis := cl.until(t, "the disconnect", nil, evIs("disconnect"))
	if dis["reason"] != "transport close" {
		t.Fatalf("disconnect %v, want transport close (tether's Close 1012)", dis)
	}
	if ev := cl.until(t, "the client's own reconnect", nil, evIs("connected")); ev["recovered"] != false {
		t.Fatalf("reconnect %v: a crashed server cannot have recovered the session", ev)
	}
	cl.until(t, "a tick from server 2", nil, evIs("tick", "data", "2"))
	cl.command(t, "emit")
	cl.until(t, "the emit acknowledged by server 2", func(ev map[string]any) {
		if ev["ev"] == "emit-failed" {
			t.Fatalf("emit failed: %v", ev)
		}
	}, evIs("emitted", "data", "2:2"))
	// Server 2 saw one Engine.IO connection, the client's own, which
	// connected its namespace: tether swapped nothing under the client.
	srv2.until(t, "the client's connection", nil, evIs("engine"))
	srv2.until(t, "its namespace connect", func(ev map[string]any) {
		if ev["ev"] == "engine" {
			t.Fatalf("server 2 got a second Engine.IO connection before the namespace connect: a silent swap")
		}
	}, evIs("connect"))
	select {
	case ev := <-srv2.events:
		t.Fatalf("server 2 got %v, want nothing more", ev)
	case <-time.After(100 * time.Millisecond):
	}
}
