package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/netpoll"
)

// Metrics receives what sessions count (README "Metrics and logs").
// Implementations must be safe for concurrent use and cheap: they are called
// per message.
type Metrics interface {
	Message(toUpstream bool, bytes int)
	PingSent(leg string)
	PongReceived(leg string)
	RTT(leg string, rtt time.Duration)
	HeartbeatTimeout(leg string)
	Reconnect(success bool)
	Buffered(delta int)
	Overflow()
	Resent(n int)
}

// NopMetrics counts nothing.
type NopMetrics struct{}

func (NopMetrics) Message(bool, int)         {}
func (NopMetrics) PingSent(string)           {}
func (NopMetrics) PongReceived(string)       {}
func (NopMetrics) RTT(string, time.Duration) {}
func (NopMetrics) HeartbeatTimeout(string)   {}
func (NopMetrics) Reconnect(bool)            {}
func (NopMetrics) Buffered(int)              {}
func (NopMetrics) Overflow()                 {}
func (NopMetrics) Resent(int)                {}

// Upstream is an upgraded upstream connection.
type Upstream struct {
	Conn     net.Conn
	Buffered []byte // bytes read past the handshake, to be read first
	Protocol string // subprotocol the upstream selected
	Host     string // for logs: host only, never userinfo or query
}

// DialFunc dials the upstream again for a session, replaying the original
// request; each call is one attempt (proxy rotates over the URLs). An error
// that wraps ErrUpstreamRejected (a 4xx answer) ends the session.
type DialFunc func(ctx context.Context) (Upstream, error)

// ErrUpstreamRejected, wrapped by a DialFunc's error, ends the session
// instead of another reconnect attempt.
var ErrUpstreamRejected = errors.New("upstream rejected the handshake")

// Env is what all sessions of a process share. Safe for concurrent use
// once built; do not change its fields after the first session starts.
type Env struct {
	Config   Config              // validated
	Messages *heartbeat.Messages // JSON ping/pong
	Logger   *slog.Logger
	Metrics  Metrics
	// Limiter is the process-wide reconnect dial rate; nil = unlimited.
	Limiter *rate.Limiter
	// Jitter returns a random number in [0, n); nil uses math/rand/v2.
	Jitter func(n int64) int64
	// IdleAfter is how long a leg waits at a message boundary with a
	// goroutine before it parks in the poller (see leg); 0 means 250 ms,
	// a negative value never parks. A leg quiet for longer costs a park
	// and a wake (an epoll_ctl and a hand-off to a worker goroutine) per message, which
	// is noise at that message rate.
	IdleAfter time.Duration
	// CloseWait bounds the wait for a peer's Close reply; 0 means 3 s.
	CloseWait time.Duration
	// DialTimeout (TETHER_DIAL_TIMEOUT) also bounds the wait for the
	// upstream's answer to a replayed opening (README "State replay on
	// upstream reconnect"); 0 means 10 s.
	DialTimeout time.Duration

	total  atomic.Int64 // buffered + retained bytes of all sessions
	poller *netpoll.Poller
	parked atomic.Int64
	sweep  sweeper // finds the running legs quiet for IdleAfter (to park) or their heartbeat timeout
	// workers runs read loops and probes on goroutines that outlive them.
	workers workers
	// test is the seam for tests; nil in production.
	test *testHooks
}

// testHooks let tests see and tune what a session does inside; only
// tests set them (Env.test).
type testHooks struct {
	parkMin   time.Duration                  // overrides parkMinInterval
	readBuf   func(l *leg, size int)         // told the size of each read buffer a read loop takes
	running   func(l *leg)                   // told of each run of a read loop as it starts
	quickPark func(l *leg)                   // told of each leg that parks right after a control-only wake
	deadline  func(l *leg)                   // told of each read deadline a read loop sets
	early     func(l *leg)                   // told of each read deadline that passed with the leg neither idle nor dead
	sweep     func(l *leg)                   // told of each leg the sweeper interrupts (quiet for IdleAfter or its timeout)
	swept     func(interrupted int)          // told of each sweep's count of interrupted legs
	clearing  func(l *leg)                   // told just before a read loop clears a deadline a sweep or park left
	tick      func(l *leg)                   // told of each firing of a leg's timer
	timerSet  func(l *leg)                   // told of each Reset of a leg's timer
	read      func(l *leg, n int, err error) // told of each raw socket read
	write     func(l *leg, n int, err error) // told of each raw socket write
}

