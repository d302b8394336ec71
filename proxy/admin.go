package proxy

import (
	"embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tether-proxy/tether/session"
)

// The status page's files, inlined into one document when served
// (README "Admin endpoints").
//
//go:embed statuspage
var statusFiles embed.FS

// statusPage is statuspage/status.html with its stylesheet and script
// inlined: one self-contained document, nothing else to fetch.
var statusPage = func() []byte {
	read := func(name string) string {
		b, err := statusFiles.ReadFile("statuspage/" + name)
		if err != nil {
			panic(err) // embedded: cannot happen
		}
		return string(b)
	}
	html := read("status.html")
	html = strings.Replace(html, `<link rel="stylesheet" href="status.css">`, "<style>\n"+read("status.css")+"</style>", 1)
	html = strings.Replace(html, `<script src="status.js"></script>`, "<script>\n"+read("status.js")+"</script>", 1)
	return []byte(html)
}()

// Limits of GET /sessions.
const (
	sessionsDefaultLimit = 100
	sessionsMaxLimit     = 1000
)

// AdminHandler serves the admin listener (README "Admin endpoints"):
// /healthz, /readyz, /metrics, the status page at /, /status.json, and
// the /sessions API.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		// Nothing but itself: no request leaves the page for another host.
		h.Set("Content-Security-Policy", "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(statusPage)
	})
	mux.HandleFunc("GET /status.json", s.serveStatus)
	mux.HandleFunc("GET /sessions", s.serveSessions)
	mux.HandleFunc("GET /sessions/{id}", s.serveSession)
	mux.HandleFunc("DELETE /sessions/{id}", s.deleteSession)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type errorJSON struct {
	Error string `json:"error"`
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorJSON{Error: msg})
}

// query parses r's query strictly (url.URL.Query drops what it cannot
// parse), answering 400 when it cannot.
func query(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		jsonError(w, http.StatusBadRequest, "malformed query: "+err.Error())
		return nil, false
	}
	return q, true
}

// serveStatus is GET /status.json[?since=<unix ms>]: the numbers now and
// the history held, after since.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r)
	if !ok {
		return
	}
	var since int64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			jsonError(w, http.StatusBadRequest, "since: want a time in unix milliseconds")
			return
		}
		since = n
	}
	ring := s.sampler.touch()
	if len(ring) == 0 { // shutting down: no sampler
		ring = []sample{s.takeSample()}
	}
	writeJSON(w, http.StatusOK, s.status(ring, since))
}

// sessionJSON is one session in the /sessions API.
type sessionJSON struct {
	ID         string        `json:"id"`
	Started    time.Time     `json:"started"`
	AgeSeconds float64       `json:"age_seconds"`
	Remote     string        `json:"remote"`
	State      session.State `json:"state"`
	Upstream   string        `json:"upstream"`
	RTTMS      legRTT        `json:"rtt_ms"`
	Retained   int           `json:"retained"`
	Buffered   int           `json:"buffered"`
	HeldBytes  int64         `json:"held_bytes"`
	Reconnects int           `json:"reconnects"`
}

// legRTT holds each leg's latest round trip; null before its first pong.
type legRTT struct {
	Client   *float64 `json:"client"`
	Upstream *float64 `json:"upstream"`
}

func rttMS(d time.Duration) *float64 {
	if d <= 0 {
		return nil
	}
	v := float64(d.Microseconds()) / 1000
	return &v
}

func (rs running) json(now time.Time) sessionJSON {
	in := rs.sess.Info()
	return sessionJSON{
		ID: in.ID, Started: rs.started, AgeSeconds: now.Sub(rs.started).Round(time.Millisecond).Seconds(),
		Remote: in.Remote, State: in.State, Upstream: in.Upstream,
		RTTMS:    legRTT{Client: rttMS(in.ClientRTT), Upstream: rttMS(in.UpstreamRTT)},
		Retained: in.Retained, Buffered: in.Buffered, HeldBytes: in.HeldBytes, Reconnects: in.Reconnects,
	}
}

