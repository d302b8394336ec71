// Command bench is tether's load tool and benchmark backend: one binary
// with the commands
//
//	bench backend -addr 127.0.0.1:9001                 echo backend (answers JSON pings)
//	bench relay -listen 127.0.0.1:9002 -to 127.0.0.1:9001   plain TCP relay (io.Copy both ways; -nosplice)
//	bench throughput -url ws://... -conns 64 -size 1024 -inflight 16 -duration 10s
//	bench latency -url ws://... -conns 1000 -rate 5000 -size 128 -duration 10s
//	bench idle -url ws://... -sessions 9000 -duration 20s -proxy-pid PID
//	bench table -in results.jsonl                      markdown table with ratios
//
// throughput reports messages/s, MB/s and round-trip p50/p99/max; latency
// sends at a fixed total rate over many connections (open loop) and
// reports round trips; idle holds sessions open, answering RFC and JSON
// pings, and reports the proxy's RSS per session net of its RSS before
// the sessions opened, and its CPU % while idle. Given -proxy-pid and
// -backend-pid, every mode records the CPU seconds of those processes and
// of itself over the measured window (from /proc/<pid>/stat), and
// throughput is also reported per second of proxy CPU. With -json a
// result is one JSON line on stdout (see Result); bench/compare.sh
// collects them and prints the comparison with `bench table`.
//
// Connections are bound to source addresses 127.0.0.1 .. 127.0.0.<sources>
// so that many fit in the ephemeral port range. The tool's frames use a
// zero masking key, so its own cost per message is a header and a copy
// into the socket buffer. Loopback only.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

const usage = "usage: bench backend|relay|throughput|latency|idle|floor|table [flags] (bench CMD -h for flags)"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch cmd {
	case "backend":
		addr := fs.String("addr", "127.0.0.1:9001", "listen address")
		cert := fs.String("cert", "", "with -key: serve TLS (wss) with this certificate file")
		key := fs.String("key", "", "with -cert: the certificate's key file")
		if err := fs.Parse(args); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return err
		}
		if (*cert == "") != (*key == "") {
			ln.Close()
			return errors.New("backend: -cert and -key go together")
		}
		if *cert != "" {
			pair, err := tls.LoadX509KeyPair(*cert, *key)
			if err != nil {
				ln.Close()
				return err
			}
			ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pair}})
		}
		fmt.Fprintf(stderr, "bench backend listening on %s\n", ln.Addr())
		return serveBackend(ctx, ln)
	case "relay":
		listen := fs.String("listen", "127.0.0.1:9002", "listen address")
		to := fs.String("to", "127.0.0.1:9001", "address to relay to")
		noSplice := fs.Bool("nosplice", false, "copy through a 16 KiB buffer per direction instead of splice (splice costs 4 more open files per session)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench relay %s -> %s\n", ln.Addr(), *to)
		return serveRelay(ctx, ln, *to, *noSplice)
	case "floor":
		n := fs.Int("n", 200000, "writes and reads to time")
		asJSON := fs.Bool("json", false, "print the result as one JSON line on stdout")
		if err := fs.Parse(args); err != nil {
			return err
		}
		r, err := floor(*n)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "syscall floor: %.0f ns CPU per 6-byte write, %.0f per read, %.0f per ping round trip (write + read; %d each)\n",
			r.WriteNs, r.ReadNs, r.RoundTripNs, r.N)
		if *asJSON {
			b, _ := json.Marshal(r)
			fmt.Fprintln(stdout, string(b))
		}
		return nil
	case "table":
		in := fs.String("in", "-", "JSON lines from -json runs (- for stdin)")
		ref := fs.String("ref", "tether", "target the ratios compare against every other target")
		if err := fs.Parse(args); err != nil {
			return err
		}
		var r io.Reader = os.Stdin
		if *in != "-" {
			f, err := os.Open(*in)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		results, err := readResults(r)
		if err != nil {
			return err
		}
		return writeTable(stdout, results, *ref)
	case "throughput", "latency", "idle":
	default:
		return fmt.Errorf("unknown command %q; %s", cmd, usage)
	}

	var o common
	fs.StringVar(&o.dial.url, "url", "ws://127.0.0.1:8080/", "WebSocket URL of the target (a proxy or the backend); wss:// accepts any certificate")
	fs.IntVar(&o.dial.sources, "sources", 16, "source addresses 127.0.0.1..127.0.0.N to dial from")
	fs.BoolVar(&o.dial.deflate, "deflate", false, "offer permessage-deflate (no context takeover)")
	fs.BoolVar(&o.dial.resume, "resume", false, "ask tether for resumable sessions (tether_resume=new) and acknowledge what arrives")
	fs.StringVar(&o.target, "target", "", "target name for the report")
	fs.StringVar(&o.label, "label", cmd, "workload name for the report")
	fs.IntVar(&o.procs.proxy, "proxy-pid", 0, "pid of the proxy (CPU, and RSS for idle)")
	fs.IntVar(&o.procs.backend, "backend-pid", 0, "pid of the backend (CPU)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured window (idle: the hold)")
	fs.IntVar(&o.connRate, "connect-rate", 2000, "new connections per second while opening (0: as fast as possible)")
	fs.BoolVar(&o.text, "text", false, "send text messages instead of binary")
	asJSON := fs.Bool("json", false, "print the result as one JSON line on stdout")
	conns := fs.Int("conns", 64, "connections (throughput, latency)")
	size := fs.Int("size", 1024, "message size in bytes, at least 16 (throughput, latency)")
	inflight := fs.Int("inflight", 16, "messages in flight per connection (throughput)")
	rate := fs.Int("rate", 5000, "total messages per second over all connections (latency)")
	seed := fs.Uint64("seed", 1, "draw the connections' send phases from this seed: the same arrivals in every run (0: a new draw each run) (latency)")
	hopsBackend := fs.String("hops", "", "trace every round trip hop by hop (needs root and bpftrace): the backend's address, e.g. 127.0.0.1:9001 (latency)")
	hopsOut := fs.String("hops-out", "", "with -hops, write every round trip traced to this file, as \"A TO_BACKEND BACKEND TO_CLIENT\" lines in nanoseconds, A in the kernel's monotonic clock (latency)")
	rttsPath := fs.String("rtts", "", "write every message's send time and round trip to this file, as \"SENT RTT\" lines in nanoseconds, SENT in Unix time (latency)")
	sessions := fs.Int("sessions", 1000, "sessions to hold (idle; mind 20,000 open files per process: a proxy needs two per session)")
	settle := fs.Duration("settle", time.Second, "wait after opening before the hold starts (idle)")
	admin := fs.String("admin", "", "tether admin base URL, e.g. http://127.0.0.1:9090 (idle: goroutines and heap per session)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.target == "" {
		o.target = o.dial.url
	}
	if *size < 16 {
		return errors.New("-size must be at least 16 (the send time travels in the message)")
	}
	var (
		res *Result
		err error
	)
	switch cmd {
	case "throughput":
		res, err = throughput(ctx, o, *conns, *size, *inflight)
	case "latency":
		var out io.WriteCloser
		if *rttsPath != "" {
			if out, err = os.Create(*rttsPath); err != nil {
				return err
			}
		}
		res, err = latency(ctx, o, *conns, *size, *rate, *seed, out, *hopsBackend)
		if out != nil {
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		if *hopsOut != "" && res != nil && res.Hops != nil && err == nil {
			err = writeFile(*hopsOut, res.Hops.writeTrips)
		}
	case "idle":
		res, err = idle(ctx, o, *sessions, *settle, *admin)
	}
	if res == nil {
		return err
	}
	if err != nil {
		res.Error = err.Error()
	}
	fmt.Fprintln(stderr, res.String())
	if *asJSON {
		b, _ := json.Marshal(res)
		fmt.Fprintln(stdout, string(b))
	}
	return err
}