func (e *Env) parkMinInterval() time.Duration {
	if e.test != nil && e.test.parkMin > 0 {
		return e.test.parkMin
	}
	return parkMinInterval
}

// NewEnv validates cfg and builds an Env with its defaults filled in.
func NewEnv(cfg Config, logger *slog.Logger, m Metrics) (*Env, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	msgs, err := heartbeat.NewMessages(cfg.PingMessage, cfg.PongMessage)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NopMetrics{}
	}
	e := &Env{Config: cfg, Messages: msgs, Logger: logger, Metrics: m, poller: netpoll.New()}
	if r := cfg.Reconnect.Rate; r > 0 {
		burst := int(r)
		if burst < 1 {
			burst = 1
		}
		e.Limiter = rate.NewLimiter(rate.Limit(r), burst)
	}
	return e, nil
}

// BufferedBytes reports the bytes all sessions buffer and retain.
func (e *Env) BufferedBytes() int64 { return e.total.Load() }

// ParkedLegs reports how many legs are parked now: they hold no goroutine
// and no read buffer.
func (e *Env) ParkedLegs() int64 { return e.parked.Load() }

func (e *Env) idleAfter() time.Duration {
	if e.IdleAfter > 0 {
		return e.IdleAfter
	}
	return 250 * time.Millisecond
}

func (e *Env) closeWait() time.Duration {
	if e.CloseWait > 0 {
		return e.CloseWait
	}
	return 3 * time.Second
}

func (e *Env) jitter(n int64) int64 {
	if n <= 0 {
		return 0
	}
	if e.Jitter != nil {
		return e.Jitter(n)
	}
	return rand.Int64N(n)
}

type state uint8

const (
	stateConnected    state = iota
	stateReconnecting       // includes re-sending on a new connection
	stateClosed
)

// Session relays one client leg to a replaceable upstream leg. It is the
// state machine (connected → reconnecting → connected, or closed) and
// wires the parts that do the work: the legs (leg.go), the delivery log of
// client messages (log.go), the replay opening (log.go) and the reconnect
// loop (reconnect.go).
//
// Goroutines: one read loop for the client leg and one per upstream
// connection, each only while its leg is not parked (see leg); a
// reconnect loop only while reconnecting; heartbeat timers run callbacks
// briefly when they fire. The session finishes when all of them have.
// Legs' writes are under their own locks, never taken while holding mu.
type Session struct {
	// Fixed by New.
	id       string
	cfg      *Config
	env      *Env
	log      *slog.Logger
	dial     DialFunc
	protocol string // the subprotocol every upstream connection must choose
	client   *leg   // the first client leg: the only one unless rs is set
	// rs is the resume state (resume.go), nil unless the client asked
	// for a resumable session; set before Start.
	rs *resumeState

	// Set by Start before its goroutines start; read only after.
	stopDrain func() bool

	// Guarded by mu; cond (on mu) is broadcast when state, up, upLog's
	// room or acted change.
	mu    sync.Mutex
	cond  sync.Cond
	state state
	// holding: connected, but client messages wait in upLog (unwritten)
	// because the upstream's acknowledgement is overdue (ack.go);
	// flushing: flushHeld is writing them.
	holding, flushing bool
	lostInFlush       bool // the connection being re-sent on was lost
	// acted has a bit per leg (actedClient, actedUpstream), set by end
	// once it has written (or given up on) that leg's Close: a read loop
	// that sees the peer's Close while ours is being written must not
	// close the connection under it.
	acted uint8
	// probeSeq is upLog's next sequence number at the last pong that
	// found new client messages, at activeUntil (unix nano) minus
	// activeFor (ack.go).
	probeSeq    uint64
	activeUntil int64
	up          *leg // the current upstream connection; nil while reconnecting
	gen         uint64
	upHost      string // for logs; written only with up installed
	lostAt      time.Time
	upLog       deliveryLog // client messages: retained until acknowledged, buffered while reconnecting
	replay      replayOpening
	outcome     Outcome // set by end
	onEnd       EndFunc
	force       *time.Timer // end's backstop
	// ctx is cancelled when the session ends; made when the first
	// reconnect loop starts, since only that loop needs it.
	ctx    context.Context
	cancel context.CancelFunc

	// Atomic. Mirrors for the per-message paths of the read loops,
	// written under mu together with what they mirror: curGen = gen,
	// closed = (state == stateClosed).
	curGen atomic.Uint64
	closed atomic.Bool
	// parts counts the read loops (client, each upstream connection) and
	// the reconnect loop that have not finished; a parked loop has not.
	// The one that brings it to zero finishes the session (partDone). Only
	// a holder of a part adds one (addPart).
	parts atomic.Int32

	// sr is README "State replay on upstream reconnect" (its own
	// fields say what guards them).
	sr stateReplay
}

