// Command tethersoak runs tether under chaos for a given time and checks,
// at the end, that nothing was lost and nothing leaked.
//
//	go run ./cmd/tethersoak -duration 30m -sessions 2000
//
// It builds tether from this module (or takes -tether) and runs it as a
// child process, so that its RSS (VmRSS in /proc/<pid>/status) and
// goroutines (go_goroutines on its /metrics) are its own. In its own
// process it runs:
//
//   - a backend: a WebSocket server that records every message per session
//     and echoes it;
//   - internal/faultnet's relay between tether and the backend, which at
//     random (seeded) moments resets some or all upstream connections,
//     closes them all, stalls everything (past the upstream heartbeat
//     timeout, so legs die), delays every chunk by up to 250 ms, or refuses
//     new connections;
//   - -sessions client slots: each keeps one connection (one tether
//     session) open, sends numbered messages (text or binary, 0 to
//     -max-size bytes of checkable padding) at random gaps, and now and
//     then drops its connection (a TCP reset, a TCP close without a
//     WebSocket Close, or a Close 1000) and opens a new one;
//   - one idle session, opened -idle before the end, that only answers
//     heartbeats.
//
// What counts as sent. README "Upstream loss, reconnect and the delivery
// guarantee" promises at-least-once, in-order delivery of client messages
// across upstream loss "while the client leg stays open"; it promises nothing
// for messages in flight when the client itself goes away. So:
//
//   - on a connection that is still open at the end of the run, every
//     message the client wrote must reach the backend (checked after the
//     faults stop, with a deadline);
//   - on every connection, including dropped ones, the backend must see
//     the messages in order without gaps: each message number is at most
//     one more than the highest seen before (a re-send repeats numbers,
//     which is the allowed duplication), within one upstream connection
//     the numbers are consecutive, and no message arrives on another
//     session's upstream or with changed content or opcode.
//
// The faults are all ones README "Upstream loss, reconnect and the delivery
// guarantee" says tether survives with the client leg open (they are shorter
// than the reconnect budget, and buffers are far from full), so a session that
// tether closes, or a client leg that breaks, is a violation too.
//
// At the end it also checks tether's metrics against its own counts
// (exact where tether's counting allows, bounds where faults make a count
// uncertain: see the report lines), that the idle session is still open
// and relays, that tether's goroutines and RSS return to their baseline
// (taken before the first session; polled until they do, with a
// deadline), that tether exits 0 on SIGTERM, and that its log has no
// panic or data race. It prints a report and exits 1 if any invariant was
// violated, 2 if the run could not be carried out.
//
// Sockets: this process holds four per session (the client's, the
// backend's and two in the relay), so -sessions is capped at 4000 to stay
// under a 20,000 open-file limit with room for churn; tether holds two.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var cfg Config
	flag.DurationVar(&cfg.Duration, "duration", time.Minute, "how long clients send and faults run")
	flag.IntVar(&cfg.Sessions, "sessions", 1000, "concurrent client connections (at most 4000: this process holds four sockets per session)")
	flag.Uint64Var(&cfg.Seed, "seed", 0, "seed for the fault schedule and the clients' choices (0: from the clock; printed)")
	flag.DurationVar(&cfg.Idle, "idle", 0, "the idle session is opened this long before the end (0: for the whole -duration)")
	flag.DurationVar(&cfg.Interval, "interval", time.Second, "mean gap between one connection's messages")
	flag.IntVar(&cfg.MaxSize, "max-size", 2048, "messages carry 0 to this many bytes of padding")
	flag.DurationVar(&cfg.DropMean, "drop", 20*time.Second, "mean lifetime of a client connection before the client drops it (negative: never)")
	flag.DurationVar(&cfg.FaultEvery, "fault-every", 2*time.Second, "mean gap between faults (negative: no faults)")
	flag.IntVar(&cfg.ConnectRate, "connect-rate", 500, "new connections per second during the ramp-up")
	flag.DurationVar(&cfg.ClientHeartbeat, "client-heartbeat", 5*time.Second, "TETHER_CLIENT_HEARTBEAT_INTERVAL")
	flag.DurationVar(&cfg.UpstreamHeartbeat, "upstream-heartbeat", time.Second, "TETHER_UPSTREAM_HEARTBEAT_INTERVAL")
	flag.DurationVar(&cfg.Settle, "settle", time.Minute, "deadline for the final deliveries, echoes and closes")
	flag.DurationVar(&cfg.MemWait, "mem-wait", 5*time.Minute, "deadline for tether's goroutines, live heap and RSS to return to the baseline (polled; Go forces a GC every 2 minutes, then returns pages gradually)")
	flag.IntVar(&cfg.GoroutineTol, "goroutine-tolerance", 3, "goroutines allowed above the baseline at the end")
	rssTol := flag.Int("rss-tolerance-mib", 16, "RSS allowed above the baseline at the end, MiB")
	flag.StringVar(&cfg.Tether, "tether", "", "tether binary (default: go build this module into a temporary directory)")
	flag.BoolVar(&cfg.Race, "race", false, "build tether with the race detector (its RSS is then reported, not judged)")
	flag.StringVar(&cfg.LogFile, "log", "", "write tether's log here (default: a temporary file)")
	flag.Parse()
	cfg.RSSTol = int64(*rssTol) << 20

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tethersoak:", err)
		os.Exit(2)
	}
	rep.Print(os.Stdout)
	if !rep.OK() {
		os.Exit(1)
	}
}
