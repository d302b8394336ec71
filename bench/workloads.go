package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// Result is what one workload against one target measured. It is printed
// as one JSON line with -json; `bench table` turns lines into a table.
type Result struct {
	Label    string `json:"label"`  // workload name in the table, e.g. "tput-1k"
	Target   string `json:"target"` // direct, relay, nginx, haproxy, caddy, tether ...
	Mode     string `json:"mode"`   // throughput, latency, idle
	Conns    int    `json:"conns"`
	Size     int    `json:"size,omitempty"`
	InFlight int    `json:"inflight,omitempty"`
	Rate     int    `json:"rate,omitempty"`
	Deflate  bool   `json:"deflate,omitempty"` // permessage-deflate negotiated
	// Resumable counts the connections tether made resumable (-resume).
	Resumable int     `json:"resumable,omitempty"`
	Seconds   float64 `json:"seconds"`         // measured window
	Error     string  `json:"error,omitempty"` // the run failed: its figures are not comparable

	Msgs       int64   `json:"msgs,omitempty"` // echoes received in the window
	MsgsPerSec float64 `json:"msgs_per_sec,omitempty"`
	MBPerSec   float64 `json:"mb_per_sec,omitempty"` // payload MB (1e6) echoed per second
	P50ms      float64 `json:"p50_ms,omitempty"`
	P99ms      float64 `json:"p99_ms,omitempty"`
	MaxMs      float64 `json:"max_ms,omitempty"`
	WireBytes  int64   `json:"wire_bytes,omitempty"` // both directions on the tool's sockets, in the window
	// WirePerMsg is wire bytes (both directions) per echoed message over
	// the whole run, in-flight messages drained (throughput).
	WirePerMsg float64 `json:"wire_per_msg,omitempty"`

	// CPU seconds in the window: "proxy", "backend", "load".
	CPU map[string]float64 `json:"cpu"`
	// RealTime: the load tool, the proxy and the backend ran at a
	// real-time priority (chrt -f), so that other tasks of the machine
	// (a kernel thread waking every 512 ms here) could not preempt them.
	RealTime bool `json:"realtime,omitempty"`
	// Saturated says which side was the bottleneck (throughput): "proxy"
	// when the proxy's core was at least 95 % busy, "harness" when the
	// load tool and the backend together were (they share one core),
	// "neither" otherwise. Only a "proxy" row measures a proxy's cost at
	// saturation; a "harness" row's per-CPU figures are taken at part load.
	Saturated string `json:"saturated,omitempty"`

	// Hops is where the round trips went, hop by hop (latency -hops).
	Hops *Hops `json:"hops,omitempty"`

	RSSBase          int64   `json:"rss_base,omitempty"`  // proxy RSS before the sessions opened
	RSSAfter         int64   `json:"rss_after,omitempty"` // proxy RSS at the end of the hold
	RSSPerSession    float64 `json:"rss_per_session,omitempty"`
	ProxyCPUPercent  float64 `json:"proxy_cpu_percent,omitempty"` // idle: proxy CPU over the hold
	PingsAnswered    int64   `json:"pings_answered,omitempty"`
	ClosedDuringHold int     `json:"closed_during_hold,omitempty"`
	// From tether's /metrics when -admin is given (idle).
	GoroutinesPerSession float64 `json:"goroutines_per_session,omitempty"`
	HeapPerSession       float64 `json:"heap_per_session,omitempty"`
}

// saturation is the share of one core a side must use to count as the
// bottleneck.
const saturation = 0.95

// judge fills Saturated from the CPU seconds of the window.
func (r *Result) judge() {
	if r.Seconds <= 0 {
		return
	}
	proxy, pok := r.CPU["proxy"]
	harness := r.CPU["load"] + r.CPU["backend"]
	switch {
	case pok && proxy/r.Seconds >= saturation:
		r.Saturated = "proxy"
	case harness/r.Seconds >= saturation:
		r.Saturated = "harness"
	default:
		r.Saturated = "neither"
	}
}

// perProxyCPU returns v per second of proxy CPU, or 0 without a proxy.
func (r *Result) perProxyCPU(v float64) float64 {
	if c := r.CPU["proxy"]; c > 0 {
		return v / c
	}
	return 0
}

// opcode is the frame type the load modes send.
func (o common) opcode() ws.OpCode {
	if o.text {
		return ws.OpText
	}
	return ws.OpBinary
}

// common are the options every load mode shares.
type common struct {
	dial     dialOpts
	label    string
	target   string
	procs    procs
	duration time.Duration
	connRate int
	text     bool
}