// Stage is the moment of a session's end an EndFunc hears about.
type Stage uint8

const (
	// Ending: the session has ended, relays nothing more and has freed
	// its held messages; its Close frames may still be in flight.
	Ending Stage = iota
	// Finished: every goroutine the session started has returned and
	// both connections are closed.
	Finished
)

// EndFunc is told of a session's end twice, once per Stage, in order,
// with the same Outcome. It must not block: at Ending it runs on the
// goroutine that ends the session, before the Close frames are written.
type EndFunc func(Stage, Outcome)

// New builds a session over an upgraded client connection and its first
// upstream connection. clientBuffered holds bytes read past the client's
// handshake. Run starts it.
func New(env *Env, id string, client net.Conn, clientBuffered []byte, up Upstream, dial DialFunc) *Session {
	s := &Session{
		id:       id,
		cfg:      &env.Config,
		env:      env,
		log:      env.Logger, // every call adds "session", id: a With per session costs heap
		dial:     dial,
		protocol: up.Protocol,
		upHost:   up.Host,
	}
	s.cond.L = &s.mu
	b := &s.cfg.Buffer
	s.upLog = newDeliveryLog(b.MaxMessages, b.MaxBytes, &env.total, b.TotalMaxBytes)
	s.replay.keep = uint32(min(s.cfg.ReplayFirst, math.MaxUint32))
	s.replay.dropN = int32(min(s.cfg.ReplayDropReplies, math.MaxInt32))
	s.initReplay(up.Protocol)
	s.client = newLeg(s, client, clientBuffered, true, s.cfg.ClientHeartbeat)
	s.installLocked(up)
	return s
}

