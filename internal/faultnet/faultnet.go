// Package faultnet provides a TCP relay for fault-injection tests.
//
// A Relay sits between a client under test (for example the tether WebSocket
// proxy) and its upstream, forwarding bytes in both directions on 127.0.0.1.
// Tests point the client at Relay.Addr instead of the real target and then
// inject network faults at precise moments:
//
//   - Stall / Resume: the relay stops forwarding (peers see silence, nothing
//     is closed) and later releases the held bytes in order, without loss.
//   - ResetAll: every relayed connection is aborted with a TCP RST on both
//     sides, as after a crashed middlebox or peer.
//   - CloseAll: every relayed connection is closed gracefully (FIN) on both
//     sides.
//   - Refuse: new connections are accepted and immediately reset, without
//     dialling the target.
//   - SetTarget: new connections go to a different upstream (for example a
//     restarted server on a new port).
//
// Conns, Accepted and WaitConns let tests observe and synchronise on the
// relay's state without sleeping.
//
// Forwarding is a faithful TCP relay: a FIN (EOF) read from one peer is
// passed on as a half-close (CloseWrite) to the other, and a read or write
// error (such as a reset by one peer) aborts both sides with a RST. While
// stalled, these events are held back like data.
//
// faultnet is meant for tests only and listens on the loopback interface.
package faultnet

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// bufSize is the copy buffer size per direction of a relayed connection.
const bufSize = 32 << 10

// dialTimeout bounds a dial to the target. The target is always local, so
// this only matters for pathological cases; Close cancels pending dials.
const dialTimeout = 10 * time.Second

// Relay listens on 127.0.0.1:0 and forwards every accepted connection to its
// target. All methods are safe for concurrent use.
type Relay struct {
	ln     *net.TCPListener
	ctx    context.Context // cancelled by Close; aborts pending dials
	cancel context.CancelFunc
	done   chan struct{} // closed by Close; stops the accept loop's backoff
	wg     sync.WaitGroup

	mu       sync.Mutex
	target   string
	refuse   bool
	closed   bool
	stalled  bool
	gate     chan struct{}      // closed while forwarding; open (blocking) while stalled
	conns    map[*pair]struct{} // relayed: target dialled
	pending  map[*pair]struct{} // accepted, target dial in progress
	accepted int
	changed  chan struct{} // closed and replaced whenever conns changes

	delayMax atomic.Int64 // SetDelay: nanoseconds; 0 forwards at once
}

// pair is one accepted connection: the client side and, once dialled, the
// server side.
type pair struct {
	client *net.TCPConn
	server *net.TCPConn  // nil while dialling; guarded by Relay.mu until set
	dead   chan struct{} // closed (under Relay.mu) when the pair is torn down
	reset  bool          // teardown mode; written before dead is closed
	once   sync.Once
	live   atomic.Int32 // directions that have not yet seen EOF
}

// New starts a relay listening on 127.0.0.1 on an ephemeral port that
// forwards connections to target (a "host:port" address).
func New(target string) (*Relay, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	open := make(chan struct{})
	close(open)
	r := &Relay{
		ln:      ln,
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		target:  target,
		gate:    open,
		conns:   make(map[*pair]struct{}),
		pending: make(map[*pair]struct{}),
		changed: make(chan struct{}),
	}
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// Addr returns the relay's listening address, "127.0.0.1:port".
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Stall stops forwarding bytes in both directions on all current and future
// connections, without closing anything: the peers see silence. New
// connections are still accepted and dialled, but their bytes are held too.
// Bytes are held, not dropped; Resume releases them in order.
func (r *Relay) Stall() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stalled {
		r.stalled = true
		r.gate = make(chan struct{})
	}
}

// Resume undoes Stall: held bytes flow on and forwarding continues.
func (r *Relay) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stalled {
		r.stalled = false
		close(r.gate)
	}
}

// ResetAll aborts every current connection with a TCP RST on both sides.
// The connections are gone from Conns when ResetAll returns. Connections
// whose target dial is still in progress are aborted as well: the client
// side at once, the server side as soon as the dial completes.
func (r *Relay) ResetAll() {
	for _, p := range r.snapshot() {
		r.teardown(p, true)
	}
}

// CloseAll closes every current connection gracefully (FIN) on both sides.
// The connections are gone from Conns when CloseAll returns. Connections
// whose target dial is still in progress are closed as well, as for
// ResetAll.
//
// Note that the kernel turns a close into a RST if the relay's socket still
// has unread received data, which can happen while stalled.
func (r *Relay) CloseAll() {
	for _, p := range r.snapshot() {
		r.teardown(p, false)
	}
}

// Refuse sets whether new connections are refused. While on, accepted
// connections are closed immediately with a RST and the target is not
// dialled. Existing connections are not affected.
func (r *Relay) Refuse(on bool) {
	r.mu.Lock()
	r.refuse = on
	r.mu.Unlock()
}

// SetTarget changes the address future connections are forwarded to.
// Existing connections are not affected.
func (r *Relay) SetTarget(addr string) {
	r.mu.Lock()
	r.target = addr
	r.mu.Unlock()
}

