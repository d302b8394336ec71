package interop

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/client"
	"github.com/tether-proxy/tether/internal/faultnet"
	"github.com/tether-proxy/tether/internal/testkit"
)

// resumePage runs tether.js in the page: it streams n numbered messages
// through tether to an echo backend, at most 8 unanswered and none past
// window.limit (which the test raises after each cut, so that the
// stream cannot end before a cut however late the test sees its mark),
// and collects the echoes and the session events.
const resumePage = `<!doctype html><meta charset="utf-8"><title>tether resume</title><script type="module">
import { TetherClient } from "/tether.js";
window.got = [];
window.sessions = [];
window.limit = Infinity;
window.run = (url, n) => new Promise((resolve) => {
  const c = new TetherClient(url, { initialDelay: 20, maxDelay: 100, maxAttempts: 0, pingInterval: 0 });
  let sent = 0;
  const pump = () => { while (sent < Math.min(n, window.limit) && sent - window.got.length < 8) c.send("c" + sent++); };
  window.pump = pump;
  c.on("session", (e) => window.sessions.push({ resumed: e.resumed, refused: e.refused }));
  c.on("status", (e) => { if (e.status === "open") pump(); });
  c.on("message", (e) => {
    window.got.push(e.data);
    if (window.got.length >= n) { c.close(); resolve(window.got); } else pump();
  });
  c.connect();
});
window.ready = true;
</script>`

// TestChromiumResume: the page's connection is cut (reset between the
// browser and tether, not closed) twice mid-stream; tether.js resumes each
// time, and nothing is missing or doubled either way, with one backend
// connection throughout (README "Client session resume").
func TestChromiumResume(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, testkit.FindChromium(t))
	var mu sync.Mutex
	var conns [][]string
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/page":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(resumePage))
			return
		case "/tether.js":
			js, _ := client.Files.ReadFile("tether.js")
			w.Header().Set("Content-Type", "text/javascript")
			_, _ = w.Write(js)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		mu.Lock()
		i := len(conns)
		conns = append(conns, nil)
		mu.Unlock()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			mu.Lock()
			conns[i] = append(conns[i], string(p))
			mu.Unlock()
			if c.WriteMessage(mt, p) != nil {
				return
			}
		}
	}))
	t.Cleanup(be.Close)
	tt := startTether(t, "ws"+strings.TrimPrefix(be.URL, "http")+"/app", nil)
	relay, err := faultnet.New(strings.TrimPrefix(tt.URL, "ws://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })

	nav, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(nav, chromedp.Navigate(be.URL+"/page")); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	if _, err := chromedp.Run(nav, chromedp.Poll[bool]("window.ready === true")); err != nil {
		t.Fatalf("the page's module did not load: %v", err)
	}
	const n = 600
	cuts := []int{n / 3, 2 * n / 3}
	// The page may send 8 past each cut's mark until that cut's resume:
	// messages in flight at the cut, and no end of the stream before it.
	js[bool](t, ctx, fmt.Sprintf(`window.limit = %d; window.result = window.run(%q, %d); true`, cuts[0]+8, "ws://"+relay.Addr()+"/ws", n))
	for i, at := range cuts {
		if _, err := chromedp.Run(nav, chromedp.Poll[bool](fmt.Sprintf("window.got.length >= %d", at), chromedp.WithPollingInterval(time.Millisecond))); err != nil {
			t.Fatalf("waiting for %d messages: %v", at, err)
		}
		relay.ResetAll() // cut, not closed: the browser sees 1006
		// The first session, then one per cut so far.
		if _, err := chromedp.Run(nav, chromedp.Poll[bool](fmt.Sprintf("window.sessions.length >= %d", i+2))); err != nil {
			t.Fatalf("waiting for the session after cut %d: %v", i+1, err)
		}
		limit := n
		if i+1 < len(cuts) {
			limit = cuts[i+1] + 8
		}
		js[bool](t, ctx, fmt.Sprintf(`window.limit = %d; window.pump(); true`, limit))
	}
	got := js[[]string](t, ctx, `window.result`)
	sessions := js[[]map[string]bool](t, ctx, `window.sessions`)
	for i, m := range got {
		if m != "c"+strconv.Itoa(i) {
			t.Fatalf("the page's message %d is %q: a gap or a duplicate", i, m)
		}
	}
	if len(got) != n {
		t.Fatalf("the page got %d messages, want %d", len(got), n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 1 {
		t.Fatalf("the backend saw %d connections, want 1 (sessions %v)", len(conns), sessions)
	}
	for i, m := range conns[0] {
		if m != "c"+strconv.Itoa(i) {
			t.Fatalf("the backend's message %d is %q: a gap or a duplicate", i, m)
		}
	}
	if len(conns[0]) != n {
		t.Fatalf("the backend got %d messages, want %d", len(conns[0]), n)
	}
	resumed := 0
	for _, s := range sessions {
		if s["refused"] {
			t.Fatalf("a resume was refused: %v", sessions)
		}
		if s["resumed"] {
			resumed++
		}
	}
	if resumed < 2 {
		t.Fatalf("sessions %v: want 2 resumes", sessions)
	}
	t.Logf("sessions: %v", sessions)
}
