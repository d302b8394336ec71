package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-proxy/tether/internal/buildinfo"
	"github.com/tether-proxy/tether/internal/ctxtime"
	"github.com/tether-proxy/tether/internal/memrelease"
	"github.com/tether-proxy/tether/internal/rawtcp"
	"github.com/tether-proxy/tether/internal/resume"
	"github.com/tether-proxy/tether/session"
)

// Options are a Server's collaborators. The zero value works: logs are
// discarded and metrics go to a fresh registry.
type Options struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// Jitter replaces the reconnect backoff's random source: it returns
	// a number in [0, n). nil is math/rand/v2; the demo's tuning and tests
	// set it to make backoff delays predictable.
	Jitter func(n int64) int64
	// CloseWait bounds waits for Close replies; 0 means 3 s.
	CloseWait time.Duration
	// Burst, if set, is told of every session that starts or ends, to
	// give a burst's memory back once it is over (see memrelease).
	Burst *memrelease.Releaser
	// Build labels tether_build_info; the zero value means
	// buildinfo.Read("") (the running binary, no release fallback).
	Build buildinfo.Info
	// Config, if set, is a pointer to the whole configuration struct
	// (envconfig tags) that the status page shows; nil shows the Config
	// given to New.
	Config any
}

// Server is tether's client-facing handler (README "Running in front of a real
// backend") with its session registry, metrics and drain (README "Shutdown").
// Safe for concurrent use.
type Server struct {
	cfg       Config
	log       *slog.Logger
	reg       *prometheus.Registry
	metrics   *metrics
	env       *session.Env
	clientTLS *tls.Config
	upTLS     *tls.Config
	preferred atomic.Int64 // index of the upstream URL that last worked

	mu       sync.Mutex
	sessions registry
	slots    int // sessions counted against TETHER_MAX_SESSIONS
	draining bool
	wg       sync.WaitGroup
	// tokens finds resumable sessions by token (README "Client session
	// resume"); a session's key changes under mu.
	tokens resume.Table[*entry]
	// lookedUp, when set (tests only), runs in tryResume between the
	// token's lookup and its use.
	lookedUp atomic.Pointer[func()]
	// relayed, when set (tests only), runs in startSession between the
	// session's Relay and its listing, with mu held.
	relayed atomic.Pointer[func()]

	ready atomic.Bool
	http  *http.Server
	burst *memrelease.Releaser

	// The admin endpoints' state (admin.go).
	start   time.Time
	shown   any // what the status page shows as the configuration
	sampler *sampler
}

// New validates cfg and builds a Server. Errors name the variable.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	clientTLS, err := cfg.serverTLS()
	if err != nil {
		return nil, err
	}
	upTLS, err := cfg.upstreamTLS()
	if err != nil {
		return nil, err
	}
	build := opts.Build
	if build == (buildinfo.Info{}) {
		build = buildinfo.Read("")
	}
	m := newMetrics(reg, build, cfg.MaxSessions)
	env, err := session.NewEnv(cfg.Session, log, m)
	if err != nil {
		return nil, err
	}
	env.Jitter = opts.Jitter
	env.CloseWait = opts.CloseWait
	env.DialTimeout = cfg.DialTimeout
	s := &Server{
		cfg:       cfg,
		log:       log,
		reg:       reg,
		metrics:   m,
		env:       env,
		clientTLS: clientTLS,
		upTLS:     upTLS,
		burst:     opts.Burst,
		start:     time.Now(),
		shown:     opts.Config,
	}
	if s.shown == nil {
		s.shown = &s.cfg
	}
	s.sampler = newSampler(s.takeSample)
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		IdleTimeout:       cfg.HandshakeTimeout,
		// net/http allows 4 KiB over MaxHeaderBytes: 32 KiB in all (README "Running in
		// front of a real backend").
		MaxHeaderBytes: 28 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext:    withClientConn,
	}
	// The upgrade needs Hijack: HTTP/1.1 only.
	s.http.Protocols = new(http.Protocols)
	s.http.Protocols.SetHTTP1(true)
	if cfg.UpstreamTLSInsecure {
		log.Warn("upstream TLS certificate checks are off (TETHER_UPSTREAM_TLS_INSECURE)")
	}
	s.ready.Store(true)
	return s, nil
}

// Serve accepts client connections on ln (wrapped in TLS when configured)
// until Shutdown; it then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	if s.clientTLS != nil {
		// crypto/tls reads and writes the socket through a rawtcp.Conn:
		// system calls the scheduler does not see, as a leg read raw
		// makes (README "Performance").
		ln = tls.NewListener(rawtcp.Listener{Listener: ln}, s.clientTLS)
	}
	// clientListener sees the plaintext request (obs-fold, see
	// clientConn). Being outside the TLS listener, it also hides the
	// *tls.Conn from net/http, which then does not give the TLS handshake
	// a deadline of its own: TLS and headers share ReadHeaderTimeout from
	// accept, as README "Configuration" says of TETHER_HANDSHAKE_TIMEOUT
	// (TestHostileSlowTLSHandshake).
	ln = clientListener{ln}
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Ready reports whether the server accepts new sessions.
func (s *Server) Ready() bool { return s.ready.Load() }

