package replay_test

import (
	"strings"
	"testing"

	"github.com/tether-proxy/tether/internal/envconfig"
	"github.com/tether-proxy/tether/replay"
)

// The Config's env tags, parsed the way main parses the whole
// configuration.
func TestEnvconfig(t *testing.T) {
	var c replay.Config
	if err := envconfig.Parse(&c, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || c.Protocol != replay.Auto || c.JSONID != "id" || c.MaxBytes != 262144 || c.JSONKeep != nil {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	c = replay.Config{}
	err := envconfig.Parse(&c, map[string]string{
		"TETHER_REPLAY_PROTOCOL":     "json",
		"TETHER_REPLAY_JSON_KEEP":    "subscribe, auth",
		"TETHER_REPLAY_JSON_END":     "unsubscribe",
		"TETHER_REPLAY_JSON_REPLIES": "subscribed,auth_ok",
		"TETHER_REPLAY_JSON_ID":      "channel",
		"TETHER_REPLAY_MAX_BYTES":    "1000",
	})
	if err == nil {
		err = c.Validate()
	}
	if err != nil || c.Protocol != replay.JSON || strings.Join(c.JSONKeep, "|") != "subscribe|auth" ||
		strings.Join(c.JSONReplies, "|") != "subscribed|auth_ok" || c.JSONID != "channel" || c.MaxBytes != 1000 {
		t.Fatalf("parsed %+v, %v", c, err)
	}
	c = replay.Config{}
	err = envconfig.Parse(&c, map[string]string{"TETHER_REPLAY_PROTOCOL": "signalr"})
	if err == nil || !strings.HasPrefix(err.Error(), "TETHER_REPLAY_PROTOCOL: unknown protocol \"signalr\"") {
		t.Fatalf("bad protocol: %v", err)
	}
	// Help lists every variable with its default.
	var keys []string
	for _, v := range envconfig.Vars(&replay.Config{}) {
		keys = append(keys, v.Key+"="+v.Default)
	}
	want := "TETHER_REPLAY_PROTOCOL=auto TETHER_REPLAY_JSON_KEEP= TETHER_REPLAY_JSON_END= TETHER_REPLAY_JSON_REPLIES= TETHER_REPLAY_JSON_ID=id TETHER_REPLAY_MAX_BYTES=262144"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("Vars = %s, want %s", got, want)
	}
}
