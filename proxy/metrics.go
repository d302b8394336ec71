package proxy

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tether-proxy/tether/internal/buildinfo"
	"github.com/tether-proxy/tether/session"
)

// Label values, spelled as in README "Metrics and logs".
const (
	dirClientToUpstream = "client_to_upstream"
	dirUpstreamToClient = "upstream_to_client"
)

// metrics holds README "Metrics and logs"'s collectors, registered in the
// server's own registry. Label children are resolved once, so the per-message
// path is a pair of atomic adds.
type metrics struct {
	sessionsActive prometheus.Gauge
	sessionsTotal  prometheus.Counter
	msgUp, msgDown prometheus.Counter
	bytUp, bytDown prometheus.Counter
	pings          [2]prometheus.Counter
	pongs          [2]prometheus.Counter
	timeouts       [2]prometheus.Counter
	rtt            [2]prometheus.Observer
	reconnectOK    prometheus.Counter
	reconnectFail  prometheus.Counter
	buffered       atomic.Int64 // tether_buffered_messages, read at scrape
	overflows      prometheus.Counter
	resent         prometheus.Counter
	// Client session resume.
	detached         prometheus.Gauge
	resumeResumed    prometheus.Counter
	resumeRefused    prometheus.Counter
	resumeResentUp   prometheus.Counter
	resumeResentDown prometheus.Counter
	replayed         prometheus.Counter
}