// writeFile creates path and has write fill it.
func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// String is the human summary of a result.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", r.Label, r.Target)
	switch r.Mode {
	case "throughput", "latency":
		fmt.Fprintf(&b, "%d conns x %d B: %.0f msg/s, %.1f MB/s, rtt p50 %.2f ms p99 %.2f ms max %.2f ms",
			r.Conns, r.Size, r.MsgsPerSec, r.MBPerSec, r.P50ms, r.P99ms, r.MaxMs)
		if v := r.perProxyCPU(r.MsgsPerSec * r.Seconds); v > 0 {
			fmt.Fprintf(&b, "; %.0f msgs and %.1f MB per proxy CPU second", v, r.perProxyCPU(r.MBPerSec*r.Seconds))
		}
		if r.Deflate {
			b.WriteString("; deflate")
		}
		if r.WirePerMsg > 0 {
			fmt.Fprintf(&b, "; %.0f wire B per round trip", r.WirePerMsg)
		}
		if h := r.Hops; h != nil {
			fmt.Fprintf(&b, "; hops (µs p50/p99, %d round trips, %d sessions): proxy %.0f/%.0f, backend %.0f/%.0f, wire %.0f/%.0f",
				h.Msgs, h.Sessions, h.Proxy.P50, h.Proxy.P99, h.Backend.P50, h.Backend.P99, h.Wire.P50, h.Wire.P99)
		}
	case "idle":
		fmt.Fprintf(&b, "%d sessions held %.1f s: proxy rss %.1f -> %.1f MiB, %.0f B per session, proxy cpu %.2f%%, %d pings answered",
			r.Conns, r.Seconds, float64(r.RSSBase)/(1<<20), float64(r.RSSAfter)/(1<<20), r.RSSPerSession, r.ProxyCPUPercent, r.PingsAnswered)
		if r.GoroutinesPerSession != 0 || r.HeapPerSession != 0 {
			fmt.Fprintf(&b, "; goroutines %.2f and heap in use %.0f B per session", r.GoroutinesPerSession, r.HeapPerSession)
		}
	}
	if r.Saturated != "" {
		fmt.Fprintf(&b, "; saturated: %s", r.Saturated)
	}
	fmt.Fprintf(&b, "; cpu s:")
	for _, k := range []string{"proxy", "backend", "load"} {
		if v, ok := r.CPU[k]; ok {
			fmt.Fprintf(&b, " %s %.2f", k, v)
		}
	}
	return b.String()
}

// sampleMetrics reads unlabelled Prometheus text metrics from
// admin/metrics; it returns an empty map when admin is empty or fails.
func sampleMetrics(admin string) map[string]float64 {
	m := map[string]float64{}
	if admin == "" {
		return m
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(strings.TrimSuffix(admin, "/") + "/metrics")
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 2 {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				m[f[0]] = v
			}
		}
	}
	return m
}