// Sessions reports the registered sessions, handshakes included.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions.n
}

// register reserves a session slot; it fails when draining or full.
func (s *Server) register() (*entry, func(), int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil, nil, http.StatusServiceUnavailable
	}
	if m := s.cfg.MaxSessions; m > 0 && s.slots >= m {
		return nil, nil, http.StatusServiceUnavailable
	}
	e := &entry{}
	s.sessions.n++
	s.slots++
	s.wg.Add(1)
	return e, func() {
		s.releaseSlot(e)
		s.mu.Lock()
		s.sessions.unlink(e)
		s.sessions.n--
		s.mu.Unlock()
		s.wg.Done()
	}, 0
}

// releaseSlot frees e's TETHER_MAX_SESSIONS slot, once: as soon as its
// session ends, before the goodbye handshakes finish.
func (s *Server) releaseSlot(e *entry) {
	s.mu.Lock()
	if !e.released {
		e.released = true
		s.slots--
	}
	s.mu.Unlock()
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func httpError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

// ServeHTTP handles one client handshake and then starts the session
// (README "Architecture"): it checks the request, reserves a session slot,
// dials the upstream, completes the client's upgrade and starts the
// session, then returns.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cc := clientConnOf(r)
	if !s.checkRequest(w, r, cc) {
		return
	}
	req, badAck := s.resumeRequest(r)
	if req.Token != "" && s.tryResume(w, r, req, badAck) {
		return
	}
	e, unregister, status := s.register()
	if status != 0 {
		w.Header().Set("Retry-After", "1")
		httpError(w, status, "tether is not accepting sessions")
		return
	}
	id := newID()
	log := s.log.With("session", id)
	w.Header().Set("X-Tether-Session", id)

	d := s.newDialer(r, cc.secure(r))
	up, cookies, err := d.dial(r.Context(), true)
	if err != nil {
		unregister()
		var se ws.StatusError
		if errors.As(err, &se) {
			log.Info("upstream refused the handshake", "code", int(se), "err", err)
			httpError(w, int(se), http.StatusText(int(se)))
			return
		}
		log.Warn("upstream unreachable", "err", err)
		httpError(w, http.StatusBadGateway, "upstream unreachable")
		return
	}
	c, err := s.upgradeClient(w, r, id, up.Protocol, cookies)
	if err != nil {
		unregister()
		_ = up.Conn.Close()
		log.Info("client upgrade failed", "err", err)
		return
	}
	origin := ""
	if req.Asked() {
		origin = r.Header.Get("Origin")
	}
	s.startSession(e, unregister, id, c, up, d, req.Asked(), origin)
}

// checkRequest answers a request that is not an acceptable WebSocket
// upgrade (README "Configuration" for the origin and compression checks)
// and reports whether it is one.
func (s *Server) checkRequest(w http.ResponseWriter, r *http.Request, cc *clientConn) bool {
	if cc != nil && cc.folded.Load() {
		httpError(w, http.StatusBadRequest, "obs-fold in a request header")
		return false
	}
	if status, why := checkUpgrade(r); status != 0 {
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		httpError(w, status, why)
		return false
	}
	if s.cfg.ClientCompression && !extensionsParse(r) {
		httpError(w, http.StatusBadRequest, "malformed Sec-WebSocket-Extensions")
		return false
	}
	if !originAllowed(s.cfg.AllowedOrigins, r.Header.Get("Origin")) {
		httpError(w, http.StatusForbidden, "origin not allowed")
		return false
	}
	return true
}

// upgraded is a client connection after its upgrade.
type upgraded struct {
	conn     net.Conn
	buffered []byte // bytes read past the handshake
	deflate  bool   // permessage-deflate was negotiated
}

