package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Backend states, as reported by [Backend.Stats] and the page.
const (
	StateRunning    = "running"
	StateStopped    = "stopped"
	StateRestarting = "restarting"
)

const (
	// backendMaxMessage bounds one echoed message (tether's default
	// TETHER_MAX_MESSAGE_BYTES).
	backendMaxMessage = 1 << 20
	// backendIOTimeout bounds the upgrade and every echo write.
	backendIOTimeout = 10 * time.Second
)

// errBackendClosed is returned by Start after Close.
var errBackendClosed = errors.New("demo backend closed")

// Backend is the demo's echo backend: a WebSocket server on 127.0.0.1 that
// echoes every text and binary message and answers RFC 6455 pings. It can
// be stopped and started again on the same port, abruptly (no Close frame,
// TCP reset), so that tether's reconnect kicks in.
//
// Each connection is served by one goroutine, which both reads and writes
// (pongs and echoes), so its frames never interleave. Stop waits for all of
// them. A Backend is safe for concurrent use.
type Backend struct {
	logger *slog.Logger

	ctx    context.Context // cancelled by Close: ends pending restarts
	cancel context.CancelFunc
	bg     sync.WaitGroup // restart goroutines started by RestartAsync

	restartMu sync.Mutex // serialises Stop/Start sequences of restarts

	mu      sync.Mutex
	addr    string // fixed by the first Start
	ln      net.Listener
	conns   map[net.Conn]struct{}
	state   string
	closed  bool
	serving sync.WaitGroup // accept loop and connection goroutines

	connections atomic.Int64 // completed upgrades
	messages    atomic.Int64 // messages echoed
	pings       atomic.Int64 // RFC pings received
	restarts    atomic.Int64
}

// BackendStats is a snapshot of a Backend's counters.
type BackendStats struct {
	State       string `json:"state"`       // StateRunning, StateStopped or StateRestarting
	Addr        string `json:"addr"`        // host:port, fixed for the Backend's life
	Active      int    `json:"active"`      // open connections
	Connections int64  `json:"connections"` // WebSocket connections accepted since creation
	Messages    int64  `json:"messages"`    // messages received to echo
	Pings       int64  `json:"pings"`       // RFC 6455 pings received (and answered)
	Restarts    int64  `json:"restarts"`
}

// NewBackend returns a stopped backend; call Start. A nil logger discards.
func NewBackend(logger *slog.Logger) *Backend {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Backend{
		logger: logger.With("component", "demo-backend"),
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[net.Conn]struct{}),
		state:  StateStopped,
	}
}

// Start listens: on a random port of 127.0.0.1 the first time, on the same
// address every later time. It is a no-op when already running.
func (b *Backend) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errBackendClosed
	}
	if b.ln != nil {
		return nil
	}
	addr := b.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demo backend listen %s: %w", addr, err)
	}
	b.addr = ln.Addr().String()
	b.ln = ln
	b.state = StateRunning
	b.serving.Add(1)
	go b.acceptLoop(ln)
	b.logger.Info("echo backend listening", "addr", b.addr)
	return nil
}

// Stop closes the listener and every connection abruptly (TCP reset, no
// Close frame) and waits for their goroutines. It is a no-op when stopped.
// A restart in progress finishes first, so the backend stays stopped.
func (b *Backend) Stop() {
	b.restartMu.Lock()
	defer b.restartMu.Unlock()
	b.stop(StateStopped)
}

func (b *Backend) stop(state string) {
	b.mu.Lock()
	ln := b.ln
	b.ln = nil
	if ln != nil {
		_ = ln.Close()
		for c := range b.conns {
			abort(c)
		}
	}
	b.state = state
	b.mu.Unlock()
	b.serving.Wait()
	if ln != nil {
		b.logger.Info("echo backend stopped", "addr", b.addr)
	}
}

// abort closes c with a TCP reset, as a crashed process would.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Restart stops the backend, waits pause, and starts it again on the same
// port. It returns early with ctx's error (leaving the backend stopped)
// when ctx ends during the pause.
func (b *Backend) Restart(ctx context.Context, pause time.Duration) error {
	b.restartMu.Lock()
	defer b.restartMu.Unlock()
	b.restarts.Add(1)
	b.stop(StateRestarting)
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-ctx.Done():
		b.setState(StateStopped)
		return ctx.Err()
	case <-b.ctx.Done():
		b.setState(StateStopped)
		return errBackendClosed
	case <-t.C:
	}
	// The port was ours a moment ago; retry briefly in case the kernel
	// still holds it.
	var err error
	for range 20 {
		if err = b.Start(); err == nil || errors.Is(err, errBackendClosed) {
			return err
		}
		select {
		case <-b.ctx.Done():
			return errBackendClosed
		case <-time.After(50 * time.Millisecond):
		}
	}
	b.setState(StateStopped)
	return err
}

