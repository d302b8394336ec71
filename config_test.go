package main

import (
	"strings"
	"testing"

	"github.com/tether-proxy/tether/internal/envconfig"
)

// coreSpecDefaults is README "Configuration"'s table: every variable and its
// default as help prints it ("" = empty).
var coreSpecDefaults = map[string]string{
	"TETHER_UPSTREAM_URL":                "(required)",
	"TETHER_LISTEN_ADDR":                 ":8080",
	"TETHER_ADMIN_ADDR":                  ":9090",
	"TETHER_TLS_CERT_FILE":               "",
	"TETHER_TLS_KEY_FILE":                "",
	"TETHER_UPSTREAM_CA_FILE":            "",
	"TETHER_UPSTREAM_TLS_INSECURE":       "false",
	"TETHER_ALLOWED_ORIGINS":             "",
	"TETHER_MAX_SESSIONS":                "0",
	"TETHER_MAX_MESSAGE_BYTES":           "1048576",
	"TETHER_CLIENT_COMPRESSION":          "false",
	"TETHER_HANDSHAKE_TIMEOUT":           "10s",
	"TETHER_DIAL_TIMEOUT":                "10s",
	"TETHER_WRITE_TIMEOUT":               "10s",
	"TETHER_CLIENT_HEARTBEAT_MODE":       "both",
	"TETHER_CLIENT_HEARTBEAT_INTERVAL":   "15s",
	"TETHER_CLIENT_HEARTBEAT_TIMEOUT":    "3 × interval",
	"TETHER_UPSTREAM_HEARTBEAT_MODE":     "ws",
	"TETHER_UPSTREAM_HEARTBEAT_INTERVAL": "15s",
	"TETHER_UPSTREAM_HEARTBEAT_TIMEOUT":  "3 × interval",
	"TETHER_PING_MESSAGE":                `{"type":"ping"}`,
	"TETHER_PONG_MESSAGE":                `{"type":"pong"}`,
	"TETHER_RECONNECT_INITIAL_DELAY":     "250ms",
	"TETHER_RECONNECT_MAX_DELAY":         "10s",
	"TETHER_RECONNECT_MAX_ATTEMPTS":      "20",
	"TETHER_RECONNECT_RATE":              "500",
	"TETHER_RECONNECT_ON_CODES":          "1001,1006,1011,1012,1013,1014",
	"TETHER_BUFFER_MAX_MESSAGES":         "1024",
	"TETHER_BUFFER_MAX_BYTES":            "4194304",
	"TETHER_BUFFER_TOTAL_MAX_BYTES":      "268435456",
	"TETHER_REPLAY_FIRST":                "0",
	"TETHER_REPLAY_DROP_REPLIES":         "0",
	"TETHER_NOTIFY_CLIENT":               "false",
	"TETHER_RESUME_WINDOW":               "2m",
	"TETHER_RESUME_MAX_MESSAGES":         "1024",
	"TETHER_RESUME_MAX_BYTES":            "1048576",
	"TETHER_REPLAY_PROTOCOL":             "auto",
	"TETHER_REPLAY_JSON_KEEP":            "",
	"TETHER_REPLAY_JSON_END":             "",
	"TETHER_REPLAY_JSON_REPLIES":         "",
	"TETHER_REPLAY_JSON_ID":              "id",
	"TETHER_REPLAY_MAX_BYTES":            "262144",
	"TETHER_SHUTDOWN_TIMEOUT":            "15s",
	"TETHER_SHUTDOWN_SPREAD":             "5s",
	"TETHER_LOG_LEVEL":                   "info",
	"TETHER_LOG_FORMAT":                  "text",
}

// README "Configuration": the composed config declares exactly the
// variables of the table, each with its README default and a line of help.
func TestCoreConfigVars(t *testing.T) {
	t.Parallel()
	c := defaultConfig()
	vars := envconfig.Vars(&c)
	seen := map[string]bool{}
	for _, v := range vars {
		if seen[v.Key] {
			t.Errorf("%s declared twice", v.Key)
		}
		seen[v.Key] = true
		def, ok := coreSpecDefaults[v.Key]
		if !ok {
			t.Errorf("%s is not in README \"Configuration\"", v.Key)
			continue
		}
		if v.Default != def {
			t.Errorf("%s: default %q, README says %q", v.Key, v.Default, def)
		}
		if strings.TrimSpace(v.Help) == "" || strings.Contains(v.Help, "\n") {
			t.Errorf("%s: help %q, want one non-empty line", v.Key, v.Help)
		}
	}
	for k := range coreSpecDefaults {
		if !seen[k] {
			t.Errorf("%s of README \"Configuration\" is not declared", k)
		}
	}
}

