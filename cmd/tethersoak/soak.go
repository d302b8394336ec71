package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tether-proxy/tether/internal/faultnet"
	"github.com/tether-proxy/tether/internal/tetherproc"
)

// Config is one soak run. Zero fields take the defaults in setDefaults.
type Config struct {
	Duration    time.Duration // clients send and faults run this long
	Sessions    int           // concurrent client connections (plus the idle one)
	Seed        uint64        // fault schedule and client choices
	Idle        time.Duration // the idle session is opened this long before the end (≤ Duration; 0: Duration)
	Interval    time.Duration // mean gap between one connection's messages
	MaxSize     int           // message padding, uniform in [0, MaxSize] bytes
	DropMean    time.Duration // mean client connection lifetime before the client drops it; <0: never
	FaultEvery  time.Duration // mean gap between faults; <0: no faults
	ConnectRate int           // new connections per second during the ramp-up

	ClientHeartbeat   time.Duration // TETHER_CLIENT_HEARTBEAT_INTERVAL
	UpstreamHeartbeat time.Duration // TETHER_UPSTREAM_HEARTBEAT_INTERVAL

	Settle       time.Duration // deadline for the end-of-run deliveries and echoes
	MemWait      time.Duration // deadline for goroutines and RSS to return to the baseline
	GoroutineTol int           // goroutines allowed above the baseline
	RSSTol       int64         // RSS bytes allowed above the baseline

	Tether  string // tether binary; empty: go build the module
	Race    bool   // build tether with -race
	LogFile string // where tether's stderr goes; empty: a temporary file
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Duration, time.Minute)
	def(&c.Idle, c.Duration)
	def(&c.Interval, time.Second)
	def(&c.DropMean, 20*time.Second)
	def(&c.FaultEvery, 2*time.Second)
	def(&c.ClientHeartbeat, 5*time.Second)
	def(&c.UpstreamHeartbeat, time.Second)
	def(&c.Settle, time.Minute)
	def(&c.MemWait, 5*time.Minute)
	if c.Sessions == 0 {
		c.Sessions = 1000
	}
	if c.MaxSize == 0 {
		c.MaxSize = 2048
	}
	if c.ConnectRate == 0 {
		c.ConnectRate = 500
	}
	if c.GoroutineTol == 0 {
		c.GoroutineTol = 3
	}
	if c.RSSTol == 0 {
		c.RSSTol = 16 << 20
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
}

func (c *Config) validate() error {
	switch {
	case c.Idle > c.Duration:
		return fmt.Errorf("-idle %v is longer than -duration %v", c.Idle, c.Duration)
	case c.Sessions < 1:
		return errors.New("-sessions must be at least 1")
	case c.Sessions > 4000:
		// The soak process holds four sockets per session (client,
		// backend, two in the relay), plus churn; the open-file limit
		// is 20,000 here.
		return fmt.Errorf("-sessions %d: at most 4000 (four sockets each in this process)", c.Sessions)
	}
	return nil
}

// tetherEnv is tether's configuration for the soak: short heartbeats, so
// that stalls are found and messages acknowledged quickly, and a short
// backoff cap, so that sessions reconnect soon after a fault ends.
func (c *Config) tetherEnv(upstream string) []string {
	return []string{
		"TETHER_UPSTREAM_URL=ws://" + upstream + "/up",
		"TETHER_CLIENT_HEARTBEAT_INTERVAL=" + c.ClientHeartbeat.String(),
		"TETHER_UPSTREAM_HEARTBEAT_INTERVAL=" + c.UpstreamHeartbeat.String(),
		"TETHER_RECONNECT_MAX_DELAY=2s",
		"TETHER_DIAL_TIMEOUT=5s",
		"TETHER_SHUTDOWN_TIMEOUT=10s",
		"TETHER_SHUTDOWN_SPREAD=1s",
		"TETHER_LOG_LEVEL=warn",
	}
}

// check is one invariant's outcome.
type check struct {
	name   string
	ok     bool
	detail string
}

// Report is what a run measured and which invariants held.
type Report struct {
	Facts  []string
	Checks []check
}

