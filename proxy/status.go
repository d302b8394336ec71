package proxy

import (
	"math"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tether-proxy/tether/internal/envconfig"
	"github.com/tether-proxy/tether/session"
)

// The status page's history (README "Admin endpoints"): a sample a
// second, the last five minutes, taken only while someone looks.
const (
	sampleEvery = time.Second
	sampleKeep  = 300              // samples: five minutes
	sampleIdle  = 2 * time.Minute  // stop this long after the last look
	rttWindow   = 60 * time.Second // recent round-trip percentiles
)

// Indexes of the two-element arrays of a sample.
const (
	up, down      = 0, 1 // direction: client_to_upstream, upstream_to_client
	legC, legU    = 0, 1 // leg: client, upstream
	okIdx, failIx = 0, 1 // reconnect result
)

// hist is one leg's tether_heartbeat_rtt_seconds: cumulative counts per
// upper bound (seconds), the +Inf bucket last.
type hist struct {
	bounds []float64
	cum    []uint64
}

func (h hist) count() uint64 {
	if len(h.cum) == 0 {
		return 0
	}
	return h.cum[len(h.cum)-1]
}

// minus is the histogram of the observations h has and o had not (o is
// an earlier reading of the same histogram).
func (h hist) minus(o hist) hist {
	if len(o.cum) != len(h.cum) {
		return h
	}
	d := hist{bounds: h.bounds, cum: make([]uint64, len(h.cum))}
	for i := range h.cum {
		d.cum[i] = h.cum[i] - o.cum[i]
	}
	return d
}

// quantile estimates the q-quantile as Prometheus's histogram_quantile
// does: linear interpolation inside the bucket holding the rank, from 0
// for the first bucket; a rank in the +Inf bucket gives the largest
// finite bound. NaN when there are no observations.
func (h hist) quantile(q float64) float64 {
	n := h.count()
	if n == 0 {
		return math.NaN()
	}
	rank := q * float64(n)
	i := sort.Search(len(h.cum), func(i int) bool { return float64(h.cum[i]) >= rank })
	if i >= len(h.bounds)-1 { // the +Inf bucket: its lower bound
		if i == 0 {
			return math.NaN()
		}
		return h.bounds[i-1]
	}
	lo, below := 0.0, uint64(0)
	if i > 0 {
		lo, below = h.bounds[i-1], h.cum[i-1]
	}
	inBucket := h.cum[i] - below
	if inBucket == 0 {
		return h.bounds[i]
	}
	return lo + (h.bounds[i]-lo)*(rank-float64(below))/float64(inBucket)
}

// sample is the process's numbers at one moment: counters as they stood,
// gauges, and what the session registry holds.
type sample struct {
	at            time.Time
	active        float64
	detached      float64
	resume        bool // the process counts detached sessions at all
	total         float64
	max           float64 // TETHER_MAX_SESSIONS, 0 = unlimited
	build         buildJSON
	connected     int
	reconnecting  int
	closing       int
	retained      int
	buffered      int
	heldBytes     int64
	held          float64 // tether_buffered_messages
	msgs, bytes   [2]float64
	reconnects    [2]float64
	pings, pongs  [2]float64
	timeouts      [2]float64
	rtt           [2]hist
	overflows     float64
	resent        float64
	goroutines    float64
	residentBytes float64
	heapBytes     float64
	parkedLegs    int64
}

// takeSample reads the process's own numbers: its Prometheus registry
// (Gather, no scrape) and the session registry.
func (s *Server) takeSample() sample {
	sm := sample{at: time.Now()}
	mfs, _ := s.reg.Gather() // a collector's error still leaves the rest
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s.readMetric(&sm, mf.GetName(), m)
		}
	}
	s.mu.Lock()
	all := s.sessions.all()
	s.mu.Unlock()
	for _, sess := range all {
		in := sess.Info()
		switch in.State {
		case session.StateConnected:
			sm.connected++
		case session.StateReconnecting:
			sm.reconnecting++
		case session.StateDetached: // counted by tether_sessions_detached
		default:
			sm.closing++
		}
		sm.retained += in.Retained
		sm.buffered += in.Buffered
	}
	sm.heldBytes = s.env.BufferedBytes()
	sm.parkedLegs = s.env.ParkedLegs()
	return sm
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func dirIndex(m *dto.Metric) int {
	if label(m, "direction") == dirUpstreamToClient {
		return down
	}
	return up
}

