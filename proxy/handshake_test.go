package proxy_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/proxy"
)

// Shared helpers of the core tests (prefix core).

// coreUp is an upstream whose handler is a plain http.HandlerFunc, so that
// a test can answer with any status or header. It counts requests.
type coreUp struct {
	*httptest.Server
	URL  string // ws:// or wss://
	hits atomic.Int32
}

func coreNewUp(t *testing.T, useTLS bool, h http.HandlerFunc) *coreUp {
	t.Helper()
	u := &coreUp{}
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		h(w, r)
	})
	u.Server = httptest.NewUnstartedServer(wrapped)
	u.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS failures are expected
	if useTLS {
		u.StartTLS()
	} else {
		u.Start()
	}
	u.URL = "ws" + strings.TrimPrefix(u.Server.URL, "http")
	t.Cleanup(func() {
		u.CloseClientConnections()
		u.Close()
	})
	return u
}

// coreEnd is how a peer's read loop ended, and when.
type coreEnd struct {
	err error
	at  time.Time
}

// coreEchoRecorder echoes every message and reports how the backend's
// read loop ended on ends.
func coreEchoRecorder(ends chan<- coreEnd) func(c *websocket.Conn, r *http.Request) {
	return func(c *websocket.Conn, _ *http.Request) {
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				ends <- coreEnd{err: err, at: time.Now()}
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				// Keep reading: the Close that follows is what tests check.
				continue
			}
		}
	}
}

// coreRecv waits at most d for a value on ch.
func coreRecv[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
	var zero T
	return zero
}

// coreWantClose reads from c until an error and checks it is a Close with
// code (and reason, when reason is not "*").
func coreWantClose(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		got, text := closeCode(err)
		if got != code || !reasonMatches(text, reason) {
			t.Fatalf("client: got %v (code %d %q), want close %d %q", err, got, text, code, reason)
		}
		return
	}
}

// coreWantEnd checks a recorded backend end is a Close with code.
func coreWantEnd(t *testing.T, ends <-chan coreEnd, code int, reason string) {
	t.Helper()
	e := coreRecv(t, ends, 5*time.Second, "the upstream's close")
	got, text := closeCode(e.err)
	if got != code || !reasonMatches(text, reason) {
		t.Fatalf("upstream: got %v (code %d %q), want close %d %q", e.err, got, text, code, reason)
	}
}

// coreWaitSessions polls until tt has n sessions (bounded).
func coreWaitSessions(t *testing.T, tt *tether, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for tt.Sessions() != n {
		if time.Now().After(deadline) {
			t.Fatalf("tether has %d sessions, want %d", tt.Sessions(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// coreDeadURL returns a ws:// URL on which nothing listens.
func coreDeadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "ws://" + addr
}

const coreKey = "dGhlIHNhbXBsZSBub25jZQ=="

// coreUpgradeReq is a valid upgrade request without its final blank line.
func coreUpgradeReq(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: tether.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + coreKey + "\r\n"
}

// coreRaw sends req on a new connection to addr and reads the response.
func coreRaw(t *testing.T, addr, req string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write request: %v", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	_ = c.SetDeadline(time.Time{})
	return resp, c, br
}

// coreRawUpgrade completes a handshake by hand and returns the raw
// connection, for tests that send frames gorilla would not.
func coreRawUpgrade(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	resp, c, br := coreRaw(t, addr, coreUpgradeReq("/")+"\r\n")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw upgrade: status %d", resp.StatusCode)
	}
	return c, br
}

// coreFrame encodes one frame. A masked frame uses a random key.
func coreFrame(fin bool, rsv, op byte, masked bool, p []byte) []byte {
	b0 := op | rsv<<4
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var mb byte
	if masked {
		mb = 0x80
	}
	switch n := len(p); {
	case n < 126:
		out = append(out, mb|byte(n))
	case n <= 0xffff:
		out = append(out, mb|126, byte(n>>8), byte(n))
	default:
		out = append(out, mb|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	if !masked {
		return append(out, p...)
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	out = append(out, key[:]...)
	for i, x := range p {
		out = append(out, x^key[i%4])
	}
	return out
}

// coreReadFrame reads one unmasked frame (tether to client).
func coreReadFrame(t *testing.T, br *bufio.Reader) (op byte, p []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatalf("read frame header: %v", err)
	}
	if h[1]&0x80 != 0 {
		t.Fatalf("tether sent a masked frame to the client")
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, _ = io.ReadFull(br, l[:])
		n = int(l[0])<<8 | int(l[1])
	case 127:
		var l [8]byte
		_, _ = io.ReadFull(br, l[:])
		n = int(l[4])<<24 | int(l[5])<<16 | int(l[6])<<8 | int(l[7])
	}
	p = make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatalf("read frame payload: %v", err)
	}
	return h[0] & 0x0f, p
}

// coreReadClose reads frames until a Close and returns its code (0 for
// an empty payload).
func coreReadClose(t *testing.T, c net.Conn, br *bufio.Reader) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		op, p := coreReadFrame(t, br)
		if op != 8 {
			continue
		}
		if len(p) < 2 {
			return 0
		}
		return int(p[0])<<8 | int(p[1])
	}
}

// coreStatus dials url with gorilla and returns the HTTP status (101 on
// success, the connection closed again).
func coreStatus(t *testing.T, d *websocket.Dialer, url string, h http.Header) (int, *http.Response) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	}
	c, resp, err := d.Dial(url, h)
	if err == nil {
		c.Close()
		return resp.StatusCode, resp
	}
	if resp == nil {
		t.Fatalf("dial %s: %v (no response)", url, err)
	}
	return resp.StatusCode, resp
}

