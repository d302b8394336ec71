package proxy_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// README "Running in front of a real backend": the subprotocol the upstream
// selects is the one the client gets; the client's offer reaches the upstream.
func TestCoreSubprotocol(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		offered  []string
		upstream []string
		want     string
	}{
		{"upstream picks the second", []string{"a", "b"}, []string{"b"}, "b"},
		{"upstream picks the first", []string{"a", "b"}, []string{"a", "b"}, "a"},
		{"upstream picks none", []string{"a", "b"}, nil, ""},
		{"none offered", nil, []string{"a"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, &websocket.Upgrader{Subprotocols: tc.upstream}, nil)
			tt := startTether(t, b.URL, nil)
			d := websocket.Dialer{Subprotocols: tc.offered}
			c, resp, err := d.Dial(tt.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.Subprotocol(); got != tc.want {
				t.Errorf("client got subprotocol %q, want %q", got, tc.want)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tc.want {
				t.Errorf("Sec-WebSocket-Protocol = %q, want %q", got, tc.want)
			}
			if got := websocket.Subprotocols(b.lastRequest()); strings.Join(got, ",") != strings.Join(tc.offered, ",") {
				t.Errorf("upstream was offered %q, want %q", got, tc.offered)
			}
			coreEcho(t, c, "proto")
		})
	}
}

// README "Running in front of a real backend": cookies the upstream sets in
// its 101 reach the client.
func TestCoreSetCookie(t *testing.T) {
	t.Parallel()
	up := coreNewUp(t, false, func(w http.ResponseWriter, r *http.Request) {
		u := websocket.Upgrader{}
		c, err := u.Upgrade(w, r, http.Header{"Set-Cookie": {"sid=abc; Path=/; HttpOnly", "lang=en"}})
		if err != nil {
			return
		}
		defer c.Close()
		echo(c, r)
	})
	tt := startTether(t, up.URL, nil)
	c, resp, err := websocket.DefaultDialer.Dial(tt.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := resp.Header.Values("Set-Cookie")
	want := []string{"sid=abc; Path=/; HttpOnly", "lang=en"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Set-Cookie = %q, want %q", got, want)
	}
	coreEcho(t, c, "cookie")
}

// README "Running in front of a real backend": path joined with one slash and
// queries concatenated, like httputil.ReverseProxy.
func TestCorePathAndQuery(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	cases := []struct {
		base, req, want string
	}{
		{"", "/chat?x=1", "/chat?x=1"},
		{"/", "/chat", "/chat"},
		{"/base", "/chat", "/base/chat"},
		{"/base/", "/chat", "/base/chat"},
		{"/base?k=v", "/chat?x=1&y=2", "/base/chat?k=v&x=1&y=2"},
		{"/base?k=v", "/", "/base/?k=v"},
		{"/base", "/a%2Fb?q=%20", "/base/a%2Fb?q=%20"},
	}
	for _, tc := range cases {
		t.Run(tc.base+" + "+tc.req, func(t *testing.T) {
			t.Parallel()
			tt := startTether(t, b.URL+tc.base, nil)
			c := dial(t, tt.URL+tc.req, nil)
			coreEcho(t, c, "path")
			// Each subtest has its own tether; find this request.
			var got []string
			b.mu.Lock()
			for _, r := range b.requests {
				got = append(got, r.RequestURI)
				if r.RequestURI == tc.want {
					got = nil
					break
				}
			}
			b.mu.Unlock()
			if got != nil {
				t.Errorf("upstream request URI not %q; saw %q", tc.want, got)
			}
		})
	}
}

// README "Running in front of a real backend": headers forwarded minus
// hop-by-hop and handshake headers; X-Forwarded-For appended, -Proto and -Host
// set by tether.
func TestCoreForwardedHeaders(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		extra   string
		wantXFF string
	}{
		{"no incoming X-Forwarded-For", "", "127.0.0.1"},
		{"incoming X-Forwarded-For", "X-Forwarded-For: 203.0.113.7, 198.51.100.1\r\n", "203.0.113.7, 198.51.100.1, 127.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, nil, nil)
			tt := startTether(t, b.URL, nil)
			req := "GET /h HTTP/1.1\r\nHost: front.example:8443\r\n" +
				"Connection: Upgrade, X-Hop\r\nUpgrade: websocket\r\n" +
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + coreKey + "\r\n" +
				"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
				"X-Custom: v1\r\nX-Custom: v2\r\nCookie: s=1; t=2\r\nAuthorization: Bearer tok\r\n" +
				"X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nTe: trailers\r\n" +
				"X-Forwarded-Proto: https\r\nX-Forwarded-Host: spoofed.example\r\n" +
				tc.extra + "\r\n"
			resp, _, _ := coreRaw(t, tt.Addr, req)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
				t.Errorf("client got extensions %q, none negotiated", ext)
			}
			r := b.lastRequest()
			if r == nil {
				t.Fatal("upstream not dialed")
			}
			h := r.Header
			for k, want := range map[string]string{
				"X-Custom":          "v1,v2",
				"Cookie":            "s=1; t=2",
				"Authorization":     "Bearer tok",
				"X-Forwarded-For":   tc.wantXFF,
				"X-Forwarded-Proto": "http",
				"X-Forwarded-Host":  "front.example:8443",
			} {
				if got := strings.Join(h.Values(k), ","); got != want {
					t.Errorf("upstream %s = %q, want %q", k, got, want)
				}
			}
			for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Te", "Sec-Websocket-Extensions"} {
				if v, ok := h[http.CanonicalHeaderKey(k)]; ok {
					t.Errorf("upstream got hop-by-hop header %s: %q", k, v)
				}
			}
			if strings.Contains(strings.ToLower(h.Get("Connection")), "x-hop") {
				t.Errorf("upstream Connection = %q", h.Get("Connection"))
			}
			if h.Get("Sec-Websocket-Key") == coreKey {
				t.Error("the client's Sec-WebSocket-Key was forwarded")
			}
			if r.Host == "front.example:8443" {
				t.Error("the client's Host was forwarded as Host")
			}
		})
	}
}

// README "Running in front of a real backend": X-Tether-Session carries the
// session id.
func TestCoreSessionIDHeader(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	hex16 := regexp.MustCompile(`^[0-9a-f]{16}$`)
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		c, resp, err := websocket.DefaultDialer.Dial(tt.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		id := resp.Header.Get("X-Tether-Session")
		if !hex16.MatchString(id) {
			t.Fatalf("X-Tether-Session = %q, want 16 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("session id %s repeated", id)
		}
		seen[id] = true
	}
}