// OK reports whether every invariant held.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if !c.ok {
			return false
		}
	}
	return len(r.Checks) > 0
}

func (r *Report) fact(format string, args ...any) {
	r.Facts = append(r.Facts, fmt.Sprintf(format, args...))
}

func (r *Report) check(name string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, check{name, ok, fmt.Sprintf(format, args...)})
}

// Failed lists the failed checks.
func (r *Report) Failed() []string {
	var f []string
	for _, c := range r.Checks {
		if !c.ok {
			f = append(f, c.name+": "+c.detail)
		}
	}
	return f
}

// Print writes the report.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintln(w, "== tethersoak report")
	for _, f := range r.Facts {
		fmt.Fprintln(w, "  "+f)
	}
	fmt.Fprintln(w, "== invariants")
	for _, c := range r.Checks {
		s := "PASS"
		if !c.ok {
			s = "FAIL"
		}
		fmt.Fprintf(w, "  %s  %s: %s\n", s, c.name, c.detail)
	}
	if r.OK() {
		fmt.Fprintln(w, "== result: PASS")
	} else {
		fmt.Fprintf(w, "== result: FAIL (%d of %d invariants violated)\n", len(r.Failed()), len(r.Checks))
	}
}

// soak is one run's state.
type soak struct {
	cfg      Config
	progress io.Writer
	rep      *Report
	viol     *violations
	be       *backend
	relay    *faultnet.Relay
	tp       *tetherproc.Proc
	cl       *clients
	ch       *chaos

	peakRSS        int64
	peakGoroutines float64
}

// Run runs one soak and returns its report. An error means the run could
// not be carried out (build, ports, tether not starting); violated
// invariants are in the report.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tethersoak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := cfg.Tether
	if bin == "" {
		fmt.Fprintln(progress, "building tether")
		if bin, err = tetherproc.Build(ctx, dir, cfg.Race); err != nil {
			return nil, err
		}
	}
	s := &soak{cfg: cfg, progress: progress, rep: &Report{}, viol: &violations{}}
	if s.be, err = newBackend(s.viol); err != nil {
		return nil, err
	}
	defer s.be.close()
	if s.relay, err = faultnet.New(s.be.addr()); err != nil {
		return nil, err
	}
	defer s.relay.Close()
	logPath := cfg.LogFile
	if logPath == "" {
		logPath = filepath.Join(dir, "tether.log")
	}
	if s.tp, err = tetherproc.Start(ctx, bin, logPath, cfg.tetherEnv(s.relay.Addr())); err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			s.tp.Kill()
		}
	}()
	if err := s.run(ctx); err != nil {
		return nil, err
	}
	code, err := s.tp.Stop(15 * time.Second)
	stopped = true
	s.rep.check("tether exits 0 on SIGTERM", err == nil && code == 0, "exit code %d, %v", code, errOrNone(err))
	bad, first, err := tetherproc.ScanLog(logPath)
	s.rep.check("tether log has no panic, data race or fatal error", err == nil && bad == 0, "%d such lines %q, %v", bad, first, errOrNone(err))
	return s.rep, nil
}

