package proxy

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func coreUpgradeRequest() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://front.example/chat?x=1", nil)
	r.Header.Set("Connection", "keep-alive, Upgrade")
	r.Header.Set("Upgrade", "WebSocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	return r
}

func TestCoreCheckUpgrade(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		mod  func(r *http.Request)
		want int
	}{
		{"valid", func(*http.Request) {}, 0},
		{"no Connection upgrade", func(r *http.Request) { r.Header.Set("Connection", "keep-alive") }, 426},
		{"no Upgrade", func(r *http.Request) { r.Header.Del("Upgrade") }, 426},
		{"Upgrade h2c", func(r *http.Request) { r.Header.Set("Upgrade", "h2c") }, 426},
		{"POST", func(r *http.Request) { r.Method = http.MethodPost }, 400},
		{"HTTP/1.0", func(r *http.Request) { r.ProtoMajor, r.ProtoMinor = 1, 0 }, 400},
		{"no key", func(r *http.Request) { r.Header.Del("Sec-WebSocket-Key") }, 400},
		{"short key", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "YWJj") }, 400},
		{"key not base64", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "!!!!") }, 400},
		{"two keys", func(r *http.Request) { r.Header.Add("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==") }, 400},
		{"version 8", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Version", "8") }, 426},
		{"two versions", func(r *http.Request) { r.Header.Add("Sec-WebSocket-Version", "8") }, 426},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := coreUpgradeRequest()
			tc.mod(r)
			if got, why := checkUpgrade(r); got != tc.want {
				t.Errorf("checkUpgrade = %d (%s), want %d", got, why, tc.want)
			}
		})
	}
}

func TestCoreOriginAllowed(t *testing.T) {
	t.Parallel()
	cases := []struct {
		allowed []string
		origin  string
		want    bool
	}{
		{nil, "https://a.example", true},
		{[]string{"https://a.example"}, "", true},
		{[]string{"https://a.example"}, "https://a.example", true},
		{[]string{" https://a.example "}, "https://a.example", true},
		{[]string{"https://a.example"}, "https://b.example", false},
		{[]string{"https://a.example"}, "https://a.example.evil", false},
		{[]string{"https://a.example"}, "null", false},
		{[]string{"*"}, "null", true},
	}
	for _, tc := range cases {
		if got := originAllowed(tc.allowed, tc.origin); got != tc.want {
			t.Errorf("originAllowed(%q, %q) = %v, want %v", tc.allowed, tc.origin, got, tc.want)
		}
	}
}

func TestCoreUpstreamHeader(t *testing.T) {
	t.Parallel()
	r := coreUpgradeRequest()
	r.RemoteAddr = "192.0.2.9:5555"
	r.Host = "front.example:8443"
	r.Header.Set("Connection", "Upgrade, X-Secret")
	r.Header.Set("X-Secret", "s")
	r.Header.Set("X-App", "a")
	r.Header.Set("Sec-WebSocket-Protocol", "a, b")
	r.Header.Set("Sec-WebSocket-Extensions", "permessage-deflate")
	r.Header.Set("Proxy-Connection", "keep-alive")
	r.Header.Add("X-Forwarded-For", "203.0.113.1")
	r.Header.Add("X-Forwarded-For", "203.0.113.2")
	h := upstreamHeader(r, r.TLS != nil)
	for k, want := range map[string]string{
		"X-App":             "a",
		"X-Forwarded-For":   "203.0.113.1, 203.0.113.2, 192.0.2.9",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "front.example:8443",
	} {
		if got := strings.Join(h.Values(k), ","); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"Connection", "Upgrade", "X-Secret", "Sec-Websocket-Key", "Sec-Websocket-Version",
		"Sec-Websocket-Extensions", "Sec-Websocket-Protocol", "Proxy-Connection", "Host"} {
		if _, ok := h[http.CanonicalHeaderKey(k)]; ok {
			t.Errorf("%s forwarded", k)
		}
	}
	if r.Header.Get("X-Secret") != "s" {
		t.Error("upstreamHeader changed the request's headers")
	}
	r.TLS = &tls.ConnectionState{}
	if got := upstreamHeader(r, r.TLS != nil).Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto on TLS = %q", got)
	}
	if got := offeredProtocols(r); strings.Join(got, "|") != "a|b" {
		t.Errorf("offeredProtocols = %q", got)
	}
}

