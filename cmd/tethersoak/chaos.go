package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tether-proxy/tether/internal/ctxtime"
	"github.com/tether-proxy/tether/internal/faultnet"
)

// Fault kinds, one at a time, at random gaps.
const (
	faultResetSome  = "reset-some"  // RST a random tenth (at least one) of the upstream connections
	faultResetAll   = "reset-all"   // RST every upstream connection
	faultCloseAll   = "close-all"   // FIN every upstream connection (no WebSocket Close)
	faultStall      = "stall"       // hold all bytes for 0.2–4 s (past 3 s the upstream heartbeat times out)
	faultDelay      = "delay"       // up to 10–250 ms per chunk and direction for 1–5 s
	faultRefuse     = "refuse"      // reset new connections for 0.2–2 s, after resetting some
	faultStallReset = "stall-reset" // stall 0.5–2 s, then reset everything that was held
)

// faultWeights is how often each kind is drawn (out of their sum).
var faultWeights = []struct {
	kind string
	w    int
}{
	{faultResetSome, 30}, {faultResetAll, 5}, {faultCloseAll, 5}, {faultStall, 20},
	{faultDelay, 20}, {faultRefuse, 10}, {faultStallReset, 10},
}

// chaos injects faults on the relay between tether and the backend.
type chaos struct {
	relay *faultnet.Relay
	rnd   *rand.Rand
	every time.Duration

	mu     sync.Mutex
	counts map[string]int
	hit    int // upstream connections reset or closed by a fault
}

// run injects faults until ctx ends, then leaves the relay healthy.
func (ch *chaos) run(ctx context.Context) {
	defer func() {
		ch.relay.Resume()
		ch.relay.Refuse(false)
		ch.relay.SetDelay(0)
	}()
	for {
		gap := ch.every/2 + time.Duration(ch.rnd.Int64N(int64(ch.every)+1))
		if !ctxtime.Sleep(ctx, gap) {
			return
		}
		n := 0
		for _, f := range faultWeights {
			n += f.w
		}
		x := ch.rnd.IntN(n)
		kind := ""
		for _, f := range faultWeights {
			if x < f.w {
				kind = f.kind
				break
			}
			x -= f.w
		}
		ch.inject(ctx, kind)
	}
}

func (ch *chaos) span(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(ch.rnd.Int64N(int64(hi-lo)+1))
}

func (ch *chaos) inject(ctx context.Context, kind string) {
	r := ch.relay
	hit := 0
	switch kind {
	case faultResetSome:
		hit = r.ResetSome(max(1, r.Conns()/10), ch.rnd.IntN)
	case faultResetAll:
		hit = r.Conns()
		r.ResetAll()
	case faultCloseAll:
		hit = r.Conns()
		r.CloseAll()
	case faultStall:
		r.Stall()
		ctxtime.Sleep(ctx, ch.span(200*time.Millisecond, 4*time.Second))
		r.Resume()
	case faultDelay:
		r.SetDelay(ch.span(10*time.Millisecond, 250*time.Millisecond))
		ctxtime.Sleep(ctx, ch.span(time.Second, 5*time.Second))
		r.SetDelay(0)
	case faultRefuse:
		hit = r.ResetSome(max(1, r.Conns()/10), ch.rnd.IntN)
		r.Refuse(true)
		ctxtime.Sleep(ctx, ch.span(200*time.Millisecond, 2*time.Second))
		r.Refuse(false)
	case faultStallReset:
		r.Stall()
		ctxtime.Sleep(ctx, ch.span(500*time.Millisecond, 2*time.Second))
		hit = r.Conns()
		r.ResetAll()
		r.Resume()
	}
	ch.mu.Lock()
	if ch.counts == nil {
		ch.counts = map[string]int{}
	}
	ch.counts[kind]++
	ch.hit += hit
	ch.mu.Unlock()
}

// summary is "kind×n, …" and the number of connections hit.
func (ch *chaos) summary() (string, int, int) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var parts []string
	total := 0
	for k, n := range ch.counts {
		parts = append(parts, fmt.Sprintf("%s×%d", k, n))
		total += n
	}
	sort.Strings(parts)
	return strings.Join(parts, " "), total, ch.hit
}