func errOrNone(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

func (s *soak) logf(format string, args ...any) {
	fmt.Fprintf(s.progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (s *soak) run(ctx context.Context) error {
	cfg := &s.cfg
	rep := s.rep
	rep.fact("seed %d; %d sessions for %v (idle session: %v); a message every %v per session on average, 0-%d B of padding; client drops every %v on average; a fault every %v on average",
		cfg.Seed, cfg.Sessions, cfg.Duration, cfg.Idle, cfg.Interval, cfg.MaxSize, durOrOff(cfg.DropMean), durOrOff(cfg.FaultEvery))
	rep.fact("tether pid %d on %s, admin %s, upstream through the fault relay %s to the backend %s", s.tp.Cmd.Process.Pid, s.tp.Addr, s.tp.Admin, s.relay.Addr(), s.be.addr())

	// Baseline: tether started, no session yet, goroutine count steady.
	base, baseRSS, err := s.steadyBaseline()
	if err != nil {
		return err
	}
	rep.fact("baseline: %v goroutines, RSS %.1f MiB", base[tetherproc.MGoroutines], mib(baseRSS))

	s.cl = newClients(cfg, s.tp.Addr, s.viol)
	runStart := time.Now()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()

	// Faults.
	var chaosWG sync.WaitGroup
	chaosCtx, stopChaos := context.WithCancel(ctx)
	defer stopChaos()
	s.ch = &chaos{relay: s.relay, rnd: rand.New(rand.NewPCG(cfg.Seed, 0)), every: cfg.FaultEvery}
	if cfg.FaultEvery > 0 {
		chaosWG.Add(1)
		go func() {
			defer chaosWG.Done()
			s.ch.run(chaosCtx)
		}()
	}

	// The idle session: opened cfg.Idle before the end, then only
	// heartbeats until the final checks.
	idleCh := make(chan *liveConn, 1)
	go func() {
		if !s.cl.wait(loadCtx, cfg.Duration-cfg.Idle) {
			idleCh <- nil
			return
		}
		for k := 0; ; k++ {
			lc, err := s.cl.dial(loadCtx, fmt.Sprintf("idle.%d", k), true)
			if err == nil {
				idleCh <- lc
				return
			}
			if !s.cl.wait(loadCtx, 200*time.Millisecond) {
				idleCh <- nil // the run ended before the idle session could open
				return
			}
		}
	}()

	// Client slots, ramped up at ConnectRate.
	for i := range cfg.Sessions {
		s.cl.wg.Add(1)
		rnd := rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1))
		go s.cl.slot(loadCtx, i, rnd, time.Duration(i)*time.Second/time.Duration(cfg.ConnectRate))
	}

	// Progress until the end of the run.
	tick := time.NewTicker(10 * time.Second)
	end := time.NewTimer(cfg.Duration)
	for running := true; running; {
		select {
		case <-tick.C:
			s.sample(runStart)
		case <-end.C:
			running = false
		case <-ctx.Done():
			tick.Stop()
			return ctx.Err()
		}
	}
	tick.Stop()
	s.sample(runStart)

	// Stop the faults, then the clients: every connection open now is
	// kept and must deliver everything it sent.
	stopChaos()
	chaosWG.Wait()
	close(s.cl.stop)
	s.cl.wg.Wait()
	idle := <-idleCh
	s.logf("load stopped after %v; settling", time.Since(runStart).Round(time.Second))

	ended := s.settle(idle, base)
	s.memory(base, baseRSS, ended)
	return nil
}

// since formats the time from the end of the sessions to an event d after
// the memory wait began (offset after the end); d < 0: it never happened.
func since(d, offset time.Duration) string {
	if d < 0 {
		return "never"
	}
	return (d + offset).Round(100 * time.Millisecond).String()
}

func durOrOff(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.String()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// steadyBaseline samples tether until two readings 300 ms apart agree on
// the goroutine count.
func (s *soak) steadyBaseline() (map[string]float64, int64, error) {
	var prev float64 = -1
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := s.tp.Metrics()
		if err != nil {
			return nil, 0, err
		}
		rss, err := s.tp.RSS()
		if err != nil {
			return nil, 0, err
		}
		if m[tetherproc.MGoroutines] == prev || time.Now().After(deadline) {
			return m, rss, nil
		}
		prev = m[tetherproc.MGoroutines]
		time.Sleep(300 * time.Millisecond) // sampling interval, not synchronisation
	}
}

// sample logs progress and tracks tether's peak RSS and goroutines.
func (s *soak) sample(start time.Time) {
	m, err := s.tp.Metrics()
	rss, err2 := s.tp.RSS()
	if err != nil || err2 != nil {
		s.logf("sample: %v %v", err, err2)
		return
	}
	s.peakRSS = max(s.peakRSS, rss)
	s.peakGoroutines = max(s.peakGoroutines, m[tetherproc.MGoroutines])
	_, n, hit := s.ch.summary()
	s.logf("%v: tether sessions %v, goroutines %v, RSS %.1f MiB; sent %d, echoed %d, handshakes %d ok %d failed, drops %d, unexpected ends %d; faults %d (%d upstream conns hit); violations %d",
		time.Since(start).Round(time.Second), m[tetherproc.MSessionsActive], m[tetherproc.MGoroutines], mib(rss),
		s.cl.sentTotal.Load(), s.cl.echoTotal.Load(), s.cl.handshakesOK.Load(), s.cl.handshakesFailed.Load(),
		s.cl.drops[0].Load()+s.cl.drops[1].Load()+s.cl.drops[2].Load(), s.cl.unexpected.Load(), n, hit, s.violCount())
}

func (s *soak) violCount() int {
	n, _ := s.viol.snapshot()
	return n
}

// poll calls cond every 100 ms until it reports true or d passes; it
// reports the last result.
func poll(d time.Duration, cond func() bool) bool {
	return pollEvery(d, 100*time.Millisecond, cond)
}

func pollEvery(d, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every) // polling interval
	}
}

