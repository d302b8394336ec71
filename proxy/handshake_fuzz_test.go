package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// fuzzRequestSeeds are raw client handshakes: valid ones and the README
// "Running in front of a real backend" rejections.
var fuzzRequestSeeds = []string{
	"GET /chat?x=1 HTTP/1.1\r\nHost: front.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade, X-Drop\r\nX-Drop: 1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b,,c\r\nX-Forwarded-For: 203.0.113.1\r\nOrigin: https://ok.example\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\tcontinued\r\nSec-WebSocket-Version: 13\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: YWJj\r\nSec-WebSocket-Version: 13\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a%2Fb/../c?q=%zz HTTP/1.1\nHost: h\nUpgrade: websocket\nConnection: upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n",
}

// foldRef is clientConn's job done on the whole input: does a line of the
// header (before its blank line) start with a space or a tab?
func foldRef(raw []byte) bool {
	lines := bytes.Split(raw, []byte("\n"))
	for i, l := range lines {
		if i == 0 {
			continue
		}
		if i == len(lines)-1 && len(l) == 0 {
			return false
		}
		switch {
		case len(l) > 0 && (l[0] == ' ' || l[0] == '\t'):
			return true
		case len(l) == 0 || l[0] == '\r':
			return false
		}
	}
	return false
}

// FuzzCheckUpgrade: raw request bytes as net/http reads them, then everything
// tether derives from a request before it dials. Invariants: no panic;
// checkUpgrade answers 0 or a README "Running in front of a real backend"
// status with a reason; forwarded headers carry no CR, LF or NUL, none of the
// hop-by-hop or handshake headers, and X-Forwarded-* as README "Running in
// front of a real backend" says; offered subprotocols are trimmed non-empty
// tokens; the upstream URL keeps the base's scheme and host; clientConn flags
// obs-fold whatever the read sizes.
func FuzzCheckUpgrade(f *testing.F) {
	for _, s := range fuzzRequestSeeds {
		f.Add([]byte(s), uint8(0))
	}
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), uint8(1))
	base, err := url.Parse("ws://up.example:9/base?k=v")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, chunk uint8) {
		var fc clientConn
		for p, n := raw, int(chunk)+1; len(p) > 0 && !fc.done; {
			n = min(n, len(p))
			fc.scan(p[:n])
			p = p[n:]
		}
		if got, want := fc.folded.Load(), foldRef(raw); got != want {
			t.Fatalf("clientConn.scan(%q) in reads of %d = %v, want %v", raw, int(chunk)+1, got, want)
		}

		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		for k := range r.Header {
			if !isToken(k) {
				return // net/http's server answers 400 itself (FuzzHandshakeWire)
			}
		}
		r.RemoteAddr = "192.0.2.7:4321"
		status, why := checkUpgrade(r)
		switch status {
		case 0:
			if r.Method != http.MethodGet || r.Header.Get("Sec-Websocket-Version") == "" {
				t.Fatalf("checkUpgrade accepted %q", raw)
			}
		case http.StatusBadRequest, http.StatusUpgradeRequired:
			if why == "" {
				t.Fatalf("status %d without a reason", status)
			}
		default:
			t.Fatalf("checkUpgrade(%q) = %d, not a README handshake status", raw, status)
		}

		h := upstreamHeader(r, r.TLS != nil)
		for k, vs := range h {
			if strings.ContainsAny(k, "\r\n\x00: ") {
				t.Fatalf("forwarded header name %q", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("forwarded header %s: %q", k, v)
				}
			}
		}
		for _, k := range hopHeaders {
			if _, ok := h[http.CanonicalHeaderKey(k)]; ok {
				t.Fatalf("hop-by-hop header %s forwarded", k)
			}
		}
		if got := h.Get("X-Forwarded-Host"); got != r.Host {
			t.Fatalf("X-Forwarded-Host %q, want %q", got, r.Host)
		}
		if got := h.Get("X-Forwarded-Proto"); got != "http" {
			t.Fatalf("X-Forwarded-Proto %q", got)
		}
		if xff := h.Values("X-Forwarded-For"); len(xff) != 1 || !strings.HasSuffix(xff[0], "192.0.2.7") {
			t.Fatalf("X-Forwarded-For %q", xff)
		}
		for _, p := range offeredProtocols(r) {
			if p == "" || p != strings.TrimSpace(p) || strings.Contains(p, ",") {
				t.Fatalf("offered protocol %q", p)
			}
		}
		u, err := url.Parse(targetURL(base, r.URL))
		if err != nil {
			t.Fatalf("targetURL for %q: %v", r.URL, err)
		}
		if u.Scheme != "ws" || u.Host != base.Host || !strings.HasPrefix(u.Path, "/base") {
			t.Fatalf("targetURL for %q = %q", r.URL, u)
		}
	})
}

