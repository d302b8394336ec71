package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tether-proxy/tether/internal/ctxtime"
	"github.com/tether-proxy/tether/internal/tetherproc"
)

// Config is one run. Zero fields take the defaults in setDefaults.
type Config struct {
	Sessions       int
	Interval       time.Duration // gap between one session's messages (mean)
	Size           int           // padding per client message, bytes
	Push           time.Duration // gap between a backend's pushes to one connection
	Downtime       time.Duration // how long a killed backend stays down
	Scenarios      []string      // "all", "rolling", in this order
	Graceful       bool          // SIGTERM (Close 1001 to every connection) instead of SIGKILL
	ReconnectRate  int           // TETHER_RECONNECT_RATE
	Warmup         time.Duration // steady traffic before the first scenario
	RecoverTimeout time.Duration // deadline for every session to relay again after a kill
	Settle         time.Duration // deadline for every sent message to be reported received
	ConnectRate    int           // new sessions per second during the ramp-up
	Sources        int           // client source addresses 127.0.0.1..127.0.0.<Sources>
	Tether         string        // tether binary; empty: go build the module
	Race           bool          // build tether with -race
	Dir            string        // logs of tether and the backends; empty: a temporary directory, removed
	Self           string        // binary to run as a backend (re-executed with TETHERCHURN_BACKEND=1); empty: this one
	Env            []string      // more TETHER_* settings for tether, after those from the environment
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Interval, time.Second)
	def(&c.Push, time.Second)
	def(&c.Downtime, 2*time.Second)
	def(&c.Warmup, 5*time.Second)
	def(&c.RecoverTimeout, 2*time.Minute)
	def(&c.Settle, time.Minute)
	if c.Sessions == 0 {
		c.Sessions = 1000
	}
	if c.Size == 0 {
		c.Size = 64
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = []string{"all", "rolling"}
	}
	if c.ReconnectRate == 0 {
		c.ReconnectRate = 500
	}
	if c.ConnectRate == 0 {
		c.ConnectRate = 500
	}
	if c.Sources == 0 {
		c.Sources = 50
	}
}

// Sockets: tether holds two per session, this process and a backend (all
// sessions may land on one) one each, plus a few dozen other files.
const fileMargin = 64

func (c *Config) validate() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	switch {
	case c.Sessions < 1:
		return fmt.Errorf("-sessions %d: at least 1", c.Sessions)
	case int64(2*c.Sessions+fileMargin) > int64(lim.Max):
		return fmt.Errorf("-sessions %d: tether needs two open files per session and the limit is %d: at most %d", c.Sessions, lim.Max, (int(lim.Max)-fileMargin)/2)
	case c.Sources < 1 || c.Sources > 254:
		return fmt.Errorf("-sources %d: 1 to 254", c.Sources)
	}
	for _, s := range c.Scenarios {
		if s != "all" && s != "rolling" {
			return fmt.Errorf("unknown scenario %q (all, rolling)", s)
		}
	}
	return nil
}

func (c *Config) signal() syscall.Signal {
	if c.Graceful {
		return syscall.SIGTERM
	}
	return syscall.SIGKILL
}

// tetherEnv is tether's configuration: its defaults, JSON logs at info
// level (each reconnect attempt is logged as it starts: the dial rate),
// any TETHER_* variable set in this process's environment, c.Env, and the
// three backends. Where a variable repeats, the last one counts.
func (c *Config) tetherEnv(addrs []string) []string {
	env := []string{"TETHER_LOG_LEVEL=info", "TETHER_LOG_FORMAT=json"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "TETHER_LISTEN_ADDR", "TETHER_ADMIN_ADDR", "TETHER_UPSTREAM_URL", "TETHER_RECONNECT_RATE":
		default:
			if strings.HasPrefix(k, "TETHER_") {
				env = append(env, kv)
			}
		}
	}
	env = append(env, c.Env...)
	urls := make([]string, len(addrs))
	for i, a := range addrs {
		urls[i] = "ws://" + a + "/churn"
	}
	return append(env, "TETHER_UPSTREAM_URL="+strings.Join(urls, ","), fmt.Sprintf("TETHER_RECONNECT_RATE=%d", c.ReconnectRate))
}

// churn is one run's state.
type churn struct {
	cfg      Config
	progress io.Writer
	tp       *tetherproc.Proc
	f        *fleet
	l        *ledger
	cl       *clients
	mark     []int64 // per session: messages sent before the current scenario
	logPath  string
}