// payload fills p with a message: 16 hex digits of the send time
// (nanoseconds since epoch) followed by JSON-like ASCII filler, so the
// same bytes work as text or binary and compress like real JSON.
func payload(p []byte, epoch time.Time) {
	stamp(p, epoch)
}

func stamp(p []byte, epoch time.Time) {
	const hex = "0123456789abcdef"
	t := uint64(time.Since(epoch))
	for i := 15; i >= 0; i-- {
		if i < len(p) {
			p[i] = hex[t&15]
		}
		t >>= 4
	}
}

// filler returns size bytes: a 16-byte stamp slot then JSON-like text.
func filler(size int, seed uint64) []byte {
	words := []string{"alice", "bob", "order", "price", "qty", "status", "filled", "open", "user", "ts", "items", "sku", "eur", "usd"}
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, 16, size+64)
	for len(b) < size {
		b = append(b, `{"`...)
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, `":"`...)
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, `","n":`...)
		b = strconv.AppendInt(b, int64(r.IntN(100000)), 10)
		b = append(b, "},"...)
	}
	b = b[:size]
	for i := range min(16, size) {
		b[i] = '0'
	}
	return b
}

// parseStamp reads the send time back out of an echoed message.
func parseStamp(p []byte, epoch time.Time) (time.Duration, bool) {
	if len(p) < 16 {
		return 0, false
	}
	var t uint64
	for _, c := range p[:16] {
		switch {
		case c >= '0' && c <= '9':
			t = t<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			t = t<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return time.Since(epoch) - time.Duration(t), true
}

func percentiles(r *Result, rtts []time.Duration) {
	if len(rtts) == 0 {
		return
	}
	slices.Sort(rtts)
	q := func(f float64) float64 {
		return float64(rtts[int(f*float64(len(rtts)-1))]) / 1e6
	}
	r.P50ms, r.P99ms, r.MaxMs = q(.5), q(.99), q(1)
}

// throughput: every connection keeps inflight messages of size bytes in
// flight for the duration (a new one goes out as each echo returns).
//
// One goroutine per connection does both halves: it reads every echo
// that has arrived, queues a new message for each in its write buffer,
// and writes them all in one write before it next waits for the socket.
// No channel, lock or goroutine hand-off per message, and frames parsed
// in place: the harness must not be what limits a run (the -json result
// says which side was saturated).
func throughput(ctx context.Context, o common, conns, size, inflight int) (*Result, error) {
	var cnt counters
	if o.dial.readBuf == 0 {
		o.dial.readBuf = max(64<<10, 2*size+64)
	}
	cs, err := dialAll(ctx, o.dial, conns, o.connRate, &cnt)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	errc := make(chan error, len(cs))
	p := pumpOpts{op: o.opcode(), size: size, inflight: inflight,
		echo: echoOpts{epoch: time.Now(), size: size, errc: errc}}
	var stopping atomic.Bool
	var inWindow, echoed atomic.Int64
	p.echo.inWindow, p.echo.stopping, p.echoed = &inWindow, &stopping, &echoed
	var mu sync.Mutex
	var all []time.Duration
	r0, w0 := cnt.read.Load(), cnt.written.Load()
	before := o.procs.sample()
	start := time.Now()
	p.echo.end = start.Add(o.duration)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rtts := pump(c, p, filler(size, uint64(i)))
			mu.Lock()
			all = append(all, rtts...)
			mu.Unlock()
		}()
	}
	wait(ctx, p.echo.end)
	after := o.procs.sample()
	r1, w1 := cnt.read.Load(), cnt.written.Load()
	elapsed := time.Since(start)
	// No new messages from here; each pump reads the echoes still in
	// flight (at most 2 s) and returns.
	stopping.Store(true)
	wg.Wait()
	wirePerMsg := float64(cnt.read.Load()+cnt.written.Load()-r0-w0) / float64(max(echoed.Load(), 1))
	close(errc)
	res := &Result{WirePerMsg: wirePerMsg, Label: o.label, Target: o.target, Mode: "throughput", Conns: conns, Size: size, InFlight: inflight,
		Seconds: elapsed.Seconds(), Msgs: inWindow.Load(), CPU: after.since(before), WireBytes: (r1 - r0) + (w1 - w0),
		RealTime: o.procs.realTime()}
	res.Deflate = len(cs) > 0 && cs[0].deflate
	for _, c := range cs {
		if c.resumable.Load() {
			res.Resumable++
		}
	}
	res.MsgsPerSec = float64(res.Msgs) / res.Seconds
	res.MBPerSec = res.MsgsPerSec * float64(size) / 1e6
	percentiles(res, all)
	res.judge()
	for err := range errc {
		return res, err
	}
	return res, nil
}

