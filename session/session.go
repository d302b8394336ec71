package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/netpoll"
)

// Metrics receives what sessions count (SPEC §6). Implementations must be
// safe for concurrent use and cheap: they are called per message.
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

// Sentinels that change what a session does.
var (
	ErrUpstreamRejected  = errors.New("upstream rejected the handshake")
	ErrBufferOverflow    = errors.New("buffer overflow")
	ErrAttemptsExhausted = errors.New("reconnect attempts exhausted")
	ErrHeartbeatTimeout  = errors.New("heartbeat timeout")
)

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
	// and a wake (an epoll_ctl and a goroutine start) per message, which
	// is noise at that message rate.
	IdleAfter time.Duration
	// CloseWait bounds the wait for a peer's Close reply; 0 means 3 s.
	CloseWait time.Duration

	total  atomic.Int64 // buffered + retained bytes of all sessions
	poller *netpoll.Poller
	parked atomic.Int64
	// parkMin overrides parkMinInterval (tests).
	parkMin time.Duration
	// readBufHook, if set, is told the size of each read buffer a leg's
	// read loop takes (tests).
	readBufHook func(l *leg, size int)
	// quickParkHook, if set, is told of each leg that parks right after
	// a wake that brought only control frames (tests).
	quickParkHook func(l *leg)
}

func (e *Env) parkMinInterval() time.Duration {
	if e.parkMin > 0 {
		return e.parkMin
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

// Session relays one client leg to a replaceable upstream leg.
//
// Goroutines: one read loop for the client leg and one per upstream
// connection, each only while its leg is not parked (see leg); a
// reconnect loop only while reconnecting; heartbeat timers run callbacks
// briefly when they fire. The session finishes when all of them have. All
// session state is under mu; legs' writes are under their own locks, never
// taken while holding mu.
type Session struct {
	id   string
	cfg  *Config
	env  *Env
	log  *slog.Logger
	dial DialFunc

	client *leg

	mu       sync.Mutex
	cond     sync.Cond
	state    state
	up       *leg
	gen      uint64
	protocol string
	// upLog holds the client messages on their way to the upstream:
	// retained until acknowledged, buffered while reconnecting.
	upLog       deliveryLog
	replay      replayOpening
	lostInFlush bool
	lostAt      time.Time
	closeInfo   closeInfo

	// Lock-free mirrors for the per-message paths of the read loops,
	// written under mu together with what they mirror: curGen = gen,
	// closed = (state == stateClosed).
	curGen atomic.Uint64
	closed atomic.Bool

	// OnEnd, if set before Run, is called once when the session ends (its
	// Close frames may still be in flight).
	OnEnd func()

	// ctx is cancelled when the session ends; made (under mu) when the
	// first reconnect loop starts, since only that loop needs it.
	ctx    context.Context
	cancel context.CancelFunc
	// parts counts the read loops (client, each upstream connection) and
	// the reconnect loop that have not finished; a parked loop has not.
	// The one that brings it to zero finishes the session. A part is
	// added only by a holder of another part.
	parts     atomic.Int32
	stopDrain func() bool
	onDone    func()
	force     *time.Timer
	upHost    string

	// acted has a bit per leg (actedClient, actedUpstream), set under mu
	// by end once it has written (or given up on) that leg's Close and
	// broadcast on cond: a read loop that sees the peer's Close while ours
	// is being written must not close the connection under it.
	acted uint8
}

type closeInfo struct {
	why      string
	client   CloseError
	upstream CloseError
}

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
	s.replay.keep = uint64(s.cfg.ReplayFirst)
	s.replay.dropN = int64(s.cfg.ReplayDropReplies)
	s.client = newLeg(s, LegClient, client, clientBuffered, true, s.cfg.ClientHeartbeat)
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
	u := newLeg(s, LegUpstream, up.Conn, up.Buffered, false, s.cfg.UpstreamHeartbeat)
	u.resume = func() { s.upstreamRun(u) }
	s.gen++
	u.gen = s.gen
	s.up = u
	s.curGen.Store(s.gen)
	s.upHost = up.Host
	return u
}

// Run relays until the session ends and every goroutine it started has
// returned. Cancelling ctx drains the session: the client gets Close 1012,
// the upstream Close 1001.
func (s *Session) Run(ctx context.Context) {
	done := make(chan struct{})
	s.Start(ctx, func() { close(done) })
	<-done
}

// Start starts the session and returns; onDone, if not nil, is called once
// when the session has ended and every goroutine it started has returned.
// Cancelling ctx drains the session as in Run. No goroutine waits for the
// session: an idle session has none at all.
func (s *Session) Start(ctx context.Context, onDone func()) {
	s.log.Info("session open", "session", s.id, "remote", s.client.conn.RemoteAddr().String(), "upstream", s.upHost)
	s.onDone = onDone
	if ctx.Done() != nil {
		s.stopDrain = context.AfterFunc(ctx, s.Drain)
	}
	up := s.up
	s.client.resume = s.clientRun
	s.parts.Add(2)
	go s.clientRun()
	go up.resume()
	s.client.startHeartbeat()
	up.startHeartbeat()
}

// Drain ends the session for a shutdown: the client gets Close 1012, the
// upstream Close 1001 (SPEC §5). Safe from any goroutine, at any time after
// Start; it does nothing once the session is ending.
func (s *Session) Drain() {
	s.end(act{kind: actSend, ce: CloseError{Code: CloseServiceRestart, Reason: "tether shutting down"}},
		act{kind: actSend, ce: CloseError{Code: CloseGoingAway, Reason: "tether shutting down"}}, "shutdown")
}

// clientRun runs the client leg's read loop until the leg parks or ends.
func (s *Session) clientRun() {
	err := s.guard(s.clientLoop)
	if err == errParked {
		return // the leg is another goroutine's now: touch nothing
	}
	s.client.flushDeferred()
	s.client.readDone()
	s.clientDone(err)
	s.waitActed(actedClient)
	s.client.closeConn()
	s.partDone()
}

// errParked is returned by a read loop whose leg parked.
var errParked = errors.New("leg parked")

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
	ci := s.closeInfo
	s.mu.Unlock()
	s.log.Info("session closed", "session", s.id, "why", ci.why,
		"code", codeAttr(ci.client), "reason", ci.client.Reason,
		"upstream_code", codeAttr(ci.upstream))
	if s.onDone != nil {
		s.onDone()
	}
}