// upgradeClient completes the client's upgrade with the upstream's
// subprotocol, the upstream's cookies and, when configured and offered,
// permessage-deflate.
func (s *Server) upgradeClient(w http.ResponseWriter, r *http.Request, id, protocol string, cookies []string) (upgraded, error) {
	h := http.Header{"X-Tether-Session": {id}}
	if len(cookies) > 0 {
		h["Set-Cookie"] = cookies
	}
	upgrader := ws.HTTPUpgrader{Header: h, Timeout: s.remaining(r)}
	if protocol != "" {
		upgrader.Protocol = func(p string) bool { return p == protocol }
	}
	var deflate *wsflate.Extension
	if s.cfg.ClientCompression {
		deflate = &wsflate.Extension{Parameters: wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}}
		upgrader.Negotiate = func(o httphead.Option) (httphead.Option, error) {
			accept, err := deflate.Negotiate(o)
			if err != nil {
				// RFC 7692 §5: an offer with invalid parameters is
				// declined (no compression), not a failed handshake.
				return httphead.Option{}, nil
			}
			return accept, nil
		}
	}
	// checkUpgrade found "upgrade" among all Connection values; gobwas
	// looks at the first one only.
	r.Header.Set("Connection", "Upgrade")
	conn, rw, _, err := upgrader.Upgrade(r, w)
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return upgraded{}, err
	}
	u := upgraded{conn: conn, buffered: drain(rw.Reader)}
	if fc, ok := conn.(*clientConn); ok {
		u.conn = fc.Conn // it holds no bytes: relay without the wrapper
	}
	if deflate != nil {
		_, u.deflate = deflate.Accepted()
	}
	return u, nil
}

// startSession starts the session of registry entry e and returns. The
// session frees e's slot as soon as it ends and unregisters e once it has
// finished.
func (s *Server) startSession(e *entry, unregister func(), id string, c upgraded, up session.Upstream, d *upstreamDialer, resumable bool, origin string) {
	sess := session.New(s.env, id, c.conn, c.buffered, up, func(ctx context.Context) (session.Upstream, error) {
		up, _, err := d.dial(ctx, false)
		return up, err
	})
	if c.deflate {
		sess.EnableClientCompression()
	}
	if resumable {
		s.enableResume(e, sess, origin)
	}
	sess.SetRequestQuery(d.rawQuery)
	s.metrics.sessionsTotal.Inc()
	s.metrics.sessionsActive.Inc()
	// The session starts and the handler returns: net/http's
	// per-connection state (request, buffers, the serving goroutine's
	// stack) is then garbage, and an idle session holds no goroutine at
	// all (its legs park). The registry, not net/http, tracks the session
	// for the drain (Server.Shutdown never waits for hijacked connections
	// anyway).
	s.burst.Note()
	sess.Open(func(st session.Stage, _ session.Outcome) {
		if st == session.Ending {
			s.releaseSlot(e) // before the goodbye handshakes finish
			if resumable {
				s.forgetToken(sess)
			}
			return
		}
		s.metrics.sessionsActive.Dec()
		unregister()
		s.burst.Note()
	})
	// Relayed and listed in one critical section: an admin lookup that
	// follows a relayed message must find the session (README "Admin
	// endpoints"). Relay starts goroutines and timers only, no I/O; the
	// end callback takes mu, so it waits for the link.
	s.mu.Lock()
	sess.Relay(context.Background())
	if f := s.relayed.Load(); f != nil {
		(*f)()
	}
	e.sess = sess
	s.sessions.link(e, time.Now())
	draining := s.draining
	s.mu.Unlock()
	if draining {
		sess.Drain()
	}
}

// remaining is what is left of the handshake deadline (README
// "Configuration": TETHER_HANDSHAKE_TIMEOUT, counted from TCP accept).
func (s *Server) remaining(r *http.Request) time.Duration {
	cc := clientConnOf(r)
	if cc == nil {
		return s.cfg.HandshakeTimeout
	}
	left := time.Until(cc.accepted.Add(s.cfg.HandshakeTimeout))
	if left < 100*time.Millisecond {
		left = 100 * time.Millisecond
	}
	return left
}

// drain copies the bytes a bufio.Reader holds beyond the handshake.
func drain(br *bufio.Reader) []byte {
	if br == nil || br.Buffered() == 0 {
		return nil
	}
	p, _ := br.Peek(br.Buffered())
	return append([]byte(nil), p...)
}

// upstreamDialer dials the upstream for one session, replaying the client's
// request (README "Running in front of a real backend" and "Upstream loss,
// reconnect and the delivery guarantee").
type upstreamDialer struct {
	s *Server
	// the client request's path and query (strings, not a url.URL: this
	// lives as long as the session, idle or not)
	path, rawPath, rawQuery string
	header                  ws.HandshakeHeaderBytes // the forwarded headers, on the wire
	protocols               []string
	next                    int // rotation index (reconnect loop only: one goroutine)
}

// headerBytes is h as header lines, the form a session keeps for its
// reconnects: one slice, where an http.Header is a map, a slice per name
// and the request's strings (about twice the memory for a browser's
// headers, held for the session's life).
func headerBytes(h http.Header) ws.HandshakeHeaderBytes {
	var b bytes.Buffer
	_ = h.Write(&b) // sorted; CR and LF in values become spaces
	return ws.HandshakeHeaderBytes(bytes.Clone(b.Bytes()))
}