// coreEcho checks one round trip through c.
func coreEcho(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	_, p, err := c.ReadMessage()
	if err != nil || string(p) != msg {
		t.Fatalf("echo: got %q, %v; want %q", p, err, msg)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// README "Running in front of a real backend": malformed and non-upgrade
// requests get their status, and never make tether dial the upstream.
func TestCoreHandshakeRejects(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	key15 := base64.StdEncoding.EncodeToString(make([]byte, 15))
	big := strings.Repeat("a", 33<<10)
	cases := []struct {
		name    string
		req     string
		want    int
		version bool // expects Sec-WebSocket-Version: 13
	}{
		{"plain GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426, false},
		{"GET with Connection only", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n", 426, false},
		{"POST upgrade", strings.Replace(coreUpgradeReq("/"), "GET", "POST", 1) + "Content-Length: 0\r\n\r\n", 400, false},
		{"missing key", strings.Replace(coreUpgradeReq("/"), "Sec-WebSocket-Key: "+coreKey+"\r\n", "", 1) + "\r\n", 400, false},
		{"key not base64", strings.Replace(coreUpgradeReq("/"), coreKey, "not*base64!", 1) + "\r\n", 400, false},
		{"key of 15 bytes", strings.Replace(coreUpgradeReq("/"), coreKey, key15, 1) + "\r\n", 400, false},
		{"two keys", coreUpgradeReq("/") + "Sec-WebSocket-Key: " + coreKey + "\r\n\r\n", 400, false},
		{"version 8", strings.Replace(coreUpgradeReq("/"), "Version: 13", "Version: 8", 1) + "\r\n", 426, true},
		{"headers over 32 KiB", coreUpgradeReq("/") + "X-Big: " + big + "\r\n\r\n", 431, false},
		{"CR in a header value", coreUpgradeReq("/") + "X-A: a\rb\r\n\r\n", 400, false},
		{"LF in a header line", coreUpgradeReq("/") + "X-A: a\nb\r\n\r\n", 400, false},
		{"NUL in a header value", coreUpgradeReq("/") + "X-A: a\x00b\r\n\r\n", 400, false},
		{"obs-fold", coreUpgradeReq("/") + "X-A: a\r\n b\r\n\r\n", 400, false},
		{"obs-fold with tab", coreUpgradeReq("/") + "X-A: a\r\n\tb\r\n\r\n", 400, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, _, _ := coreRaw(t, tt.Addr, tc.req)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.version && resp.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Errorf("Sec-WebSocket-Version = %q, want 13", resp.Header.Get("Sec-WebSocket-Version"))
			}
		})
	}
	b.mu.Lock()
	n := len(b.requests)
	b.mu.Unlock()
	if n != 0 {
		t.Errorf("the upstream was dialed %d times for rejected handshakes", n)
	}
	coreWaitSessions(t, tt, 0)
}

// README "Running in front of a real backend": 32 KiB of headers in all is the
// limit, not less.
func TestCoreHandshakeLargeHeadersPass(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	h := http.Header{"X-Big": {strings.Repeat("a", 30<<10)}}
	c := dial(t, tt.URL, h)
	coreEcho(t, c, "big headers")
	if got := len(b.lastRequest().Header.Get("X-Big")); got != 30<<10 {
		t.Errorf("upstream got X-Big of %d bytes", got)
	}
}

// README "Configuration" TETHER_ALLOWED_ORIGINS and §2: 403 for an origin not
// allowed.
func TestCoreOrigin(t *testing.T) {
	t.Parallel()
	// The backend accepts any Origin: the check under test is tether's.
	b := newBackend(t, &websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}, nil)
	cases := []struct {
		name    string
		allowed []string
		origin  string
		want    int
	}{
		{"empty list allows all", nil, "https://evil.example", 101},
		{"listed origin", []string{"https://a.example", "https://b.example"}, "https://b.example", 101},
		{"unlisted origin", []string{"https://a.example"}, "https://evil.example", 403},
		{"no Origin header", []string{"https://a.example"}, "", 101},
		{"star allows all", []string{"*"}, "https://evil.example", 101},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tt := startTether(t, b.URL, func(c *proxy.Config) { c.AllowedOrigins = tc.allowed })
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			if got, _ := coreStatus(t, nil, tt.URL, h); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
}

// README "Configuration" TETHER_MAX_SESSIONS: 503 when full; the slot is free
// within 1 s of the session's end.
func TestCoreMaxSessions(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.MaxSessions = 2 })
	c1 := dial(t, tt.URL, nil)
	c2 := dial(t, tt.URL, nil)
	coreEcho(t, c1, "one")
	coreEcho(t, c2, "two")
	if got, _ := coreStatus(t, nil, tt.URL, nil); got != http.StatusServiceUnavailable {
		t.Fatalf("third session: status %d, want 503", got)
	}
	// End the first session: close handshake, then measure.
	if err := c1.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	coreWantClose(t, c1, 1000, "")
	ended := time.Now()
	for {
		c, _, err := websocket.DefaultDialer.Dial(tt.URL, nil)
		if err == nil {
			coreEcho(t, c, "three")
			c.Close()
			break
		}
		if time.Since(ended) > time.Second {
			t.Fatalf("no slot free %v after a session ended: %v", time.Since(ended), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	coreEcho(t, c2, "still two")
}

// README "Running in front of a real backend": the upstream URLs are tried in
// order; 502 when all fail.
func TestCoreUpstreamUnreachable(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	cases := []struct {
		name string
		urls []string
		want int
	}{
		{"dead", []string{coreDeadURL(t)}, 502},
		{"dead then alive", []string{coreDeadURL(t), b.URL}, 101},
		{"alive then dead", []string{b.URL, coreDeadURL(t)}, 101},
		{"all dead", []string{coreDeadURL(t), coreDeadURL(t), coreDeadURL(t)}, 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tt := startTether(t, strings.Join(tc.urls, ","), nil)
			for i := 0; i < 2; i++ { // the second handshake starts at the URL that worked
				if tc.want == 101 {
					c := dial(t, tt.URL, nil)
					coreEcho(t, c, "hi")
					c.Close()
					continue
				}
				if got, _ := coreStatus(t, nil, tt.URL, nil); got != tc.want {
					t.Fatalf("status %d, want %d", got, tc.want)
				}
			}
		})
	}
}

// README "Running in front of a real backend": a non-101 answer of the
// upstream reaches the client as is.
func TestCoreUpstreamStatus(t *testing.T) {
	t.Parallel()
	for _, code := range []int{401, 403, 404, 429, 503} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			t.Parallel()
			up := coreNewUp(t, false, func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "no", code)
			})
			tt := startTether(t, up.URL, nil)
			if got, _ := coreStatus(t, nil, tt.URL+"/x", nil); got != code {
				t.Errorf("status %d, want %d", got, code)
			}
			if up.hits.Load() != 1 {
				t.Errorf("upstream dialed %d times, want 1", up.hits.Load())
			}
		})
	}
}