// EnableClientCompression turns on permessage-deflate (RFC 7692, no
// context takeover) on the client leg, as negotiated in its handshake. Call
// it before Run.
func (s *Session) EnableClientCompression() {
	s.client.deflate = true
	s.client.fr.deflate = true
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

func (s *Session) retention() bool { return s.cfg.UpstreamHeartbeat.Mode.On() }

// installLocked makes up the current upstream leg. The caller holds mu or
// owns s exclusively.
func (s *Session) installLocked(up Upstream) *leg {
	u := newLeg(s, up.Conn, up.Buffered, false, s.cfg.UpstreamHeartbeat)
	u.resume = func() { s.run(u) }
	s.gen++
	u.gen = s.gen
	s.up = u
	s.curGen.Store(s.gen)
	s.upHost = up.Host
	return u
}

// Run relays until the session ends and every goroutine it started has
// returned, and tells how it ended. Cancelling ctx drains the session: the
// client gets Close 1012, the upstream Close 1001.
func (s *Session) Run(ctx context.Context) Outcome {
	done := make(chan Outcome, 1)
	s.Start(ctx, func(st Stage, o Outcome) {
		if st == Finished {
			done <- o
		}
	})
	return <-done
}

// Start starts the session and returns; onEnd, if not nil, is told when
// the session ends and when it has finished (see EndFunc). Cancelling ctx
// drains the session as in Run. No goroutine waits for the session: an
// idle session has none at all.
func (s *Session) Start(ctx context.Context, onEnd EndFunc) {
	s.Open(onEnd)
	s.Relay(ctx)
}

// Open is Start's first half: it logs the session's opening and records
// onEnd; nothing is relayed until Relay. A caller that publishes the
// session (the proxy's admin list, README "Admin endpoints") calls Relay
// and publishes it in one critical section, so that nothing the session
// relays is seen before it is listed: Relay does no I/O (the log line is
// here), so that section holds its lock across no write.
func (s *Session) Open(onEnd EndFunc) {
	s.log.Info("session open", "session", s.id, "remote", s.client.conn.RemoteAddr().String(), "upstream", s.upHost)
	s.mu.Lock()
	s.onEnd = onEnd // under mu: a Close may race with Start
	s.mu.Unlock()
}

// Relay is Start's second half, once, after Open: it starts the read
// loops and the heartbeat timers (goroutines and timers only). Cancelling
// ctx drains the session as in Run.
func (s *Session) Relay(ctx context.Context) {
	if ctx.Done() != nil {
		s.stopDrain = context.AfterFunc(ctx, s.Drain)
	}
	up, c := s.up, s.client
	c.resume = func() { s.run(c) }
	s.parts.Store(2) // the client's read loop and the upstream's
	s.env.workers.begin()
	s.env.workers.run(job{l: c})
	s.env.workers.run(job{l: up})
	s.client.startHeartbeat()
	up.startHeartbeat()
}

// Drain ends the session for a shutdown: the client gets Close 1012, the
// upstream Close 1001 (README "Shutdown"). Safe from any goroutine, at any
// time after Start; it does nothing once the session is ending.
func (s *Session) Drain() {
	s.end(act{kind: actSend, ce: CloseError{Code: CloseServiceRestart, Reason: "tether shutting down"}},
		act{kind: actSend, ce: CloseError{Code: CloseGoingAway, Reason: "tether shutting down"}}, Outcome{Cause: CauseShutdown})
}

// errParked is returned by a read loop whose leg parked.
var errParked = errors.New("leg parked")

// addPart adds a part (a read loop or the reconnect loop). The caller
// holds one, so the session cannot have finished.
func (s *Session) addPart() {
	if s.parts.Add(1) <= 1 {
		panic("session: a part added by a goroutine that holds none")
	}
}

// partDone finishes one part; the last finishes the session.
func (s *Session) partDone() {
	if s.parts.Add(-1) != 0 {
		return
	}
	if s.stopDrain != nil {
		s.stopDrain()
	}
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	if s.force != nil {
		s.force.Stop()
	}
	o, onEnd := s.outcome, s.onEnd
	s.mu.Unlock()
	s.log.Info("session closed", "session", s.id, "why", o.Why(),
		"code", int(o.Client.code()), "reason", o.Client.Reason,
		"upstream_code", int(o.Upstream.code()))
	if onEnd != nil {
		onEnd(Finished, o)
	}
	s.env.workers.end()
}

// Close tears the session down at once (drain deadline passed).
func (s *Session) Close() {
	s.end(act{kind: actDrop}, act{kind: actDrop}, Outcome{Cause: CauseForced})
	s.forceClose()
}

func (s *Session) forceClose() {
	s.clientLeg().closeConn()
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	if up != nil {
		up.closeConn()
	}
}

// guard turns a panic in f into an error that closes both legs with 1011.
func (s *Session) guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("session panic", "session", s.id, "err", fmt.Sprint(r), "stack", string(debug.Stack()))
			ce := CloseError{Code: CloseInternalError, Reason: "tether internal error"}
			s.end(act{kind: actSendNoWait, ce: ce}, act{kind: actSendNoWait, ce: ce}, Outcome{Cause: CausePanic})
			err = nil
		}
	}()
	return f()
}

// pong handles a pong from l's peer: RTT and, upstream, acknowledgement.
func (s *Session) pong(l *leg, payload []byte, isJSON bool) {
	now := time.Now()
	l.ctl.Lock()
	var rtt time.Duration
	var ack uint64
	var ok bool
	if isJSON {
		rtt, ack, ok = l.tracker.PongJSON(now)
	} else {
		rtt, ack, ok = l.tracker.PongWS(now, payload)
	}
	l.ctl.Unlock()
	s.env.Metrics.PongReceived(l.name())
	if !ok {
		return
	}
	s.env.Metrics.RTT(l.name(), rtt)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("pong received", "session", s.id, "leg", l.name(), "rtt", rtt)
	}
	if l.upstream() {
		// Answered before the log is acknowledged: a client message
		// that saw l suspect is then in the log for ack to flush.
		l.ackAnswered()
		switch s.ack(l.gen, ack) {
		case ackHeld:
			l.armAck()
		case ackActive:
			l.armProbe()
		}
	}
}

