package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/lmittmann/tint"
	"golang.org/x/term"

	"github.com/tether-proxy/tether/internal/envconfig"
	"github.com/tether-proxy/tether/proxy"
)

// config is the whole of README "Configuration": each package owns its part,
// composed here under the TETHER_ prefix.
type config struct {
	Proxy proxy.Config
	Log   logConfig `envPrefix:"LOG_"`
}

type logConfig struct {
	Level  string `env:"LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	Format string `env:"FORMAT" envDefault:"text" help:"text (tint; colour only on a terminal) or json"`
}

func defaultConfig() config {
	var c config
	c.Proxy.Prefill()
	return c
}

// loadConfig parses and validates the environment; errors name the
// variable.
func loadConfig(environ []string) (config, error) {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	c := defaultConfig()
	if err := envconfig.Parse(&c, m); err != nil {
		return c, err
	}
	// README "Configuration": an empty TETHER_ADMIN_ADDR disables the admin
	// listener.
	if v, ok := m["TETHER_ADMIN_ADDR"]; ok && v == "" {
		c.Proxy.AdminAddr = ""
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return c, err
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return c, fmt.Errorf("TETHER_LOG_FORMAT: unknown format %q (want text or json)", c.Log.Format)
	}
	return c, c.Proxy.Validate()
}

func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("TETHER_LOG_LEVEL: unknown level %q (want debug, info, warn or error)", s)
}

// newLogger builds the root logger: tint text on stderr (colour only on a
// terminal) or slog JSON.
func newLogger(c logConfig, w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.Level)
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	color := false
	if f, ok := w.(*os.File); ok {
		color = term.IsTerminal(int(f.Fd()))
	}
	return slog.New(tint.NewHandler(w, &tint.Options{Level: level, NoColor: !color, TimeFormat: "15:04:05.000"}))
}

func writeUsage(w io.Writer) {
	c := defaultConfig()
	fmt.Fprint(w, `tether: a WebSocket reverse proxy that keeps both legs alive and reconnects the upstream transparently.

Usage:
  tether               run the proxy (configured by the variables below)
  tether demo          run an echo backend, tether and a demo page on :8081, no configuration
  tether healthcheck   GET /healthz on TETHER_ADMIN_ADDR; exit 0 if 200
  tether version       print the version, Go version and VCS revision
  tether -h, --help    this help

Environment:
`)
	_ = envconfig.WriteHelp(w, &c)
}
