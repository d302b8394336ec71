package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/tether-proxy/tether/proxy"
	"github.com/tether-proxy/tether/session"
)

// FuzzLoadConfig sets up to two README "Configuration" variables (chosen by
// index) to arbitrary values on top of a valid environment. Invariants: no
// panic; either a config that builds a session environment, a logger and (file
// variables aside) a proxy server, or a one-line error that begins with
// "TETHER_<variable>:" and names one of the variables set.
func FuzzLoadConfig(f *testing.F) {
	keys := make([]string, 0, len(coreSpecDefaults))
	for k := range coreSpecDefaults {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	idx := func(k string) uint8 { return uint8(slices.Index(keys, k)) }
	for _, tc := range coreBadConfigs {
		k, v, _ := strings.Cut(tc.env[0], "=")
		if len(tc.env) > 1 {
			k2, v2, _ := strings.Cut(tc.env[1], "=")
			f.Add(idx(k), v, idx(k2), v2)
			continue
		}
		f.Add(idx(k), v, idx(k), v)
	}
	for k, v := range map[string]string{
		"TETHER_UPSTREAM_URL":               "wss://a.example/x?y=1, ws://[::1]:9/",
		"TETHER_CLIENT_HEARTBEAT_INTERVAL":  "2562047h47m16.854775807s",
		"TETHER_RECONNECT_RATE":             "NaN",
		"TETHER_BUFFER_TOTAL_MAX_BYTES":     "9223372036854775808",
		"TETHER_PONG_MESSAGE":               `{"type":"ping"}`,
		"TETHER_RECONNECT_ON_CODES":         " 1000 ,,4999",
		"TETHER_MAX_MESSAGE_BYTES":          "0",
		"TETHER_ADMIN_ADDR":                 "",
		"TETHER_UPSTREAM_HEARTBEAT_TIMEOUT": "-1ns",
	} {
		f.Add(idx(k), v, idx(k), v)
	}
	f.Fuzz(func(t *testing.T, i uint8, v string, j uint8, w string) {
		k1, k2 := keys[int(i)%len(keys)], keys[int(j)%len(keys)]
		env := []string{"TETHER_UPSTREAM_URL=ws://127.0.0.1:1", k1 + "=" + v, k2 + "=" + w}
		c, err := loadConfig(env)
		if err != nil {
			msg := err.Error()
			name, _, ok := strings.Cut(msg, ":")
			if !ok || !slices.Contains(keys, name) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q is not one line beginning with a variable's name", msg)
			}
			if !strings.Contains(msg, k1) && !strings.Contains(msg, k2) {
				t.Fatalf("error %q names neither %s nor %s", msg, k1, k2)
			}
			return
		}
		if _, err := session.NewEnv(c.Proxy.Session, nil, nil); err != nil {
			t.Fatalf("loadConfig accepted %q but NewEnv: %v", env, err)
		}
		_ = newLogger(c.Log, io.Discard)
		for _, k := range []string{k1, k2} {
			if strings.HasSuffix(k, "_FILE") {
				return // would read whatever file the value names
			}
		}
		if _, err := proxy.New(c.Proxy, proxy.Options{}); err != nil {
			t.Fatalf("loadConfig accepted %q but proxy.New: %v", env, err)
		}
	})
}
