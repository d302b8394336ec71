package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/internal/memrelease"
	"github.com/tether-proxy/tether/proxy"
)

// coreScrape GETs /metrics and returns its sample lines by series name
// with labels, e.g. `tether_messages_total{direction="client_to_upstream"}`,
// and the declared type of each metric.
func coreScrape(t *testing.T, url string) (samples map[string]float64, types map[string]string) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	samples, types = map[string]float64{}, map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if f := strings.Fields(rest); len(f) == 2 {
				types[f[0]] = f[1]
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		samples[line[:i]] = v
	}
	return samples, types
}

// README "Metrics and logs": /healthz and /readyz answer 200; /metrics has
// every metric of the table with its type and labels.
func TestCoreAdminEndpoints(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	admin := httptest.NewServer(tt.AdminHandler())
	defer admin.Close()
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(admin.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s = %d, want 200", path, resp.StatusCode)
		}
	}
	samples, types := coreScrape(t, admin.URL)
	for name, typ := range map[string]string{
		"tether_sessions_active":                "gauge",
		"tether_sessions_total":                 "counter",
		"tether_messages_total":                 "counter",
		"tether_bytes_total":                    "counter",
		"tether_heartbeat_pings_sent_total":     "counter",
		"tether_heartbeat_pongs_received_total": "counter",
		"tether_heartbeat_timeouts_total":       "counter",
		"tether_heartbeat_rtt_seconds":          "histogram",
		"tether_upstream_reconnects_total":      "counter",
		"tether_buffered_messages":              "gauge",
		"tether_buffer_overflows_total":         "counter",
		"tether_resent_messages_total":          "counter",
		"tether_replayed_messages_total":        "counter",
	} {
		if types[name] != typ {
			t.Errorf("%s: type %q, want %q", name, types[name], typ)
		}
	}
	// Labelled series exist before any traffic, with the README's label values.
	for _, series := range []string{
		`tether_messages_total{direction="client_to_upstream"}`,
		`tether_messages_total{direction="upstream_to_client"}`,
		`tether_bytes_total{direction="client_to_upstream"}`,
		`tether_bytes_total{direction="upstream_to_client"}`,
		`tether_heartbeat_pings_sent_total{leg="client"}`,
		`tether_heartbeat_pings_sent_total{leg="upstream"}`,
		`tether_heartbeat_pongs_received_total{leg="client"}`,
		`tether_heartbeat_pongs_received_total{leg="upstream"}`,
		`tether_heartbeat_timeouts_total{leg="client"}`,
		`tether_heartbeat_timeouts_total{leg="upstream"}`,
		`tether_heartbeat_rtt_seconds_count{leg="client"}`,
		`tether_heartbeat_rtt_seconds_count{leg="upstream"}`,
		`tether_upstream_reconnects_total{result="success"}`,
		`tether_upstream_reconnects_total{result="failure"}`,
	} {
		if _, ok := samples[series]; !ok {
			t.Errorf("no series %s", series)
		}
	}
}

// README "Metrics and logs": sessions, messages and bytes count real traffic.
func TestCoreMetricsCount(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	admin := httptest.NewServer(tt.AdminHandler())
	defer admin.Close()
	c := dial(t, tt.URL, nil)
	coreEcho(t, c, "a")
	coreEcho(t, c, "bb")
	if err := c.WriteMessage(websocket.BinaryMessage, []byte("ccc")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`tether_sessions_total`:                                 1,
		`tether_sessions_active`:                                1,
		`tether_messages_total{direction="client_to_upstream"}`: 3,
		`tether_messages_total{direction="upstream_to_client"}`: 3,
		`tether_bytes_total{direction="client_to_upstream"}`:    6,
		`tether_bytes_total{direction="upstream_to_client"}`:    6,
	}
	coreWaitMetrics(t, admin.URL, want)

	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	coreWantClose(t, c, 1000, "")
	want[`tether_sessions_active`] = 0
	coreWaitMetrics(t, admin.URL, want)
}

// coreWaitMetrics polls /metrics until every series in want has its
// value (counters are updated just after the write that a peer sees).
func coreWaitMetrics(t *testing.T, url string, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		samples, _ := coreScrape(t, url)
		var bad []string
		for k, v := range want {
			if samples[k] != v {
				bad = append(bad, k+"="+strconv.FormatFloat(samples[k], 'g', -1, 64)+" want "+strconv.FormatFloat(v, 'g', -1, 64))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %s", strings.Join(bad, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Sessions starting and ending are the events of the memory release
// after a burst (internal/memrelease, wired in main): three sessions that
// open and close are six, past a threshold of five, and the release
// follows once they stop.
func TestBurstReleaseCountsSessions(t *testing.T) {
	t.Parallel()
	released := make(chan struct{}, 4)
	burst := memrelease.New(5, 20*time.Millisecond, func() { released <- struct{}{} })
	t.Cleanup(burst.Stop)
	b := newBackend(t, nil, nil)
	tt := startTetherOpts(t, b.URL, proxy.Options{Burst: burst}, nil)
	for i := range 3 {
		c := dial(t, tt.URL, nil)
		coreEcho(t, c, fmt.Sprintf("session %d", i))
		c.Close()
		coreWaitSessions(t, tt, 0)
	}
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("no release after 3 sessions opened and closed")
	}
}
