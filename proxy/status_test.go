package proxy_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

// statusDoc is the part of /status.json the tests read.
type statusDoc struct {
	Ready bool `json:"ready"`
	Build struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
	} `json:"build"`
	Sessions struct {
		Max          float64 `json:"max"`
		Active       float64 `json:"active"`
		Connected    int     `json:"connected"`
		Reconnecting int     `json:"reconnecting"`
		Detached     float64 `json:"detached"`
		Resume       bool    `json:"resume"`
		Total        float64 `json:"total"`
	} `json:"sessions"`
	Traffic map[string]struct {
		Messages float64 `json:"messages_total"`
		Bytes    float64 `json:"bytes_total"`
	} `json:"traffic"`
	Heartbeats map[string]struct {
		Mode          string  `json:"mode"`
		PingsSent     float64 `json:"pings_sent_total"`
		PongsReceived float64 `json:"pongs_received_total"`
		RTT           struct {
			Count uint64   `json:"count"`
			P50MS *float64 `json:"p50_ms"`
			P99MS *float64 `json:"p99_ms"`
		} `json:"rtt"`
	} `json:"heartbeats"`
	Buffer struct {
		Messages float64 `json:"messages"`
		Retained int     `json:"retained"`
		Buffered int     `json:"buffered"`
		Bytes    int64   `json:"bytes"`
	} `json:"buffer"`
	Config []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"config"`
	History struct {
		T      []int64   `json:"t"`
		Active []float64 `json:"active"`
	} `json:"history"`
}

// get returns the response and body of GET path on the admin server.
func get(t *testing.T, base, path string) (*http.Response, string) {
	t.Helper()
	resp, body := testkit.Request(t, "GET", base+path)
	return resp, string(body)
}

// secretURL is the backend's URL with credentials that must never show.
func secretURL(backendURL string) string {
	return strings.Replace(backendURL, "ws://", "ws://alice:s3cret@", 1) + "/?token=t0ken&room=7"
}

var secrets = []string{"alice", "s3cret", "t0ken"}

// /status.json reports the traffic it was given, the sessions and what
// they hold, round trips, and the configuration with the upstream URL's
// credentials and query values redacted; no admin endpoint shows them.
func TestAdminStatusJSON(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, secretURL(b.URL), func(c *proxy.Config) {
		c.Session.ClientHeartbeat.Mode = heartbeat.ModeWS
		c.Session.ClientHeartbeat.Interval = 50 * time.Millisecond
		// Upstream JSON pings every 15 s (json mode sends no
		// acknowledgement pings): what the client sends stays retained.
		c.Session.UpstreamHeartbeat.Mode = heartbeat.ModeJSON
		c.MaxSessions = 77
	})
	admin := startAdmin(t, tt)
	if q := b.lastRequest(); q != nil {
		t.Fatal("backend dialed before any client")
	}
	c := dial(t, tt.URL, nil)
	for _, m := range []string{"a", "bb", "ccc"} {
		coreEcho(t, c, m)
	}
	if got := b.lastRequest().URL.Query().Get("token"); got != "t0ken" {
		t.Fatalf("the backend got token %q: the test's URL does not reach it", got)
	}
	// The client must read for gorilla to answer tether's pings.
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()

	var st statusDoc
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body := get(t, admin.URL, "/status.json")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("/status.json: %s %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		st = statusDoc{}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("%v in %s", err, body)
		}
		up, down := st.Traffic["client_to_upstream"], st.Traffic["upstream_to_client"]
		if up.Messages == 3 && down.Messages == 3 && st.Heartbeats["client"].RTT.Count >= 2 {
			if up.Bytes != 6 || down.Bytes != 6 {
				t.Fatalf("bytes %v up, %v down, want 6 each", up.Bytes, down.Bytes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the traffic: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ss := st.Sessions
	if ss.Max != 77 || st.Build.GoVersion != runtime.Version() || st.Build.Version == "" {
		t.Errorf("max sessions %v, build %+v; want 77 and this binary's build", ss.Max, st.Build)
	}
	if !st.Ready || ss.Active != 1 || ss.Connected != 1 || ss.Reconnecting != 0 || ss.Detached != 0 || !ss.Resume || ss.Total != 1 {
		t.Errorf("sessions %+v ready %v, want 1 active and connected, resume on (the default window)", ss, st.Ready)
	}
	// The upstream pings every 15 s: all three are retained, unacknowledged.
	if bf := st.Buffer; bf.Messages != 3 || bf.Retained != 3 || bf.Buffered != 0 || bf.Bytes != 6 {
		t.Errorf("buffer %+v, want 3 retained, 6 bytes", bf)
	}
	cl := st.Heartbeats["client"]
	if cl.Mode != "ws" || cl.PongsReceived < 2 || cl.RTT.P50MS == nil || *cl.RTT.P50MS <= 0 || *cl.RTT.P99MS < *cl.RTT.P50MS {
		t.Errorf("client heartbeats %+v", cl)
	}
	if up := st.Heartbeats["upstream"]; up.Mode != "json" || up.RTT.Count != 0 || up.RTT.P50MS != nil {
		t.Errorf("upstream heartbeats %+v, want no round trip yet (null percentiles)", up)
	}
	if len(st.History.T) == 0 || st.History.Active[len(st.History.Active)-1] != 1 {
		t.Errorf("history %+v", st.History)
	}
	cfg := map[string]string{}
	for _, v := range st.Config {
		cfg[v.Name] = v.Value
	}
	host := strings.TrimPrefix(b.URL, "ws://")
	if got, want := cfg["TETHER_UPSTREAM_URL"], "ws://redacted@"+host+"/?room=redacted&token=redacted"; got != want {
		t.Errorf("TETHER_UPSTREAM_URL shown as %q, want %q", got, want)
	}
	if cfg["TETHER_MAX_SESSIONS"] != "77" || cfg["TETHER_CLIENT_HEARTBEAT_INTERVAL"] != "50ms" || cfg["TETHER_UPSTREAM_HEARTBEAT_TIMEOUT"] != "45s" {
		t.Errorf("config %v", cfg)
	}

	for _, path := range []string{"/status.json", "/sessions", "/", "/metrics", "/status.json?since=0"} {
		_, body := get(t, admin.URL, path)
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("%s shows %q", path, s)
			}
		}
	}
	if st := adminDo(t, admin, "GET", "/status.json?since=x", nil); st != http.StatusBadRequest {
		t.Errorf("since=x: %d, want 400", st)
	}
	// Only samples after since.
	var later statusDoc
	last := st.History.T[len(st.History.T)-1]
	if adminDo(t, admin, "GET", "/status.json?since="+jsonNumber(last), &later) != http.StatusOK {
		t.Fatal("since")
	}
	for _, ts := range later.History.T {
		if ts <= last {
			t.Errorf("since=%d returned a sample at %d", last, ts)
		}
	}
}

func jsonNumber(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// The page is one document: its style and script are inlined, it refers
// to nothing outside itself, and its policy forbids any other host.
func TestAdminStatusPageSelfContained(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	admin := startAdmin(t, tt)
	resp, body := get(t, admin.URL, "/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if !strings.Contains(body, "<style>") || !strings.Contains(body, "<script>") || !strings.Contains(body, "status.json") {
		t.Error("the page's style or script is not inlined")
	}
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(`).FindString(body); m != "" {
		t.Errorf("the page refers outside itself: %q", m)
	}
	if m := regexp.MustCompile(`(?i)<(link|script)[^>]+(src|href)=`).FindString(body); m != "" {
		t.Errorf("the page loads a file: %q", m)
	}
	if resp, _ := get(t, admin.URL, "/nosuchpage"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nosuchpage: %s, want 404", resp.Status)
	}
}
