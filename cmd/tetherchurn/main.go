// Command tetherchurn measures tether's reconnect promise at scale: many
// sessions with live traffic both ways, through backends that are killed
// and restarted.
//
//	go run ./cmd/tetherchurn -sessions 9000
//
// It builds tether from this module (or takes -tether) and runs it as a
// child process with TETHER_UPSTREAM_URL listing three backends. Each
// backend is a separate process (this binary re-executed), so that it can
// really be killed: SIGKILL, a crash (the default), or with -graceful
// SIGTERM, after which it sends every connection Close 1001 and exits. A
// backend echoes every client message, pushes its own numbered message to
// every connection every -push, and answers RFC pings (gorilla/websocket
// does that inside its read, after the messages before the ping).
//
// Counting. Every backend reports each message it receives, and each
// connection it accepts, to this process over a pipe (its stdout), and
// writes the report before it echoes the message or answers a later ping.
// A pipe keeps what was written to it when the writer dies, so a receipt
// survives a SIGKILL, and tether never sees proof of receipt (README
// "Upstream loss, reconnect and the delivery guarantee") for a message
// this process was not told of. Sessions name themselves in the handshake
// query (?s=N), which tether replays on every dial.
//
// The run: open -sessions sessions (from -sources loopback addresses);
// each sends a numbered message every -interval on average and receives
// the backends' pushes and echoes. After every session relayed a round
// trip and -warmup passed, the scenarios run in turn:
//
//   - all: the three backends are killed at once and restarted after
//     -downtime;
//   - rolling: each backend in turn is killed and restarted after
//     -downtime; the next one only once the restarted one listens and
//     every session that lost its upstream relays again.
//
// For each kill it measures the time until every session that was
// connected to a killed backend relayed a round trip through a new
// upstream connection (an echo from a backend incarnation started after
// the kill; a session sends at once when a new connection's first push
// arrives, so this does not wait for its next scheduled message). For
// each scenario: the peak upstream dial rate (tether's reconnect
// counters, scraped every 100 ms, and the accept times the backends
// report), tether's CPU seconds and peak RSS (from /proc, every 100 ms)
// from the first kill until the last session relayed again, its
// reconnect and re-send counters, and then, after a settle deadline, the
// client messages sent since the previous scenario that no backend
// received (lost: must be 0) and the receipts of a message already
// received (duplicates: allowed, re-sends of the last unacknowledged
// heartbeat round trip). At the end every session sends one more message
// and must get its echo (survived).
//
// tether runs with its defaults, TETHER_LOG_LEVEL=warn, any TETHER_*
// variable set in this command's environment, and -reconnect-rate as
// TETHER_RECONNECT_RATE. Files: tether holds two per session, this
// process and each backend at most one, so -sessions is capped at
// (open-file limit - 64) / 2.
//
// It prints progress to stderr, the report to stdout (with -json followed
// by the result as one JSON line), and exits 1 if a client message was lost, tether
// closed a session, a session did not relay again, or tether did not exit
// 0 with a clean log; 2 if the run could not be carried out.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(backendEnv) != "" {
		os.Exit(backendMain(os.Args[1:]))
	}
	var cfg Config
	flag.IntVar(&cfg.Sessions, "sessions", 1000, "concurrent sessions (at most (open-file limit - 64) / 2)")
	flag.DurationVar(&cfg.Interval, "interval", time.Second, "mean gap between one session's messages")
	flag.IntVar(&cfg.Size, "size", 64, "bytes of padding per client message")
	flag.DurationVar(&cfg.Push, "push", time.Second, "gap between a backend's pushes to one connection")
	flag.DurationVar(&cfg.Downtime, "downtime", 2*time.Second, "how long a killed backend stays down")
	scen := flag.String("scenarios", "all,rolling", "comma-separated scenarios, run in this order: all (every backend at once), rolling (one after another)")
	flag.BoolVar(&cfg.Graceful, "graceful", false, "stop backends with SIGTERM (Close 1001 to every connection) instead of SIGKILL")
	flag.IntVar(&cfg.ReconnectRate, "reconnect-rate", 500, "TETHER_RECONNECT_RATE")
	flag.DurationVar(&cfg.Warmup, "warmup", 5*time.Second, "steady traffic before the first scenario")
	flag.DurationVar(&cfg.RecoverTimeout, "recover-timeout", 2*time.Minute, "deadline for every session to relay again after a kill")
	flag.DurationVar(&cfg.Settle, "settle", time.Minute, "deadline for every sent message to reach a backend")
	flag.IntVar(&cfg.ConnectRate, "connect-rate", 500, "new sessions per second during the ramp-up")
	flag.IntVar(&cfg.Sources, "sources", 50, "client source addresses 127.0.0.1..127.0.0.N")
	flag.StringVar(&cfg.Tether, "tether", "", "tether binary (default: go build this module)")
	flag.BoolVar(&cfg.Race, "race", false, "build tether with the race detector")
	flag.StringVar(&cfg.Dir, "dir", "", "keep tether's and the backends' logs here (default: a temporary directory)")
	asJSON := flag.Bool("json", false, "after the report, print the result as one JSON line")
	flag.Parse()
	cfg.Scenarios = strings.Split(*scen, ",")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tetherchurn:", err)
		os.Exit(2)
	}
	res.Print(os.Stdout)
	if *asJSON {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}
	if !res.OK {
		os.Exit(1)
	}
}