func (s *Server) readMetric(sm *sample, name string, m *dto.Metric) {
	c, g := m.GetCounter().GetValue(), m.GetGauge().GetValue()
	leg := legIndex(label(m, "leg"))
	switch name {
	case "tether_sessions_active":
		sm.active = g
	case "tether_sessions_detached": // client resume (README "Client session resume")
		sm.detached, sm.resume = g, s.resumeOn()
	case "tether_sessions_total":
		sm.total = c
	case "tether_sessions_max":
		sm.max = g
	case "tether_build_info":
		sm.build = buildJSON{Version: label(m, "version"), GoVersion: label(m, "go_version"), Revision: label(m, "revision")}
	case "tether_messages_total":
		sm.msgs[dirIndex(m)] = c
	case "tether_bytes_total":
		sm.bytes[dirIndex(m)] = c
	case "tether_upstream_reconnects_total":
		if label(m, "result") == "failure" {
			sm.reconnects[failIx] = c
		} else {
			sm.reconnects[okIdx] = c
		}
	case "tether_heartbeat_pings_sent_total":
		sm.pings[leg] = c
	case "tether_heartbeat_pongs_received_total":
		sm.pongs[leg] = c
	case "tether_heartbeat_timeouts_total":
		sm.timeouts[leg] = c
	case "tether_heartbeat_rtt_seconds":
		h := m.GetHistogram()
		var hs hist
		for _, b := range h.GetBucket() {
			hs.bounds = append(hs.bounds, b.GetUpperBound())
			hs.cum = append(hs.cum, b.GetCumulativeCount())
		}
		hs.bounds = append(hs.bounds, math.Inf(1))
		hs.cum = append(hs.cum, h.GetSampleCount())
		sm.rtt[leg] = hs
	case "tether_buffered_messages":
		sm.held = g
	case "tether_buffer_overflows_total":
		sm.overflows = c
	case "tether_resent_messages_total":
		sm.resent = c
	case "go_goroutines":
		sm.goroutines = g
	case "process_resident_memory_bytes":
		sm.residentBytes = g
	case "go_memstats_heap_alloc_bytes":
		sm.heapBytes = g
	}
}

// sampler keeps the samples of the last minutes, taking one every
// sampleEvery, but only from the first look (touch) until sampleIdle after
// the last one: with nobody looking there is no timer, no goroutine and no
// history.
type sampler struct {
	take func() sample

	mu      sync.Mutex
	ring    []sample // oldest first, at most sampleKeep
	timer   *time.Timer
	seen    time.Time // last touch
	stopped bool      // Shutdown: never start again
}

func newSampler(take func() sample) *sampler { return &sampler{take: take} }

// touch records a look and starts sampling if it was off. It returns the
// samples held now, oldest first (a copy).
func (sp *sampler) touch() []sample {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.seen = time.Now()
	if sp.timer == nil && !sp.stopped {
		sp.ring = append(sp.ring, sp.take())
		sp.timer = time.AfterFunc(sampleEvery, sp.tick)
	}
	return append([]sample(nil), sp.ring...)
}

func (sp *sampler) tick() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.timer == nil {
		return // stopped meanwhile
	}
	if time.Since(sp.seen) > sampleIdle {
		sp.timer, sp.ring = nil, nil
		return
	}
	if len(sp.ring) == sampleKeep {
		copy(sp.ring, sp.ring[1:])
		sp.ring = sp.ring[:sampleKeep-1]
	}
	sp.ring = append(sp.ring, sp.take())
	sp.timer.Reset(sampleEvery)
}

// stop ends sampling for good (Shutdown).
func (sp *sampler) stop() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.stopped = true
	if sp.timer != nil {
		sp.timer.Stop()
		sp.timer, sp.ring = nil, nil
	}
}