func (s *Session) pingSent(l *leg) {
	s.env.Metrics.PingSent(l.name())
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("ping sent", "session", s.id, "leg", l.name())
	}
}

// goodbye bounds a Close write.
func (s *Session) goodbye() time.Duration {
	d := s.cfg.WriteTimeout
	if w := s.env.closeWait(); w < d {
		d = w
	}
	return d
}

type actKind uint8

const (
	actDrop       actKind = iota // close the connection without a Close frame
	actSend                      // send a Close and wait (bounded) for the reply
	actSendNoWait                // send a Close, then close the connection
	actReply                     // answer the peer's Close; its read loop is ending
	actSendLinger                // send a Close, then linger; the caller is the leg's read loop
)

// act is what end does to one leg.
type act struct {
	kind actKind
	ce   CloseError
}

// end ends the session once: it stops reconnecting, releases held
// messages and sends each leg its Close (README "Close codes"); o says
// why, end fills in the Close each leg gets. Later calls do nothing. It
// must not be called with mu held.
func (s *Session) end(client, upstream act, o Outcome) {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	s.state = stateClosed
	s.closed.Store(true)
	up, cl := s.up, s.clientLeg()
	if s.cancel != nil {
		s.cancel()
	}
	s.releaseLocked()
	s.cond.Broadcast()
	o.Client, o.Upstream = client.ce, upstream.ce
	if client.kind == actDrop {
		o.Client = CloseError{Code: CloseAbnormal}
	}
	if up == nil || upstream.kind == actDrop {
		o.Upstream = CloseError{Code: CloseAbnormal}
	}
	s.outcome = o
	if s.rs != nil {
		s.endResumeLocked(o)
	}
	onEnd := s.onEnd
	// Backstop: whatever a peer does, both connections are closed after
	// the goodbye writes and the close wait.
	s.force = time.AfterFunc(2*s.goodbye()+s.env.closeWait(), s.forceClose)
	s.mu.Unlock()

	cl.stopHeartbeat()
	if up != nil {
		up.stopHeartbeat()
	}
	if onEnd != nil {
		onEnd(Ending, o)
	}
	s.apply(cl, client)
	s.setActed(actedClient)
	if up != nil {
		s.apply(up, upstream)
	}
	s.setActed(actedUpstream)
	// Last: lingering blocks the caller, the other leg's Close must not
	// wait for it.
	if client.kind == actSendLinger {
		cl.linger(s.env.closeWait())
	}
	if up != nil && upstream.kind == actSendLinger {
		up.linger(s.env.closeWait())
	}
}

// Bits of Session.acted.
const (
	actedClient uint8 = 1 << iota
	actedUpstream
)

func (s *Session) setActed(bit uint8) {
	s.mu.Lock()
	s.acted |= bit
	s.cond.Broadcast()
	s.mu.Unlock()
}

// waitActed waits, once the session is ending, until end has written (or
// given up on) the leg's Close, so that the caller does not close the
// connection under that write (a simultaneous close). The wait is bounded
// by the goodbye write's own timeouts.
func (s *Session) waitActed(bit uint8) {
	if !s.closed.Load() {
		return
	}
	s.mu.Lock()
	for s.acted&bit == 0 {
		s.cond.Wait()
	}
	s.mu.Unlock()
}

// actedBit is l's bit of Session.acted.
func (l *leg) actedBit() uint8 {
	if l.upstream() {
		return actedUpstream
	}
	return actedClient
}

func (s *Session) apply(l *leg, a act) {
	switch a.kind {
	case actDrop:
		l.beginClose(0)
		l.closeConn()
	case actSend:
		if !l.writeClose(a.ce, s.goodbye()) {
			l.closeConn()
		}
	case actSendNoWait:
		l.writeClose(a.ce, s.goodbye())
		l.closeConn()
	case actReply, actSendLinger:
		l.writeClose(a.ce, s.goodbye())
	}
}

// releaseLocked drops every held message.
func (s *Session) releaseLocked() {
	if n := s.upLog.release(); n > 0 {
		s.env.Metrics.Buffered(-n)
	}
}
