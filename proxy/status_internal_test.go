package proxy

import (
	"context"
	"math"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tether-proxy/tether/session"
)

// The sampler costs nothing until someone looks: no sample and no timer
// before the first touch; then one a second, at most sampleKeep held;
// sampleIdle after the last look it stops and drops its history.
func TestSamplerOnlyWhileLooked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		taken := func() int { synctest.Wait(); return int(n.Load()) }
		sp := newSampler(func() sample { n.Add(1); return sample{at: time.Now()} })
		time.Sleep(time.Hour)
		if taken() != 0 || sp.running() {
			t.Fatalf("nobody looked for an hour: %d samples taken, running %v", taken(), sp.running())
		}
		if got := sp.touch(); len(got) != 1 || taken() != 1 {
			t.Fatalf("first look: %d samples held, %d taken, want 1 and 1", len(got), taken())
		}
		time.Sleep(10*time.Second + time.Millisecond)
		if got := sp.touch(); len(got) != 11 || taken() != 11 {
			t.Fatalf("10 s later: %d samples held, %d taken, want 11", len(got), taken())
		}
		// Looked at once a minute for ten minutes: the history is bounded.
		for range 10 {
			time.Sleep(time.Minute)
			sp.touch()
		}
		held := sp.touch()
		if len(held) != sampleKeep {
			t.Fatalf("after 10 min: %d samples held, want %d", len(held), sampleKeep)
		}
		if span := held[len(held)-1].at.Sub(held[0].at); span != (sampleKeep-1)*sampleEvery {
			t.Fatalf("the history spans %v, want %v", span, (sampleKeep-1)*sampleEvery)
		}
		// Nobody looks any more: sampling stops after sampleIdle.
		before := taken()
		time.Sleep(sampleIdle + 2*sampleEvery)
		synctest.Wait()
		if sp.running() {
			t.Fatal("still sampling after nobody looked for sampleIdle")
		}
		stoppedAt := taken()
		if stoppedAt-before > int(sampleIdle/sampleEvery)+1 {
			t.Fatalf("%d samples after the last look, want at most %d", stoppedAt-before, int(sampleIdle/sampleEvery)+1)
		}
		time.Sleep(time.Hour)
		if taken() != stoppedAt {
			t.Fatalf("%d samples taken while stopped", taken()-stoppedAt)
		}
		// A new look starts over, without the old history.
		if got := sp.touch(); len(got) != 1 {
			t.Fatalf("look after the stop: %d samples held, want 1", len(got))
		}
		sp.stop()
		if sp.running() {
			t.Fatal("running after stop")
		}
		if got := sp.touch(); len(got) != 0 || sp.running() {
			t.Fatal("a look after stop started sampling")
		}
	})
}