// pumpOpts is what every connection's pump shares in a throughput run.
type pumpOpts struct {
	op       ws.OpCode
	size     int
	inflight int
	echo     echoOpts
	echoed   *atomic.Int64 // every echo, in the window or not
}

// pump keeps p.inflight messages in flight on c until p.echo.stopping is
// set, then reads the echoes still owed (at most 2 s), and returns the
// round trips. It is c's only reader and writer.
func pump(c *client, p pumpOpts, msg []byte) []time.Duration {
	rtts := make([]time.Duration, 0, 1<<14)
	fail := func(err error) []time.Duration {
		p.echo.errc <- err
		return rtts
	}
	send := func() error {
		payload(msg, p.echo.epoch)
		return c.writeFrameLocked(p.op, msg, false)
	}
	c.wmu.Lock() // held throughout: read answers pings through writeFrame, which must not take it
	c.pumping = true
	defer func() { c.pumping = false; c.wmu.Unlock() }()
	for range p.inflight {
		if err := send(); err != nil {
			return fail(err)
		}
	}
	owed := p.inflight
	stopped := false
	for owed > 0 {
		// Everything queued goes out before the pump waits for input.
		if c.br.Buffered() == 0 && c.bw.Buffered() > 0 {
			if err := c.bw.Flush(); err != nil {
				return fail(err)
			}
		}
		if !stopped && p.echo.stopping.Load() {
			stopped = true
			_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		}
		m, err := c.read()
		if err != nil {
			if stopped {
				return rtts // echoes lost at the end are not an error
			}
			return fail(err)
		}
		d, ok := parseStamp(m, p.echo.epoch)
		if !ok || len(m) != p.size {
			return fail(fmt.Errorf("echo of %d bytes, sent %d", len(m), p.size))
		}
		owed--
		rtts = append(rtts, d)
		p.echoed.Add(1)
		if time.Now().Before(p.echo.end) {
			p.echo.inWindow.Add(1)
		}
		if !stopped {
			if err := send(); err != nil {
				return fail(err)
			}
			owed++
		}
	}
	return rtts
}