// Conns returns the number of currently open relayed connections: those
// whose target has been dialled and that the relay has not yet closed.
func (r *Relay) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// Accepted returns the total number of connections accepted so far,
// including refused ones and ones whose target dial failed.
func (r *Relay) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

// WaitConns blocks until Conns() == n or ctx is done, in which case it
// returns ctx.Err().
func (r *Relay) WaitConns(ctx context.Context, n int) error {
	for {
		r.mu.Lock()
		if len(r.conns) == n {
			r.mu.Unlock()
			return nil
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops listening, closes all connections and waits for every
// goroutine of the relay to exit. It is safe to call more than once.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait()
		return nil
	}
	r.closed = true
	r.mu.Unlock()

	close(r.done)
	r.cancel()
	err := r.ln.Close()
	r.CloseAll()
	r.wg.Wait()
	return err
}

// snapshot returns the current pairs, including those still dialling.
func (r *Relay) snapshot() []*pair {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := make([]*pair, 0, len(r.conns)+len(r.pending))
	for p := range r.conns {
		ps = append(ps, p)
	}
	for p := range r.pending {
		ps = append(ps, p)
	}
	return ps
}

// notifyLocked wakes WaitConns callers. r.mu must be held.
func (r *Relay) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Relay) acceptLoop() {
	defer r.wg.Done()
	var backoff time.Duration
	for {
		c, err := r.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient failure such as EMFILE: back off like net/http.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff *= 2; backoff > time.Second {
				backoff = time.Second
			}
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-r.done:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0

		r.mu.Lock()
		r.accepted++
		if r.refuse || r.closed {
			r.mu.Unlock()
			abort(c)
			continue
		}
		p := &pair{client: c, dead: make(chan struct{})}
		p.live.Store(2)
		r.pending[p] = struct{}{}
		target := r.target
		r.wg.Add(1)
		r.mu.Unlock()
		go r.handle(p, target)
	}
}

// handle dials the target for the pending pair p and then runs the
// client-to-server copier itself, alongside a second goroutine for the
// server-to-client direction.
func (r *Relay) handle(p *pair, target string) {
	defer r.wg.Done()
	d := net.Dialer{Timeout: dialTimeout}
	sc, err := d.DialContext(r.ctx, "tcp", target)
	if err != nil {
		// Like an unreachable target behind a middlebox: reset the client.
		r.teardown(p, true)
		return
	}
	s := sc.(*net.TCPConn)

	r.mu.Lock()
	select {
	case <-p.dead:
		// Torn down (ResetAll, CloseAll or Close) while dialling.
		reset := p.reset
		r.mu.Unlock()
		closeConn(s, reset)
		return
	default:
	}
	p.server = s
	delete(r.pending, p)
	r.conns[p] = struct{}{}
	r.notifyLocked()
	r.wg.Add(1)
	r.mu.Unlock()

	c := p.client

	go func() {
		defer r.wg.Done()
		r.pipe(p, c, s)
	}()
	r.pipe(p, s, c)
}

// pipe copies src to dst for pair p. Every read result (data, EOF or error)
// waits at the stall gate before being acted on, so nothing passes while the
// relay is stalled and nothing is lost or reordered.
func (r *Relay) pipe(p *pair, dst, src *net.TCPConn) {
	buf := make([]byte, bufSize)
	for {
		n, err := src.Read(buf)
		if !r.pass(p) || !r.delay(p) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				r.teardown(p, true)
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// Propagate the half-close; when both directions
				// have finished, close the pair.
				_ = dst.CloseWrite()
				if p.live.Add(-1) == 0 {
					r.teardown(p, false)
				}
				return
			}
			r.teardown(p, true)
			return
		}
	}
}

// pass blocks while the relay is stalled. It reports false if the pair has
// been torn down.
func (r *Relay) pass(p *pair) bool {
	select {
	case <-p.dead:
		return false
	default:
	}
	r.mu.Lock()
	g := r.gate
	r.mu.Unlock()
	select {
	case <-g:
		select {
		case <-p.dead:
			return false
		default:
			return true
		}
	case <-p.dead:
		return false
	}
}

// teardown closes both sides of p, with a RST if reset is set and
// gracefully otherwise, and removes it from the relay. Only the first call
// for a pair has any effect. If p is still dialling, handle closes the
// server side when the dial completes.
func (r *Relay) teardown(p *pair, reset bool) {
	p.once.Do(func() {
		r.mu.Lock()
		p.reset = reset
		close(p.dead)
		s := p.server
		delete(r.pending, p)
		if _, ok := r.conns[p]; ok {
			delete(r.conns, p)
			r.notifyLocked()
		}
		r.mu.Unlock()

		if !reset {
			// Send both FINs before closing either side.
			_ = p.client.CloseWrite()
			if s != nil {
				_ = s.CloseWrite()
			}
		}
		closeConn(p.client, reset)
		if s != nil {
			closeConn(s, reset)
		}
	})
}

// closeConn closes c, with a TCP RST if reset is set.
func closeConn(c *net.TCPConn, reset bool) {
	if reset {
		_ = c.SetLinger(0)
	}
	_ = c.Close()
}

// abort closes c with a TCP RST.
func abort(c *net.TCPConn) { closeConn(c, true) }
