package session

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
)

// Backoff draws attempt n's delay from [0, d], d = min(max, initial·2ⁿ):
// the jitter source gets exactly d+1 (its result is in [0, d+1)), and its
// answer is the delay.
func TestRcBackoffBound(t *testing.T) {
	t.Parallel()
	const ms = time.Millisecond
	type tc struct {
		initial, max time.Duration
		n            int
		d            time.Duration
	}
	var cases []tc
	for n, d := range []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second, time.Second, time.Second} {
		cases = append(cases, tc{10 * ms, time.Second, n, d})
	}
	for _, n := range []int{11, 31, 32, 33, 62, 63, 64, 65, 100, 1 << 20, math.MaxInt} {
		cases = append(cases, tc{10 * ms, time.Second, n, time.Second})
	}
	cases = append(cases,
		tc{time.Second, time.Second, 0, time.Second},
		tc{time.Second, time.Second, 7, time.Second},
		tc{1, 1 << 62, 61, 1 << 61},
		tc{1, 1 << 62, 62, 1 << 62},
		tc{1, 1 << 62, 63, 1 << 62},
		tc{time.Second, math.MaxInt64, 33, time.Second << 33},
		tc{time.Second, math.MaxInt64, 34, math.MaxInt64},
		tc{time.Second, math.MaxInt64, 1000, math.MaxInt64},
	)
	for _, c := range cases {
		var bounds []int64
		got := Backoff(c.initial, c.max, c.n, func(k int64) int64 {
			bounds = append(bounds, k)
			return k - 1
		})
		want := int64(c.d) + 1
		if c.d == math.MaxInt64 {
			want = math.MaxInt64 // d+1 does not fit: [0, d) is the best draw
		}
		if len(bounds) != 1 || bounds[0] != want {
			t.Errorf("Backoff(%v, %v, %d): jitter bounds %v, want [%d]", c.initial, c.max, c.n, bounds, want)
			continue
		}
		if got != time.Duration(want-1) {
			t.Errorf("Backoff(%v, %v, %d) = %v with the top draw, want %v", c.initial, c.max, c.n, got, time.Duration(want-1))
		}
		if z := Backoff(c.initial, c.max, c.n, func(int64) int64 { return 0 }); z != 0 {
			t.Errorf("Backoff(%v, %v, %d) = %v with a zero draw, want 0", c.initial, c.max, c.n, z)
		}
	}
}

// Without an injected jitter the draw is uniform over [0, d].
func TestRcBackoffDefaultJitter(t *testing.T) {
	t.Parallel()
	env := &Env{}
	const d = 100 * time.Millisecond
	lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
	for range 2000 {
		v := Backoff(d, time.Second, 0, env.jitter)
		if v < 0 || v > d {
			t.Fatalf("delay %v outside [0, %v]", v, d)
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo > d/10 || hi < d*9/10 {
		t.Fatalf("2000 draws span only [%v, %v] of [0, %v]", lo, hi, d)
	}
}

// The reconnect loop's schedule, on a fake clock with the top draw every
// time: attempt n starts d(n) after the previous one failed, the counter
// starts at 0 (the first delay is INITIAL_DELAY, not twice it), and an
// outage where every dial fails makes exactly MAX_ATTEMPTS dials and
// closes the client with 1014.
func TestRcBackoffSchedule(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := rcConfig()
		cfg.Reconnect.InitialDelay = 100 * time.Millisecond
		cfg.Reconnect.MaxDelay = time.Second
		cfg.Reconnect.MaxAttempts = 6
		var mu sync.Mutex
		var bounds []int64
		env, m := rcEnv(t, cfg, func(n int64) int64 {
			mu.Lock()
			bounds = append(bounds, n)
			mu.Unlock()
			return n - 1
		})
		h := rcStart(t, env, m, func(h *rcHarness) { h.dialFn = rcFail })
		lost := time.Now()
		_ = h.nextUp().conn.Close()
		h.client.expectClose(CloseBadGateway)
		h.waitDone()
		const ms = time.Millisecond
		steps := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second}
		var want []time.Duration
		var at time.Duration
		for _, s := range steps {
			at += s
			want = append(want, at)
		}
		var got []time.Duration
		for _, d := range h.dials() {
			got = append(got, d.Sub(lost))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("dials at %v after the loss, want %v", got, want)
		}
		var wantBounds []int64
		for _, s := range steps {
			wantBounds = append(wantBounds, int64(s)+1)
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(bounds, wantBounds) {
			t.Fatalf("jitter bounds %v, want %v", bounds, wantBounds)
		}
		if got := m.reconnFail.Load(); got != 6 {
			t.Fatalf("failed reconnects = %d, want 6", got)
		}
	})
}