// coreTargetCases are the URL joins of README "Running in front of a real
// backend", also the fuzz seeds.
var coreTargetCases = []struct{ base, req, want string }{
	{"ws://up:1", "/chat?x=1", "ws://up:1/chat?x=1"},
	{"ws://up:1/", "/", "ws://up:1/"},
	{"ws://up:1/base", "/chat", "ws://up:1/base/chat"},
	{"ws://up:1/base/", "/chat", "ws://up:1/base/chat"},
	{"ws://up:1/base", "chat", "ws://up:1/base/chat"},
	{"ws://up:1/base?k=v", "/chat?x=1", "ws://up:1/base/chat?k=v&x=1"},
	{"ws://up:1/base?k=v", "/chat", "ws://up:1/base/chat?k=v"},
	{"wss://u:p@up:1/b%2Fc", "/d%2Fe?q", "wss://u:p@up:1/b%2Fc/d%2Fe?q"},
	{"ws://up:1/base", "/a%20b", "ws://up:1/base/a%20b"},
}

func TestCoreTargetURL(t *testing.T) {
	t.Parallel()
	for _, tc := range coreTargetCases {
		base, err := url.Parse(tc.base)
		if err != nil {
			t.Fatal(err)
		}
		req, err := url.ParseRequestURI(tc.req)
		if err != nil {
			req, err = url.Parse(tc.req)
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := targetURL(base, req); got != tc.want {
			t.Errorf("targetURL(%q, %q) = %q, want %q", tc.base, tc.req, got, tc.want)
		}
	}
}

// FuzzTargetURL: joining never panics; for a base that TETHER_UPSTREAM_URL
// accepts (ws or wss with a host), the result parses and keeps the base's
// scheme, user and host.
func FuzzTargetURL(f *testing.F) {
	for _, tc := range coreTargetCases {
		f.Add(tc.base, tc.req)
	}
	f.Add("ws://h", "")
	f.Add("ws://h/%", "/%zz")
	f.Add("ws://h/a/", "//b")
	f.Add("#", "//0")
	f.Fuzz(func(t *testing.T, b, r string) {
		base, err := url.Parse(b)
		if err != nil {
			return
		}
		req, err := url.ParseRequestURI(r)
		if err != nil {
			return
		}
		got := targetURL(base, req) // must not panic, whatever the input
		if (base.Scheme != "ws" && base.Scheme != "wss") || base.Host == "" || base.Opaque != "" {
			return
		}
		if _, err := url.Parse(base.String()); err != nil {
			return // the base does not round-trip by itself
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("targetURL(%q, %q) = %q does not parse: %v", b, r, got, err)
		}
		if u.Scheme != base.Scheme || u.Host != base.Host || u.User.String() != base.User.String() {
			t.Fatalf("targetURL(%q, %q) = %q changed scheme, user or host", b, r, got)
		}
	})
}

// clientConn finds obs-fold in the header whatever the read boundaries, and
// looks no further than the header.
func TestCoreFoldScan(t *testing.T) {
	t.Parallel()
	const req = "GET / HTTP/1.1\r\nHost: x\r\n"
	cases := []struct {
		name, raw string
		want      bool
	}{
		{"clean", req + "X-A: a b\r\n\r\n", false},
		{"space fold", req + "X-A: a\r\n b\r\n\r\n", true},
		{"tab fold", req + "X-A: a\r\n\tb\r\n\r\n", true},
		{"bare LF fold", req + "X-A: a\n b\n\n", true},
		{"space in the body", req + "Content-Length: 3\r\n\r\n\r\n a", false},
		{"tab inside a value", req + "X-A: a\tb\r\n\r\n", false},
	}
	for _, tc := range cases {
		for _, chunk := range []int{1, 2, 3, 1 << 10} {
			var c clientConn
			for p := []byte(tc.raw); len(p) > 0; {
				n := min(chunk, len(p))
				if !c.done {
					c.scan(p[:n])
				}
				p = p[n:]
			}
			if got := c.folded.Load(); got != tc.want {
				t.Errorf("%s, reads of %d: folded = %v, want %v", tc.name, chunk, got, tc.want)
			}
		}
	}
}