// Rates, interval counts and recent RTT percentiles come from the
// differences between samples of the server's own registry.
func TestStatusFromSamples(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, err := DefaultConfig("ws://127.0.0.1:1/")
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Shutdown(context.Background()) }()
		m := s.metrics
		look := func() statusJSON {
			t.Helper()
			return s.status(s.sampler.touch(), 0)
		}
		st := look()
		if tr := st.Traffic[dirClientToUpstream]; tr.MessagesPerSecond != nil || tr.Messages != 0 {
			t.Fatalf("one sample: %+v, want no rate yet", tr)
		}
		if st.Heartbeats[session.LegClient].RTT.P50MS != nil {
			t.Fatal("a percentile without observations")
		}
		for range 30 {
			m.Message(true, 100)
		}
		for range 5 {
			m.Message(false, 1000)
		}
		m.Reconnect(true)
		m.Reconnect(false)
		m.Reconnect(false)
		m.HeartbeatTimeout(session.LegUpstream)
		for range 4 {
			m.RTT(session.LegClient, 3*time.Millisecond) // bucket (2.5 ms, 5 ms]
		}
		time.Sleep(2 * time.Second) // two samples, the traffic in the first interval
		synctest.Wait()
		st = look()
		h := st.History
		if len(h.T) != 3 || h.MsgsUp[0] != nil || *h.MsgsUp[1] != 30 || *h.MsgsUp[2] != 0 ||
			*h.BytesUp[1] != 3000 || *h.MsgsDown[1] != 5 || *h.BytesDown[1] != 5000 ||
			*h.ReconnectOK[1] != 1 || *h.ReconnectFail[1] != 2 || *h.TimeoutsUp[1] != 1 || *h.TimeoutsClient[1] != 0 {
			t.Fatalf("history %+v", h)
		}
		if up := st.Traffic[dirClientToUpstream]; up.Messages != 30 || up.Bytes != 3000 || *up.MessagesPerSecond != 0 {
			t.Fatalf("now: %+v, want 30 messages, 3000 bytes, 0/s in the last second", up)
		}
		if rc := st.Reconnects; rc.Success != 1 || rc.Failure != 2 || rc.RecentSuccess != 1 || rc.RecentFailure != 2 {
			t.Fatalf("reconnects %+v", rc)
		}
		// All four in (2.5, 5] ms: p50 interpolates to 3.75 ms.
		cl := st.Heartbeats[session.LegClient]
		if cl.RTT.Count != 4 || *cl.RTT.P50MS != 3.75 || cl.RTTRecent.Count != 4 || *cl.RTTRecent.P50MS != 3.75 || *h.RTTClientP50[2] != 3.75 {
			t.Fatalf("client RTT %+v recent %+v", cl.RTT, cl.RTTRecent)
		}
		if st.Heartbeats[session.LegUpstream].Timeouts != 1 {
			t.Fatal("upstream timeouts")
		}
		// A minute and more later the recent window no longer holds them;
		// since start still does.
		time.Sleep(rttWindow + 2*time.Second)
		synctest.Wait()
		m.RTT(session.LegClient, 20*time.Millisecond) // (10, 25] ms
		time.Sleep(time.Second)
		synctest.Wait()
		cl = look().Heartbeats[session.LegClient]
		if cl.RTT.Count != 5 || cl.RTTRecent.Count != 1 || *cl.RTTRecent.P50MS != 17.5 {
			t.Fatalf("client RTT %+v recent %+v, want 5 since start, 1 recent at 17.5 ms", cl.RTT, cl.RTTRecent)
		}
		if cl.RTTRecent.WindowSeconds != rttWindow.Seconds() {
			t.Fatalf("recent window %v s", cl.RTTRecent.WindowSeconds)
		}
	})
}

func TestHistQuantile(t *testing.T) {
	inf := math.Inf(1)
	h := hist{bounds: []float64{1, 2, 4, inf}, cum: []uint64{10, 30, 40, 40}}
	for _, c := range []struct{ q, want float64 }{
		{0.05, 0.2}, // rank 2 in [0, 1]: 2/10 of the way
		{0.25, 1},   // rank 10: the top of the first bucket
		{0.5, 1.5},  // rank 20: half way through (1, 2]
		{0.9, 3.2},  // rank 36: 6/10 through (2, 4]
		{1, 4},
	} {
		if got := h.quantile(c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	over := hist{bounds: []float64{1, 2, inf}, cum: []uint64{0, 1, 4}}
	if got := over.quantile(0.99); got != 2 {
		t.Errorf("a rank in +Inf: %v, want the largest finite bound 2", got)
	}
	if got := (hist{}).quantile(0.5); !math.IsNaN(got) {
		t.Errorf("empty: %v, want NaN", got)
	}
	d := h.minus(hist{bounds: h.bounds, cum: []uint64{10, 10, 10, 10}})
	if d.count() != 30 || d.quantile(0.5) != 1.75 {
		t.Errorf("difference: count %d p50 %v, want 30 and 1.75", d.count(), d.quantile(0.5))
	}
}