// newDialer makes the dialer of r's session; secure tells whether the
// client connected over TLS.
func (s *Server) newDialer(r *http.Request, secure bool) *upstreamDialer {
	return &upstreamDialer{
		s:         s,
		path:      r.URL.Path,
		rawPath:   r.URL.RawPath,
		rawQuery:  r.URL.RawQuery,
		header:    headerBytes(upstreamHeader(r, secure)),
		protocols: offeredProtocols(r),
		next:      int(s.preferred.Load()),
	}
}

// dial dials the upstream. The first dial tries every URL in turn from the
// one that last worked and returns the Set-Cookie values of the upstream's
// answer, for the client's; a reconnect attempt dials one URL, the next in
// rotation after a failure.
func (d *upstreamDialer) dial(ctx context.Context, first bool) (session.Upstream, []string, error) {
	urls := d.s.cfg.UpstreamURLs
	tries := 1
	if first {
		tries = len(urls)
	}
	var lastErr error
	for i := 0; i < tries; i++ {
		idx := d.next % len(urls)
		up, cookies, err := d.dialOne(ctx, idx, first)
		if err == nil {
			d.s.preferred.Store(int64(idx))
			// When this connection is lost, its URL has just failed: the
			// reconnect's first attempt dials the next one in rotation
			// (with one URL, the same).
			d.next = idx + 1
			return up, cookies, nil
		}
		lastErr = err
		var se ws.StatusError
		if errors.As(err, &se) {
			if !first && int(se) >= 400 && int(se) < 500 {
				return up, nil, fmt.Errorf("%w: %w", session.ErrUpstreamRejected, err)
			}
			if first {
				return up, nil, err // the client gets that same status
			}
		}
		d.next = idx + 1
		if ctx.Err() != nil {
			break
		}
	}
	return session.Upstream{}, nil, lastErr
}

// dialRaw connects to a wss:// upstream's address: the TLS client reads
// and writes the socket through a rawtcp.Conn.
func dialRaw(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		return rawtcp.New(tc), nil
	}
	return c, err
}

func (d *upstreamDialer) dialOne(ctx context.Context, idx int, first bool) (session.Upstream, []string, error) {
	base := d.s.cfg.UpstreamURLs[idx]
	target := targetURL(base, &url.URL{Path: d.path, RawPath: d.rawPath, RawQuery: d.rawQuery})
	var cookies []string
	dialer := ws.Dialer{
		Timeout:   d.s.cfg.DialTimeout,
		Protocols: d.protocols,
		Header:    d.header,
		TLSConfig: d.s.upTLS,
		OnHeader: func(key, value []byte) error {
			if first && strings.EqualFold(string(key), "Set-Cookie") {
				cookies = append(cookies, string(value))
			}
			return nil
		},
	}
	if base.Scheme == "wss" {
		dialer.NetDial = dialRaw // crypto/tls reads and writes it raw, as on the listener (Serve)
	}
	conn, br, hs, err := dialer.Dial(ctx, target)
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return session.Upstream{}, nil, fmt.Errorf("dial upstream %s: %w", base.Host, err)
	}
	buffered := drain(br)
	if br != nil {
		ws.PutReader(br)
	}
	return session.Upstream{Conn: conn, Buffered: buffered, Protocol: hs.Protocol, Host: base.Host}, cookies, nil
}

// Shutdown drains (README "Shutdown"): /readyz turns 503, the listener closes,
// new handshakes get 503, and sessions are closed (client 1012, upstream 1001)
// spread over TETHER_SHUTDOWN_SPREAD. It returns when every session has ended
// or ctx is done, after which the remaining sessions are closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.ready.Store(false)
	s.mu.Lock()
	s.draining = true
	entries := s.sessions.all()
	s.mu.Unlock()
	s.sampler.stop()

	httpDone := make(chan error, 1)
	go func() { httpDone <- s.http.Shutdown(ctx) }()

	spread := s.cfg.ShutdownSpread
	if half := s.cfg.ShutdownTimeout / 2; spread > half {
		spread = half
	}
	if dl, ok := ctx.Deadline(); ok {
		if half := time.Until(dl) / 2; spread > half {
			spread = half
		}
	}
	s.log.Info("draining", "sessions", len(entries), "spread", spread)
	start := time.Now()
	for i, e := range entries {
		if len(entries) > 1 && spread > 0 {
			at := start.Add(spread * time.Duration(i) / time.Duration(len(entries)))
			if d := time.Until(at); d > 0 && !ctxtime.Sleep(ctx, d) {
				break
			}
		}
		e.Drain()
	}
	// Sessions still handshaking when the drain began are drained as
	// they register (ServeHTTP checks draining).

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// Closed outside mu: a session that ends frees its slot
		// (releaseSlot takes mu).
		s.mu.Lock()
		left := s.sessions.all()
		s.mu.Unlock()
		for _, sess := range left {
			sess.Close()
		}
		<-done
	}
	return <-httpDone
}
