// Command tether is a WebSocket reverse proxy: it terminates the client
// and upstream legs, keeps both alive with heartbeats, and reconnects the
// upstream transparently. See README.md; main only wires.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-proxy/tether/internal/memrelease"
	"github.com/tether-proxy/tether/proxy"
)

// After burstSessions sessions have started or ended and none has for
// burstQuiet, tether runs a GC and returns free memory to the OS
// (internal/memrelease): an idle proxy would otherwise keep the memory of
// a burst of handshakes for minutes.
const (
	burstSessions = 1024
	burstQuiet    = 3 * time.Second
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(args, environ []string, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "-h", "--help", "-help", "help":
		writeUsage(stdout)
		return 0
	case "healthcheck":
		return healthcheck(environ, stderr)
	case "version", "--version", "-version":
		return printVersion(stdout)
	case "demo":
		return runDemo(environ, stdout, stderr)
	case "":
	default:
		fmt.Fprintf(stderr, "tether: unknown command %q (try tether --help)\n", cmd)
		return 2
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log := newLogger(cfg.Log, stderr)
	burst := memrelease.New(burstSessions, burstQuiet, func() {
		start := time.Now()
		debug.FreeOSMemory()
		log.Debug("returned memory to the OS after a burst of sessions", "took", time.Since(start))
	})
	defer burst.Stop()
	srv, err := proxy.New(cfg.Proxy, proxy.Options{Logger: log, Registry: prometheus.NewRegistry(), Burst: burst, Build: build(), Config: &cfg})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	ln, err := net.Listen("tcp", cfg.Proxy.ListenAddr)
	if err != nil {
		fmt.Fprintf(stderr, "TETHER_LISTEN_ADDR: %v\n", err)
		return 1
	}
	var admin *http.Server
	var adminLn net.Listener
	if cfg.Proxy.AdminAddr != "" {
		adminLn, err = net.Listen("tcp", cfg.Proxy.AdminAddr)
		if err != nil {
			ln.Close()
			fmt.Fprintf(stderr, "TETHER_ADMIN_ADDR: %v\n", err)
			return 1
		}
		// Scrapers keep connections alive; an idle one is closed after a
		// minute so that a client cannot hold admin connections forever.
		admin = &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
		go func() { _ = admin.Serve(adminLn) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("tether listening", "addr", ln.Addr().String(), "admin", cfg.Proxy.AdminAddr, "upstream", cfg.Proxy.UpstreamURLs.Secretless())

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil {
			log.Error("listener failed", "err", err)
			return 1
		}
	}
	stop()
	log.Info("shutting down", "timeout", cfg.Proxy.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Proxy.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown", "err", err)
	}
	if admin != nil {
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		_ = admin.Shutdown(actx)
		acancel()
	}
	log.Info("stopped")
	return 0
}

// healthcheck GETs /healthz on TETHER_ADMIN_ADDR (README "Two commands").
func healthcheck(environ []string, stderr io.Writer) int {
	addr := ":9090"
	for _, kv := range environ {
		if v, ok := cutPrefix(kv, "TETHER_ADMIN_ADDR="); ok && v != "" {
			addr = v
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintf(stderr, "TETHER_ADMIN_ADDR: %q is not host:port\n", addr)
		return 2
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: %s\n", resp.Status)
		return 1
	}
	return 0
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}