// schedulePhases gives n connections the phases of their schedules
// (when in each period each sends), drawn at random from seed: the same
// seed gives the same phases, so that every run of a comparison offers
// its target the same arrivals. Where two or three connections' phases
// fall within a few microseconds of each other their messages queue, and
// those few places hold a third to a half of a run's slowest hundredth
// (BENCHMARKS.md, ninth sitting): with a new draw per run, a run's p99
// depended on its draw as much as on its target. Seed 0 draws anew.
func schedulePhases(n int, period time.Duration, seed uint64) []time.Duration {
	r := rand.New(rand.NewPCG(seed, 2))
	if seed == 0 {
		r = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	phases := make([]time.Duration, n)
	for i := range phases {
		phases[i] = time.Duration(r.Int64N(int64(period)))
	}
	return phases
}

// latency: conns connections together send rate messages per second,
// each on its own fixed schedule with a random phase (open loop; the
// phases drawn from seed, see schedulePhases), and
// the round trip of every message is recorded; with rttsOut, also every
// message's send time and round trip, written there as "SENT RTT" lines
// in nanoseconds (SENT wall-clock Unix time, in send order), to see when
// the slow ones were sent and set them against traces of the proxy.
// With hopsBackend (the backend's address), the window's round trips are
// also traced hop by hop (Hops).
func latency(ctx context.Context, o common, conns, size, rate int, seed uint64, rttsOut io.Writer, hopsBackend string) (*Result, error) {
	period := time.Duration(float64(time.Second) * float64(conns) / float64(max(rate, 1)))
	var tracer *hopsTracer
	if hopsBackend != "" {
		// From before the connections open (their first segments end
		// their handshakes, see analyzeHops).
		u, err := url.Parse(o.dial.url)
		if err != nil {
			return nil, err
		}
		// Four segments per round trip and per handshake, and room.
		maxEvents := int(8*float64(rate)*(o.duration.Seconds()+1)) + 8*conns + 4096
		// The proxy's reads pair the connections while they open and
		// each session sends its first five messages.
		pairFor := 5*period + 500*time.Millisecond
		if o.connRate > 0 {
			pairFor += time.Duration(conns) * time.Second / time.Duration(o.connRate)
		}
		if tracer, err = startHops(ctx, u.Host, hopsBackend, o.procs.proxy, maxEvents, pairFor); err != nil {
			return nil, err
		}
		defer tracer.kill()
	}
	var cnt counters
	cs, err := dialAll(ctx, o.dial, conns, o.connRate, &cnt)
	if err != nil {
		return nil, err
	}
	defer closeAll(cs)
	op := o.opcode()
	epoch := time.Now()
	var stopping atomic.Bool
	var inWindow atomic.Int64
	var mu sync.Mutex
	var all []time.Duration
	var traced [][2]time.Duration // with rttsOut: send time, round trip
	errc := make(chan error, 2*len(cs))
	var wg sync.WaitGroup
	before := o.procs.sample()
	start := time.Now()
	end := start.Add(o.duration)
	wctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	phases := schedulePhases(len(cs), period, seed)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := pace(wctx, cs, phases, period, start, epoch, op, size); err != nil {
			errc <- err
		}
	}()
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rtts, sent := readEchoes(c, echoOpts{epoch: epoch, size: size, end: end, inWindow: &inWindow, stopping: &stopping, errc: errc, sent: rttsOut != nil}, 64, nil)
			mu.Lock()
			all = append(all, rtts...)
			for i, s := range sent {
				traced = append(traced, [2]time.Duration{s, rtts[i]})
			}
			mu.Unlock()
		}()
	}
	wait(ctx, end)
	after := o.procs.sample()
	elapsed := time.Since(start)
	var hops *Hops
	var herr error
	if tracer != nil {
		// Segments after the window are not traced: the tail of the
		// round trips in flight at its end is lost, not skewed.
		// A hop longer than a quarter period is a lost event's, the
		// chain ending in the session's next message.
		hops, herr = tracer.stop(period / 4)
	}
	// Give the last echoes a moment, then close: readers end.
	time.Sleep(200 * time.Millisecond)
	stopping.Store(true)
	closeAll(cs)
	wg.Wait()
	close(errc)
	res := &Result{Label: o.label, Target: o.target, Mode: "latency", Conns: conns, Size: size, Rate: rate,
		Seconds: elapsed.Seconds(), Msgs: inWindow.Load(), CPU: after.since(before), RealTime: o.procs.realTime()}
	res.MsgsPerSec = float64(res.Msgs) / res.Seconds
	res.Hops = hops
	percentiles(res, all)
	if herr != nil {
		return res, herr
	}
	for err := range errc {
		return res, err
	}
	if rttsOut != nil {
		slices.SortFunc(traced, func(a, b [2]time.Duration) int { return cmp.Compare(a[0], b[0]) })
		w := bufio.NewWriter(rttsOut)
		for _, t := range traced {
			fmt.Fprintf(w, "%d %d\n", epoch.UnixNano()+int64(t[0]), t[1])
		}
		if err := w.Flush(); err != nil {
			return res, err
		}
	}
	return res, nil
}

// pace sends each connection's messages on its own schedule (its phase
// after start, then every period) until ctx ends, from one goroutine that
// a timerfd wakes at each send time. Go's timers cannot do that here: an
// idle process waits in epoll_wait, whose timeout is in milliseconds, so
// timers a few hundred microseconds apart fire together, and one writer
// per connection sent the messages of each millisecond in one burst (6 at
// 5,000 msg/s), a queue at every hop that no set of independent clients
// makes (BENCHMARKS.md "Issue 14, eighth sitting"). A timerfd is a file
// descriptor in the same epoll set and wakes it to the microsecond. A
// pacer that falls behind sends what is due at once.
func pace(ctx context.Context, cs []*client, phases []time.Duration, period time.Duration, start, epoch time.Time, op ws.OpCode, size int) error {
	order := make([]int, len(cs))
	msgs := make([][]byte, len(cs))
	for i := range cs {
		order[i] = i
		msgs[i] = filler(size, uint64(i))
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(phases[a], phases[b]) })
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("timerfd: %w", err)
	}
	f := os.NewFile(uintptr(tfd), "timerfd") // non-blocking: in Go's poller
	defer f.Close()
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	var expirations [8]byte
	for round := time.Duration(0); ; round++ {
		base := start.Add(round * period)
		for _, i := range order {
			if d := time.Until(base.Add(phases[i])); d > 0 {
				spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
				if err := unix.TimerfdSettime(tfd, 0, &spec, nil); err != nil {
					return fmt.Errorf("timerfd: %w", err)
				}
				if _, err := f.Read(expirations[:]); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("timerfd: %w", err)
				}
			}
			if ctx.Err() != nil {
				return nil
			}
			payload(msgs[i], epoch)
			if err := cs[i].writeFrame(op, msgs[i], true); err != nil {
				return err
			}
		}
	}
}