// isToken reports whether s is an RFC 9110 token, as net/http's server
// requires of header names (http.ReadRequest alone does not).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// fuzzStatuses are the statuses a client handshake may get (README "Running in
// front of a real backend"), with 409, which the test's upstream answers every
// dial with (the client gets that same status), and the statuses net/http
// answers before tether sees the request: 505 for an HTTP version other than
// 1.x and 501 for a Transfer-Encoding it does not implement.
var fuzzStatuses = []int{400, 403, 409, 426, 431, 501, 505}

// FuzzHandshakeWire writes raw bytes to a real tether listener (net/http,
// clientConn, ServeHTTP) whose upstream answers every dial with 409. Per
// input: one response or none (input too short to be a request), with a
// status of fuzzStatuses; 426 names version 13; 409 (an upstream dial)
// only for a request checkUpgrade accepts from an allowed origin; a
// request checkUpgrade rejects gets its status (or net/http's own 400).
func FuzzHandshakeWire(f *testing.F) {
	for _, s := range fuzzRequestSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte("GET / HTTP/2.0\r\nHost: h\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))

	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				_, _ = io.WriteString(c, "HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n")
			}
			_ = c.Close()
		}
	}()
	cfg, err := DefaultConfig("ws://" + up.Addr().String())
	if err != nil {
		f.Fatal(err)
	}
	cfg.HandshakeTimeout = 2 * time.Second
	cfg.AllowedOrigins = []string{"https://ok.example"}
	srv, err := New(cfg, Options{})
	if err != nil {
		f.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
		_ = up.Close()
		<-upDone
	})

	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		req, reqErr := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if _, err := c.Write(raw); err != nil {
			return // tether answered and closed before reading it all
		}
		if reqErr != nil {
			// Not a whole request: the EOF ends it. (net/http cancels
			// the request of a client that half-closes, so a request it
			// reads whole anyway may get 502 from the cancelled dial.)
			_ = c.(*net.TCPConn).CloseWrite()
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no answer and no close for %q", raw)
			}
			if reqErr == nil && req.Header.Get("Host") != "" {
				t.Fatalf("no response to a complete request %q: %v", raw, err)
			}
			return
		}
		_ = resp.Body.Close()
		if !slices.Contains(fuzzStatuses, resp.StatusCode) && (reqErr == nil || resp.StatusCode != http.StatusBadGateway) {
			t.Fatalf("status %d for %q", resp.StatusCode, raw)
		}
		if resp.StatusCode == http.StatusUpgradeRequired && resp.Header.Get("Sec-WebSocket-Version") != "13" {
			t.Fatalf("426 without Sec-WebSocket-Version: 13 for %q", raw)
		}
		if reqErr != nil {
			if resp.StatusCode == http.StatusConflict {
				t.Fatalf("upstream dialed for %q, which net/http rejects: %v", raw, reqErr)
			}
			return
		}
		status, _ := checkUpgrade(req)
		switch {
		case resp.StatusCode == http.StatusConflict:
			if status != 0 || foldRef(raw) || !originAllowed(cfg.AllowedOrigins, req.Header.Get("Origin")) {
				t.Fatalf("upstream dialed for %q (checkUpgrade %d)", raw, status)
			}
		case status != 0 && resp.StatusCode != status && resp.StatusCode != http.StatusBadRequest && resp.StatusCode < 500:
			t.Fatalf("status %d for %q, checkUpgrade says %d", resp.StatusCode, raw, status)
		}
	})
}