// running reports whether the sampler is taking samples (tests).
func (sp *sampler) running() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.timer != nil
}

// JSON of /status.json (README "Admin endpoints"). Numbers that do not
// exist yet (a rate before two samples, a percentile without
// observations) are null.

type statusJSON struct {
	Time          time.Time          `json:"time"`
	UptimeSeconds float64            `json:"uptime_seconds"`
	Ready         bool               `json:"ready"`
	Build         buildJSON          `json:"build"`
	Sessions      sessionsStatus     `json:"sessions"`
	Traffic       map[string]traffic `json:"traffic"`
	Reconnects    reconnectStatus    `json:"reconnects"`
	Heartbeats    map[string]legStat `json:"heartbeats"`
	Buffer        bufferStatus       `json:"buffer"`
	Process       processStatus      `json:"process"`
	Config        []configVar        `json:"config"`
	History       historyJSON        `json:"history"`
}

// buildJSON is tether_build_info's labels (README "Version").
type buildJSON struct {
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
	Revision  string `json:"revision"`
}

type sessionsStatus struct {
	Active       float64 `json:"active"`
	Max          float64 `json:"max"` // TETHER_MAX_SESSIONS, 0 = unlimited
	Connected    int     `json:"connected"`
	Reconnecting int     `json:"reconnecting"`
	Closing      int     `json:"closing"`
	Detached     float64 `json:"detached"`
	// Resume says whether the process has client resume at all (there
	// is no detached state without it).
	Resume bool    `json:"resume"`
	Total  float64 `json:"total"`
}

type traffic struct {
	Messages          float64  `json:"messages_total"`
	Bytes             float64  `json:"bytes_total"`
	MessagesPerSecond *float64 `json:"messages_per_second"`
	BytesPerSecond    *float64 `json:"bytes_per_second"`
}

type reconnectStatus struct {
	Success float64 `json:"success_total"`
	Failure float64 `json:"failure_total"`
	// In the history window (the last minutes sampled).
	RecentSuccess float64 `json:"recent_success"`
	RecentFailure float64 `json:"recent_failure"`
}

type legStat struct {
	Mode          string     `json:"mode"`
	IntervalMS    float64    `json:"interval_ms"`
	TimeoutMS     float64    `json:"timeout_ms"`
	PingsSent     float64    `json:"pings_sent_total"`
	PongsReceived float64    `json:"pongs_received_total"`
	Timeouts      float64    `json:"timeouts_total"`
	RTT           rttSummary `json:"rtt"`
	RTTRecent     rttSummary `json:"rtt_recent"`
}

type rttSummary struct {
	WindowSeconds float64  `json:"window_seconds,omitempty"`
	Count         uint64   `json:"count"`
	P50MS         *float64 `json:"p50_ms"`
	P90MS         *float64 `json:"p90_ms"`
	P99MS         *float64 `json:"p99_ms"`
}

type bufferStatus struct {
	Messages      float64 `json:"messages"`
	Retained      int     `json:"retained"`
	Buffered      int     `json:"buffered"`
	Bytes         int64   `json:"bytes"`
	Overflows     float64 `json:"overflows_total"`
	Resent        float64 `json:"resent_total"`
	MaxMessages   int     `json:"max_messages_per_session"`
	MaxBytes      int64   `json:"max_bytes_per_session"`
	TotalMaxBytes int64   `json:"total_max_bytes"`
}

type processStatus struct {
	Goroutines    float64 `json:"goroutines"`
	ResidentBytes float64 `json:"resident_bytes"`
	HeapBytes     float64 `json:"heap_bytes"`
	ParkedLegs    int64   `json:"parked_legs"`
}

type configVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// historyJSON holds one column per series, aligned on T (unix ms).
// Rates and counts are over the interval ending at each sample (null for
// the first sample held); RTT percentiles are over the rttWindow ending
// there.
type historyJSON struct {
	IntervalSeconds float64    `json:"interval_seconds"`
	KeepSeconds     float64    `json:"keep_seconds"`
	T               []int64    `json:"t"`
	Active          []float64  `json:"active"`
	Reconnecting    []int      `json:"reconnecting"`
	Detached        []float64  `json:"detached"`
	MsgsUp          []*float64 `json:"messages_per_second_up"`
	MsgsDown        []*float64 `json:"messages_per_second_down"`
	BytesUp         []*float64 `json:"bytes_per_second_up"`
	BytesDown       []*float64 `json:"bytes_per_second_down"`
	ReconnectOK     []*float64 `json:"reconnects_success"`
	ReconnectFail   []*float64 `json:"reconnects_failure"`
	TimeoutsClient  []*float64 `json:"timeouts_client"`
	TimeoutsUp      []*float64 `json:"timeouts_upstream"`
	RTTClientP50    []*float64 `json:"rtt_client_p50_ms"`
	RTTClientP99    []*float64 `json:"rtt_client_p99_ms"`
	RTTUpP50        []*float64 `json:"rtt_upstream_p50_ms"`
	RTTUpP99        []*float64 `json:"rtt_upstream_p99_ms"`
	Retained        []int      `json:"retained"`
	Buffered        []int      `json:"buffered"`
}