func codeAttr(c CloseError) int {
	if c.NoCode {
		return int(CloseNoStatus)
	}
	return int(c.Code)
}

// Close tears the session down at once (drain deadline passed).
func (s *Session) Close() {
	s.end(act{kind: actDrop}, act{kind: actDrop}, "forced")
	s.forceClose()
}

func (s *Session) forceClose() {
	s.client.closeConn()
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
			s.end(act{kind: actSendNoWait, ce: ce}, act{kind: actSendNoWait, ce: ce}, "panic")
			err = nil
		}
	}()
	return f()
}

// clientLoop reads the client leg until it ends.
func (s *Session) clientLoop() error {
	c := s.client
	c.acquireReader()
	answerJSON := s.cfg.ClientHeartbeat.Mode.AnswersJSON()
	for {
		if c.grow {
			c.growReader()
		}
		ev, op, p, frag, ce, err := c.fr.next()
		if err != nil {
			if err == errIdle {
				if c.park() {
					return errParked
				}
				continue
			}
			return err
		}
		switch ev {
		case evPing:
			c.queuePong(p)
		case evPong:
			s.pong(c, p, false)
		case evClose:
			if c.closing.Load() {
				return nil // the reply to our Close
			}
			s.end(act{kind: actReply, ce: *ce}, act{kind: actSend, ce: *ce}, "client closed")
			return nil
		case evData:
			if s.closed.Load() {
				continue
			}
			if answerJSON && op == ws.OpText && !frag {
				switch s.env.Messages.Classify(p) {
				case heartbeat.KindPing:
					c.queueJSONPong(p)
					continue
				case heartbeat.KindPong:
					s.pong(c, nil, true)
					continue
				}
			}
			c.quiet = false
			s.toUpstream(op, p, c.moreInput())
			c.fr.release()
		}
	}
}

// clientDone ends the session after the client loop returned err.
func (s *Session) clientDone(err error) {
	if err == nil || s.closed.Load() {
		return
	}
	upAct := act{kind: actSend, ce: CloseError{Code: CloseGoingAway, Reason: "client gone"}}
	var pe *protocolError
	switch {
	case s.client.failure() != nil:
		s.end(act{kind: actDrop}, upAct, "client write failed: "+s.client.failure().Error())
	case errors.As(err, &pe):
		s.end(act{kind: actSendLinger, ce: CloseError{Code: pe.Code, Reason: pe.msg}}, upAct, "client protocol error: "+pe.msg)
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.env.Metrics.HeartbeatTimeout(LegClient)
		s.log.Warn("heartbeat timeout", "session", s.id, "leg", LegClient, "timeout", s.cfg.ClientHeartbeat.Timeout)
		s.end(act{kind: actSendNoWait, ce: CloseError{Code: CloseGoingAway, Reason: "heartbeat timeout"}}, upAct, "client heartbeat timeout")
	default:
		s.end(act{kind: actDrop}, upAct, "client connection lost")
	}
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
	s.env.Metrics.PongReceived(l.name)
	if !ok {
		return
	}
	s.env.Metrics.RTT(l.name, rtt)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("pong received", "session", s.id, "leg", l.name, "rtt", rtt)
	}
	if l.name == LegUpstream {
		s.ack(l.gen, ack)
	}
}

func (s *Session) pingSent(l *leg) {
	s.env.Metrics.PingSent(l.name)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("ping sent", "session", s.id, "leg", l.name)
	}
}