// alive reports whether lc is still open as far as its reader knows; an
// end found here is recorded.
func (s *soak) alive(lc *liveConn) bool {
	if lc.st.end.Load() != endOpen {
		return false
	}
	select {
	case err := <-lc.readErr:
		s.cl.ended(lc, err)
		return false
	default:
		return true
	}
}

// settle checks deliveries, echoes and metrics at the end of the run, then
// closes every session. It returns when tether had no session left.
func (s *soak) settle(idle *liveConn, base map[string]float64) time.Time {
	cfg, rep, cl := &s.cfg, s.rep, s.cl
	kept := cl.kept

	// 1. Every message sent on a kept connection reaches the backend.
	var missing []string
	poll(cfg.Settle, func() bool {
		missing = missing[:0]
		for _, lc := range kept {
			if !s.alive(lc) {
				continue
			}
			if got, _ := s.be.received(lc.st.id); got < lc.st.sent.Load()-1 {
				missing = append(missing, fmt.Sprintf("%s: %d of %d", lc.st.id, got+1, lc.st.sent.Load()))
			}
		}
		return len(missing) == 0
	})
	aliveKept := 0
	var keptSent int64
	for _, lc := range kept {
		if s.alive(lc) {
			aliveKept++
			keptSent += lc.st.sent.Load()
		}
	}
	rep.check("every message sent on a connection that stayed open reached the backend", len(missing) == 0,
		"%d connections open at the end, %d messages sent on them; %d connections still missing messages after %v %s",
		aliveKept, keptSent, len(missing), cfg.Settle, firstFew(missing))

	// 2. Every open session, and the idle one, still relays both ways.
	rnd := rand.New(rand.NewPCG(cfg.Seed, 1<<63))
	type syncMsg struct {
		lc  *liveConn
		seq int64
	}
	var syncs []syncMsg
	for _, lc := range kept {
		if s.alive(lc) {
			seq := lc.st.sent.Load()
			if err := cl.send(lc, rnd); err == nil {
				syncs = append(syncs, syncMsg{lc, seq})
			}
		}
	}
	idleSeq := int64(-1)
	idleOpen := idle != nil && s.alive(idle)
	var idleFor time.Duration
	var idlePings int64
	if idleOpen {
		idleFor = time.Since(idle.opened)
		idlePings = idle.st.pings.Load()
		if idle.st.sent.Load() != 0 {
			s.viol.add("idle session sent data before the end")
		}
		if err := cl.send(idle, rnd); err == nil {
			idleSeq = 0
		}
	}
	var noEcho []string
	idleEcho := false
	poll(cfg.Settle, func() bool {
		noEcho = noEcho[:0]
		for _, sm := range syncs {
			if sm.lc.st.echoMax.Load() < sm.seq {
				noEcho = append(noEcho, sm.lc.st.id)
			}
		}
		idleEcho = idleSeq == 0 && idle.st.echoMax.Load() >= 0
		return len(noEcho) == 0 && (idleEcho || idleSeq < 0)
	})
	rep.check("every open session relays a final message both ways", len(noEcho) == 0 && len(syncs) == aliveKept,
		"%d of %d open sessions sent a final message, %d got no echo within %v %s", len(syncs), aliveKept, len(noEcho), cfg.Settle, firstFew(noEcho))
	wantPings := int64(idleFor / cfg.ClientHeartbeat / 2)
	rep.check("the idle session stayed open on heartbeats alone and relays at the end", idleOpen && idleEcho && idlePings >= wantPings && idlePings > 0,
		"open %v, idle for %v with %d heartbeats received (want at least %d), final message echoed: %v", idleOpen, idleFor.Round(time.Second), idlePings, wantPings, idleEcho)

	// 3. While they are open, tether counts them.
	open, err := s.tp.Metrics()
	if err != nil {
		rep.check("metrics readable", false, "%v", err)
		open = map[string]float64{}
	}
	wantActive := aliveKept
	if idleOpen {
		wantActive++
	}
	rep.check("tether_sessions_active equals the sessions the clients hold open", int(open[tetherproc.MSessionsActive]) == wantActive,
		"tether %v, clients %d", open[tetherproc.MSessionsActive], wantActive)

	// 4. Close everything; tether and the backend end every session.
	var wg sync.WaitGroup
	all := append([]*liveConn(nil), kept...)
	if idle != nil {
		all = append(all, idle)
	}
	for _, lc := range all {
		if lc.st.end.Load() != endOpen {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			closeGracefully(lc)
		}()
	}
	wg.Wait()
	var final map[string]float64
	closed := poll(cfg.Settle, func() bool {
		m, err := s.tp.Metrics()
		if err != nil {
			return false
		}
		final = m
		return m[tetherproc.MSessionsActive] == 0 && s.be.open.Load() == 0
	})
	rep.check("all sessions end when the clients close", closed, "tether_sessions_active %v, backend connections open %d", final[tetherproc.MSessionsActive], s.be.open.Load())
	ended := time.Now()
	s.metricChecks(base, final)
	return ended
}