// README "Configuration": parsing and validation up front; errors name the
// variable; empty counts as unset except TETHER_ADMIN_ADDR.
func TestCoreLoadConfig(t *testing.T) {
	t.Parallel()
	base := []string{"TETHER_UPSTREAM_URL=ws://127.0.0.1:1"}
	t.Run("defaults", func(t *testing.T) {
		c, err := loadConfig(append(base, "TETHER_LISTEN_ADDR=", "TETHER_MAX_SESSIONS=", "TETHER_CLIENT_HEARTBEAT_MODE="))
		if err != nil {
			t.Fatal(err)
		}
		if c.Proxy.ListenAddr != ":8080" || c.Proxy.AdminAddr != ":9090" || c.Proxy.MaxSessions != 0 ||
			c.Proxy.Session.ClientHeartbeat.Mode.String() != "both" || c.Proxy.Session.UpstreamHeartbeat.Mode.String() != "ws" ||
			c.Log.Level != "info" || c.Log.Format != "text" {
			t.Errorf("defaults: %+v", c)
		}
		if got := c.Proxy.Session.ClientHeartbeat.Timeout.String(); got != "45s" {
			t.Errorf("client heartbeat timeout %s, want 3 × 15s", got)
		}
	})
	t.Run("empty admin address disables", func(t *testing.T) {
		c, err := loadConfig(append(base, "TETHER_ADMIN_ADDR="))
		if err != nil {
			t.Fatal(err)
		}
		if c.Proxy.AdminAddr != "" {
			t.Errorf("AdminAddr = %q, want empty (disabled)", c.Proxy.AdminAddr)
		}
	})
	for _, tc := range coreBadConfigs {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(append(base[:len(base):len(base)], tc.env...))
			if tc.env[0] == "TETHER_UPSTREAM_CA_FILE=/nonexistent" {
				return // checked when the server is built (main_test.go)
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.names) {
				t.Errorf("error %q does not name %s", err, tc.names)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q has more than one line", err)
			}
		})
	}
}

// coreBadConfigs are invalid environments and the variable the error
// must name; main_test.go runs them through the binary.
var coreBadConfigs = []struct {
	name  string
	env   []string
	names string
}{
	{"http upstream", []string{"TETHER_UPSTREAM_URL=http://x"}, "TETHER_UPSTREAM_URL"},
	{"unknown heartbeat mode", []string{"TETHER_CLIENT_HEARTBEAT_MODE=loud"}, "TETHER_CLIENT_HEARTBEAT_MODE"},
	{"bad duration", []string{"TETHER_WRITE_TIMEOUT=abc"}, "TETHER_WRITE_TIMEOUT"},
	{"negative max sessions", []string{"TETHER_MAX_SESSIONS=-1"}, "TETHER_MAX_SESSIONS"},
	{"bad close code", []string{"TETHER_RECONNECT_ON_CODES=99"}, "TETHER_RECONNECT_ON_CODES"},
	{"cert without key", []string{"TETHER_TLS_CERT_FILE=/tmp/cert.pem"}, "TETHER_TLS_"},
	{"unknown log level", []string{"TETHER_LOG_LEVEL=trace"}, "TETHER_LOG_LEVEL"},
	{"unknown log format", []string{"TETHER_LOG_FORMAT=xml"}, "TETHER_LOG_FORMAT"},
	{"ping not JSON", []string{"TETHER_PING_MESSAGE=notjson"}, "TETHER_PING_MESSAGE"},
	{"missing CA file", []string{"TETHER_UPSTREAM_CA_FILE=/nonexistent"}, "TETHER_UPSTREAM_CA_FILE"},
	{"bad listen address", []string{"TETHER_LISTEN_ADDR=nonsense"}, "TETHER_LISTEN_ADDR"},
	{"bad boolean", []string{"TETHER_NOTIFY_CLIENT=maybe"}, "TETHER_NOTIFY_CLIENT"},
	{"interval over timeout", []string{"TETHER_UPSTREAM_HEARTBEAT_INTERVAL=10s", "TETHER_UPSTREAM_HEARTBEAT_TIMEOUT=5s"}, "TETHER_UPSTREAM_HEARTBEAT_TIMEOUT"},
	{"unknown replay protocol", []string{"TETHER_REPLAY_PROTOCOL=amqp"}, "TETHER_REPLAY_PROTOCOL"},
	{"json without keep", []string{"TETHER_REPLAY_PROTOCOL=json"}, "TETHER_REPLAY_JSON_KEEP"},
	{"replay first with a preset", []string{"TETHER_REPLAY_PROTOCOL=stomp", "TETHER_REPLAY_FIRST=1"}, "TETHER_REPLAY_FIRST"},
	{"drop replies with a preset", []string{"TETHER_REPLAY_PROTOCOL=graphql-ws", "TETHER_REPLAY_DROP_REPLIES=1"}, "TETHER_REPLAY_DROP_REPLIES"},
	{"replay max bytes zero", []string{"TETHER_REPLAY_MAX_BYTES=0"}, "TETHER_REPLAY_MAX_BYTES"},
}
