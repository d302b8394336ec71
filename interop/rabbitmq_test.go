package interop

import (
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

// rabbit is a RabbitMQ broker (Debian's rabbitmq-server) with its
// Web-STOMP and Web-MQTT plugins on loopback, run in the foreground in a
// directory of its own so that it can be killed and started again with
// the same state and ports.
type rabbit struct {
	t                 *testing.T
	dir, node         string
	stomp, mqtt, dist int
	cmd               *exec.Cmd
	out               *testkit.LockedBuffer
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// rabbitSeq makes each broker's node name unique within the process (a
// test run with -count above 1 starts a new broker while epmd may still
// hold the name of the one killed before).
var rabbitSeq atomic.Int32

func startRabbit(t *testing.T) *rabbit {
	t.Helper()
	if _, err := exec.LookPath("rabbitmq-server"); err != nil {
		testkit.Missing(t, "rabbitmq-server not found; install it with `apt-get install -y --no-install-recommends rabbitmq-server` to run the RabbitMQ Web-STOMP/Web-MQTT replay tests")
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		testkit.Missing(t, "no rabbitmq user; install `rabbitmq-server` to run the RabbitMQ replay tests")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	// As root the script drops to the rabbitmq user: everything it
	// writes is in a directory that user owns.
	dir, err := os.MkdirTemp("", "tether-rabbitmq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	r := &rabbit{t: t, dir: dir, node: "tethertest" + strconv.Itoa(os.Getpid()) + "x" + strconv.Itoa(int(rabbitSeq.Add(1))) + "@" + host,
		stomp: freePort(t), mqtt: freePort(t), dist: freePort(t)}
	conf := "listeners.tcp = none\nloopback_users = none\nstomp.listeners.tcp = none\nmqtt.listeners.tcp = none\n" +
		"web_stomp.tcp.ip = 127.0.0.1\nweb_stomp.tcp.port = " + strconv.Itoa(r.stomp) + "\n" +
		"web_mqtt.tcp.ip = 127.0.0.1\nweb_mqtt.tcp.port = " + strconv.Itoa(r.mqtt) + "\n"
	for name, body := range map[string]string{"rabbitmq.conf": conf, "enabled_plugins": "[rabbitmq_web_stomp,rabbitmq_web_mqtt].\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"mnesia", "log", "home"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Chmod(dir, 0o755)
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, uid, gid) })
	r.start()
	t.Cleanup(r.kill)
	return r
}

// start runs the broker and waits until both plugins listen (about 12 s).
func (r *rabbit) start() {
	r.t.Helper()
	d := r.dir
	cmd := exec.Command("rabbitmq-server")
	cmd.Dir = d
	cmd.Env = append(os.Environ(),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(d, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(d, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(d, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(d, "log"),
		"RABBITMQ_FEATURE_FLAGS_FILE="+filepath.Join(d, "feature_flags"),
		"RABBITMQ_NODENAME="+r.node,
		"RABBITMQ_DIST_PORT="+strconv.Itoa(r.dist),
		"HOME="+filepath.Join(d, "home"))
	r.out = &testkit.LockedBuffer{}
	cmd.Stdout, cmd.Stderr = r.out, r.out
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd = cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(90 * time.Second)
	for _, port := range []int{r.stomp, r.mqtt} {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				r.t.Fatalf("rabbitmq-server exited:\n%s", r.out.String())
			case <-time.After(200 * time.Millisecond): // polling: the broker says nothing when it listens
			}
			if time.Now().After(deadline) {
				r.t.Fatalf("rabbitmq-server not listening within 90 s:\n%s", r.out.String())
			}
		}
	}
}

// kill kills the broker at once (a crash: no goodbye to any client): every
// process started under the script (su starts a session of its own, so
// its process group is not the script's).
func (r *rabbit) kill() {
	if r.cmd == nil {
		return
	}
	pids := []int{r.cmd.Process.Pid}
	for i := 0; i < len(pids); i++ {
		pids = append(pids, children(pids[i])...)
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	r.cmd = nil
}

// children lists the processes whose parent is pid (from /proc).
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == strconv.Itoa(pid) {
				out = append(out, p)
			}
		}
	}
	return out
}