// newMetrics registers the metrics of README "Metrics and logs", among
// them tether_build_info (1, labelled with the build) and
// tether_sessions_max (TETHER_MAX_SESSIONS, 0 = unlimited), which are set
// once here.
func newMetrics(reg prometheus.Registerer, build buildinfo.Info, maxSessions int) *metrics {
	f := func(c prometheus.Collector) prometheus.Collector { reg.MustRegister(c); return c }
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "tether_build_info",
		Help:        "Always 1; the labels describe the running binary (tether version).",
		ConstLabels: prometheus.Labels{"version": build.Version, "go_version": build.GoVersion, "revision": build.Revision},
	}, func() float64 { return 1 }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_sessions_max",
		Help: "TETHER_MAX_SESSIONS: sessions allowed at once; 0 = unlimited.",
	}, func() float64 { return float64(maxSessions) }))
	messages := f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_messages_total", Help: "Messages relayed, by direction."}, []string{"direction"})).(*prometheus.CounterVec)
	bytes := f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_bytes_total", Help: "Message payload bytes relayed, by direction."}, []string{"direction"})).(*prometheus.CounterVec)
	pings := f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_heartbeat_pings_sent_total", Help: "Heartbeat pings tether sent, by leg."}, []string{"leg"})).(*prometheus.CounterVec)
	pongs := f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_heartbeat_pongs_received_total", Help: "Heartbeat pongs received, by leg."}, []string{"leg"})).(*prometheus.CounterVec)
	timeouts := f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_heartbeat_timeouts_total", Help: "Legs found dead by their heartbeat timeout, by leg."}, []string{"leg"})).(*prometheus.CounterVec)
	rtt := f(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tether_heartbeat_rtt_seconds",
		Help:    "Round-trip time of tether's own pings, by leg.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"leg"})).(*prometheus.HistogramVec)
	reconnects := f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_upstream_reconnects_total", Help: "Upstream reconnect attempts, by result."}, []string{"result"})).(*prometheus.CounterVec)
	m := &metrics{
		sessionsActive: f(prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_sessions_active", Help: "Sessions open now."})).(prometheus.Gauge),
		sessionsTotal:  f(prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_sessions_total", Help: "Sessions opened since start."})).(prometheus.Counter),
		msgUp:          messages.WithLabelValues(dirClientToUpstream),
		msgDown:        messages.WithLabelValues(dirUpstreamToClient),
		bytUp:          bytes.WithLabelValues(dirClientToUpstream),
		bytDown:        bytes.WithLabelValues(dirUpstreamToClient),
		reconnectOK:    reconnects.WithLabelValues("success"),
		reconnectFail:  reconnects.WithLabelValues("failure"),
		overflows:      f(prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_buffer_overflows_total", Help: "Sessions closed with 1013 because their buffer was full."})).(prometheus.Counter),
		resent:         f(prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_resent_messages_total", Help: "Client messages sent again on a new upstream connection."})).(prometheus.Counter),
		replayed:       f(prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_replayed_messages_total", Help: "State messages (openings, subscriptions) replayed on a new upstream connection."})).(prometheus.Counter),
	}
	// A gauge read at scrape from one atomic integer: it changes with every
	// client message, and a prometheus.Gauge's Add is a compare-and-swap
	// loop on a float (1.2 % of tether's CPU at 1 KiB messages).
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tether_buffered_messages", Help: "Client messages held: buffered while reconnecting or retained until acknowledged."},
		func() float64 { return float64(m.buffered.Load()) }))
	resumes := f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_client_resumes_total", Help: "Client session resumes, by result."}, []string{"result"})).(*prometheus.CounterVec)
	resumeResent := f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_resume_resent_messages_total", Help: "Messages sent again on a client session resume, by direction."}, []string{"direction"})).(*prometheus.CounterVec)
	m.detached = f(prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_sessions_detached", Help: "Resumable sessions whose client leg dropped, waiting for their client."})).(prometheus.Gauge)
	m.resumeResumed = resumes.WithLabelValues("resumed")
	m.resumeRefused = resumes.WithLabelValues("refused")
	m.resumeResentUp = resumeResent.WithLabelValues(dirClientToUpstream)
	m.resumeResentDown = resumeResent.WithLabelValues(dirUpstreamToClient)
	for i, leg := range []string{session.LegClient, session.LegUpstream} {
		m.pings[i] = pings.WithLabelValues(leg)
		m.pongs[i] = pongs.WithLabelValues(leg)
		m.timeouts[i] = timeouts.WithLabelValues(leg)
		m.rtt[i] = rtt.WithLabelValues(leg)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func legIndex(leg string) int {
	if leg == session.LegUpstream {
		return 1
	}
	return 0
}

// The session.Metrics implementation.

func (m *metrics) Message(toUpstream bool, n int) {
	if toUpstream {
		m.msgUp.Inc()
		m.bytUp.Add(float64(n))
		return
	}
	m.msgDown.Inc()
	m.bytDown.Add(float64(n))
}
func (m *metrics) PingSent(leg string)         { m.pings[legIndex(leg)].Inc() }
func (m *metrics) PongReceived(leg string)     { m.pongs[legIndex(leg)].Inc() }
func (m *metrics) HeartbeatTimeout(leg string) { m.timeouts[legIndex(leg)].Inc() }
func (m *metrics) RTT(leg string, d time.Duration) {
	m.rtt[legIndex(leg)].Observe(d.Seconds())
}
func (m *metrics) Reconnect(ok bool) {
	if ok {
		m.reconnectOK.Inc()
	} else {
		m.reconnectFail.Inc()
	}
}
func (m *metrics) Buffered(d int) { m.buffered.Add(int64(d)) }
func (m *metrics) Overflow()      { m.overflows.Inc() }
func (m *metrics) Resent(n int)   { m.resent.Add(float64(n)) }

// The session.ResumeMetrics implementation.

func (m *metrics) Detached(d int) { m.detached.Add(float64(d)) }
func (m *metrics) ClientResume(resumed bool) {
	if resumed {
		m.resumeResumed.Inc()
	} else {
		m.resumeRefused.Inc()
	}
}
func (m *metrics) ResumeResent(toUpstream bool, n int) {
	if toUpstream {
		m.resumeResentUp.Add(float64(n))
	} else {
		m.resumeResentDown.Add(float64(n))
	}
}

// Replayed counts state messages replayed (session.ReplayMetrics).
func (m *metrics) Replayed(n int) { m.replayed.Add(float64(n)) }