// idle opens n sessions, holds them for the duration while answering
// every ping, and reports the proxy's RSS per session net of its RSS
// before the sessions opened, and its CPU % over the hold. A session
// that closes during the hold is an error.
func idle(ctx context.Context, o common, n int, settle time.Duration, admin string) (*Result, error) {
	var cnt counters
	m0 := sampleMetrics(admin)
	var base int64
	if o.procs.proxy > 0 {
		var err error
		if base, err = rssBytes(o.procs.proxy); err != nil {
			return nil, fmt.Errorf("proxy rss: %w", err)
		}
	}
	o.dial.readBuf = 512
	var stopping atomic.Bool
	var closed atomic.Int64
	var wg sync.WaitGroup
	// Each session answers pings from the moment it is open, not once
	// all are: a long ramp would otherwise outlast the heartbeat timeout.
	o.dial.onConn = func(c *client) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := c.read(); err != nil {
					if !stopping.Load() {
						closed.Add(1)
					}
					return
				}
			}
		}()
	}
	cs, err := dialAll(ctx, o.dial, n, o.connRate, &cnt)
	if err != nil {
		stopping.Store(true)
		wg.Wait()
		return nil, err
	}
	wait(ctx, time.Now().Add(settle))
	before := o.procs.sample()
	start := time.Now()
	wait(ctx, start.Add(o.duration))
	after := o.procs.sample()
	elapsed := time.Since(start)
	m1 := sampleMetrics(admin)
	res := &Result{Label: o.label, Target: o.target, Mode: "idle", Conns: n, Seconds: elapsed.Seconds(),
		CPU: after.since(before), RSSBase: base}
	if g, ok := m1["go_goroutines"]; ok {
		res.GoroutinesPerSession = (g - m0["go_goroutines"]) / float64(n)
		res.HeapPerSession = (m1["go_memstats_heap_inuse_bytes"] - m0["go_memstats_heap_inuse_bytes"]) / float64(n)
	}
	if o.procs.proxy > 0 {
		if res.RSSAfter, err = rssBytes(o.procs.proxy); err != nil {
			return nil, fmt.Errorf("proxy rss: %w", err)
		}
		res.RSSPerSession = float64(res.RSSAfter-base) / float64(n)
		res.ProxyCPUPercent = 100 * res.CPU["proxy"] / res.Seconds
	}
	res.ClosedDuringHold = int(closed.Load())
	stopping.Store(true)
	closeAll(cs)
	wg.Wait()
	for _, c := range cs {
		res.PingsAnswered += c.pings.Load()
	}
	if res.ClosedDuringHold > 0 {
		return res, fmt.Errorf("%d of %d sessions closed during the hold", res.ClosedDuringHold, n)
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return res, err
	}
	return res, nil
}

// wait sleeps until t or until ctx ends.
func wait(ctx context.Context, t time.Time) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// echoOpts is what an echo reader shares with its workload.
type echoOpts struct {
	epoch    time.Time // the time base of the stamps in the payloads
	size     int       // every echo must be this long
	end      time.Time // echoes before it count in inWindow
	inWindow *atomic.Int64
	stopping *atomic.Bool // set before the connections close: a read error is then expected
	errc     chan<- error
	sent     bool // also return each echo's send time (latency -rtts)
}

// readEchoes reads c's echoes until its connection ends and returns their
// round trips and, with o.sent, their send times (since o.epoch); each, if
// set, runs once per echo. A wrong echo or an unexpected read error goes
// to o.errc and ends the reading.
func readEchoes(c *client, o echoOpts, capHint int, each func()) (rtts, sent []time.Duration) {
	rtts = make([]time.Duration, 0, capHint)
	for {
		p, err := c.read()
		if err != nil {
			if !o.stopping.Load() {
				o.errc <- err
			}
			return rtts, sent
		}
		d, ok := parseStamp(p, o.epoch)
		if !ok || len(p) != o.size {
			o.errc <- fmt.Errorf("echo of %d bytes, sent %d", len(p), o.size)
			return rtts, sent
		}
		rtts = append(rtts, d)
		if o.sent {
			sent = append(sent, time.Since(o.epoch)-d)
		}
		if time.Now().Before(o.end) {
			o.inWindow.Add(1)
		}
		if each != nil {
			each()
		}
	}
}