// The attempt counter restarts at 0 once an upgrade completes, both after
// a fully resumed reconnect and when the new connection dies while the
// reconnect is still re-sending on it.
func TestRcBackoffCounterResets(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := rcConfig()
		cfg.Reconnect.MaxAttempts = 0
		// Retained messages (no pong within the test) give every resume
		// something to re-send.
		cfg.UpstreamHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: time.Hour, Timeout: 3 * time.Hour}
		var mu sync.Mutex
		var bounds []int64
		env, m := rcEnv(t, cfg, func(n int64) int64 {
			mu.Lock()
			bounds = append(bounds, n)
			mu.Unlock()
			return n - 1
		})
		h := rcStart(t, env, m, func(h *rcHarness) {
			h.dialFn = func(_ context.Context, n int) (Upstream, error) {
				switch n {
				case 1, 2:
					return Upstream{}, errors.New("refused")
				case 4:
					up, _ := h.upstream(false) // killed during the resume
					return up, nil
				}
				up, _ := h.upstream(true)
				return up, nil
			}
		})
		h.nextUp()
		h.client.text("x")
		lost1 := time.Now()
		_ = h.current().conn.Close()
		up := h.nextUp() // dial 3
		up.expect("x")
		lost2 := time.Now()
		_ = up.conn.Close()
		up = h.nextUp() // dial 4: the upgrade completes, the re-send blocks
		synctest.Wait()
		killed := time.Now()
		_ = up.conn.Close()
		up = h.nextUp() // dial 5
		up.expect("x")
		const I = 100 * time.Millisecond
		d := h.dials()
		got := []time.Duration{d[0].Sub(lost1), d[1].Sub(d[0]), d[2].Sub(d[1]), d[3].Sub(lost2), d[4].Sub(killed)}
		want := []time.Duration{I, 2 * I, 4 * I, I, I}
		if !slices.Equal(got, want) {
			t.Fatalf("delays %v, want %v", got, want)
		}
		mu.Lock()
		defer mu.Unlock()
		wantBounds := []int64{int64(I) + 1, int64(2*I) + 1, int64(4*I) + 1, int64(I) + 1, int64(I) + 1}
		if !slices.Equal(bounds, wantBounds) {
			t.Fatalf("jitter bounds %v, want %v", bounds, wantBounds)
		}
	})
}

// TETHER_RECONNECT_RATE is one token bucket for the whole process: 30
// sessions that lose their upstream at the same instant dial 10 at once
// (the burst) and then one every 100 ms. Waiting for a token is not an
// attempt: with MAX_ATTEMPTS=1 every session still gets its dial.
func TestRcReconnectRate(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := rcConfig()
		cfg.Reconnect.Rate = 10
		cfg.Reconnect.MaxAttempts = 1
		env, m := rcEnv(t, cfg, func(int64) int64 { return 0 })
		const sessions = 30
		var hs []*rcHarness
		var peers []*rcPeer
		for range sessions {
			h := rcStart(t, env, m, nil)
			hs = append(hs, h)
			peers = append(peers, h.nextUp())
		}
		synctest.Wait()
		lost := time.Now()
		for _, p := range peers {
			_ = p.conn.Close()
		}
		var got []time.Duration
		for _, h := range hs {
			h.nextUp().expectNothing()
			d := h.dials()
			if len(d) != 1 {
				t.Fatalf("session made %d dials, want 1", len(d))
			}
			got = append(got, d[0].Sub(lost))
		}
		slices.Sort(got)
		for i, g := range got {
			want := time.Duration(0)
			if i >= 10 {
				want = time.Duration(i-9) * 100 * time.Millisecond
			}
			if diff := g - want; diff < -time.Millisecond || diff > time.Millisecond {
				t.Fatalf("dial %d at %v, want %v (all: %v)", i, g, want, got)
			}
		}
		if got := m.reconnOK.Load(); got != sessions {
			t.Fatalf("successful reconnects = %d, want %d", got, sessions)
		}
	})
}
