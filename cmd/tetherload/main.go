// Command tetherload puts load on a tether (or any WebSocket echo server)
// and reports what it measured, so that figures can be compared against a
// baseline taken in the same run: point it once at tether and once
// straight at the backend.
//
//	tetherload -url ws://127.0.0.1:8080/ -sessions 2000 -mode idle -duration 20s -admin http://127.0.0.1:9090
//	tetherload -url ws://127.0.0.1:8080/ -sessions 50 -mode echo -size 256 -duration 10s
//
// idle: opens the sessions, holds them open and samples tether's
// process_resident_memory_bytes and go_goroutines from -admin (if given),
// reporting bytes and goroutines per session. echo: every session sends a
// message and waits for its echo in a loop; it reports messages per second
// and round-trip percentiles. All traffic stays where -url points; use
// loopback.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080/", "WebSocket URL (tether or the backend directly)")
	sessions := flag.Int("sessions", 100, "concurrent sessions (mind the open-file limit: one fd each here, about four in tether)")
	mode := flag.String("mode", "echo", "idle or echo")
	size := flag.Int("size", 128, "message size in bytes (echo)")
	duration := flag.Duration("duration", 10*time.Second, "how long to hold the load")
	admin := flag.String("admin", "", "tether admin base URL, e.g. http://127.0.0.1:9090 (idle: memory and goroutines per session)")
	rate := flag.Int("connect-rate", 500, "new sessions per second while ramping up")
	flag.Parse()
	if err := run(*url, *mode, *admin, *sessions, *size, *rate, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "tetherload:", err)
		os.Exit(1)
	}
}

func run(url, mode, admin string, n, size, rate int, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Duration(n/max(rate, 1)+30)*time.Second)
	defer cancel()
	before := sample(admin)
	conns := make([]*websocket.Conn, 0, n)
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	for i := 0; i < n; i++ {
		<-tick.C
		c, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
		if err != nil {
			closeAll(conns)
			return fmt.Errorf("session %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	fmt.Printf("opened %d sessions in %v\n", n, time.Since(start).Round(time.Millisecond))
	defer closeAll(conns)
	switch mode {
	case "idle":
		return idle(conns, admin, before, d)
	case "echo":
		return echo(conns, size, d)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func closeAll(cs []*websocket.Conn) {
	for _, c := range cs {
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = c.Close()
	}
}

// idle keeps the sessions open (answering pings: gorilla does so while
// reading) and reports tether's memory and goroutines per session.
func idle(conns []*websocket.Conn, admin string, before map[string]float64, d time.Duration) error {
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(d)
	after := sample(admin)
	if admin != "" {
		n := float64(len(conns))
		rss := after["process_resident_memory_bytes"] - before["process_resident_memory_bytes"]
		heap := after["go_memstats_heap_inuse_bytes"] - before["go_memstats_heap_inuse_bytes"]
		gor := after["go_goroutines"] - before["go_goroutines"]
		fmt.Printf("tether per idle session: rss %.0f B, heap in use %.0f B, goroutines %.2f\n", rss/n, heap/n, gor/n)
		fmt.Printf("tether totals: rss %.1f MiB, goroutines %.0f, sessions_active %.0f\n",
			after["process_resident_memory_bytes"]/(1<<20), after["go_goroutines"], after["tether_sessions_active"])
	}
	closeAll(conns)
	wg.Wait()
	return nil
}

// echo runs a send-and-wait loop on every session.
func echo(conns []*websocket.Conn, size int, d time.Duration) error {
	msg := []byte(strings.Repeat("x", size))
	var total atomic.Int64
	var mu sync.Mutex
	var rtts []time.Duration
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 1024)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
					errs <- err
					return
				}
				for {
					_, p, err := c.ReadMessage()
					if err != nil {
						errs <- err
						return
					}
					if len(p) == len(msg) { // skip heartbeats and status messages
						break
					}
				}
				local = append(local, time.Since(t0))
				total.Add(1)
			}
			mu.Lock()
			rtts = append(rtts, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	p := func(q float64) time.Duration {
		if len(rtts) == 0 {
			return 0
		}
		return rtts[int(q*float64(len(rtts)-1))]
	}
	fmt.Printf("echo: %d round trips in %v: %.0f msg/s; rtt p50 %v p99 %v max %v\n",
		total.Load(), d, float64(total.Load())/d.Seconds(), p(.5), p(.99), p(1))
	return nil
}

// sample reads Prometheus text metrics without labels from admin/metrics.
func sample(admin string) map[string]float64 {
	m := map[string]float64{}
	if admin == "" {
		return m
	}
	resp, err := http.Get(strings.TrimSuffix(admin, "/") + "/metrics")
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