// upstreamRun runs one upstream connection's read loop until the leg
// parks or the connection ends.
func (s *Session) upstreamRun(u *leg) {
	err := s.guard(func() error { return s.upstreamRead(u) })
	if err == errParked {
		return // the leg is another goroutine's now: touch nothing
	}
	u.flushDeferred()
	u.readDone()
	if err != nil {
		s.upstreamErr(u, err)
	}
	s.waitActed(actedUpstream)
	u.closeConn()
	s.partDone()
}

func (s *Session) upstreamRead(u *leg) error {
	u.acquireReader()
	answerJSON := s.cfg.UpstreamHeartbeat.Mode.AnswersJSON()
	for {
		if u.grow {
			u.growReader()
		}
		ev, op, p, frag, ce, err := u.fr.next()
		if err != nil {
			if err == errIdle {
				if u.park() {
					return errParked
				}
				continue
			}
			return err
		}
		switch ev {
		case evPing:
			u.queuePong(p)
		case evPong:
			s.pong(u, p, false)
		case evClose:
			if u.closing.Load() {
				return nil
			}
			code := ce.Code
			if ce.NoCode {
				code = CloseNoStatus
			}
			if s.cfg.Reconnect.OnCodes.Has(code) {
				u.writeClose(*ce, s.goodbye())
				s.upstreamLost(u, fmt.Sprintf("upstream closed with %d", code))
				return nil
			}
			s.end(act{kind: actSend, ce: *ce}, act{kind: actReply, ce: *ce}, "upstream closed")
			return nil
		case evData:
			if s.closed.Load() || s.curGen.Load() != u.gen {
				continue
			}
			if answerJSON && op == ws.OpText && !frag {
				switch s.env.Messages.Classify(p) {
				case heartbeat.KindPing:
					u.queueJSONPong(p)
					continue
				case heartbeat.KindPong:
					s.pong(u, nil, true)
					continue
				}
			}
			u.quiet = false
			if s.replay.dropReply() {
				continue
			}
			more := u.moreInput()
			if err := s.client.writeData(op, p, 0, more); err != nil {
				continue // the client leg is failing; its loop ends the session
			}
			if more {
				u.deferFlush(s.client)
			}
			s.env.Metrics.Message(false, len(p))
			u.fr.release()
		}
	}
}

// upstreamErr classifies the end of an upstream connection (SPEC §4, §5).
func (s *Session) upstreamErr(u *leg, err error) {
	if s.closed.Load() || s.curGen.Load() != u.gen {
		return
	}
	var pe *protocolError
	switch {
	case u.failure() != nil:
		s.upstreamLost(u, "upstream write failed: "+u.failure().Error())
	case errors.As(err, &pe):
		s.end(act{kind: actSend, ce: CloseError{Code: CloseBadGateway, Reason: "upstream protocol error"}},
			act{kind: actSendLinger, ce: CloseError{Code: pe.Code, Reason: pe.msg}}, "upstream protocol error: "+pe.msg)
	case errors.Is(err, os.ErrDeadlineExceeded) && !u.closing.Load():
		s.env.Metrics.HeartbeatTimeout(LegUpstream)
		s.log.Warn("heartbeat timeout", "session", s.id, "leg", LegUpstream, "timeout", s.cfg.UpstreamHeartbeat.Timeout)
		s.upstreamLost(u, "upstream heartbeat timeout")
	case s.cfg.Reconnect.OnCodes.Has(CloseAbnormal):
		s.upstreamLost(u, "upstream connection lost: "+err.Error())
	default:
		s.end(act{kind: actSend, ce: CloseError{Code: CloseBadGateway, Reason: "upstream connection lost"}},
			act{kind: actDrop}, "upstream connection lost: "+err.Error())
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
// messages and sends each leg its Close (SPEC §5). Later calls do nothing.
// It must not be called with mu held.
func (s *Session) end(client, upstream act, why string) {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	s.state = stateClosed
	s.closed.Store(true)
	up := s.up
	if s.cancel != nil {
		s.cancel()
	}
	s.releaseLocked()
	s.cond.Broadcast()
	s.closeInfo = closeInfo{why: why, client: client.ce, upstream: upstream.ce}
	if client.kind == actDrop {
		s.closeInfo.client = CloseError{Code: CloseAbnormal}
	}
	if up == nil || upstream.kind == actDrop {
		s.closeInfo.upstream = CloseError{Code: CloseAbnormal}
	}
	// Backstop: whatever a peer does, both connections are closed after
	// the goodbye writes and the close wait.
	s.force = time.AfterFunc(2*s.goodbye()+s.env.closeWait(), s.forceClose)
	s.mu.Unlock()

	s.client.stopHeartbeat()
	if up != nil {
		up.stopHeartbeat()
	}
	if s.OnEnd != nil {
		s.OnEnd()
	}
	s.apply(s.client, client)
	s.setActed(actedClient)
	if up != nil {
		s.apply(up, upstream)
	}
	s.setActed(actedUpstream)
	// Last: lingering blocks the caller, the other leg's Close must not
	// wait for it.
	if client.kind == actSendLinger {
		s.client.linger(s.env.closeWait())
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
