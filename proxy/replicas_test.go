package proxy_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

// haproxyCookie is the HAProxy configuration's affinity line (README
// "Running many replicas"); tests remove it to show what it does.
const haproxyCookie = "cookie SRV insert indirect nocache"

// startHAProxy runs Debian's HAProxy in the foreground, balancing round
// robin over the given tethers, server tN with cookie value tN, and
// returns its address. affinity adds haproxyCookie.
func startHAProxy(t *testing.T, tethers []string, affinity bool) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		testkit.Missing(t, "haproxy is not installed (apt-get install haproxy)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `global
	maxconn 1000
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	timeout tunnel 1h
frontend fe
	bind %s
	default_backend tethers
backend tethers
	balance roundrobin
`, addr)
	if affinity {
		fmt.Fprintf(&cfg, "\t%s\n", haproxyCookie)
	}
	for i, a := range tethers {
		fmt.Fprintf(&cfg, "\tserver t%d %s cookie t%d\n", i, a, i)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var out testkit.LockedBuffer
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// HAProxy says nothing when it listens: poll its port until it
	// accepts, or it exits.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("haproxy exited (%v): %s", err, out.String())
		case <-deadline:
			t.Fatalf("haproxy does not listen on %s after 10 s: %s", addr, out.String())
		case <-tick.C:
		}
	}
}

// lbCookie is the balancer's SRV cookie in a handshake response, "" if
// none.
func lbCookie(h http.Header) string {
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == "SRV" {
			return c.Value
		}
	}
	return ""
}

// newJarClient is a resumable client behind the balancer at addr that
// keeps its cookies, as a browser does.
func newJarClient(t *testing.T, addr string) (*resumeClient, *cookiejar.Jar) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := newResumeClient(t, "ws://"+addr, "")
	rc.dialer = &websocket.Dialer{Jar: jar, HandshakeTimeout: 10 * time.Second}
	return rc, jar
}

// TestReplicasCookieAffinity: three tethers behind HAProxy balancing round
// robin with cookie affinity (README "Running many replicas"). A client
// that keeps its cookies resumes on the replica that holds its session
// through every drop, nothing lost or doubled either way, one backend
// connection; a client whose resume carries another replica's cookie gets
// resumed:false there at once and a working new session.
func TestReplicasCookieAffinity(t *testing.T) {
	testReplicas(t, true)
}

// startReplicas starts three tethers in front of one numbered backend and
// HAProxy over them.
func startReplicas(t *testing.T, affinity bool) (nb *numberedBackend, tethers []*tether, lb string) {
	nb = newNumberedBackend(t)
	tethers = make([]*tether, 3)
	addrs := make([]string, 3)
	for i := range tethers {
		// No spread of the closes when the test ends: nothing here drains.
		tethers[i] = startTether(t, nb.URL, func(c *proxy.Config) { c.ShutdownSpread = 0 })
		addrs[i] = tethers[i].Addr
	}
	return nb, tethers, startHAProxy(t, addrs, affinity)
}

func testReplicas(t *testing.T, affinity bool) {
	nb, tethers, lb := startReplicas(t, affinity)
	relay := newRelay(t, lb) // drops are resets between client and HAProxy
	rc, _ := newJarClient(t, relay.Addr())
	rc.open()
	// HAProxy inserts its cookie into the 101 of the WebSocket upgrade.
	owner := slices.Index([]string{"t0", "t1", "t2"}, lbCookie(rc.hdr))
	if owner < 0 {
		t.Fatalf("the 101 response sets no SRV cookie of a replica: Set-Cookie %q", rc.hdr.Values("Set-Cookie"))
	}

	const n, drops = 300, 12
	dropped := 0
	rc.stream(n, func(k int) {
		if k%20 == 10 && dropped < drops {
			dropped++
			relay.ResetAll()
		}
	}, "")
	if dropped != drops {
		t.Fatalf("%d drops, want %d", dropped, drops)
	}
	got := nb.received()
	if len(got) != 1 {
		t.Fatalf("the backend saw %d connections, want 1", len(got))
	}
	checkNumbered(t, got[0], n, "c")
	for i, tt := range tethers {
		resumed := metric(t, tt, "tether_client_resumes_total", "result=resumed")
		refused := metric(t, tt, "tether_client_resumes_total", "result=refused")
		want := 0.0
		if i == owner {
			want = drops
		}
		if resumed < want || (i != owner && resumed != 0) || refused != 0 {
			t.Errorf("replica t%d: %v resumed, %v refused; the owner is t%d, %d drops", i, resumed, refused, owner, drops)
		}
	}

	// A resume that reaches another replica: the client carries the
	// cookie of the next one.
	rc2, jar2 := newJarClient(t, lb)
	rc2.open()
	owner2 := slices.Index([]string{"t0", "t1", "t2"}, lbCookie(rc2.hdr))
	if owner2 < 0 {
		t.Fatalf("no SRV cookie for the second client: Set-Cookie %q", rc2.hdr.Values("Set-Cookie"))
	}
	rc2.stream(20, nil, "")
	other := (owner2 + 1) % 3
	refusedBefore := metric(t, tethers[other], "tether_client_resumes_total", "result=refused")
	jar2.SetCookies(&url.URL{Scheme: "http", Host: lb, Path: "/"}, []*http.Cookie{{Name: "SRV", Value: fmt.Sprintf("t%d", other)}})
	_ = rc2.c.UnderlyingConn().Close() // a drop: no Close frame
	start := time.Now()
	if rc2.resume("") {
		t.Fatalf("a resume on replica t%d (the session is on t%d) said resumed:true", other, owner2)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the refused resume took %v", d)
	}
	if v := metric(t, tethers[other], "tether_client_resumes_total", "result=refused"); v != refusedBefore+1 {
		t.Errorf("replica t%d refused %v resumes, want %v", other, v, refusedBefore+1)
	}
	// It resyncs: a new session on that replica carries messages both ways.
	rc2.stream(20, nil, "")
}

// TestReplicasWithoutAffinity: behind round robin with no affinity, a
// client that drops and resumes again and again gets, each time, either
// its session back (it reached the owner) or "resumed":false and a working
// new session, within a bounded time: never an error or a hang. One client
// alone cycles through the three replicas, so its resumes land elsewhere.
func TestReplicasWithoutAffinity(t *testing.T) {
	_, tethers, lb := startReplicas(t, false)
	rc, _ := newJarClient(t, lb)
	rc.open()
	if c := lbCookie(rc.hdr); c != "" {
		t.Fatalf("HAProxy without a cookie line set the cookie %q", c)
	}
	const drops = 6
	refused := 0
	for i := range drops {
		// A round trip on the current session, then a drop without a
		// Close frame.
		if err := rc.send("c" + strconv.Itoa(len(rc.sent))); err != nil {
			t.Fatal(err)
		}
		if _, err := rc.next(5 * time.Second); err != nil {
			t.Fatalf("drop %d: no answer on a live session: %v", i, err)
		}
		_ = rc.c.UnderlyingConn().Close()
		start := time.Now()
		if !rc.resume("") {
			refused++
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("drop %d: the resume took %v", i, d)
		}
	}
	// The last session, resumed or new, still carries messages both ways.
	if err := rc.send("c" + strconv.Itoa(len(rc.sent))); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.next(5 * time.Second); err != nil {
		t.Fatalf("no answer after the last resume: %v", err)
	}
	var metricRefused float64
	for _, tt := range tethers {
		metricRefused += metric(t, tt, "tether_client_resumes_total", "result=refused")
	}
	if refused == 0 || float64(refused) != metricRefused {
		t.Fatalf("%d of %d resumes refused (the replicas count %v): round robin without affinity must send some elsewhere", refused, drops, metricRefused)
	}
	checkNumbered(t, rc.data(), len(rc.sent), "u")
}