// Run carries out one run and returns its result. An error means the run
// could not be carried out (build, ports, start); what went wrong in tether
// is in the result.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "tetherchurn-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	self := cfg.Self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	bin := cfg.Tether
	if bin == "" {
		fmt.Fprintln(progress, "building tether")
		var err error
		if bin, err = tetherproc.Build(ctx, dir, cfg.Race); err != nil {
			return nil, err
		}
	}
	r := &churn{cfg: cfg, progress: progress, l: newLedger(cfg.Sessions)}
	addrs := make([]string, 3)
	for i := range addrs {
		a, err := tetherproc.FreePort()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	r.f = newFleet(self, addrs, cfg.Push, dir, r.l)
	defer r.f.close()
	for i := range addrs {
		if err := r.f.start(ctx, i); err != nil {
			return nil, err
		}
	}
	logPath := filepath.Join(dir, "tether.log")
	r.logPath = logPath
	tp, err := tetherproc.Start(ctx, bin, logPath, cfg.tetherEnv(addrs))
	if err != nil {
		return nil, err
	}
	r.tp = tp
	stopped := false
	defer func() {
		if !stopped {
			tp.Kill()
		}
	}()
	res := &Result{
		Sessions: cfg.Sessions, Interval: cfg.Interval.String(), Push: cfg.Push.String(), Size: cfg.Size,
		Downtime: cfg.Downtime.String(), Signal: sigName(cfg.signal()), ReconnectRate: cfg.ReconnectRate,
		TetherEnv: cfg.tetherEnv(addrs),
	}
	if err := r.run(ctx, res); err != nil {
		return nil, err
	}
	code, err := tp.Stop(30 * time.Second)
	stopped = true
	res.TetherExit = code
	if err != nil {
		res.TetherExit = -1
	}
	bad, first, err := tetherproc.ScanLog(logPath)
	res.LogProblems = bad
	if err != nil || bad > 0 {
		res.LogProblems = max(bad, 1)
		res.Violations = append(res.Violations, fmt.Sprintf("tether log: %v %q", err, first))
	}
	res.check()
	return res, nil
}

