// Package netpoll tells when idle sockets become readable, so that an idle
// WebSocket leg needs no goroutine (and no goroutine stack) while it waits.
//
// A Poller is one epoll instance (Linux) and one goroutine, which exist
// only while at least one Handle is registered: the first Arm creates them
// and the last Release ends them, so a process with no parked sockets has
// neither. Each Arm is one-shot (EPOLLONESHOT): the socket reports
// readiness once, then stays quiet until it is armed again. The callback
// runs on the poller's goroutine and must only hand the work on (start a
// goroutine, signal a channel); it must not block.
//
// A socket keeps its place in Go's own network poller: the program still
// reads it with ordinary, deadline-aware reads. netpoll only replaces the
// goroutine that would otherwise sit blocked in such a read.
//
// On systems without epoll, Supported reports false and Arm fails with
// ErrUnsupported; callers then keep a goroutine blocked in Read.
package netpoll

import (
	"errors"
	"sync"
)

// ErrUnsupported is returned by Arm where readiness polling is not
// available (not Linux, or the connection exposes no file descriptor).
var ErrUnsupported = errors.New("netpoll: not supported for this connection")

// Poller waits for readiness of many sockets. The zero value is not
// usable; use New. It is safe for concurrent use.
type Poller struct {
	mu      sync.Mutex
	impl    impl   // the running epoll instance, nil when none is registered
	epoch   uint64 // counts impl instances, so Handles know when to re-add
	refs    int
	nextID  uint64
	waiters map[uint64]func()
}

// New returns a Poller. It holds no file descriptor or goroutine until the
// first Arm.
func New() *Poller {
	return &Poller{waiters: make(map[uint64]func())}
}

// Handle is one socket's registration. The zero value is unregistered.
// A Handle is used by one goroutine at a time (its owner parks and
// releases it); it is not safe for concurrent use.
type Handle struct {
	p     *Poller
	id    uint64
	epoch uint64 // epoch of the instance the fd was added to; 0: none
	fd    int
}

// Arm asks for f to be called once, from the poller's goroutine, when fd
// is readable or has hung up or failed. The first Arm registers h; later
// ones re-arm it. Arm calls ctl with the socket's file descriptor while
// the socket cannot be closed (syscall.RawConn.Control), so a closed
// connection is reported as an error from ctl, never as another socket's
// readiness.
func (p *Poller) Arm(h *Handle, ctl func(func(fd uintptr)) error, f func()) error {
	if !supported {
		return ErrUnsupported
	}
	p.mu.Lock()
	if p.impl == nil {
		im, err := start(p)
		if err != nil {
			p.mu.Unlock()
			return err
		}
		p.impl = im
		p.epoch++
	}
	if h.p == nil {
		p.nextID++
		h.p, h.id = p, p.nextID
		p.refs++
	}
	p.waiters[h.id] = f
	im, epoch, id := p.impl, p.epoch, h.id
	// h is written, and read into locals, before mu is released: once
	// the socket is armed, f may run and hand h to another goroutine,
	// which may Release it, and only mu orders that goroutine after this
	// one (the kernel's ordering of the wake is invisible to the race
	// detector). A failed ADD leaves h marked added; the next Arm's MOD
	// then falls back to ADD.
	added := h.epoch == epoch
	h.epoch = epoch
	p.mu.Unlock()

	var err error
	if cerr := ctl(func(fd uintptr) { err = im.arm(int(fd), id, added) }); cerr != nil {
		return cerr
	}
	return err
}

// Release unregisters h: a readiness report still in flight for it is
// dropped. Closing the socket removes it from epoll; Release must still be
// called once its owner is done with it. Release of an unregistered
// Handle does nothing.
func (p *Poller) Release(h *Handle) {
	if h.p == nil {
		return
	}
	p.mu.Lock()
	delete(p.waiters, h.id)
	p.refs--
	if p.refs == 0 && p.impl != nil {
		p.impl.wake()
	}
	p.mu.Unlock()
	*h = Handle{}
}

// Registered reports how many Handles are registered (for tests and
// metrics).
func (p *Poller) Registered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refs
}

// Supported reports whether this system has readiness polling.
func Supported() bool { return supported }

// ready is called by the poller goroutine for each reported id.
func (p *Poller) ready(id uint64) {
	p.mu.Lock()
	f := p.waiters[id]
	p.mu.Unlock()
	if f != nil {
		f()
	}
}

// fail forgets a broken instance and calls every waiter, so that no
// socket waits on an instance that no longer reports.
func (p *Poller) fail(im impl) {
	p.mu.Lock()
	if p.impl != im {
		p.mu.Unlock()
		return
	}
	p.impl = nil
	fs := make([]func(), 0, len(p.waiters))
	for _, f := range p.waiters {
		fs = append(fs, f)
	}
	p.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// idle is called by the poller goroutine when woken; it reports whether
// the goroutine should exit, and forgets the instance if so.
func (p *Poller) idle(im impl) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refs > 0 || p.impl != im {
		return false
	}
	p.impl = nil
	return true
}

// impl is the system-specific part.
type impl interface {
	// arm adds (or, when added, re-arms) fd for one readiness report
	// carrying id.
	arm(fd int, id uint64, added bool) error
	// wake makes the poller goroutine check whether it should exit.
	wake()
}
