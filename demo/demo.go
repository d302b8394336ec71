// Package demo implements `tether demo` (README "Two commands"): in one
// process and with no configuration, a built-in echo backend on 127.0.0.1
// (random port), tether in front of it, and a page server (default :8081) that
// serves the browser client and demo page embedded in package client.
//
// The demo's tether uses the README defaults except: TETHER_NOTIFY_CLIENT=true,
// client heartbeats in `both` mode every 5 s (timeout 15 s) so pings are
// visible, upstream heartbeats in `ws` mode every 2 s (timeout 6 s), and
// TETHER_RESUME_WINDOW=15s so that the page can outlast it.
//
// Goroutines: Start starts one Serve goroutine per listener (tether, admin,
// page) and the backend's accept loop and connection goroutines; Close
// stops and waits for all of them.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/buildinfo"
	"github.com/tether-proxy/tether/proxy"
)

// Options configure the demo. The zero value works: every address takes
// its default except AdminAddr.
type Options struct {
	// Logger receives tether's and the demo's logs; nil discards them.
	Logger *slog.Logger
	// ListenAddr is tether's client listener; "" means ":8080".
	ListenAddr string
	// AdminAddr serves tether's /healthz, /readyz and /metrics; "" disables
	// it. main passes TETHER_ADMIN_ADDR, whose default is ":9090".
	AdminAddr string
	// PageAddr serves the demo page; "" means ":8081".
	PageAddr string
	// Out receives the "open http://..." lines; nil discards them.
	Out io.Writer
	// Build labels tether's tether_build_info (see proxy.Options.Build).
	Build buildinfo.Info
}

// Defaults of Options.
const (
	DefaultListenAddr = ":8080"
	DefaultPageAddr   = ":8081"
	// RestartPause is how long "restart backend" keeps the backend down,
	// long enough for tether's reconnect to show.
	RestartPause = time.Second
)

// Demo is a running demo: echo backend, tether and page server. Create it
// with Start and stop it with Close. Its methods are safe for concurrent
// use.
type Demo struct {
	// Backend is the echo backend behind tether.
	Backend *Backend
	// Registry holds tether's metrics (README "Metrics and logs").
	Registry *prometheus.Registry
	// Config is the configuration tether runs with.
	Config proxy.Config

	tetherAddr, adminAddr, pageAddr net.Addr // adminAddr nil when disabled

	proxy *proxy.Server
	admin *http.Server // nil when disabled
	page  *http.Server
	wg    sync.WaitGroup // the Serve goroutines

	closeOnce sync.Once
	closeErr  error
}

// DefaultConfig returns the tether configuration of the demo for the
// backend at upstreamURL: README defaults plus notifications and faster
// heartbeats.
func DefaultConfig(upstreamURL string) (proxy.Config, error) {
	cfg, err := proxy.DefaultConfig(upstreamURL)
	if err != nil {
		return cfg, err
	}
	cfg.Session.NotifyClient = true
	// Short enough that the page's "go offline" can outlast it and show
	// a refused resume (README "Client session resume").
	cfg.Session.Resume.Window = 15 * time.Second
	cfg.Session.ClientHeartbeat.Mode = heartbeat.ModeBoth
	cfg.Session.ClientHeartbeat.Interval = 5 * time.Second
	cfg.Session.ClientHeartbeat.Timeout = 15 * time.Second
	cfg.Session.UpstreamHeartbeat.Mode = heartbeat.ModeWS
	cfg.Session.UpstreamHeartbeat.Interval = 2 * time.Second
	cfg.Session.UpstreamHeartbeat.Timeout = 6 * time.Second
	return cfg, nil
}

// defaultClient are the tether.js options the page uses unless its URL
// overrides them.
var defaultClient = ClientOptions{
	PingInterval: 5000,
	InitialDelay: 250,
	MaxDelay:     5000,
	MaxAttempts:  10,
}

// Tuning is what Start's tune functions may change before anything
// listens. Tests use it for short timeouts and deterministic backoff.
type Tuning struct {
	// Tether is tether's configuration, DefaultConfig for the backend with
	// Options.ListenAddr and Options.AdminAddr. The upstream URL must stay.
	Tether proxy.Config
	// Jitter is passed to proxy.Options.Jitter (nil: random).
	Jitter func(n int64) int64
	// RestartPause is how long "restart backend" keeps the backend down
	// (default RestartPause).
	RestartPause time.Duration
	// Client are the tether.js options of the page (default: ping every
	// 5 s, backoff 250 ms to 5 s, 10 attempts).
	Client ClientOptions
}

