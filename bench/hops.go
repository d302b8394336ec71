package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Hops is where the round trips of a latency run went, hop by hop, from
// the kernel's own timestamps (bench latency -hops). The load tool's
// round trip includes its own wait to run on a core it shares with the
// backend; these do not. Every data segment that arrives on one of the
// four sockets a message crosses is traced (the tcp:tcp_probe
// tracepoint, through bpftrace): the message arriving at the proxy (A),
// the proxy's copy arriving at the backend (B), the echo arriving at the
// proxy (C) and the proxy's copy of it arriving at the load tool (D). On
// loopback a segment arrives inside its sender's write, so B - A is the
// time from the message reaching the proxy's socket to the proxy's write
// of it returning data to the backend: the proxy's wake, read, work and
// write. Quantiles are in microseconds.
type Hops struct {
	Msgs     int `json:"msgs"`           // round trips traced from A to D
	Sessions int `json:"sessions"`       // sessions whose two connections were paired
	Lost     int `json:"lost,omitempty"` // events seen but not recorded (bpftrace's map was full)
	// ToBackend is B - A, Backend C - B, ToClient D - C; Proxy is
	// ToBackend + ToClient, the proxy's own part of the round trip, and
	// Wire D - A.
	ToBackend Quantiles `json:"to_backend"`
	Backend   Quantiles `json:"backend"`
	ToClient  Quantiles `json:"to_client"`
	Proxy     Quantiles `json:"proxy"`
	Wire      Quantiles `json:"wire"`

	// trips are the round trips traced, in the order of A: A (the
	// kernel's monotonic clock), B - A, C - B and D - C in nanoseconds.
	trips [][4]int64
}

// writeTrips writes the round trips traced as "A TO_BACKEND BACKEND
// TO_CLIENT" lines (nanoseconds; A in the kernel's monotonic clock), in
// the order of A, to set the slow ones against traces of the proxy.
func (h *Hops) writeTrips(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, t := range h.trips {
		fmt.Fprintf(bw, "%d %d %d %d\n", t[0], t[1], t[2], t[3])
	}
	return bw.Flush()
}

// Quantiles of a distribution, in microseconds.
type Quantiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
}

func quantiles(ns []int64) Quantiles {
	if len(ns) == 0 {
		return Quantiles{}
	}
	slices.Sort(ns)
	q := func(p float64) float64 { return float64(ns[int(p*float64(len(ns)-1))]) / 1e3 }
	return Quantiles{q(0.50), q(0.90), q(0.99), q(0.999)}
}

// hopEvent is one data segment arriving on a traced socket: its kind
// (A-D above) and the end that names its session's connection (the load
// tool's for A and D, the proxy's upstream end for B and C).
type hopEvent struct {
	t        int64
	kind     byte
	end      hopEnd
	sk, from uint64 // the receiving socket; the socket the proxy read last (0: not known)
}

// hopEnd is a connection's end: an IPv4 address (as printed) and a port.
type hopEnd struct {
	addr string
	port uint16
}

