package proxy_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

// pageView is what the status page shows, read from its DOM.
type pageView struct {
	Renders     int               `json:"renders"`
	Error       *string           `json:"error"`
	Text        map[string]string `json:"text"`
	Points      map[string]int    `json:"points"`
	SessionIDs  []string          `json:"sessionIDs"`
	Config      map[string]string `json:"config"`
	HTML        string            `json:"html"`
	Reconnected float64           `json:"reconnected"`
}

const pageViewJS = `(() => {
	const text = {};
	for (const id of ["sessions-active", "sessions-connected", "sessions-reconnecting", "sessions-detached", "resume-note",
		"msgs-up", "msgs-down", "msgs-total", "bytes-up", "reconnects-success", "reconnects-failure",
		"rtt-client-p50", "rtt-client-p99", "rtt-upstream-p50", "timeouts-client", "timeouts-upstream",
		"held-retained", "held-buffered", "ready", "live", "proc-goroutines", "sessions-max", "version"]) {
		text[id] = document.getElementById(id).textContent;
	}
	const points = {};
	for (const svg of document.querySelectorAll("svg.spark")) points[svg.id] = +(svg.dataset.points || 0);
	const config = {};
	for (const tr of document.querySelectorAll("#config tr")) config[tr.cells[0].textContent] = tr.cells[1].textContent;
	return {
		renders: window.tetherStatus.renders,
		error: window.tetherStatus.error,
		text, points, config,
		sessionIDs: [...document.querySelectorAll("#sessions tbody tr[data-id]")].map((tr) => tr.dataset.id),
		html: document.documentElement.outerHTML,
		reconnected: window.tetherStatus.status ? window.tetherStatus.status.reconnects.success_total : 0,
	};
})()`

// The status page in headless Chromium, against a live tether with
// traffic and a reconnect: it renders the numbers the process has, plots
// the history, lists the sessions newest first and shows the
// configuration without credentials. A screenshot is kept
// (tether-status.png in $TETHER_ARTIFACTS).
func TestAdminStatusPageBrowser(t *testing.T) {
	t.Parallel()
	execPath := testkit.FindChromium(t)
	b := newBackend(t, nil, nil)
	tt := startTether(t, secretURL(b.URL), func(c *proxy.Config) {
		c.Session.ClientHeartbeat.Mode = heartbeat.ModeWS // gorilla answers RFC pings
		c.Session.ClientHeartbeat.Interval = 100 * time.Millisecond
		c.Session.UpstreamHeartbeat.Interval = 150 * time.Millisecond
		c.Session.Reconnect.InitialDelay = 10 * time.Millisecond
	})
	admin := startAdmin(t, tt)

	// Three sessions that read (and so answer pings); the first also
	// sends a message every few milliseconds, at a varying rate.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	var ids []string
	var conns []*websocket.Conn
	for range 3 {
		c, id := dialSession(t, tt)
		waitListed(t, admin, id)
		ids = append(ids, id)
		conns = append(conns, c)
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
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(2+(i/100)%4*4) * time.Millisecond):
			}
			if conns[0].WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", i%200)))) != nil {
				return
			}
		}
	}()

	br := testkit.Browser(t, execPath, chromedp.WindowSize(1280, 900))
	run := func(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(br, timeout)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	view := func() pageView {
		t.Helper()
		ctx, cancel := context.WithTimeout(br, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[pageView](pageViewJS))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		return v
	}
	run("open the status page", 20*time.Second, chromedp.Navigate(admin.URL+"/"),
		chromedp.Poll[chromedp.Void](`window.tetherStatus && window.tetherStatus.renders >= 1`,
			chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))

	// An upstream connection lost without a Close: tether reconnects.
	b.mu.Lock()
	first := b.conns[0]
	b.mu.Unlock()
	_ = first.UnderlyingConn().Close()

	// A few seconds of history, and every figure drawn.
	run("the figures rendered", 30*time.Second, chromedp.Poll[chromedp.Void](`(() => {
		const s = window.tetherStatus.status;
		const pts = (id) => +(document.getElementById(id).dataset.points || 0);
		return window.tetherStatus.renders >= 6 && s.reconnects.success_total >= 1 &&
			s.heartbeats.upstream.rtt_recent.count > 0 && s.sessions.connected === 3 &&
			pts("spark-messages") >= 4 && pts("spark-rtt-client") >= 4 && pts("spark-rtt-upstream") >= 2 &&
			pts("spark-reconnects") >= 1;
	})()`, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(25*time.Second)))

	v := view()
	if v.Error != nil {
		t.Errorf("the page reports %q", *v.Error)
	}
	for id, want := range map[string]string{
		"sessions-active": "3", "sessions-connected": "3", "sessions-reconnecting": "0", "sessions-detached": "0",
		"resume-note": "", "reconnects-success": "1", "reconnects-failure": "0",
		"timeouts-client": "0", "timeouts-upstream": "0", "held-buffered": "0", "ready": "ready", "sessions-max": "none",
	} {
		if v.Text[id] != want {
			t.Errorf("#%s shows %q, want %q", id, v.Text[id], want)
		}
	}
	for _, id := range []string{"rtt-client-p50", "rtt-client-p99", "rtt-upstream-p50"} {
		var ms float64
		if _, err := fmt.Sscanf(v.Text[id], "%f ms", &ms); err != nil || ms <= 0 {
			t.Errorf("#%s shows %q, want a round trip in ms", id, v.Text[id])
		}
	}
	var rate float64
	if _, err := fmt.Sscanf(strings.ReplaceAll(v.Text["msgs-up"], ",", ""), "%f", &rate); err != nil || rate <= 0 {
		t.Errorf("#msgs-up shows %q, want a rate", v.Text["msgs-up"])
	}
	if !strings.Contains(v.Text["version"], runtime.Version()) {
		t.Errorf("#version shows %q, want the build (%s)", v.Text["version"], runtime.Version())
	}
	if !strings.HasPrefix(v.Text["live"], "live") {
		t.Errorf("#live shows %q", v.Text["live"])
	}
	for _, id := range []string{"spark-sessions", "spark-messages", "spark-bytes", "spark-rtt-client", "spark-rtt-upstream", "spark-held", "spark-reconnects"} {
		if v.Points[id] == 0 {
			t.Errorf("%s plots nothing", id)
		}
	}
	newestFirst := slices.Clone(ids)
	slices.Reverse(newestFirst)
	if !slices.Equal(v.SessionIDs, newestFirst) {
		t.Errorf("sessions table %v, want %v", v.SessionIDs, newestFirst)
	}
	host := strings.TrimPrefix(b.URL, "ws://")
	if got, want := v.Config["TETHER_UPSTREAM_URL"], "ws://redacted@"+host+"/?room=redacted&token=redacted"; got != want {
		t.Errorf("config shows TETHER_UPSTREAM_URL %q, want %q", got, want)
	}
	for _, s := range secrets {
		if strings.Contains(v.HTML, s) {
			t.Errorf("the page shows %q", s)
		}
	}

	ctx, cancel := context.WithTimeout(br, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	testkit.SaveArtifact(t, "tether-status.png", png)
}
