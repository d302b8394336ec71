package demo

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tether-proxy/tether/internal/testkit"
)

// browser is one headless Chromium tab, driven through chromedp.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T, execPath string) *browser {
	t.Helper()
	return &browser{t: t, ctx: testkit.Browser(t, execPath, chromedp.WindowSize(1280, 1000))}
}

// do runs actions with a timeout; the browser outlives it.
func (b *browser) do(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\n%s", what, err, b.state())
	}
}

func (b *browser) click(id string) {
	b.t.Helper()
	b.do("click #"+id, 10*time.Second, chromedp.WaitEnabled(chromedp.ID(id)), chromedp.Click(chromedp.ID(id)))
}

// poll waits until the JavaScript expression is truthy.
func (b *browser) poll(what, expr string, timeout time.Duration) {
	b.t.Helper()
	b.do("wait for "+what, timeout+5*time.Second,
		chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
}

// eval evaluates expr and decodes its value into T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// snapshot is window.tetherDemo.snapshot().
type snapshot struct {
	Status      string   `json:"status"`
	Upstream    string   `json:"upstream"`
	Sent        int      `json:"sent"`
	Echoed      int      `json:"echoed"`
	Pending     int      `json:"pending"`
	Missing     int      `json:"missing"`
	Duplicated  int      `json:"duplicated"`
	OutOfOrder  int      `json:"outOfOrder"`
	OK          bool     `json:"ok"`
	Opens       int      `json:"opens"`
	ServerPings int      `json:"serverPings"`
	ClientPings int      `json:"clientPings"`
	ClientPongs int      `json:"clientPongs"`
	RTTLast     *float64 `json:"rttLast"`
	Resumes     int      `json:"resumes"`
	Refusals    int      `json:"refusals"`
	Resumable   bool     `json:"resumable"`
}

func (b *browser) snapshot() snapshot {
	b.t.Helper()
	return eval[snapshot](b, `tetherDemo.snapshot()`)
}

// state describes the page for failure messages, without failing itself.
func (b *browser) state() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](
		`({snapshot: window.tetherDemo?.snapshot(), history: window.tetherDemo?.history, log: document.getElementById("event-log")?.innerText})`))
	if err != nil {
		return "page state unavailable: " + err.Error()
	}
	return "page state: " + string(raw)
}

// historySince returns the history entries from index n on, as
// "status:<status>[:code]" and "upstream:<status>" strings.
func (b *browser) historySince(n int) []string {
	b.t.Helper()
	return eval[[]string](b, fmt.Sprintf(
		`tetherDemo.history.slice(%d).map(e => e.kind + ":" + e.status + (e.kind === "status" && e.code ? ":" + e.code : ""))`, n))
}

func (b *browser) historyLen() int {
	b.t.Helper()
	return eval[int](b, `tetherDemo.history.length`)
}

// screenshot saves a full-page PNG in TETHER_ARTIFACTS (or a temporary
// directory) and logs its path.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot: %v", err)
		return
	}
	testkit.SaveArtifact(b.t, name+".png", png)
}

