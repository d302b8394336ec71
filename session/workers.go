package session

import (
	"sync"
	"sync/atomic"
	"time"
)

// workers runs the read loops of legs that start or wake, and the
// sweeper's probes, on goroutines that outlive them (README
// "Architecture": a woken leg's goroutine). A new goroutine starts with a
// small stack, and the read loop's first message grew it in three or four
// copies: 11 % of tether's CPU for sessions that send now and then, each
// message waking both legs (BENCHMARKS.md, twelfth sitting). A worker
// keeps the stack its jobs grew; between jobs it waits on its own channel.
//
// Idle workers are taken last in, first out, so the ones at the bottom of
// the list are those no job needed lately: every trimEvery, the workers
// that stayed idle through the whole period end (trimBatch at a time, see
// trim). A process whose legs are
// all parked keeps no worker for longer than twice trimEvery, and the
// trim timer is set only while idle workers exist. When the last session
// ends, so do the idle workers: a process without sessions has none.
type workers struct {
	live    atomic.Int64 // sessions started and not finished
	mu      sync.Mutex
	idle    []*worker // last in, first out
	low     int       // fewest idle since the last trim: the bottom ones idled throughout
	timer   *time.Timer
	armed   bool
	started int // goroutines started (tests)
}

// trimEvery is how long an idle worker waits for a job at least before it
// ends (at most twice that).
const trimEvery = time.Second

type worker struct{ jobs chan job }

// job is a read loop to run (resume) or a probe to send.
type job struct {
	l     *leg
	probe bool
}

func (j job) do() {
	if j.probe {
		j.l.probe()
	} else {
		j.l.resume()
	}
}

// run runs j on an idle worker, or on a new one when none is idle. It never
// blocks.
func (p *workers) run(j job) {
	p.mu.Lock()
	if n := len(p.idle) - 1; n >= 0 {
		w := p.idle[n]
		p.idle[n] = nil
		p.idle = p.idle[:n]
		p.low = min(p.low, n)
		p.mu.Unlock()
		w.jobs <- j // buffered, and empty while the worker is idle
		return
	}
	p.started++
	p.mu.Unlock()
	go p.work(j)
}

func (p *workers) work(j job) {
	growStack(0)
	w := &worker{jobs: make(chan job, 1)}
	for {
		j.do()
		p.mu.Lock()
		if p.live.Load() == 0 {
			p.mu.Unlock()
			return
		}
		p.idle = append(p.idle, w)
		if !p.armed {
			p.armed, p.low = true, len(p.idle)
			if p.timer == nil {
				p.timer = time.AfterFunc(trimEvery, p.trim)
			} else {
				p.timer.Reset(trimEvery)
			}
		}
		p.mu.Unlock()
		if j = <-w.jobs; j.l == nil {
			return // trimmed
		}
	}
}

// begin counts a session that starts; end, one that finished.
func (p *workers) begin() { p.live.Add(1) }

func (p *workers) end() {
	if p.live.Add(-1) == 0 {
		p.mu.Lock()
		p.stopLocked(len(p.idle)) // no session waits behind them
		p.low, p.armed = 0, false
		if p.timer != nil {
			p.timer.Stop()
		}
		p.mu.Unlock()
	}
}

// trim ends the workers that were idle since the last trim, at most
// trimBatch at a time: each one ended is a goroutine to wake, and after a
// burst of sessions that went quiet together thousands can be idle at
// once; the messages of that moment would wait behind all of them. The
// rest follow trimBacklog apart.
func (p *workers) trim() {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(p.low, trimBatch)
	p.low -= n // those still idle since the period began
	p.stopLocked(n)
	switch {
	case p.low > 0:
		p.timer.Reset(trimBacklog)
	case len(p.idle) > 0:
		p.low = len(p.idle) // a new period
		p.timer.Reset(trimEvery)
	default:
		p.armed = false
	}
}

const (
	trimBatch   = 32
	trimBacklog = 2 * time.Millisecond
)

// stopLocked ends the bottom n idle workers.
func (p *workers) stopLocked(n int) {
	for i, w := range p.idle[:n] {
		w.jobs <- job{}
		p.idle[i] = nil
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle) : n+len(p.idle)])
}

// growStack grows a new worker's stack, while it is nearly empty, to the
// size the read loop's message path needs (4 KiB, from the runtime's
// smallest start of 2 KiB): the leg's first message then runs without a
// stack growth, which copies every frame of that deep path and adjusts
// their pointers; here the copy is a frame or two. In the window after
// 1,000 sessions opened, the first message of each session ran on a new
// worker (the opening had reused the parked legs' workers) and grew its
// stack: 2,056 growths for 962 new goroutines in the first 300 ms; with
// growStack, one per new goroutine, this cheap one (BENCHMARKS.md,
// thirteenth sitting). A running
// read loop holds 4 KiB either way (go_memstats_stack_inuse_bytes: 8.8
// MB for 2,011 goroutines at 5,000 msg/s over 1,000 sessions, with or
// without). TestWorkerStackHoldsMessagePath fails when the path outgrows
// it.
//
//go:noinline
func growStack(i int) byte {
	var b [workerStackFrame]byte
	b[i] = 1
	return b[len(b)-1-i] // another index: b must be on the stack
}

// workerStackFrame is growStack's frame: with the stack guard, it needs
// a 4 KiB stack.
const workerStackFrame = 2560