// RabbitMQ with Web-STOMP and Web-MQTT behind tether with its defaults
// (auto picks stomp and mqtt from the subprotocols the clients offer), but
// client heartbeats every 100 ms: the @stomp/stompjs and mqtt.js clients
// subscribe to a and b, drop b, the broker crashes and comes back; messages
// published to a after the restart reach the clients, none of b does,
// neither client hears of a second connection (CONNECTED, CONNACK), and an
// MQTT QoS 1 publish completes. All along, MQTT flows both ways at QoS 1
// and 2 (the publisher's to a and b, the client's to c and d, acknowledged
// after the restart too), the STOMP client sends 4,000-byte messages with
// receipts to c, each cut into seventeen messages (@stomp/stompjs's
// splitLargeFrames; receipted after the restart too, so acknowledgements
// keep coming for a stream of cut frames; a re-send that starts inside a
// frame, rare on loopback where a frame's chunks arrive in one read, is
// TestStateReplayResendStartsAtPacket's), and no client reports an
// error: a JSON ping would
// be a malformed packet to mqtt.js ("Invalid header flag bits, must be 0x0
// for pubcomp packet") and would eat the next STOMP frame, a gap in a's
// messages (README "Heartbeats").
func TestReplayRabbitMQ(t *testing.T) {
	t.Parallel()
	r := startRabbit(t)
	for _, tc := range []struct {
		name        string
		port        int
		client, pub string
		mqtt        bool
	}{
		{"stomp", r.stomp, "stomp-client", "stomp-pub", false},
		{"mqtt", r.mqtt, "mqtt-client", "mqtt-pub", true},
	} {
		url := "ws://127.0.0.1:" + strconv.Itoa(tc.port) + "/ws"
		tt := startTether(t, url, func(c *proxy.Config) {
			c.Session.Reconnect.MaxDelay = time.Second
			c.Session.Reconnect.MaxAttempts = 0
			c.Session.ClientHeartbeat.Interval = 100 * time.Millisecond
			c.Session.ClientHeartbeat.Timeout = 10 * time.Second
		})
		pub := startRPeer(t, tc.pub, tc.pub, url)
		pub.until(t, "the publisher's connection", nil, evIs("connected", "", "1", ""))
		cl := startRPeer(t, tc.client, tc.client, tt.URL)
		connected, acked := 0, map[string]int{}
		last := -1        // the index of the last a:1: message, while they come in a row
		var seen []string // the client's events, for a failure's message
		watch := func(ev event) {
			seen = append(seen, ev.line)
			switch {
			case ev.Ev == "connected":
				connected++
			case ev.Ev == "error" && strings.HasPrefix(ev.Data, "There is no current subscription with tag"):
				// RabbitMQ 3.10 Web-STOMP: a delivery to b that raced
				// its UNSUBSCRIBE gets an ERROR "Subscription not found"
				// of its own (the broker's, seen once under load; the
				// connection stays).
			case ev.Ev == "closed" || ev.Ev == "error":
				t.Fatalf("%s: %s", tc.name, ev.line)
			case ev.Ev == "acked":
				acked[ev.Name], _ = strconv.Atoi(ev.Data)
			case evIs("message", "a", "a:1:", "")(ev) && last >= -1:
				i, _ := strconv.Atoi(strings.TrimPrefix(ev.Data, "a:1:"))
				if last >= 0 && i != last+1 {
					t.Fatalf("%s: a:1:%d after a:1:%d: a message lost; the client's last events:\n%s",
						tc.name, i, last, strings.Join(seen[max(0, len(seen)-80):], "\n"))
				}
				last = i
			}
		}
		cl.until(t, tc.name+": connected", watch, evIs("connected", "", "", ""))
		cl.command(t, "flow")
		cl.until(t, tc.name+": a message of b", watch, evIs("message", "b", "b:1:", ""))
		cl.until(t, tc.name+": a message of a", watch, evIs("message", "a", "a:1:", ""))
		// A second of a's messages in a row: ten client heartbeats.
		for range 20 {
			cl.until(t, tc.name+": messages of a", watch, evIs("message", "a", "a:1:", ""))
		}
		last = -2 // the broker's loss may cut the row
		cl.command(t, "unsubscribe b")
		cl.until(t, tc.name+": b unsubscribed", watch, evIs("unsubscribed", "", "", ""))
		connected = 0
		defer func() {
			// After the restart.
			if t.Failed() {
				return // the broker was not restarted
			}
			watchB := func(ev event) {
				watch(ev)
				if evIs("message", "b", "b:2:", "")(ev) {
					t.Fatalf("%s: unsubscribed b revived: %s", tc.name, ev.line)
				}
			}
			for range 5 {
				cl.until(t, tc.name+": messages of a published after the restart", watchB, evIs("message", "a", "a:2:", ""))
			}
			if connected != 0 {
				t.Fatalf("%s: the client heard of %d more connections, want none", tc.name, connected)
			}
			flows := []string{"c"}
			if tc.mqtt {
				cl.command(t, "publish")
				cl.until(t, tc.name+": the QoS 1 publish acknowledged", watchB, evIs("published", "", "", ""))
				flows = append(flows, "d")
			}
			// The flow's messages after the restart are acknowledged
			// (MQTT PUBACK/PUBCOMP, STOMP RECEIPT).
			for _, name := range flows {
				from := acked[name]
				cl.until(t, tc.name+": "+name+" acknowledged after the restart", watchB, func(ev event) bool {
					return ev.Ev == "acked" && ev.Name == name && acked[name] >= from+20
				})
			}
			// The opening is always replayed; the SUBSCRIBE of a is
			// replayed too unless it was still unacknowledged at the kill
			// (an acknowledgement ping is a few ms away, and MQTT
			// messages are acknowledged only up to a packet boundary):
			// then it goes once from the re-sent messages instead. Either
			// way a's messages arrive above.
			if got := testkit.Metric(t, tt.reg, "tether_replayed_messages_total"); got < 1 || got > 2 {
				t.Errorf("%s: tether_replayed_messages_total = %v, want 1 or 2 (the opening, and a unless it was re-sent)", tc.name, got)
			}
		}()
	}
	r.kill()
	r.start()
}