func firstFew(xs []string) string {
	if len(xs) == 0 {
		return ""
	}
	if len(xs) > 5 {
		return fmt.Sprintf("(first: %s …)", strings.Join(xs[:5], ", "))
	}
	return "(" + strings.Join(xs, ", ") + ")"
}

// metricChecks compares tether's counters (deltas from the baseline) with
// what the clients and the backend counted.
func (s *soak) metricChecks(base, final map[string]float64) {
	rep, cl, be := s.rep, s.cl, s.be
	d := func(k string) int64 { return int64(final[k] - base[k]) }

	ok, timeouts := cl.handshakesOK.Load(), cl.handshakesTimeout.Load()
	sessions := d(tetherproc.MSessionsTotal)
	rep.check("tether_sessions_total counts every handshake the clients completed", sessions >= ok && sessions <= ok+timeouts,
		"tether +%d, clients completed %d (and abandoned %d by their own timeout, which tether may count)", sessions, ok, timeouts)
	rep.check("tether_buffered_messages is back to 0", final[tetherproc.MBuffered] == 0, "%v", final[tetherproc.MBuffered])

	cl.mu.Lock()
	closed1013 := int64(cl.endCodes[1013])
	codes := fmt.Sprint(cl.endCodes)
	statuses := make([]string, 0, len(cl.failStatus))
	for st, n := range cl.failStatus {
		statuses = append(statuses, fmt.Sprintf("%s×%d", statusText(st), n))
	}
	var attempted int64
	for _, st := range cl.all {
		attempted += st.sent.Load()
	}
	cl.mu.Unlock()
	sort.Strings(statuses)
	rep.check("tether_buffer_overflows_total equals the 1013 closes clients saw", d(tetherproc.MOverflows) == closed1013, "tether +%d, clients %d", d(tetherproc.MOverflows), closed1013)

	c2u, resent, u2c := d(tetherproc.MC2U), d(tetherproc.MResent), d(tetherproc.MU2C)
	frames, distinct := be.frames.Load(), be.distinct.Load()
	dups := frames - distinct
	rep.check("client_to_upstream messages cover every message the backend received", c2u >= frames,
		"tether +%d, backend received %d (%d distinct, %d duplicates)", c2u, frames, distinct, dups)
	rep.check("tether_resent_messages_total covers every duplicate the backend received", resent >= dups,
		"tether +%d resent, backend %d duplicates", resent, dups)
	// c2u − resent counts each message's first successful write, except
	// that a message whose write was cut by an upstream loss is counted
	// as resent when it goes out on the next connection (tether marks it
	// sent before writing): at most one such message per upstream loss,
	// and every loss ends in a reconnect or the session's end.
	once := c2u - resent
	rok := d(tetherproc.MReconnectOK)
	rep.check("client messages tether sent once (client_to_upstream − resent) lie between what the backend got and what the clients sent",
		distinct <= once+rok+sessions && once <= attempted,
		"backend distinct %d ≤ tether %d (+ at most one per upstream loss: %d reconnects, %d sessions) and tether %d ≤ clients sent %d",
		distinct, once, rok, sessions, once, attempted)
	echoes, beEchoes := cl.echoTotal.Load(), be.echoes.Load()
	rep.check("upstream_to_client messages lie between what the clients got and what the backend sent", echoes <= u2c && u2c <= beEchoes,
		"clients received %d ≤ tether +%d ≤ backend sent %d", echoes, u2c, beEchoes)

	// Every session's first dial and every successful reconnect is an
	// upgrade at the backend. Besides those, the backend may complete
	// upgrades that tether counts as failed (the relay cut the 101), that
	// failed a client handshake, or that completed after the client had
	// dropped its session (tether closes them uncounted).
	rfail := d(tetherproc.MReconnectFail)
	ups := be.upgrades.Load()
	failed := cl.handshakesFailed.Load()
	drops := cl.drops[0].Load() + cl.drops[1].Load() + cl.drops[2].Load()
	rep.check("upstream connections the backend accepted match tether's sessions and reconnects",
		sessions+rok <= ups && ups <= sessions+rok+rfail+failed+drops,
		"sessions %d + reconnects %d ≤ backend upgrades %d ≤ that + failed reconnects %d + failed handshakes %d + client drops %d", sessions, rok, ups, rfail, failed, drops)
	faults, nFaults, hit := s.ch.summary()
	rep.check("faults that cut upstream connections led to reconnects", hit == 0 || rok > 0, "%d connections cut, %d reconnects", hit, rok)
	rep.check("no client leg timed out", d(tetherproc.MTimeoutClient) == 0, "tether_heartbeat_timeouts_total{leg=client} +%d", d(tetherproc.MTimeoutClient))

	nv, first := s.viol.snapshot()
	rep.check("no violation seen by the backend or the clients (gaps, order, integrity, cross-session, sessions ended by tether)", nv == 0, "%d %s", nv, firstFew(first))

	rep.fact("clients: %d connections (%d handshakes failed: %s), %d messages sent, %d echoes received; drops: rst %d, fin %d, close-1000 %d; ended by tether or broken: %d %s",
		ok, failed, strings.Join(statuses, " "), attempted, echoes, cl.drops[0].Load(), cl.drops[1].Load(), cl.drops[2].Load(), cl.unexpected.Load(), codes)
	rep.fact("faults: %d (%s), %d upstream connections cut", nFaults, faults, hit)
	rep.fact("backend: %d upstream connections for %d sessions, %d messages (%d distinct, %d duplicates), %d echoes", ups, be.sessions(), frames, distinct, dups, beEchoes)
	rep.fact("tether: sessions +%d, client_to_upstream +%d, resent +%d, upstream_to_client +%d, reconnects ok +%d failed +%d, heartbeat timeouts upstream +%d, peak RSS %.1f MiB, peak goroutines %v",
		sessions, c2u, resent, u2c, rok, rfail, d(tetherproc.MTimeoutUp), mib(s.peakRSS), s.peakGoroutines)
}