// hopsProgram is the bpftrace program. For every data segment arriving
// on a socket with the proxy's or the backend's port at either end it
// records the time, the receiving socket's own port and address and its
// peer's (the load tool dials from several addresses, so a port alone
// does not name a connection; an IPv6 socket's address, Caddy's, is the
// last four bytes of its IPv4-mapped one: both places are recorded with
// the family, the verifier refusing a choice between them), the receiving
// socket, and, for a segment the proxy sent (on loopback a segment
// arrives inside its sender's write), the socket the proxy's thread read
// last: for a message to the backend, the client's connection it came
// from. That pairs each session's two connections (pairHops); it is
// recorded only for pairFor from the start (the handshakes and a few
// messages of each session), so that the proxy's reads cost a map update
// only then. Events go to a map that bpftrace
// prints when it ends, "@ev[CPU, I]: (NS, SPORT, DPORT, FAMILY, 8 bytes
// of the source address, 8 of the destination, SK, FROM)", and each CPU's count of events to "@n[CPU]:
// N" (more than the map holds when it was full). A map, not a line
// printed per event: printing woke bpftrace's reader at every event and
// cost the traced processes ~9 µs of CPU per event; a map update costs
// them ~1.
func hopsProgram(proxy, backend uint16, pid int, pairFor time.Duration) string {
	return fmt.Sprintf(`BEGIN { @until = nsecs + %[4]d; }
tracepoint:syscalls:sys_enter_read,tracepoint:syscalls:sys_enter_recvfrom /pid == %[3]d && nsecs < @until/ {
	$f = *(curtask->files->fdt->fd + args->fd);
	@rsk[tid] = (uint64)((struct socket *)$f->private_data)->sk;
}
tracepoint:tcp:tcp_probe /args->data_len > 0 && (args->sport == %[1]d || args->dport == %[1]d || args->sport == %[2]d || args->dport == %[2]d)/ {
	$i = @n[cpu];
	@ev[cpu, $i] = (nsecs, args->sport, args->dport, args->family,
		args->saddr[4], args->saddr[5], args->saddr[6], args->saddr[7],
		args->saddr[20], args->saddr[21], args->saddr[22], args->saddr[23],
		args->daddr[4], args->daddr[5], args->daddr[6], args->daddr[7],
		args->daddr[20], args->daddr[21], args->daddr[22], args->daddr[23],
		(uint64)args->skaddr, pid == %[3]d && nsecs < @until ? @rsk[tid] : 0);
	@n[cpu] = $i + 1;
}
END { clear(@rsk); clear(@until); }`, proxy, backend, pid, pairFor.Nanoseconds())
}

// parseHops reads bpftrace's lines into events, sorted by time (the
// per-CPU buffers interleave); lines that are not events are skipped.
func parseHops(r io.Reader, proxy, backend uint16) ([]hopEvent, error) {
	var evs []hopEvent
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "@ev[") {
			continue
		}
		_, tuple, ok := strings.Cut(line, "(")
		f := strings.Split(strings.TrimSuffix(tuple, ")"), ", ")
		if !ok || len(f) != 22 {
			continue
		}
		t, err1 := strconv.ParseInt(f[0], 10, 64)
		sp, err2 := strconv.ParseUint(f[1], 10, 16)
		dp, err3 := strconv.ParseUint(f[2], 10, 16)
		sk, err4 := strconv.ParseUint(f[20], 10, 64)
		from, err5 := strconv.ParseUint(f[21], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
			continue
		}
		// An IPv4 address is at bytes 4-7 of a sockaddr_in, an IPv4-mapped
		// one at 20-23 of a sockaddr_in6 (family 10).
		s, d := f[4:8], f[12:16]
		if f[3] == "10" {
			s, d = f[8:12], f[16:20]
		}
		local := hopEnd{strings.Join(s, "."), uint16(sp)}
		remote := hopEnd{strings.Join(d, "."), uint16(dp)}
		e := hopEvent{t: t, sk: sk, from: from}
		switch {
		case local.port == proxy:
			e.kind, e.end = 'A', remote
		case local.port == backend:
			e.kind, e.end = 'B', remote
		case remote.port == backend:
			e.kind, e.end = 'C', local
		case remote.port == proxy:
			e.kind, e.end = 'D', local
		default:
			continue
		}
		evs = append(evs, e)
	}
	slices.SortStableFunc(evs, func(a, b hopEvent) int { return cmp.Compare(a.t, b.t) })
	return evs, sc.Err()
}