// containsInOrder reports whether want appears in got as a subsequence.
func containsInOrder(got []string, want ...string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func count(got []string, s string) int {
	n := 0
	for _, g := range got {
		if g == s {
			n++
		}
	}
	return n
}

// TestBrowser drives the demo page in headless Chromium through tether:
// heartbeats, a backend restart without loss, a dropped client
// connection, and going offline and back.
func TestBrowser(t *testing.T) {
	execPath := testkit.FindChromium(t)
	d := startDemo(t, fastTether)
	b := newBrowser(t, execPath)
	t.Cleanup(func() {
		if t.Failed() {
			b.t = t
			t.Log(b.state())
			b.screenshot("tether-demo-e2e-failed")
		}
	})

	// Small client backoff, so that going offline takes well under a
	// second; frequent pings with a generous pong timeout (see fastTether).
	url := d.PageURL() + "?pingInterval=500&pongTimeout=10000&initialDelay=50&maxDelay=200&maxAttempts=3"
	b.do("open the demo page", 20*time.Second,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`#conn-status[data-state="open"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#upstream-status[data-state="connected"]`)),
	)

	ok := t.Run("heartbeats flow both ways", func(t *testing.T) {
		b.t = t
		b.poll("tether's pings answered and the client's pings ponged", `(() => {
			const s = tetherDemo.snapshot();
			return s.serverPings >= 2 && s.clientPongs >= 2 && s.rttLast !== null;
		})()`, 10*time.Second)
		s := b.snapshot()
		if s.Status != "open" || s.RTTLast == nil || *s.RTTLast < 0 || *s.RTTLast > 5000 {
			t.Errorf("snapshot %+v: want open with a round trip time", s)
		}
		rtt := eval[string](b, `document.getElementById("rtt-last").textContent`)
		if _, err := fmt.Sscanf(rtt, "%f", new(float64)); err != nil {
			t.Errorf("#rtt-last shows %q, want a number", rtt)
		}
		// tether saw the browser's pongs too (RFC pongs, JSON pongs or both).
		waitFor(t, 5*time.Second, "tether to count client pongs", func() bool {
			return counter(t, d, "tether_heartbeat_pongs_received_total", "client") >= 2
		})
	})
	b.t = t
	if !ok {
		return
	}

	ok = t.Run("backend restart loses no message", func(t *testing.T) {
		b.t = t
		// Numbered messages every 50 ms, then all echoed.
		b.do("set the interval", 5*time.Second, chromedp.SetValue(chromedp.ID("auto-interval"), "50"))
		b.click("auto-toggle")
		b.poll("20 numbered messages sent", `tetherDemo.snapshot().sent >= 20`, 10*time.Second)
		b.click("auto-toggle")
		b.poll("every message echoed", `(s => s.pending === 0 && s.ok)(tetherDemo.snapshot())`, 10*time.Second)
		// Messages the old backend got but tether has not seen acknowledged by a
		// heartbeat round trip would be re-sent, and echoed twice (README "Upstream
		// loss, reconnect and the delivery guarantee" allows it); wait for the
		// acknowledgement first.
		waitAcked(t, d)

		conns := d.Backend.Stats().Connections
		mark := b.historyLen()
		b.click("restart-backend")
		b.poll("tether reconnecting to the backend",
			fmt.Sprintf(`tetherDemo.history.slice(%d).some(e => e.kind === "upstream" && e.status === "reconnecting")`, mark), 10*time.Second)
		// Sent while the backend is down: tether buffers them.
		for range 5 {
			b.click("send-numbered")
		}
		if st := d.Backend.Stats(); st.State != StateRestarting {
			t.Logf("note: the backend was already %s when the outage messages were sent", st.State)
		}
		b.poll("upstream connected again and every message echoed", fmt.Sprintf(`(() => {
			const s = tetherDemo.snapshot();
			const h = tetherDemo.history.slice(%d);
			return h.some(e => e.kind === "upstream" && e.status === "connected" && !e.implicit) && s.pending === 0;
		})()`, mark), 15*time.Second)

		s := b.snapshot()
		if s.Sent < 25 || s.Echoed != s.Sent || s.Missing != 0 || s.Duplicated != 0 || s.OutOfOrder != 0 || !s.OK {
			t.Errorf("after the restart: %+v, want every message echoed exactly once, in order", s)
		}
		if s.Opens != 1 || s.Status != "open" {
			t.Errorf("the client reconnected (%d opens, status %s); tether should have kept it open", s.Opens, s.Status)
		}
		h := b.historySince(mark)
		if !containsInOrder(h, "upstream:reconnecting", "upstream:connected") {
			t.Errorf("history %v, want upstream reconnecting then connected", h)
		}
		if text := eval[string](b, `document.getElementById("check").dataset.ok + " " + document.getElementById("check-text").textContent`); text != "true ✓ every message echoed exactly once, in order" {
			t.Errorf("the page's check shows %q", text)
		}
		if st := d.Backend.Stats(); st.Connections != conns+1 || st.Restarts != 1 {
			t.Errorf("backend %+v, want one restart and one new connection", st)
		}
	})
	b.t = t
	if !ok {
		return
	}

	ok = t.Run("dropped connection resumes by itself", func(t *testing.T) {
		b.t = t
		before := b.snapshot()
		if !before.Resumable {
			t.Fatal("the demo's session is not resumable")
		}
		mark := b.historyLen()
		// Messages in flight both ways while the connection is cut.
		for range 5 {
			b.click("send-numbered")
		}
		b.click("drop-connection")
		b.poll("the client open again", fmt.Sprintf(
			`(s => s.status === "open" && s.opens === %d)(tetherDemo.snapshot())`, before.Opens+1), 10*time.Second)
		if h := b.historySince(mark); !containsInOrder(h, "status:reconnecting:3000", "status:connecting", "status:open") {
			t.Errorf("history %v, want reconnecting (3000), connecting, open", h)
		}
		if s := b.snapshot(); s.Resumes != before.Resumes+1 || s.Refusals != 0 {
			t.Errorf("%d resumes and %d refusals, want %d and 0", s.Resumes, s.Refusals, before.Resumes+1)
		}
		for range 3 {
			b.click("send-numbered")
		}
		b.poll("every echo once, in order, across the resume", fmt.Sprintf(
			`(s => s.sent === %d && s.pending === 0 && s.ok && s.missing === 0 && s.duplicated === 0)(tetherDemo.snapshot())`, before.Sent+8), 10*time.Second)
	})
	b.t = t
	if !ok {
		return
	}

	t.Run("offline after max attempts, reconnect button", func(t *testing.T) {
		b.t = t
		mark := b.historyLen()
		b.click("stop-backend")
		// tether tries 10 times (about 2 s), tells the client the upstream
		// is unavailable and closes it with 1014: the client does not retry.
		b.poll("the client closed by tether", `document.getElementById("conn-status").dataset.state === "closed"`, 15*time.Second)
		h := b.historySince(mark)
		if !containsInOrder(h, "upstream:reconnecting", "upstream:unavailable", "status:closed:1014") {
			t.Errorf("history %v, want upstream reconnecting, unavailable, then closed with 1014", h)
		}
		if n := count(h, "status:connecting"); n != 0 {
			t.Errorf("the client retried after tether gave up (%d connecting)", n)
		}

		// With the backend still down, each attempt gets 502 from tether:
		// after maxAttempts=3 the client is offline.
		mark = b.historyLen()
		b.click("reconnect")
		b.do("wait for offline", 15*time.Second,
			chromedp.WaitVisible(chromedp.CSS(`#conn-status[data-state="offline"]`)),
			chromedp.WaitEnabled(chromedp.ID("reconnect")))
		h = b.historySince(mark)
		if n := count(h, "status:reconnecting:1006"); n != 3 {
			t.Errorf("history %v: %d reconnect attempts, want 3", h, n)
		}

		b.click("start-backend")
		b.poll("the backend running", `document.getElementById("backend-status").dataset.state === "running"`, 10*time.Second)
		before := b.snapshot()
		b.click("reconnect")
		b.do("wait for open", 15*time.Second,
			chromedp.WaitVisible(chromedp.CSS(`#conn-status[data-state="open"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#upstream-status[data-state="connected"]`)))
		b.click("send-numbered")
		b.poll("an echo after coming back", fmt.Sprintf(
			`(s => s.sent === %d && s.pending === 0 && s.ok)(tetherDemo.snapshot())`, before.Sent+1), 10*time.Second)
		if disabled := eval[bool](b, `document.getElementById("reconnect").disabled`); !disabled {
			t.Error("the reconnect button is enabled while open")
		}
	})
	b.t = t
	b.screenshot("tether-demo-e2e")
}

// counter returns the value of a tether counter for one leg.
func counter(t *testing.T, d *Demo, name, leg string) float64 {
	t.Helper()
	mfs, err := d.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "leg" && l.GetValue() == leg {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
