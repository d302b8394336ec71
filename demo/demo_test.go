package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

// loopback is the address every test listener binds.
const loopback = "127.0.0.1:0"

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, p, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("read: message type %d, want text", typ)
	}
	return string(p)
}

func TestBackendEchoesAndRestartsOnTheSamePort(t *testing.T) {
	t.Parallel()
	b := NewBackend(nil)
	t.Cleanup(b.Close)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()

	c := dial(t, b.URL())
	if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c); got != "hello" {
		t.Errorf("echo = %q, want hello", got)
	}
	bin := []byte{0, 1, 2, 255}
	if err := c.WriteMessage(websocket.BinaryMessage, bin); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, p, err := c.ReadMessage()
	if err != nil || typ != websocket.BinaryMessage || !bytes.Equal(p, bin) {
		t.Errorf("binary echo = %d %v %v, want %v", typ, p, err, bin)
	}
	pong := make(chan string, 1)
	c.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("after ping")); err != nil {
		t.Fatal(err)
	}
	readText(t, c) // runs the pong handler on the way
	select {
	case s := <-pong:
		if s != "p1" {
			t.Errorf("pong payload %q, want p1", s)
		}
	default:
		t.Error("no pong for the RFC ping")
	}

	if err := b.Restart(t.Context(), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Error("the old connection survived the restart")
	} else if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
		t.Errorf("the old connection got a clean Close (%v), want an abrupt end", err)
	}
	if b.Addr() != addr {
		t.Errorf("address after restart %s, want %s", b.Addr(), addr)
	}
	c2 := dial(t, b.URL())
	if err := c2.WriteMessage(websocket.TextMessage, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c2); got != "again" {
		t.Errorf("echo after restart = %q", got)
	}
	st := b.Stats()
	if st.State != StateRunning || st.Connections != 2 || st.Restarts != 1 || st.Messages != 4 || st.Pings != 1 || st.Active != 1 {
		t.Errorf("stats = %+v", st)
	}

	b.Stop()
	if st := b.Stats(); st.State != StateStopped || st.Active != 0 {
		t.Errorf("stats after Stop = %+v", st)
	}
	b.Close()
	if err := b.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestPageServer(t *testing.T) {
	t.Parallel()
	b := NewBackend(nil)
	t.Cleanup(b.Close)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	cfg := PageConfig{Tether: TetherEndpoint{Port: 8080, Path: "/"}, Client: defaultClient}
	srv := httptest.NewServer(pageHandler(cfg, b, 10*time.Millisecond))
	t.Cleanup(srv.Close)

	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp, string(body)
	}
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `id="conn-status"`},
		{"/demo.js", "text/javascript", "TetherClient"},
		{"/demo.css", "text/css", ".badge"},
		{"/tether.js", "text/javascript", "export class TetherClient"},
		{"/tether.d.ts", "text/plain", "export declare class TetherClient"},
		{"/config.json", "application/json", `"pingInterval":5000`},
		{"/api/backend", "application/json", `"state":"running"`},
	} {
		resp, body := get(tc.path)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: %d %q, body contains %q: %v", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.contains, strings.Contains(body, tc.contains))
		}
	}
	if resp, _ := get("/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: %d", resp.StatusCode)
	}
	if resp, _ := get("/api/backend/restart"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/backend/restart: %d, want 405", resp.StatusCode)
	}

	post := func(path, origin string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/api/backend/stop", "http://evil.example"); code != http.StatusForbidden {
		t.Errorf("cross-origin stop: %d, want 403", code)
	}
	if code := post("/api/backend/stop", srv.URL); code != http.StatusOK || b.Stats().State != StateStopped {
		t.Errorf("stop: %d, state %s", code, b.Stats().State)
	}
	if code := post("/api/backend/start", ""); code != http.StatusOK || b.Stats().State != StateRunning {
		t.Errorf("start: %d, state %s", code, b.Stats().State)
	}
	if code := post("/api/backend/restart", ""); code != http.StatusAccepted {
		t.Errorf("restart: %d, want 202", code)
	}
	waitFor(t, 5*time.Second, "backend restarted", func() bool {
		st := b.Stats()
		return st.Restarts == 1 && st.State == StateRunning
	})
}

func TestEndpointFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr string
		want TetherEndpoint
	}{
		{"0.0.0.0:8080", TetherEndpoint{Port: 8080, Path: "/"}},
		{"[::]:8080", TetherEndpoint{Port: 8080, Path: "/"}},
		{"127.0.0.1:9", TetherEndpoint{Host: "127.0.0.1", Port: 9, Path: "/"}},
		{"[::1]:9", TetherEndpoint{Host: "[::1]", Port: 9, Path: "/"}},
	} {
		if got := endpointFor(fakeAddr(tc.addr)); got != tc.want {
			t.Errorf("endpointFor(%s) = %+v, want %+v", tc.addr, got, tc.want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// startDemo starts a demo on loopback ports and closes it at cleanup.
func startDemo(t *testing.T, tune ...func(*Tuning)) *Demo {
	t.Helper()
	var out testkit.LockedBuffer
	d, err := Start(t.Context(), Options{ListenAddr: loopback, AdminAddr: loopback, PageAddr: loopback, Out: &out}, tune...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("demo close: %v", err)
		}
	})
	if !strings.Contains(out.String(), "open "+d.PageURL()) {
		t.Errorf("banner does not say what to open:\n%s", out.String())
	}
	return d
}

// fastTether makes tether's heartbeats and reconnects quick and its
// backoff deterministic (the middle of each jitter range).
func fastTether(tn *Tuning) {
	c := &tn.Tether.Session
	// Frequent pings, generous timeouts: a loaded CI machine must not turn
	// a slow pong into a reconnect (and its duplicates). Restarts are
	// noticed at once anyway, from the TCP reset.
	c.ClientHeartbeat.Interval = 500 * time.Millisecond
	c.ClientHeartbeat.Timeout = 10 * time.Second
	c.UpstreamHeartbeat.Interval = 200 * time.Millisecond
	c.UpstreamHeartbeat.Timeout = 10 * time.Second
	c.Reconnect.InitialDelay = 100 * time.Millisecond
	c.Reconnect.MaxDelay = 500 * time.Millisecond
	c.Reconnect.MaxAttempts = 10 // about 2.1 s of attempts with the jitter below
	tn.Tether.ShutdownSpread = 0
	tn.Jitter = func(n int64) int64 { return n / 2 }
}

func TestDemoThroughTether(t *testing.T) {
	t.Parallel()
	d := startDemo(t, fastTether, func(tn *Tuning) { tn.RestartPause = 200 * time.Millisecond })

	c := dial(t, d.TetherURL())
	var mu sync.Mutex // gorilla allows one concurrent writer
	write := func(s string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if err := c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	// next returns the next message that is not one of tether's pings
	// (which it answers, as tether.js does).
	next := func() string {
		t.Helper()
		for {
			m := readText(t, c)
			if strings.HasPrefix(m, `{"type":"ping"`) {
				write(strings.Replace(m, `"ping"`, `"pong"`, 1))
				continue
			}
			return m
		}
	}
	write("hello")
	if got := next(); got != "hello" {
		t.Fatalf("echo through tether = %q", got)
	}
	write(`{"type":"ping","id":1}`)
	if got := next(); got != `{"type":"pong","id":1}` {
		t.Errorf("tether's answer to a JSON ping = %q", got)
	}

	// Messages not yet acknowledged by an upstream heartbeat round trip would be
	// re-sent after the restart (README "Upstream loss, reconnect and the delivery
	// guarantee"); wait for one.
	waitAcked(t, d)
	d.Backend.RestartAsync(200 * time.Millisecond)
	if got := next(); !strings.Contains(got, `"status":"reconnecting"`) {
		t.Fatalf("after a backend restart got %q, want an upstream reconnecting status", got)
	}
	write("while down")
	// tether sends "connected" after re-sending the buffer, so the echo
	// may come first.
	var connected, echoed bool
	for !connected || !echoed {
		switch got := next(); {
		case strings.Contains(got, `"status":"reconnecting"`):
		case got == `{"type":"upstream","status":"connected"}` && !connected:
			connected = true
		case got == "while down" && !echoed:
			echoed = true
		default:
			t.Fatalf("got %q, want upstream connected and the buffered message's echo, once each", got)
		}
	}
	if st := d.Backend.Stats(); st.Connections != 2 {
		t.Errorf("backend connections = %d, want 2", st.Connections)
	}

	// Shutdown drains: the client gets 1012 (and answers the Close while
	// reading, so the drain need not wait).
	closed := make(chan error, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				closed <- err
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; !websocket.IsCloseError(err, websocket.CloseServiceRestart) {
		t.Errorf("after Close: %v, want close 1012", err)
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	var out testkit.LockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ListenAddr: loopback, PageAddr: loopback, Out: &out})
	}()
	waitFor(t, 5*time.Second, "the banner", func() bool { return strings.Contains(out.String(), "open http://") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if strings.Contains(out.String(), "admin") {
		t.Errorf("AdminAddr \"\" should disable the admin listener:\n%s", out.String())
	}

	// A port in use is an error, not a hang.
	d := startDemo(t)
	err := Run(t.Context(), Options{ListenAddr: loopback, PageAddr: d.PageAddr().String()})
	if err == nil || !strings.Contains(err.Error(), "page listen") {
		t.Errorf("Run on a busy page port = %v", err)
	}
}

func TestConfigJSON(t *testing.T) {
	t.Parallel()
	d := startDemo(t, func(tn *Tuning) { tn.Client.MaxAttempts = 3 })
	resp, err := http.Get(d.PageURL() + "config.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cfg PageConfig
	if err := json.NewDecoder(resp.Body).Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	want := endpointFor(d.TetherAddr())
	if cfg.Tether != want || cfg.Client.MaxAttempts != 3 || cfg.Client.PingInterval != 5000 {
		t.Errorf("config.json = %+v, want tether %+v", cfg, want)
	}
	if !d.Config.Session.NotifyClient {
		t.Error("the demo's tether does not notify clients")
	}
	var _ proxy.Config = d.Config
}

// waitAcked waits until every message sent so far is provably received by the
// upstream (README "Upstream loss, reconnect and the delivery guarantee"): two
// more upstream pongs mean a whole ping round trip started after the last
// message.
func waitAcked(t *testing.T, d *Demo) {
	t.Helper()
	const pongs = "tether_heartbeat_pongs_received_total"
	base := counter(t, d, pongs, "upstream")
	waitFor(t, 10*time.Second, "two upstream heartbeat round trips", func() bool { return counter(t, d, pongs, "upstream") >= base+2 })
}