// pairHops finds which upstream connection serves which client
// connection, which nothing on the wire names: a segment the proxy sent
// to the backend (B) carries the socket the proxy read just before, the
// client connection's (as a message arriving there, A, names it), so
// each B votes for its pair; a pair needs three votes and four in five of
// its client's. It also returns when each pair's handshake was over (its
// upstream's first segment), after which its segments are messages.
func pairHops(evs []hopEvent) (pairs map[hopEnd]hopEnd, opened map[hopEnd]int64) {
	client := map[uint64]hopEnd{} // the proxy's socket -> the load tool's end
	firstB := map[hopEnd]int64{}
	for _, e := range evs {
		switch e.kind {
		case 'A':
			client[e.sk] = e.end
		case 'B':
			if _, ok := firstB[e.end]; !ok {
				firstB[e.end] = e.t
			}
		}
	}
	votes := map[hopEnd]map[hopEnd]int{}
	for _, e := range evs {
		load, ok := client[e.from]
		if e.kind != 'B' || e.from == 0 || !ok {
			continue
		}
		if votes[load] == nil {
			votes[load] = map[hopEnd]int{}
		}
		votes[load][e.end]++
	}
	pairs, opened = map[hopEnd]hopEnd{}, map[hopEnd]int64{}
	for load, vs := range votes {
		var up hopEnd
		best, total := 0, 0
		for u, n := range vs {
			total += n
			if n > best {
				up, best = u, n
			}
		}
		if best >= 3 && best*5 >= total*4 {
			pairs[load], opened[load] = up, firstB[up]
		}
	}
	return pairs, opened
}

// hopKey names the segments of one kind on one connection end.
type hopKey struct {
	kind byte
	end  hopEnd
}

// analyzeHops pairs each session's two connections (pairHops) and
// measures every message's hops. A hop longer than maxHop (a lost event:
// the chain would end in the next period) drops the message.
func analyzeHops(evs []hopEvent, maxHop time.Duration) *Hops {
	times := map[hopKey][]int64{}
	for _, e := range evs {
		k := hopKey{e.kind, e.end}
		times[k] = append(times[k], e.t)
	}
	// next is the first arrival of kind on end after t.
	next := func(kind byte, end hopEnd, t int64) (int64, bool) {
		ts := times[hopKey{kind, end}]
		i, _ := slices.BinarySearch(ts, t+1)
		if i == len(ts) {
			return 0, false
		}
		return ts[i], true
	}
	pairs, opened := pairHops(evs)
	h := &Hops{}
	var toB, bk, toC, prox, wire []int64
	for load, up := range pairs {
		arrivals := times[hopKey{'A', load}]
		// The messages: after the handshake (the upstream's reply and
		// the client's come before the first message is sent).
		i, _ := slices.BinarySearch(arrivals, opened[load]+1)
		arrivals = arrivals[i:]
		h.Sessions++
		for _, ta := range arrivals {
			tb, ok1 := next('B', up, ta)
			tc, ok2 := next('C', up, tb)
			td, ok3 := next('D', load, tc)
			if !ok1 || !ok2 || !ok3 || tb-ta > int64(maxHop) || tc-tb > int64(maxHop) || td-tc > int64(maxHop) {
				continue
			}
			toB, bk, toC = append(toB, tb-ta), append(bk, tc-tb), append(toC, td-tc)
			prox, wire = append(prox, tb-ta+td-tc), append(wire, td-ta)
			h.trips = append(h.trips, [4]int64{ta, tb - ta, tc - tb, td - tc})
		}
	}
	slices.SortFunc(h.trips, func(a, b [4]int64) int { return cmp.Compare(a[0], b[0]) })
	h.Msgs = len(wire)
	h.ToBackend, h.Backend, h.ToClient = quantiles(toB), quantiles(bk), quantiles(toC)
	h.Proxy, h.Wire = quantiles(prox), quantiles(wire)
	return h
}

// hopsTracer is a running bpftrace that records the hops of one run.
type hopsTracer struct {
	cmd            *exec.Cmd
	out            bytes.Buffer
	copied         chan struct{} // out holds all bpftrace printed
	stderr         bytes.Buffer
	proxy, backend uint16
}

