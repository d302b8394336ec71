package proxy

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gobwas/httphead"
)

// hopHeaders are removed before a request is forwarded (RFC 9110 §7.6.1, as in
// net/http/httputil), together with the WebSocket handshake headers that
// tether sets itself on the upstream request (README "Running in front of a
// real backend").
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
	"Host",
	"Sec-Websocket-Key",
	"Sec-Websocket-Version",
	"Sec-Websocket-Extensions",
	"Sec-Websocket-Protocol", // sent through the dialer's protocol list
	"Sec-Websocket-Accept",
	"Content-Length",
}

// headerHasToken reports whether a comma-separated header contains token,
// case-insensitively (net/http/httputil's upgradeType does the same).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// checkUpgrade validates a client handshake before anything is dialed (README
// "Running in front of a real backend"). It returns 0 when the request is a
// valid WebSocket upgrade, or the status to answer with.
func checkUpgrade(r *http.Request) (status int, why string) {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !strings.EqualFold(strings.TrimSpace(r.Header.Get("Upgrade")), "websocket") {
		return http.StatusUpgradeRequired, "a WebSocket upgrade is required"
	}
	if r.Method != http.MethodGet {
		return http.StatusBadRequest, "the upgrade must be a GET"
	}
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return http.StatusBadRequest, "the upgrade needs HTTP/1.1"
	}
	switch v := r.Header.Values("Sec-Websocket-Version"); {
	case len(v) == 0 || v[0] == "":
		return http.StatusBadRequest, "missing Sec-WebSocket-Version"
	case len(v) > 1 || strings.TrimSpace(v[0]) != "13":
		return http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version"
	}
	keys := r.Header.Values("Sec-Websocket-Key")
	if len(keys) != 1 {
		return http.StatusBadRequest, "missing or repeated Sec-WebSocket-Key"
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return http.StatusBadRequest, "bad Sec-WebSocket-Key"
	}
	// gobwas's upgrader checks these only after the upstream was dialed.
	if r.Host == "" {
		return http.StatusBadRequest, "missing Host"
	}
	for _, v := range r.Header.Values("Sec-Websocket-Protocol") {
		if !httphead.ScanTokens([]byte(v), func([]byte) bool { return true }) {
			return http.StatusBadRequest, "Sec-WebSocket-Protocol is not a list of tokens"
		}
	}
	return 0, ""
}

// extensionsParse reports whether every Sec-WebSocket-Extensions header
// parses (as gobwas's upgrader parses it when it negotiates extensions).
func extensionsParse(r *http.Request) bool {
	for _, v := range r.Header.Values("Sec-Websocket-Extensions") {
		if !httphead.ScanOptions([]byte(v), func(int, []byte, []byte, []byte) httphead.Control { return httphead.ControlContinue }) {
			return false
		}
	}
	return true
}

// originAllowed applies TETHER_ALLOWED_ORIGINS.
func originAllowed(allowed []string, origin string) bool {
	if origin == "" || len(allowed) == 0 {
		return true
	}
	for _, a := range allowed {
		a = strings.TrimSpace(a)
		if a == "*" || strings.EqualFold(a, origin) {
			return true
		}
	}
	return false
}

// upstreamHeader builds the headers forwarded to the upstream: the
// client's, minus hop-by-hop and handshake headers, plus X-Forwarded-*.
func upstreamHeader(r *http.Request, secure bool) http.Header {
	h := r.Header.Clone()
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h.Set("X-Forwarded-For", ip)
	}
	if secure {
		h.Set("X-Forwarded-Proto", "https")
	} else {
		h.Set("X-Forwarded-Proto", "http")
	}
	h.Set("X-Forwarded-Host", r.Host)
	return h
}

// offeredProtocols lists the client's Sec-WebSocket-Protocol values.
func offeredProtocols(r *http.Request) []string {
	var ps []string
	for _, v := range r.Header.Values("Sec-Websocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// targetURL joins the request's path and query onto base, like
// net/http/httputil.NewSingleHostReverseProxy.
func targetURL(base *url.URL, req *url.URL) string {
	u := *base
	u.Path, u.RawPath = joinURLPath(base, req)
	switch {
	case base.RawQuery == "":
		u.RawQuery = req.RawQuery
	case req.RawQuery != "":
		u.RawQuery = base.RawQuery + "&" + req.RawQuery
	}
	u.User = base.User
	return u.String()
}

func singleJoiningSlash(a, b string) string {
	aslash := strings.HasSuffix(a, "/")
	bslash := strings.HasPrefix(b, "/")
	switch {
	case aslash && bslash:
		return a + b[1:]
	case !aslash && !bslash:
		return a + "/" + b
	}
	return a + b
}

// joinURLPath is net/http/httputil's, which README "Running in front of a real
// backend" follows.
func joinURLPath(a, b *url.URL) (path, rawpath string) {
	if a.RawPath == "" && b.RawPath == "" {
		return singleJoiningSlash(a.Path, b.Path), ""
	}
	apath := a.EscapedPath()
	bpath := b.EscapedPath()
	aslash := strings.HasSuffix(apath, "/")
	bslash := strings.HasPrefix(bpath, "/")
	switch {
	case aslash && bslash:
		return a.Path + b.Path[1:], apath + bpath[1:]
	case !aslash && !bslash:
		return a.Path + "/" + b.Path, apath + "/" + bpath
	}
	return a.Path + b.Path, apath + bpath
}

// clientListener wraps accepted connections in clientConn.
type clientListener struct{ net.Listener }

func (l clientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &clientConn{Conn: c, accepted: time.Now()}, nil
}

// clientConnKey is the context key of a request's clientConn: net/http
// tells a handler nothing else of the connection it came on.
type clientConnKey struct{}

// withClientConn is the server's ConnContext.
func withClientConn(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*clientConn); ok {
		ctx = context.WithValue(ctx, clientConnKey{}, cc)
	}
	return ctx
}

// clientConnOf returns the clientConn r came on, or nil (a request served
// by another listener, as in tests of the handler alone).
func clientConnOf(r *http.Request) *clientConn {
	cc, _ := r.Context().Value(clientConnKey{}).(*clientConn)
	return cc
}

// clientConn is a client connection as accepted: when (the handshake
// deadline counts from then, README "Configuration"), and whether the
// first request's header has obs-fold. net/http accepts obs-fold (a header
// line continued on the next line after a space or tab, RFC 9112 §5.2)
// and joins the lines, so the fold is only visible in the raw bytes, and
// tether answers it with 400 (README "Configuration"). clientConn scans
// the bytes read up to the end of the first request's header for a line
// that starts with a space or tab. Reads happen one at a time (net/http's
// reader, then the hijacker), so only folded is shared.
type clientConn struct {
	net.Conn
	accepted time.Time
	done     bool // the header's blank line was seen
	nl       bool // the last byte scanned was LF
	folded   atomic.Bool
}

// secure reports whether r came over TLS. Outside the TLS listener,
// clientConn hides the *tls.Conn from net/http, which then leaves r.TLS
// nil.
func (c *clientConn) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if c == nil {
		return false
	}
	_, ok := c.Conn.(*tls.Conn)
	return ok
}

func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.done {
		c.scan(p[:n])
	}
	return n, err
}

func (c *clientConn) scan(p []byte) {
	for _, b := range p {
		if c.nl {
			switch b {
			case ' ', '\t':
				c.folded.Store(true)
				c.done = true
				return
			case '\r', '\n':
				c.done = true
				return
			}
		}
		c.nl = b == '\n'
	}
}