// RestartAsync runs Restart in the background (the page's "restart
// backend" button). Close waits for it.
func (b *Backend) RestartAsync(pause time.Duration) {
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		if err := b.Restart(b.ctx, pause); err != nil && !errors.Is(err, errBackendClosed) {
			b.logger.Error("echo backend restart", "err", err)
		}
	}()
}

func (b *Backend) setState(s string) {
	b.mu.Lock()
	b.state = s
	b.mu.Unlock()
}

// Close stops the backend for good and waits for every goroutine,
// including pending restarts.
func (b *Backend) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.bg.Wait()
	b.Stop()
}

// Addr returns the backend's host:port ("" before the first Start).
func (b *Backend) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// URL returns the backend's ws:// URL.
func (b *Backend) URL() string { return "ws://" + b.Addr() + "/" }

// Stats returns a snapshot of the backend's state and counters.
func (b *Backend) Stats() BackendStats {
	b.mu.Lock()
	st := BackendStats{State: b.state, Addr: b.addr, Active: len(b.conns)}
	b.mu.Unlock()
	st.Connections = b.connections.Load()
	st.Messages = b.messages.Load()
	st.Pings = b.pings.Load()
	st.Restarts = b.restarts.Load()
	return st
}

// acceptLoop accepts until ln is closed.
func (b *Backend) acceptLoop(ln net.Listener) {
	defer b.serving.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				b.logger.Warn("echo backend accept", "err", err)
			}
			return
		}
		b.mu.Lock()
		if b.ln != ln { // stopped meanwhile
			b.mu.Unlock()
			abort(c)
			continue
		}
		b.conns[c] = struct{}{}
		b.serving.Add(1)
		b.mu.Unlock()
		go b.serveConn(c)
	}
}

// serveConn upgrades c and echoes until the peer leaves or Stop aborts c.
func (b *Backend) serveConn(c net.Conn) {
	defer b.serving.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		_ = c.Close()
	}()
	_ = c.SetDeadline(time.Now().Add(backendIOTimeout))
	if _, err := ws.Upgrade(c); err != nil {
		b.logger.Debug("echo backend upgrade", "err", err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	b.connections.Add(1)
	b.logger.Debug("echo backend connection open", "remote", c.RemoteAddr().String())

	// This goroutine is the connection's only writer, so letting gobwas's
	// ControlFrameHandler answer pings and Closes from here is safe (unlike
	// in tether's relay).
	control := wsutil.ControlFrameHandler(c, ws.StateServerSide)
	onControl := func(h ws.Header, r io.Reader) error {
		if h.OpCode == ws.OpPing {
			b.pings.Add(1)
		}
		_ = c.SetWriteDeadline(time.Now().Add(backendIOTimeout))
		return control(h, r)
	}
	rd := &wsutil.Reader{
		Source:         c,
		State:          ws.StateServerSide,
		CheckUTF8:      true,
		MaxMessageSize: backendMaxMessage,
		OnIntermediate: onControl,
	}
	for {
		h, err := rd.NextFrame()
		if err != nil {
			b.logEnd(err)
			return
		}
		if h.OpCode.IsControl() {
			if err := onControl(h, rd); err != nil {
				b.logEnd(err)
				return
			}
			continue
		}
		p, err := io.ReadAll(rd)
		if err != nil {
			b.logEnd(err)
			return
		}
		// Counted before the echo goes out, so that a client that has
		// the echo finds it counted.
		b.messages.Add(1)
		_ = c.SetWriteDeadline(time.Now().Add(backendIOTimeout))
		if err := wsutil.WriteServerMessage(c, h.OpCode, p); err != nil {
			b.logEnd(err)
			return
		}
	}
}

func (b *Backend) logEnd(err error) {
	var closed wsutil.ClosedError
	switch {
	case errors.As(err, &closed), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		b.logger.Debug("echo backend connection closed", "err", err)
	default:
		b.logger.Info("echo backend connection ended", "err", err)
	}
}