// Start starts the backend, tether and the page server and returns once
// all three listen. Each tune function may adjust the Tuning; the listen
// and admin addresses come from opts. On error, everything started is
// stopped again.
func Start(ctx context.Context, opts Options, tune ...func(*Tuning)) (_ *Demo, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.ListenAddr == "" {
		opts.ListenAddr = DefaultListenAddr
	}
	if opts.PageAddr == "" {
		opts.PageAddr = DefaultPageAddr
	}
	if err := checkFiles(); err != nil {
		return nil, fmt.Errorf("demo page: %w", err)
	}

	d := &Demo{Backend: NewBackend(opts.Logger), Registry: prometheus.NewRegistry()}
	var listeners []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range listeners {
				_ = ln.Close()
			}
			d.Backend.Close()
		}
	}()
	if err := d.Backend.Start(); err != nil {
		return nil, err
	}

	cfg, err := DefaultConfig(d.Backend.URL())
	if err != nil {
		return nil, fmt.Errorf("demo tether config: %w", err)
	}
	cfg.ListenAddr, cfg.AdminAddr = opts.ListenAddr, opts.AdminAddr
	tuning := Tuning{Tether: cfg, RestartPause: RestartPause, Client: defaultClient}
	for _, f := range tune {
		f(&tuning)
	}
	cfg = tuning.Tether
	d.Config = cfg
	d.proxy, err = proxy.New(cfg, proxy.Options{Logger: opts.Logger, Registry: d.Registry, Jitter: tuning.Jitter, Build: opts.Build})
	if err != nil {
		return nil, fmt.Errorf("demo tether: %w", err)
	}

	var lc net.ListenConfig
	listen := func(addr, what string) (net.Listener, error) {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("demo %s listen %s: %w", what, addr, err)
		}
		listeners = append(listeners, ln)
		return ln, nil
	}
	tetherLn, err := listen(cfg.ListenAddr, "tether")
	if err != nil {
		return nil, err
	}
	var adminLn net.Listener
	if cfg.AdminAddr != "" {
		if adminLn, err = listen(cfg.AdminAddr, "admin"); err != nil {
			return nil, err
		}
	}
	pageLn, err := listen(opts.PageAddr, "page")
	if err != nil {
		return nil, err
	}

	d.tetherAddr, d.pageAddr = tetherLn.Addr(), pageLn.Addr()
	pageCfg := PageConfig{Tether: endpointFor(d.tetherAddr), Client: tuning.Client}
	d.page = &http.Server{
		Handler:           pageHandler(pageCfg, d.Backend, tuning.RestartPause),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	d.serve("tether", opts.Logger, func() error { return d.proxy.Serve(tetherLn) })
	if adminLn != nil {
		d.adminAddr = adminLn.Addr()
		d.admin = &http.Server{
			Handler:           d.proxy.AdminHandler(),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
		}
		d.serve("admin", opts.Logger, func() error { return d.admin.Serve(adminLn) })
	}
	d.serve("page", opts.Logger, func() error { return d.page.Serve(pageLn) })

	d.printBanner(opts.Out)
	return d, nil
}

// serve runs one server's Serve on a goroutine that Close waits for.
func (d *Demo) serve(what string, logger *slog.Logger, serve func() error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("demo server stopped", "server", what, "err", err)
		}
	}()
}

func (d *Demo) printBanner(w io.Writer) {
	fmt.Fprintf(w, "tether demo is running\n")
	fmt.Fprintf(w, "  open %s in a browser\n", d.PageURL())
	fmt.Fprintf(w, "  tether:       %s (clients)\n", d.TetherURL())
	if d.adminAddr != nil {
		fmt.Fprintf(w, "  admin:        %s/metrics\n", httpURL(d.adminAddr))
	}
	fmt.Fprintf(w, "  echo backend: %s\n", d.Backend.URL())
	fmt.Fprintf(w, "press Ctrl-C to stop\n")
}

// PageURL returns the demo page's URL, e.g. http://localhost:8081/.
func (d *Demo) PageURL() string { return httpURL(d.pageAddr) + "/" }

// TetherURL returns tether's ws:// URL, e.g. ws://localhost:8080/.
func (d *Demo) TetherURL() string { return "ws://" + displayHost(d.tetherAddr) + "/" }

// TetherAddr returns the address tether's client listener is bound to.
func (d *Demo) TetherAddr() net.Addr { return d.tetherAddr }

// PageAddr returns the address the page server is bound to.
func (d *Demo) PageAddr() net.Addr { return d.pageAddr }

// AdminAddr returns the admin listener's address, or nil when disabled.
func (d *Demo) AdminAddr() net.Addr { return d.adminAddr }

// Sessions reports tether's registered sessions.
func (d *Demo) Sessions() int { return d.proxy.Sessions() }

// Close shuts everything down: the page server, then tether, which drains its
// sessions as README "Shutdown" says (client 1012, upstream 1001) within ctx,
// then the admin listener and the backend. It waits for every goroutine it
// started and is safe to call more than once.
func (d *Demo) Close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		var errs []error
		if err := d.page.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("demo page shutdown: %w", err))
		}
		if err := d.proxy.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("demo tether shutdown: %w", err))
		}
		if d.admin != nil {
			if err := d.admin.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("demo admin shutdown: %w", err))
			}
		}
		d.Backend.Close()
		d.wg.Wait()
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

// Run starts the demo, blocks until ctx is cancelled, then shuts
// everything down (tether drains as README "Shutdown" says, bounded by its
// TETHER_SHUTDOWN_TIMEOUT default) and returns nil. It returns an error
// only when the demo cannot start.
func Run(ctx context.Context, opts Options) error {
	d, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	<-ctx.Done()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.Config.ShutdownTimeout)
	defer cancel()
	if err := d.Close(shutdownCtx); err != nil {
		logger.Warn("demo shutdown", "err", err)
	}
	return nil
}

// displayHost returns host:port for a bound address, with "localhost" for
// a wildcard host.
func displayHost(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func httpURL(a net.Addr) string { return "http://" + displayHost(a) }