func num(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

func ms(seconds float64) *float64 { return num(seconds * 1000) }

func summary(h hist, window time.Duration) rttSummary {
	return rttSummary{
		WindowSeconds: window.Seconds(),
		Count:         h.count(),
		P50MS:         ms(h.quantile(0.5)),
		P90MS:         ms(h.quantile(0.9)),
		P99MS:         ms(h.quantile(0.99)),
	}
}

// status builds /status.json from the samples held (oldest first; the
// newest is now's), returning history only after since (unix ms; 0 for
// all).
func (s *Server) status(ring []sample, since int64) statusJSON {
	cur := ring[len(ring)-1]
	var prev *sample
	if len(ring) > 1 {
		prev = &ring[len(ring)-2]
	}
	first := ring[0]
	st := statusJSON{
		Time:          cur.at,
		UptimeSeconds: cur.at.Sub(s.start).Seconds(),
		Ready:         s.Ready(),
		Build:         cur.build,
		Sessions: sessionsStatus{
			Active: cur.active, Max: cur.max, Connected: cur.connected, Reconnecting: cur.reconnecting,
			Closing: cur.closing, Detached: cur.detached, Resume: cur.resume, Total: cur.total,
		},
		Traffic: map[string]traffic{},
		Reconnects: reconnectStatus{
			Success: cur.reconnects[okIdx], Failure: cur.reconnects[failIx],
			RecentSuccess: cur.reconnects[okIdx] - first.reconnects[okIdx],
			RecentFailure: cur.reconnects[failIx] - first.reconnects[failIx],
		},
		Heartbeats: map[string]legStat{},
		Buffer: bufferStatus{
			Messages: cur.held, Retained: cur.retained, Buffered: cur.buffered, Bytes: cur.heldBytes,
			Overflows: cur.overflows, Resent: cur.resent,
			MaxMessages: s.cfg.Session.Buffer.MaxMessages, MaxBytes: s.cfg.Session.Buffer.MaxBytes,
			TotalMaxBytes: s.cfg.Session.Buffer.TotalMaxBytes,
		},
		Process: processStatus{Goroutines: cur.goroutines, ResidentBytes: cur.residentBytes, HeapBytes: cur.heapBytes, ParkedLegs: cur.parkedLegs},
	}
	for i, dir := range []string{dirClientToUpstream, dirUpstreamToClient} {
		tr := traffic{Messages: cur.msgs[i], Bytes: cur.bytes[i]}
		if prev != nil {
			dt := cur.at.Sub(prev.at).Seconds()
			tr.MessagesPerSecond = num((cur.msgs[i] - prev.msgs[i]) / dt)
			tr.BytesPerSecond = num((cur.bytes[i] - prev.bytes[i]) / dt)
		}
		st.Traffic[dir] = tr
	}
	recent := windowStart(ring, len(ring)-1)
	for i, leg := range []string{session.LegClient, session.LegUpstream} {
		hb := s.cfg.Session.ClientHeartbeat
		if i == legU {
			hb = s.cfg.Session.UpstreamHeartbeat
		}
		st.Heartbeats[leg] = legStat{
			Mode: hb.Mode.String(), IntervalMS: float64(hb.Interval.Milliseconds()), TimeoutMS: float64(hb.Timeout.Milliseconds()),
			PingsSent: cur.pings[i], PongsReceived: cur.pongs[i], Timeouts: cur.timeouts[i],
			RTT:       summary(cur.rtt[i], 0),
			RTTRecent: summary(cur.rtt[i].minus(ring[recent].rtt[i]), cur.at.Sub(ring[recent].at)),
		}
	}
	for _, v := range envconfig.InForce(s.shown) {
		st.Config = append(st.Config, configVar{Name: v.Key, Value: v.Default})
	}
	st.History = history(ring, since)
	return st
}

// windowStart is the index of the oldest sample within rttWindow of
// ring[i] (ring[i] itself when it is the only one: an empty window).
func windowStart(ring []sample, i int) int {
	j := i
	for j > 0 && ring[i].at.Sub(ring[j-1].at) <= rttWindow {
		j--
	}
	return j
}

func history(ring []sample, since int64) historyJSON {
	h := historyJSON{IntervalSeconds: sampleEvery.Seconds(), KeepSeconds: (sampleKeep * sampleEvery).Seconds()}
	var nilF *float64
	for i, cur := range ring {
		t := cur.at.UnixMilli()
		if t <= since {
			continue
		}
		h.T = append(h.T, t)
		h.Active = append(h.Active, cur.active)
		h.Reconnecting = append(h.Reconnecting, cur.reconnecting)
		h.Detached = append(h.Detached, cur.detached)
		h.Retained = append(h.Retained, cur.retained)
		h.Buffered = append(h.Buffered, cur.buffered)
		w := ring[windowStart(ring, i)]
		h.RTTClientP50 = append(h.RTTClientP50, ms(cur.rtt[legC].minus(w.rtt[legC]).quantile(0.5)))
		h.RTTClientP99 = append(h.RTTClientP99, ms(cur.rtt[legC].minus(w.rtt[legC]).quantile(0.99)))
		h.RTTUpP50 = append(h.RTTUpP50, ms(cur.rtt[legU].minus(w.rtt[legU]).quantile(0.5)))
		h.RTTUpP99 = append(h.RTTUpP99, ms(cur.rtt[legU].minus(w.rtt[legU]).quantile(0.99)))
		if i == 0 {
			for _, col := range []*[]*float64{&h.MsgsUp, &h.MsgsDown, &h.BytesUp, &h.BytesDown, &h.ReconnectOK, &h.ReconnectFail, &h.TimeoutsClient, &h.TimeoutsUp} {
				*col = append(*col, nilF)
			}
			continue
		}
		prev := ring[i-1]
		dt := cur.at.Sub(prev.at).Seconds()
		h.MsgsUp = append(h.MsgsUp, num((cur.msgs[up]-prev.msgs[up])/dt))
		h.MsgsDown = append(h.MsgsDown, num((cur.msgs[down]-prev.msgs[down])/dt))
		h.BytesUp = append(h.BytesUp, num((cur.bytes[up]-prev.bytes[up])/dt))
		h.BytesDown = append(h.BytesDown, num((cur.bytes[down]-prev.bytes[down])/dt))
		h.ReconnectOK = append(h.ReconnectOK, num(cur.reconnects[okIdx]-prev.reconnects[okIdx]))
		h.ReconnectFail = append(h.ReconnectFail, num(cur.reconnects[failIx]-prev.reconnects[failIx]))
		h.TimeoutsClient = append(h.TimeoutsClient, num(cur.timeouts[legC]-prev.timeouts[legC]))
		h.TimeoutsUp = append(h.TimeoutsUp, num(cur.timeouts[legU]-prev.timeouts[legU]))
	}
	return h
}