type sessionsPage struct {
	Sessions   []sessionJSON `json:"sessions"`
	Count      int           `json:"count"` // running sessions now, all pages
	NextCursor string        `json:"next_cursor,omitempty"`
}

// A cursor names the position after a page: the start number of its
// last session, base64url so that clients treat it as opaque.
func encodeCursor(seq uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func decodeCursor(c string) (uint64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 8 {
		return 0, false
	}
	seq := binary.BigEndian.Uint64(b)
	return seq, seq != 0
}

// serveSessions is GET /sessions[?limit=N][&cursor=C]: running sessions,
// newest first.
func (s *Server) serveSessions(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r)
	if !ok {
		return
	}
	limit := sessionsDefaultLimit
	if v := q.Get("limit"); v != "" || q.Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > sessionsMaxLimit {
			jsonError(w, http.StatusBadRequest, "limit: want an integer from 1 to "+strconv.Itoa(sessionsMaxLimit))
			return
		}
		limit = n
	}
	var before uint64
	if q.Has("cursor") {
		seq, ok := decodeCursor(q.Get("cursor"))
		if !ok {
			jsonError(w, http.StatusBadRequest, "cursor: not a cursor from next_cursor")
			return
		}
		before = seq
	}
	s.mu.Lock()
	rs, more := s.sessions.page(before, limit)
	count := s.sessions.count()
	s.mu.Unlock()
	now := time.Now()
	p := sessionsPage{Sessions: make([]sessionJSON, 0, len(rs)), Count: count}
	for _, e := range rs {
		p.Sessions = append(p.Sessions, e.json(now))
	}
	if more {
		p.NextCursor = encodeCursor(rs[len(rs)-1].seq)
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (running, bool) {
	id := r.PathValue("id")
	s.mu.Lock()
	rs, ok := s.sessions.find(id)
	s.mu.Unlock()
	if !ok {
		jsonError(w, http.StatusNotFound, "no session "+strconv.Quote(id))
	}
	return rs, ok
}

// serveSession is GET /sessions/{id}.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request) {
	if rs, ok := s.lookup(w, r); ok {
		writeJSON(w, http.StatusOK, rs.json(time.Now()))
	}
}

// serverCloseCode reports whether tether, as a server, may end a session
// with c on an operator's request: codes for a policy or a server
// condition, and the application range. Codes that describe a peer's
// protocol error (1002, 1003, 1007, 1009) or are client-only (1010) are
// not.
func serverCloseCode(c int) bool {
	switch {
	case c == 1000, c == 1001, c == 1008:
		return true
	case c >= 1011 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

type closedJSON struct {
	ID     string `json:"id"`
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// deleteSession is DELETE /sessions/{id}[?code=C][&reason=R]: the client
// gets Close(C, R), 1008 "closed by operator" by default, and the
// upstream Close 1001.
func (s *Server) deleteSession(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r)
	if !ok {
		return
	}
	code := int(session.ClosePolicyViolation)
	if q.Has("code") {
		n, err := strconv.Atoi(q.Get("code"))
		if err != nil || !serverCloseCode(n) {
			jsonError(w, http.StatusBadRequest, "code: want 1000, 1001, 1008, 1011-1014 or 3000-4999")
			return
		}
		code = n
	}
	reason := "closed by operator"
	if q.Has("reason") {
		reason = q.Get("reason")
		// A Close payload is at most 125 bytes: 2 for the code.
		if len(reason) > 123 || !utf8.ValidString(reason) {
			jsonError(w, http.StatusBadRequest, "reason: want at most 123 bytes of UTF-8")
			return
		}
	}
	rs, ok := s.lookup(w, r)
	if !ok {
		return
	}
	if rs.sess.Info().State == session.StateClosing {
		jsonError(w, http.StatusConflict, "session "+strconv.Quote(rs.sess.ID())+" is already closing")
		return
	}
	rs.sess.CloseWith(session.CloseCode(code), reason)
	writeJSON(w, http.StatusOK, closedJSON{ID: rs.sess.ID(), Code: code, Reason: reason})
}