// README "Configuration" TETHER_HANDSHAKE_TIMEOUT: one deadline from accept; a
// trickle of bytes does not extend it.
func TestCoreHandshakeTimeout(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.HandshakeTimeout = 500 * time.Millisecond })
	c, err := net.Dial("tcp", tt.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\nX-Trickle: "); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				if _, err := c.Write([]byte("a")); err != nil {
					return
				}
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = io.Copy(io.Discard, c)
	close(stop)
	wg.Wait()
	took := time.Since(start)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("still connected after %v of trickling", took)
		}
	}
	if took > 2*time.Second {
		t.Errorf("disconnected after %v, want about 500ms", took)
	}
	if b.lastRequest() != nil {
		t.Error("the upstream was dialed")
	}
}

// README "Configuration" TETHER_DIAL_TIMEOUT: an upstream that accepts and
// never answers gives 502 after the dial timeout.
func TestCoreDialTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	tt := startTether(t, "ws://"+ln.Addr().String(), func(c *proxy.Config) { c.DialTimeout = 500 * time.Millisecond })
	start := time.Now()
	got, _ := coreStatus(t, &websocket.Dialer{HandshakeTimeout: 5 * time.Second}, tt.URL, nil)
	took := time.Since(start)
	if got != http.StatusBadGateway {
		t.Errorf("status %d, want 502", got)
	}
	if took < 400*time.Millisecond || took > 2*time.Second {
		t.Errorf("502 after %v, want about 500ms", took)
	}
}

// The slot is freed when the session ends, not when the goodbye
// handshakes finish: with an upstream that never answers tether's Close
// (tether then waits its close wait, 5 s here), a new session still gets
// the slot at once.
func TestMaxSessionsSlotFreedAtEnd(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		<-release // never reads, so never answers a Close
	})
	tt := startTetherOpts(t, b.URL, proxy.Options{CloseWait: 5 * time.Second}, func(c *proxy.Config) { c.MaxSessions = 1 })
	t.Cleanup(func() { close(release) }) // runs before tether's shutdown
	c1 := dial(t, tt.URL, nil)
	if err := c1.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	coreWantClose(t, c1, 1000, "")
	ended := time.Now()
	for {
		c, _, err := websocket.DefaultDialer.Dial(tt.URL, nil)
		if err == nil {
			c.Close()
			break
		}
		if time.Since(ended) > time.Second {
			t.Fatalf("no slot %v after the session ended (its upstream close still pending): %v", time.Since(ended), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
