package proxy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

// apiSession is one session as GET /sessions shows it (README "Admin
// endpoints").
type apiSession struct {
	ID         string    `json:"id"`
	Started    time.Time `json:"started"`
	AgeSeconds float64   `json:"age_seconds"`
	Remote     string    `json:"remote"`
	State      string    `json:"state"`
	Upstream   string    `json:"upstream"`
	RTTMS      struct {
		Client   *float64 `json:"client"`
		Upstream *float64 `json:"upstream"`
	} `json:"rtt_ms"`
	Retained   int   `json:"retained"`
	Buffered   int   `json:"buffered"`
	HeldBytes  int64 `json:"held_bytes"`
	Reconnects int   `json:"reconnects"`
}

type apiPage struct {
	Sessions   []apiSession `json:"sessions"`
	Count      int          `json:"count"`
	NextCursor string       `json:"next_cursor"`
}

// adminDo sends method path to the admin server and decodes a JSON answer
// into out (when not nil); it returns the status.
func adminDo(t *testing.T, admin *httptest.Server, method, path string, out any) int {
	t.Helper()
	resp, body := testkit.Request(t, method, admin.URL+path)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json; body %s", method, path, ct, body)
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
			t.Fatalf("%s %s: %d with body %q, want a JSON error", method, path, resp.StatusCode, body)
		}
		return resp.StatusCode
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

func startAdmin(t *testing.T, tt *tether) *httptest.Server {
	t.Helper()
	admin := httptest.NewServer(tt.AdminHandler())
	t.Cleanup(admin.Close)
	return admin
}

// dialSession opens a client and returns it with its session id.
func dialSession(t *testing.T, tt *tether) (*websocket.Conn, string) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(tt.URL, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	id := resp.Header.Get("X-Tether-Session")
	if id == "" {
		t.Fatal("no X-Tether-Session")
	}
	return c, id
}

// waitListed polls GET /sessions/{id} until it answers 200 (a session is
// listed once it runs, just after its 101).
func waitListed(t *testing.T, admin *httptest.Server, id string) apiSession {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var s apiSession
		if adminDo(t, admin, "GET", "/sessions/"+id, &s) == http.StatusOK {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s never listed", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func pageIDs(p apiPage) []string {
	var ids []string
	for _, s := range p.Sessions {
		ids = append(ids, s.ID)
	}
	return ids
}

// GET /sessions lists running sessions newest first, pages with limit and
// an opaque cursor (which stays valid when sessions of earlier pages end),
// and GET /sessions/{id} shows one.
func TestAdminSessionsList(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	admin := startAdmin(t, tt)
	backendHost := strings.TrimPrefix(b.URL, "ws://")

	var p apiPage
	if adminDo(t, admin, "GET", "/sessions", &p) != http.StatusOK || len(p.Sessions) != 0 || p.Count != 0 || p.NextCursor != "" {
		t.Fatalf("no sessions yet: got %+v", p)
	}

	const n = 5
	var ids []string
	conns := map[string]*websocket.Conn{}
	for range n {
		c, id := dialSession(t, tt)
		waitListed(t, admin, id) // so that start order is the dial order
		ids = append(ids, id)
		conns[id] = c
	}
	newestFirst := slices.Clone(ids)
	slices.Reverse(newestFirst)

	if adminDo(t, admin, "GET", "/sessions", &p) != http.StatusOK {
		t.Fatal("GET /sessions failed")
	}
	if got := pageIDs(p); !slices.Equal(got, newestFirst) || p.Count != n || p.NextCursor != "" {
		t.Fatalf("GET /sessions: ids %v count %d next %q, want %v, %d, no cursor", got, p.Count, p.NextCursor, newestFirst, n)
	}
	for i, s := range p.Sessions {
		c := conns[s.ID]
		if s.Remote != c.LocalAddr().String() || s.State != "connected" || s.Upstream != backendHost || s.Reconnects != 0 ||
			s.Buffered != 0 || s.Retained != 0 || s.AgeSeconds < 0 || s.Started.IsZero() {
			t.Errorf("session %d: %+v; want remote %s, connected, upstream %s", i, s, c.LocalAddr(), backendHost)
		}
		if i > 0 && s.Started.After(p.Sessions[i-1].Started) {
			t.Errorf("session %d started after the one listed before it", i)
		}
	}

	// Pages of 2: [4 3] [2 1] [0]; the newest session ending between two
	// pages does not move the cursor.
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		path := "/sessions?limit=2"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		var p apiPage
		if adminDo(t, admin, "GET", path, &p) != http.StatusOK {
			t.Fatalf("GET %s failed", path)
		}
		got = append(got, pageIDs(p)...)
		if page == 0 {
			conns[ids[n-1]].Close()
			coreWaitSessions(t, tt, n-1)
		}
		if p.NextCursor == "" {
			if len(p.Sessions) != 1 {
				t.Errorf("last page has %d sessions, want 1", len(p.Sessions))
			}
			break
		}
		if len(p.Sessions) != 2 {
			t.Fatalf("page %d has %d sessions and a cursor", page, len(p.Sessions))
		}
		cursor = p.NextCursor
	}
	if !slices.Equal(got, newestFirst) {
		t.Fatalf("pages gave %v, want %v", got, newestFirst)
	}

	var one apiSession
	if adminDo(t, admin, "GET", "/sessions/"+ids[1], &one) != http.StatusOK || one.ID != ids[1] || one.Remote != conns[ids[1]].LocalAddr().String() {
		t.Fatalf("GET /sessions/%s = %+v", ids[1], one)
	}
	if st := adminDo(t, admin, "GET", "/sessions/"+ids[n-1], nil); st != http.StatusNotFound {
		t.Errorf("GET of an ended session: %d, want 404", st)
	}
	if st := adminDo(t, admin, "GET", "/sessions/nosuchsession", nil); st != http.StatusNotFound {
		t.Errorf("GET of an unknown id: %d, want 404", st)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=", "limit=1.5",
		"cursor=", "cursor=%%%", "cursor=AAAAAAAAAAA", "cursor=abc", "limit=2&cursor=" + strings.Repeat("A", 20)} {
		if st := adminDo(t, admin, "GET", "/sessions?"+q, nil); st != http.StatusBadRequest {
			t.Errorf("GET /sessions?%s: %d, want 400", q, st)
		}
	}
	if adminDo(t, admin, "GET", "/sessions?limit=1000", &p) != http.StatusOK || len(p.Sessions) != n-1 {
		t.Errorf("limit=1000: %d sessions, want %d", len(p.Sessions), n-1)
	}
}