func (r *churn) logf(format string, args ...any) {
	fmt.Fprintf(r.progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (r *churn) run(ctx context.Context, res *Result) error {
	cfg := &r.cfg
	r.logf("tether pid %d; backends %v; opening %d sessions at %d/s", r.tp.Cmd.Process.Pid, r.f.addrs, cfg.Sessions, cfg.ConnectRate)
	rss0, _ := r.tp.RSS()
	r.cl = newClients(r.tp.Addr, cfg.Sessions, cfg.Sources, cfg.Interval, cfg.Size)
	if err := r.cl.dialAll(ctx, cfg.ConnectRate); err != nil {
		close(r.cl.stop)
		r.cl.closeAll()
		return err
	}
	defer r.cl.closeAll()
	defer func() {
		select {
		case <-r.cl.stop:
		default:
			close(r.cl.stop)
		}
	}()
	// Every session relays a round trip before the storms begin.
	all := make([]int, cfg.Sessions)
	for i := range all {
		all[i] = i
	}
	if _, waiting := r.waitRelayed(ctx, all, 0, nil, cfg.RecoverTimeout); len(waiting) > 0 {
		return fmt.Errorf("%d sessions did not relay a round trip within %v of opening", len(waiting), cfg.RecoverTimeout)
	}
	rss1, _ := r.tp.RSS()
	res.RSSIdleMiB, res.RSSLoadedMiB = mib(rss0), mib(rss1)
	r.logf("all %d sessions relay; tether RSS %.1f MiB (%.1f before the sessions); warming up for %v", cfg.Sessions, mib(rss1), mib(rss0), cfg.Warmup)
	cpu0, _ := r.tp.CPU()
	t0 := time.Now()
	if !ctxtime.Sleep(ctx, cfg.Warmup) { // steady traffic before the first storm
		return ctx.Err()
	}
	cpu1, _ := r.tp.CPU()
	res.SteadyCPUPercent = 100 * (cpu1 - cpu0) / time.Since(t0).Seconds()
	r.mark = r.sentNow()
	for _, name := range cfg.Scenarios {
		steps := [][]int{{0, 1, 2}}
		if name == "rolling" {
			steps = [][]int{{0}, {1}, {2}}
		}
		sr, err := r.scenario(ctx, name, steps)
		if err != nil {
			return err
		}
		res.Scenarios = append(res.Scenarios, sr)
		sr.print(r.progress, "")
	}
	r.final(ctx, res)
	return nil
}

// sentNow snapshots how many messages each session has sent.
func (r *churn) sentNow() []int64 {
	s := make([]int64, len(r.cl.sess))
	for i, ss := range r.cl.sess {
		s[i] = ss.sent.Load()
	}
	return s
}

// waitRelayed polls until each of the sessions still open has an echo
// that arrived after t from an incarnation not in dead, or d passes. It
// returns the arrival times (0: none) and the sessions still open without.
func (r *churn) waitRelayed(ctx context.Context, sess []int, t int64, dead map[int32]bool, d time.Duration) (map[int]int64, []int) {
	at := map[int]int64{}
	waiting := slices.Clone(sess)
	deadline := time.Now().Add(d)
	for {
		waiting = slices.DeleteFunc(waiting, func(i int) bool {
			s := r.cl.sess[i]
			if !s.open() {
				return true
			}
			if a := s.relayedAfter(t, dead); a != 0 {
				at[i] = a
				return true
			}
			return false
		})
		if len(waiting) == 0 || time.Now().After(deadline) || !ctxtime.Sleep(ctx, 50*time.Millisecond) {
			return at, waiting
		}
	}
}

// sample is tether seen from outside at one instant.
type sample struct {
	at       time.Time
	attempts float64 // reconnect dials so far (success + failure)
	rss      int64
}

// sampler reads tether's reconnect counters and RSS every 100 ms until
// stop is closed.
func (r *churn) sampler(stop <-chan struct{}) <-chan []sample {
	out := make(chan []sample, 1)
	go func() {
		var ss []sample
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			m, err := r.tp.Metrics()
			rss, err2 := r.tp.RSS()
			if err == nil && err2 == nil {
				ss = append(ss, sample{time.Now(), m[tetherproc.MReconnectOK] + m[tetherproc.MReconnectFail], rss})
			}
			select {
			case <-stop:
				out <- ss
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// scenario kills and restarts the backends of each step in turn (the next
// step begins when every session the last one cut off relays again), then
// checks that every message sent since the previous scenario reached a
// backend.
func (r *churn) scenario(ctx context.Context, name string, steps [][]int) (ScenarioResult, error) {
	cfg := &r.cfg
	sr := ScenarioResult{Name: name, Signal: sigName(cfg.signal()), Downtime: cfg.Downtime.String()}
	m0, err := r.tp.Metrics()
	if err != nil {
		return sr, err
	}
	_, dups0 := r.l.counts()
	sdups0 := r.l.sessionDups()
	cpu0, _ := r.tp.CPU()
	stopSampling := make(chan struct{})
	samples := r.sampler(stopSampling)
	t0 := time.Now()
	r.logf("scenario %s: %d step(s), %s, down for %v", name, len(steps), sr.Signal, cfg.Downtime)
	for _, idxs := range steps {
		st, err := r.step(ctx, idxs)
		if err != nil {
			close(stopSampling)
			<-samples
			return sr, err
		}
		sr.Steps = append(sr.Steps, st)
		r.logf("  %s", st.line())
	}
	t1 := time.Now()
	cpu1, _ := r.tp.CPU()
	close(stopSampling)
	ss := <-samples
	sr.StormSeconds = t1.Sub(t0).Seconds()
	sr.TetherCPUSeconds = cpu1 - cpu0
	sr.TetherCPUPercent = 100 * sr.TetherCPUSeconds / sr.StormSeconds
	for _, s := range ss {
		sr.TetherPeakRSSMiB = max(sr.TetherPeakRSSMiB, mib(s.rss))
	}
	if len(ss) > 0 {
		sr.TetherRSSBeforeMiB = mib(ss[0].rss)
	}
	sr.PeakDials100ms, sr.PeakDials1s = peakRates(ss)
	times, reconnected := r.l.acceptsIn(t0.UnixNano(), t1.UnixNano())
	sr.Accepts = len(times)
	sr.PeakAccepts100ms = peakBin(times, t0.UnixNano(), int64(100*time.Millisecond))
	sr.PeakAccepts1s = peakBin(times, t0.UnixNano(), int64(time.Second))
	sr.ReconnectedSessions = reconnected
	if starts, err := dialStarts(r.logPath, t0, t1); err != nil {
		r.logf("reading tether's log for reconnect attempts: %v", err)
	} else {
		sr.DialStarts = len(starts)
		sr.PeakDialStarts100ms = peakBin(starts, t0.UnixNano(), int64(100*time.Millisecond))
		sr.PeakDialStarts1s = peakBin(starts, t0.UnixNano(), int64(time.Second))
	}

	// Every message sent before the storm ended reaches a backend.
	to := r.sentNow()
	r.logf("scenario %s: storm over after %.1f s; waiting up to %v for every message sent to be reported", name, sr.StormSeconds, cfg.Settle)
	sr.Lost, sr.LostSessions = r.waitDelivered(ctx, r.mark, to, cfg.Settle)
	r.mark = to
	_, dups1 := r.l.counts()
	sr.Duplicates = dups1 - dups0
	for i, d := range r.l.sessionDups() {
		sr.MaxDuplicatesOneSession = max(sr.MaxDuplicatesOneSession, int(d-sdups0[i]))
	}
	if reconnected > 0 {
		sr.DuplicatesPerReconnected = float64(sr.Duplicates) / float64(reconnected)
	}
	m1, err := r.tp.Metrics()
	if err == nil {
		sr.ReconnectsOK = int64(m1[tetherproc.MReconnectOK] - m0[tetherproc.MReconnectOK])
		sr.ReconnectsFailed = int64(m1[tetherproc.MReconnectFail] - m0[tetherproc.MReconnectFail])
		sr.Resent = int64(m1[tetherproc.MResent] - m0[tetherproc.MResent])
	}
	for _, s := range r.cl.sess {
		if !s.open() && !s.closing.Load() {
			sr.ClosedByTetherSoFar++
		}
	}
	return sr, nil
}

// step kills the backends idxs at once, restarts them after the downtime
// and waits until every session that was connected to one of them relays
// a round trip through a new upstream connection.
func (r *churn) step(ctx context.Context, idxs []int) (StepResult, error) {
	cfg := &r.cfg
	st := StepResult{}
	dead := map[int32]bool{}
	for _, i := range idxs {
		st.Backends = append(st.Backends, i+1)
		dead[int32(r.f.gen(i))] = true
	}
	var affected []int
	for i, s := range r.cl.sess {
		if g, _ := r.l.upstreamGen(i); s.open() && dead[g] {
			affected = append(affected, i)
		}
	}
	st.Affected = len(affected)
	t := time.Now()
	var wg sync.WaitGroup
	for _, i := range idxs {
		wg.Go(func() { r.f.stop(i, cfg.signal()) })
	}
	wg.Wait()
	st.ExitedSeconds = time.Since(t).Seconds()
	if !ctxtime.Sleep(ctx, cfg.Downtime) {
		return st, ctx.Err()
	}
	errs := make([]error, len(idxs))
	tRestart := time.Now()
	for k, i := range idxs {
		wg.Go(func() { errs[k] = r.f.start(ctx, i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return st, err
		}
	}
	st.RestartedAfterSeconds = tRestart.Sub(t).Seconds()
	at, waiting := r.waitRelayed(ctx, affected, t.UnixNano(), dead, cfg.RecoverTimeout)
	var rec []float64
	for _, a := range at {
		rec = append(rec, float64(a-t.UnixNano())/1e9)
	}
	slices.Sort(rec)
	st.Recovered = len(rec)
	st.NotRecovered = len(waiting)
	for _, i := range affected {
		if s := r.cl.sess[i]; !s.open() && !s.closing.Load() {
			st.ClosedByTether++
		}
	}
	if len(rec) > 0 {
		st.RecoverP50 = rec[len(rec)/2]
		st.RecoverP99 = rec[min(len(rec)-1, len(rec)*99/100)]
		st.RecoverAll = rec[len(rec)-1]
	}
	return st, nil
}

// waitDelivered polls until every message in [from[i], to[i]) of each
// session still open is reported received by a backend, or d passes; it
// returns the messages still missing and on how many sessions.
func (r *churn) waitDelivered(ctx context.Context, from, to []int64, d time.Duration) (lost int64, sessions int) {
	deadline := time.Now().Add(d)
	for {
		lost, sessions = 0, 0
		for i, s := range r.cl.sess {
			if !s.open() {
				continue
			}
			if m := r.l.missing(i, from[i], to[i]); m > 0 {
				lost += m
				sessions++
			}
		}
		if lost == 0 || time.Now().After(deadline) || !ctxtime.Sleep(ctx, 100*time.Millisecond) {
			return lost, sessions
		}
	}
}

// final stops the senders, sends one last message on every session and
// checks that it comes back and that every message reached a backend.
func (r *churn) final(ctx context.Context, res *Result) {
	cfg := &r.cfg
	close(r.cl.stop)
	last := make([]int64, len(r.cl.sess))
	for i, s := range r.cl.sess {
		last[i] = -1
		if s.open() {
			if seq, err := r.cl.write(s); err == nil {
				last[i] = seq
			}
		}
	}
	r.logf("final round trip on every session; waiting up to %v", cfg.Settle)
	deadline := time.Now().Add(cfg.Settle)
	for {
		waiting := 0
		for i, s := range r.cl.sess {
			if s.open() && last[i] >= 0 && !s.echoed(last[i]) {
				waiting++
			}
		}
		if waiting == 0 || time.Now().After(deadline) || !ctxtime.Sleep(ctx, 100*time.Millisecond) {
			break
		}
	}
	zero := make([]int64, len(r.cl.sess))
	res.Lost, res.LostSessions = r.waitDelivered(ctx, zero, r.sentNow(), cfg.Settle)
	res.Receipts, res.Duplicates = r.l.counts()
	ends := map[string]int{}
	example := map[string]string{}
	for i, s := range r.cl.sess {
		res.Sent += s.sent.Load()
		res.Pushes += s.pushes.Load()
		if n := s.bad.Load(); n > 0 {
			res.Violations = append(res.Violations, fmt.Sprintf("session %d: %d messages from the backend that make no sense", i, n))
		}
		switch {
		case !s.open():
			res.ClosedByTether++
			code := closeCode(s.endErr)
			ends[code]++
			example[code] = s.endErr.Error()
		case last[i] >= 0 && s.echoed(last[i]):
			res.Survived++
		}
	}
	for code, n := range ends {
		res.Violations = append(res.Violations, fmt.Sprintf("%d sessions closed by tether (%s; e.g. %s)", n, code, example[code]))
	}
	r.l.mu.Lock()
	if r.l.nviol > 0 {
		res.Violations = append(res.Violations, fmt.Sprintf("%d bad backend reports: %q", r.l.nviol, r.l.viol))
	}
	r.l.mu.Unlock()
	if m, err := r.tp.Metrics(); err == nil {
		res.TetherSessionsActive = int(m[tetherproc.MSessionsActive])
		res.BufferOverflows = int64(m[tetherproc.MOverflows])
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// peakBin returns the largest number of times in one bin of width w
// (bins aligned to origin).
func peakBin(times []int64, origin, w int64) int {
	bins := map[int64]int{}
	peak := 0
	for _, t := range times {
		b := (t - origin) / w
		bins[b]++
		peak = max(peak, bins[b])
	}
	return peak
}

// peakRates returns the highest reconnect dial rates, per second, over
// windows of at least 100 ms and at least one second between samples.
func peakRates(ss []sample) (per100ms, per1s float64) {
	return peakRate(ss, 100*time.Millisecond), peakRate(ss, time.Second)
}

func peakRate(ss []sample, w time.Duration) float64 {
	peak := 0.0
	j := 0
	for i := range ss {
		for j < len(ss) && ss[j].at.Sub(ss[i].at) < w {
			j++
		}
		if j == len(ss) {
			break
		}
		peak = max(peak, (ss[j].attempts-ss[i].attempts)/ss[j].at.Sub(ss[i].at).Seconds())
	}
	return peak
}

// dialStarts returns the times (Unix ns) in [from, to) at which tether
// logged "upstream reconnect attempt": just before each dial, after its
// backoff delay and its token of TETHER_RECONNECT_RATE (README "Upstream
// loss, reconnect and the delivery guarantee").
func dialStarts(logPath string, from, to time.Time) ([]int64, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ts []int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	needle := []byte(`"msg":"upstream reconnect attempt"`)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), needle) {
			continue
		}
		var line struct {
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("%w: %.100q", err, sc.Bytes())
		}
		if !line.Time.Before(from) && line.Time.Before(to) {
			ts = append(ts, line.Time.UnixNano())
		}
	}
	return ts, sc.Err()
}

func sigName(s syscall.Signal) string {
	if s == syscall.SIGTERM {
		return "SIGTERM (Close 1001 to every connection)"
	}
	return "SIGKILL"
}