// startHops starts bpftrace on the proxy's and the backend's ports and
// returns once its probe is attached. It needs root and bpftrace
// (apt-get install bpftrace).
func startHops(ctx context.Context, proxyAddr, backendAddr string, proxyPid, maxEvents int, pairFor time.Duration) (*hopsTracer, error) {
	pp, err := portOf(proxyAddr)
	if err != nil {
		return nil, err
	}
	bp, err := portOf(backendAddr)
	if err != nil {
		return nil, err
	}
	if proxyPid <= 0 {
		return nil, errors.New("-hops needs -proxy-pid")
	}
	if pp == bp {
		return nil, errors.New("-hops: the target is the backend itself: there is no proxy to trace")
	}
	path, err := exec.LookPath("bpftrace")
	if err != nil {
		return nil, errors.New("-hops needs bpftrace (apt-get install bpftrace) and root")
	}
	h := &hopsTracer{proxy: pp, backend: bp, copied: make(chan struct{})}
	h.cmd = exec.Command(path, "-e", hopsProgram(pp, bp, proxyPid, pairFor))
	// The event map's size; older bpftrace (Debian 12's 0.17) reads the
	// first name.
	keys := strconv.Itoa(maxEvents)
	h.cmd.Env = append(os.Environ(), "BPFTRACE_MAP_KEYS_MAX="+keys, "BPFTRACE_MAX_MAP_KEYS="+keys)
	h.cmd.Stderr = &h.stderr
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	// bpftrace prints "Attaching 1 probe..." once the probe is attached.
	br := bufio.NewReader(stdout)
	attached := make(chan error, 1)
	go func() {
		defer close(h.copied)
		line, err := br.ReadString('\n')
		if err == nil && !strings.HasPrefix(line, "Attaching") {
			err = fmt.Errorf("bpftrace said %q", line)
		}
		attached <- err
		_, _ = io.Copy(&h.out, br) // until bpftrace exits
	}()
	select {
	case err = <-attached:
	case <-time.After(30 * time.Second):
		err = errors.New("bpftrace did not attach within 30 s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		_ = h.cmd.Process.Kill()
		<-h.copied
		_ = h.cmd.Wait()
		return nil, fmt.Errorf("-hops: %v: %s", err, strings.TrimSpace(h.stderr.String()))
	}
	return h, nil
}

// hopsStopWait bounds stop's wait for bpftrace to print its maps and end
// (a second or two for a full map).
var hopsStopWait = 30 * time.Second

// kill ends bpftrace if stop did not (a run that failed).
func (h *hopsTracer) kill() {
	if h.cmd.ProcessState == nil {
		_ = h.cmd.Process.Kill()
		<-h.copied
		_ = h.cmd.Wait()
	}
}

// stop ends the trace and analyzes it; maxHop is the longest hop taken
// for real (see analyzeHops).
func (h *hopsTracer) stop(maxHop time.Duration) (*Hops, error) {
	_ = h.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-h.copied: // Wait closes the pipe: read it all first
	case <-time.After(hopsStopWait):
		// bpftrace 0.17 can miss a SIGINT that comes just after it
		// printed "Attaching" (it then waits for another forever).
		h.kill()
		return nil, fmt.Errorf("-hops: bpftrace did not end within %v of SIGINT: %s", hopsStopWait, strings.TrimSpace(h.stderr.String()))
	}
	err := h.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return nil, err
	}
	return readHops(h.out.String(), h.proxy, h.backend, maxHop)
}

// readHops analyzes what the program printed when it ended.
func readHops(out string, proxy, backend uint16, maxHop time.Duration) (*Hops, error) {
	evs, err := parseHops(strings.NewReader(out), proxy, backend)
	if err != nil {
		return nil, err
	}
	hs := analyzeHops(evs, maxHop)
	seen := 0
	for _, m := range seenRe.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		seen += n
	}
	hs.Lost = max(seen-len(evs), 0)
	return hs, nil
}

// seenRe finds the program's count of events per CPU.
var seenRe = regexp.MustCompile(`(?m)^@n\[\d+\]: (\d+)$`)

func portOf(addr string) (uint16, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("no port in %q", addr)
	}
	return uint16(p), nil
}
