package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tether-proxy/tether/demo"
)

// runDemo runs `tether demo` (README "Two commands"): no configuration is
// needed, but TETHER_LISTEN_ADDR, TETHER_ADMIN_ADDR and TETHER_LOG_* are
// honoured.
func runDemo(environ []string, stdout, stderr io.Writer) int {
	env := make(map[string]string)
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	lc := logConfig{Level: "info", Format: "text"}
	if v := env["TETHER_LOG_LEVEL"]; v != "" {
		if _, err := parseLevel(v); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		lc.Level = v
	}
	if v := env["TETHER_LOG_FORMAT"]; v == "json" {
		lc.Format = v
	}
	admin := ":9090"
	if v, ok := env["TETHER_ADMIN_ADDR"]; ok {
		admin = v // empty disables
	}
	listen := env["TETHER_LISTEN_ADDR"]
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := demo.Run(ctx, demo.Options{
		Logger:     newLogger(lc, stderr),
		ListenAddr: listen,
		AdminAddr:  admin,
		Out:        stdout,
		Build:      build(),
	})
	if err != nil {
		fmt.Fprintln(stderr, "tether demo:", err)
		return 1
	}
	return 0
}