// DELETE /sessions/{id} closes the client with 1008 (or the code given)
// and the upstream with 1001; bad codes are 400 and unknown ids 404.
func TestAdminDeleteSession(t *testing.T) {
	t.Parallel()
	ends := make(chan coreEnd, 4)
	b := newBackend(t, nil, coreEchoRecorder(ends))
	tt := startTether(t, b.URL, nil)
	admin := startAdmin(t, tt)

	c1, id1 := dialSession(t, tt)
	c2, id2 := dialSession(t, tt)
	waitListed(t, admin, id1)
	waitListed(t, admin, id2)

	for _, q := range []string{"code=1002", "code=1003", "code=1005", "code=1006", "code=1007", "code=1009", "code=1010",
		"code=1015", "code=999", "code=2999", "code=5000", "code=abc", "code=", "reason=" + strings.Repeat("x", 124), "reason=%ff"} {
		if st := adminDo(t, admin, "DELETE", "/sessions/"+id1+"?"+q, nil); st != http.StatusBadRequest {
			t.Errorf("DELETE ?%s: %d, want 400", q, st)
		}
	}
	if st := adminDo(t, admin, "DELETE", "/sessions/nosuchsession", nil); st != http.StatusNotFound {
		t.Errorf("DELETE of an unknown id: %d, want 404", st)
	}
	coreEcho(t, c1, "still open after refused DELETEs")

	var closed struct {
		ID     string `json:"id"`
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	if st := adminDo(t, admin, "DELETE", "/sessions/"+id1, &closed); st != http.StatusOK || closed.ID != id1 || closed.Code != 1008 {
		t.Fatalf("DELETE: %d %+v, want 200 with code 1008", st, closed)
	}
	coreWantClose(t, c1, 1008, "closed by operator")
	coreWantEnd(t, ends, 1001, "*")

	if st := adminDo(t, admin, "DELETE", "/sessions/"+id2+"?code=4001&reason=bye", &closed); st != http.StatusOK || closed.Code != 4001 {
		t.Fatalf("DELETE ?code=4001: %d %+v", st, closed)
	}
	coreWantClose(t, c2, 4001, "bye")
	coreWantEnd(t, ends, 1001, "*")
	coreWaitSessions(t, tt, 0)
	if st := adminDo(t, admin, "DELETE", "/sessions/"+id2, nil); st != http.StatusNotFound {
		t.Errorf("DELETE of a closed session: %d, want 404", st)
	}

	// Every code a server may send is accepted.
	for _, code := range []int{1000, 1001, 1011, 1012, 1013, 1014, 3000, 4999} {
		c, id := dialSession(t, tt)
		waitListed(t, admin, id)
		if st := adminDo(t, admin, "DELETE", fmt.Sprintf("/sessions/%s?code=%d", id, code), nil); st != http.StatusOK {
			t.Fatalf("DELETE ?code=%d: %d", code, st)
		}
		coreWantClose(t, c, code, "closed by operator")
		coreWantEnd(t, ends, 1001, "*")
	}
}

// A session's entry shows its round-trip times, what it holds retained
// and buffered, and its reconnects, as they change through an upstream
// outage.
func TestAdminSessionInfo(t *testing.T) {
	t.Parallel()
	var refuse atomic.Bool
	var conns atomic.Int32
	drop := make(chan *websocket.Conn, 4)
	var upgrader websocket.Upgrader
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			// Not a 4xx: tether keeps trying.
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		conns.Add(1)
		drop <- c
		echo(c, r)
	}))
	t.Cleanup(func() {
		b.CloseClientConnections()
		b.Close()
	})
	tt := startTetherOpts(t, "ws"+strings.TrimPrefix(b.URL, "http"), proxy.Options{Jitter: rcTopJitter}, func(c *proxy.Config) {
		c.Session.ClientHeartbeat.Mode = heartbeat.ModeWS // gorilla answers RFC pings only
		c.Session.ClientHeartbeat.Interval = 50 * time.Millisecond
		// Upstream JSON pings far apart (json mode sends no
		// acknowledgement pings): nothing is acknowledged during the
		// test, so what was sent stays retained.
		c.Session.UpstreamHeartbeat.Mode = heartbeat.ModeJSON
		c.Session.UpstreamHeartbeat.Interval = time.Minute
		c.Session.UpstreamHeartbeat.Timeout = 3 * time.Minute
		c.Session.Reconnect.InitialDelay = 20 * time.Millisecond
		c.Session.Reconnect.MaxDelay = 20 * time.Millisecond
		c.Session.Reconnect.MaxAttempts = 0
	})
	admin := startAdmin(t, tt)
	c, id := dialSession(t, tt)
	first := <-drop
	// gorilla answers tether's pings while it reads.
	got := make(chan string, 16)
	go func() {
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			got <- string(p)
		}
	}()
	send := func(msg string) {
		t.Helper()
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	send("a")
	if m := coreRecv(t, got, 5*time.Second, "echo of a"); m != "a" {
		t.Fatalf("echo %q", m)
	}
	s := waitSession(t, admin, id, "a client round trip", func(s apiSession) bool { return s.RTTMS.Client != nil })
	if *s.RTTMS.Client <= 0 || *s.RTTMS.Client > 5000 || s.RTTMS.Upstream != nil || s.Retained != 1 || s.Buffered != 0 || s.HeldBytes != 1 || s.State != "connected" {
		t.Fatalf("after one message: %+v; want a client RTT, no upstream RTT yet, 1 retained (1 byte)", s)
	}

	refuse.Store(true)
	_ = first.UnderlyingConn().Close() // lost without a Close: 1006, a reconnect
	waitSession(t, admin, id, "reconnecting", func(s apiSession) bool { return s.State == "reconnecting" })
	send("bb")
	send("ccc")
	s = waitSession(t, admin, id, "two buffered", func(s apiSession) bool { return s.Buffered == 2 })
	if s.Retained != 1 || s.HeldBytes != 6 || s.Reconnects != 0 || s.State != "reconnecting" {
		t.Fatalf("while reconnecting: %+v; want 1 retained (sent on the lost connection), 2 buffered, 6 bytes", s)
	}

	refuse.Store(false)
	<-drop
	s = waitSession(t, admin, id, "connected again", func(s apiSession) bool { return s.State == "connected" })
	if s.Reconnects != 1 || s.Retained != 3 || s.Buffered != 0 || s.HeldBytes != 6 {
		t.Fatalf("after the reconnect: %+v; want 1 reconnect and all 3 re-sent, retained", s)
	}
	// "a" again: it was not acknowledged on the lost connection.
	for _, want := range []string{"a", "bb", "ccc"} {
		if m := coreRecv(t, got, 5*time.Second, "echo of "+want); m != want {
			t.Fatalf("echo %q, want %q", m, want)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("backend saw %d connections, want 2", n)
	}
}

// waitSession polls GET /sessions/{id} until ok holds.
func waitSession(t *testing.T, admin *httptest.Server, id, what string, ok func(apiSession) bool) apiSession {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var s apiSession
		if adminDo(t, admin, "GET", "/sessions/"+id, &s) != http.StatusOK {
			t.Fatalf("session %s gone while waiting for %s", id, what)
		}
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: session is %+v", what, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// README "Admin endpoints": a session is listed before it relays its first
// message, so a lookup made after an echo finds it. The session is held
// between its Relay and its listing while it relays a round trip; the
// lookup made then must wait for the listing (it takes the server's
// lock, which the listing holds), not answer 404.
func TestAdminSessionListedBeforeItRelays(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	admin := startAdmin(t, tt)
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	proxy.SetRelayed(tt.Server, func() {
		once.Do(func() {
			close(held)
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		})
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	c, id := dialSession(t, tt)
	<-held
	coreEcho(t, c, "first") // relayed while held
	got := make(chan int, 1)
	go func() {
		resp, err := http.Get(admin.URL + "/sessions/" + id)
		if err != nil {
			got <- -1
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	select {
	case st := <-got:
		t.Fatalf("GET /sessions/{id} after the first echo answered %d before the session was listed", st)
	case <-time.After(200 * time.Millisecond):
		// Waiting for the listing, as it should.
	}
	close(release)
	if st := <-got; st != http.StatusOK {
		t.Fatalf("GET /sessions/{id} after the first echo: %d, want 200", st)
	}
}