// memory waits for tether's goroutines and memory to return to the
// baseline, after every session has ended. Three measures:
//
//   - go_goroutines: at most GoroutineTol above the baseline.
//   - live heap: go_memstats_next_gc_bytes is the GC's goal, twice the heap
//     the last GC found live (plus stacks and globals), 4 MiB at least; read
//     after a GC that began once the last session had ended (a GC runs at
//     least every 2 minutes), half of it must be at most 8 MiB above the
//     baseline's half. This is the leak detector: it does not see garbage
//     or memory the runtime has not yet returned.
//   - RSS (VmRSS): at most RSSTol plus a tenth of the peak's rise above the
//     baseline. The Go runtime returns freed pages to the OS gradually
//     and keeps span and GC metadata, goroutine descriptors (never freed)
//     and partly used pages in proportion to the peak, so RSS does not
//     come back all the way after a peak of thousands of sessions.
func (s *soak) memory(base map[string]float64, baseRSS int64, ended time.Time) {
	cfg, rep := &s.cfg, s.rep
	const liveTol = 8 << 20
	baseLive := base[tetherproc.MNextGC] / 2
	rssLimit := baseRSS + cfg.RSSTol + max(0, s.peakRSS-baseRSS)/10
	var m map[string]float64
	var rss int64
	start := time.Now()
	var gAt time.Duration = -1
	lastLog := start
	gcAfter := false
	pollEvery(cfg.MemWait, 250*time.Millisecond, func() bool {
		var err error
		if m, err = s.tp.Metrics(); err != nil {
			return false
		}
		if rss, err = s.tp.RSS(); err != nil {
			return false
		}
		gOK := m[tetherproc.MGoroutines] <= base[tetherproc.MGoroutines]+float64(cfg.GoroutineTol)
		if gOK && gAt < 0 {
			gAt = time.Since(start)
		}
		gcAfter = m[tetherproc.MLastGC] >= float64(ended.UnixNano())/1e9
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			s.logf("waiting for the baseline: goroutines %v, RSS %.1f MiB, heap in use %.1f MiB, next GC at %.1f MiB (GC since the end: %v)",
				m[tetherproc.MGoroutines], mib(rss), m["go_memstats_heap_inuse_bytes"]/(1<<20), m[tetherproc.MNextGC]/(1<<20), gcAfter)
		}
		return gOK && gcAfter && m[tetherproc.MNextGC]/2 <= baseLive+liveTol && (rss <= rssLimit || cfg.Race)
	})
	rep.check("tether's goroutines return to the baseline", m[tetherproc.MGoroutines] <= base[tetherproc.MGoroutines]+float64(cfg.GoroutineTol),
		"%v now, baseline %v (+%d allowed), peak %v; back %v after the last session ended", m[tetherproc.MGoroutines], base[tetherproc.MGoroutines], cfg.GoroutineTol, s.peakGoroutines, since(gAt, start.Sub(ended)))
	rep.check("tether's live heap returns to the baseline", gcAfter && m[tetherproc.MNextGC]/2 <= baseLive+liveTol,
		"%.1f MiB now (half the next-GC goal, after a GC since the last session ended: %v), baseline %.1f MiB (+%d MiB allowed)",
		m[tetherproc.MNextGC]/2/(1<<20), gcAfter, baseLive/(1<<20), liveTol>>20)
	if cfg.Race {
		// The race detector's shadow memory is never returned.
		rep.fact("RSS not judged (-race build): %.1f MiB now, baseline %.1f MiB, peak %.1f MiB", mib(rss), mib(baseRSS), mib(s.peakRSS))
	} else {
		rep.check("tether's RSS returns to the baseline", rss <= rssLimit,
			"%.1f MiB now, baseline %.1f MiB, peak %.1f MiB, allowed %.1f MiB (%d MiB + a tenth of the rise); waited %v (at most %v)",
			mib(rss), mib(baseRSS), mib(s.peakRSS), mib(rssLimit), cfg.RSSTol>>20, time.Since(start).Round(time.Second), cfg.MemWait)
	}
	rep.fact("tether at the end: go_memstats heap in use %.1f MiB, stack in use %.1f MiB, sys %.1f MiB (baseline %.1f, %.1f, %.1f)",
		m["go_memstats_heap_inuse_bytes"]/(1<<20), m["go_memstats_stack_inuse_bytes"]/(1<<20), m["go_memstats_sys_bytes"]/(1<<20),
		base["go_memstats_heap_inuse_bytes"]/(1<<20), base["go_memstats_stack_inuse_bytes"]/(1<<20), base["go_memstats_sys_bytes"]/(1<<20))
}
