package faultnet

import (
	"math/rand/v2"
	"time"
)

// Faults for soak runs, which need them per connection rather than for the
// whole relay at once.

// SetDelay makes every read result (a chunk of bytes, an EOF or an error)
// wait a random time in [0, max] before the relay acts on it, on every
// current and future connection, in both directions. Each direction waits
// on its own, so bytes keep their order and nothing is lost: it is
// latency jitter, and a slow link for bulk transfers. max <= 0 turns it
// off; a wait already running finishes. Delays are drawn from
// math/rand/v2's global source.
func (r *Relay) SetDelay(max time.Duration) {
	r.delayMax.Store(int64(max))
}

// delay waits SetDelay's random time for one read result of pair p. It
// reports false if the pair was torn down meanwhile.
func (r *Relay) delay(p *pair) bool {
	m := r.delayMax.Load()
	if m <= 0 {
		return true
	}
	d := time.Duration(rand.Int64N(m + 1))
	if d == 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.dead:
		return false
	}
}

// ResetSome aborts up to n of the currently relayed connections (those in
// Conns) with a TCP RST on both sides, as ResetAll does for all of them,
// and returns how many it aborted. pick(k) must return a number in [0, k);
// it chooses which connections go (from a snapshot in map order, so the
// choice is random even with a seeded pick).
func (r *Relay) ResetSome(n int, pick func(k int) int) int {
	r.mu.Lock()
	ps := make([]*pair, 0, len(r.conns))
	for p := range r.conns {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	// A partial Fisher-Yates shuffle picks n distinct pairs.
	if n > len(ps) {
		n = len(ps)
	}
	for i := 0; i < n; i++ {
		j := i + pick(len(ps)-i)
		ps[i], ps[j] = ps[j], ps[i]
		r.teardown(ps[i], true)
	}
	return n
}
