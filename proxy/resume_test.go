package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/internal/faultnet"
	"github.com/tether-proxy/tether/proxy"
)

// resumeClient speaks README "Client session resume" by hand over
// gorilla/websocket: it counts the data messages it receives, keeps what
// it sent until tether's ack, acknowledges, and resumes with its token
// and count.
type resumeClient struct {
	t      *testing.T
	url    string // where it dials (tether, or a relay in front of it)
	origin string
	c      *websocket.Conn
	dialer *websocket.Dialer // nil: websocket.DefaultDialer
	hdr    http.Header       // the last handshake response's headers

	token   string
	resumed bool     // the last session message said resumed
	recv    uint64   // data messages received
	ackSent uint64   // recv as last acknowledged
	sent    [][]byte // every data message sent; sent[i] is message i
	acked   uint64   // tether's count of our messages
	got     []string // data messages received, in order
}

func newResumeClient(t *testing.T, url, origin string) *resumeClient {
	rc := &resumeClient{t: t, url: url, origin: origin}
	t.Cleanup(func() {
		if rc.c != nil {
			rc.c.Close()
		}
	})
	return rc
}

// openStreamed opens a resumable session at url and streams n round
// trips on it.
func openStreamed(t *testing.T, url, origin string, n int) *resumeClient {
	t.Helper()
	rc := newResumeClient(t, url, origin)
	rc.open()
	rc.stream(n, nil, "")
	return rc
}

func (rc *resumeClient) header() http.Header {
	if rc.origin == "" {
		return nil
	}
	return http.Header{"Origin": {rc.origin}}
}

// open starts a new resumable session; it fails the test unless the
// first message is a tether.session with resumed false.
func (rc *resumeClient) open() {
	rc.t.Helper()
	if err := rc.dial(rc.url + "/?tether_resume=new"); err != nil {
		rc.t.Fatal(err)
	}
	if rc.resumed {
		rc.t.Fatal("a new session said resumed:true")
	}
}

// dial connects to u and reads the session message.
func (rc *resumeClient) dial(u string) error {
	if rc.c != nil {
		rc.c.Close()
	}
	d := rc.dialer
	if d == nil {
		d = websocket.DefaultDialer
	}
	c, resp, err := d.Dial(u, rc.header())
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return fmt.Errorf("dial: %v (status %d)", err, status)
	}
	rc.c, rc.hdr = c, resp.Header
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, p, err := c.ReadMessage()
	if err != nil {
		return fmt.Errorf("session message: %v", err)
	}
	var m struct {
		Type    string  `json:"type"`
		Token   string  `json:"token"`
		Resumed *bool   `json:"resumed"`
		Ack     *uint64 `json:"ack"`
	}
	if err := json.Unmarshal(p, &m); err != nil || m.Type != "tether.session" || len(m.Token) < 22 || m.Resumed == nil || m.Ack == nil {
		return fmt.Errorf("first message %q is not a tether.session message", p)
	}
	rc.token, rc.resumed = m.Token, *m.Resumed
	if rc.resumed {
		rc.acked = *m.Ack
	} else {
		rc.acked, rc.recv, rc.ackSent, rc.sent, rc.got = 0, 0, 0, nil, nil
	}
	return nil
}

// resume resumes with the token and count, and re-sends what tether has
// not received. It reports whether tether resumed the session.
func (rc *resumeClient) resume(u string) bool {
	rc.t.Helper()
	if u == "" {
		u = rc.url
	}
	if err := rc.dial(u + "/?tether_resume=" + rc.token + "&tether_ack=" + strconv.FormatUint(rc.recv, 10)); err != nil {
		rc.t.Fatal(err)
	}
	if !rc.resumed {
		return false
	}
	if rc.acked > uint64(len(rc.sent)) {
		rc.t.Fatalf("tether counts %d messages, %d were sent", rc.acked, len(rc.sent))
	}
	for _, p := range rc.sent[rc.acked:] {
		if err := rc.c.WriteMessage(websocket.TextMessage, p); err != nil {
			return true // the next read fails and resumes again
		}
	}
	rc.ackSent = 0 // acknowledge on the new connection
	return true
}

// send sends a data message, kept until tether acknowledges it.
func (rc *resumeClient) send(p string) error {
	rc.sent = append(rc.sent, []byte(p))
	return rc.c.WriteMessage(websocket.TextMessage, []byte(p))
}

// next reads until a data message arrives, handling tether.ack, or an
// error.
func (rc *resumeClient) next(d time.Duration) (string, error) {
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	for {
		_, p, err := rc.c.ReadMessage()
		if err != nil {
			return "", err
		}
		if bytes.Contains(p, []byte(`"tether.ack"`)) {
			var m struct {
				Ack uint64 `json:"ack"`
			}
			if json.Unmarshal(p, &m) == nil && m.Ack > rc.acked {
				rc.acked = m.Ack
			}
			continue
		}
		if bytes.Contains(p, []byte(`"tether.session"`)) {
			rc.t.Fatalf("a tether.session message mid-session: %s", p)
		}
		rc.recv++
		rc.got = append(rc.got, string(p))
		if rc.recv-rc.ackSent >= 16 {
			rc.ackSent = rc.recv
			_ = rc.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"tether.ack","ack":`+strconv.FormatUint(rc.recv, 10)+`}`))
		}
		return string(p), nil
	}
}

// numberedBackend echoes each client message "c<i>" as "u<i>" and keeps
// what it received, per connection.
type numberedBackend struct {
	*backend
	mu   sync.Mutex
	recv [][]string // per connection
	// dedupe: answer each c<i> once across connections, in order (an
	// application that numbers its messages; across an upstream
	// reconnect tether may send the last round trip's messages again).
	dedupe bool
	next   int
	gap    string
	joined chan struct{} // a value per upstream connection the backend got
}

func newNumberedBackend(t *testing.T) *numberedBackend {
	nb := &numberedBackend{}
	nb.init(t)
	return nb
}

func (nb *numberedBackend) init(t *testing.T) {
	nb.joined = make(chan struct{}, 1024)
	anyOrigin := &websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	nb.backend = newBackend(t, anyOrigin, func(c *websocket.Conn, _ *http.Request) {
		nb.mu.Lock()
		i := len(nb.recv)
		nb.recv = append(nb.recv, nil)
		nb.mu.Unlock()
		select {
		case nb.joined <- struct{}{}:
		default: // full: a waiter has values to wake on and counts recv
		}
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			nb.mu.Lock()
			nb.recv[i] = append(nb.recv[i], string(p))
			skip := false
			if after, ok := strings.CutPrefix(string(p), "c"); ok {
				p = []byte("u" + after)
				if nb.dedupe {
					k, _ := strconv.Atoi(after)
					switch {
					case k < nb.next:
						skip = true
					case k > nb.next && nb.gap == "":
						nb.gap = fmt.Sprintf("c%d after c%d", k, nb.next-1)
					}
					nb.next = max(nb.next, k+1)
				}
			}
			nb.mu.Unlock()
			if skip {
				continue
			}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	})
}

// connections waits until the backend's handler has taken n upstream
// connections (tether's dial completes when the backend's upgrade
// response is written, a moment before its handler runs), or 5 s, and
// returns how many it has; more than n are counted too.
func (nb *numberedBackend) connections(n int) int {
	timeout := time.After(5 * time.Second)
	for {
		nb.mu.Lock()
		got := len(nb.recv)
		nb.mu.Unlock()
		if got >= n {
			return got
		}
		select {
		case <-nb.joined:
		case <-timeout:
			return got
		}
	}
}

func (nb *numberedBackend) received() [][]string {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	out := make([][]string, len(nb.recv))
	for i := range nb.recv {
		out[i] = append([]string(nil), nb.recv[i]...)
	}
	return out
}

// stream sends c0…c(n-1), keeping up to 8 unanswered, and reads u0…u(n-1);
// drop(k) runs after the k-th answer and may cut the connection. Every
// read error resumes. It fails the test on a gap, a duplicate or a
// refusal.
func (rc *resumeClient) stream(n int, drop func(k int), resumeURL string) {
	rc.t.Helper()
	for len(rc.data()) < n {
		for len(rc.sent) < n && len(rc.sent)-len(rc.data()) < 8 {
			if err := rc.send("c" + strconv.Itoa(len(rc.sent))); err != nil {
				break // the read below fails too
			}
		}
		before := len(rc.got)
		if _, err := rc.next(5 * time.Second); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				rc.t.Fatalf("nothing arrived for 5 s after %d messages: lost messages", len(rc.data()))
			}
			if !rc.resume(resumeURL) {
				rc.t.Fatalf("resume refused after %d messages (%v)", len(rc.got), err)
			}
			continue
		}
		if drop != nil && len(rc.got) > before {
			drop(len(rc.got))
		}
	}
	checkNumbered(rc.t, rc.data(), n, "u")
}

// data is what the client received less tether's upstream status
// messages.
func (rc *resumeClient) data() []string {
	var out []string
	for _, m := range rc.got {
		if !strings.HasPrefix(m, `{"type":"upstream"`) {
			out = append(out, m)
		}
	}
	return out
}

func checkNumbered(t *testing.T, got []string, n int, prefix string) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d messages, want %d: %v", len(got), n, got)
	}
	for i, m := range got {
		if m != prefix+strconv.Itoa(i) {
			t.Fatalf("message %d is %q: a gap or a duplicate", i, m)
		}
	}
}

func newRelay(t *testing.T, addr string) *faultnet.Relay {
	t.Helper()
	r, err := faultnet.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestResumeThroughDrops: numbered messages both ways survive client-leg
// resets mid-stream, 100 in a row, with one upstream connection
// throughout, and the tether_ parameters never reach the backend.
func TestResumeThroughDrops(t *testing.T) {
	nb := newNumberedBackend(t)
	tt := startTether(t, nb.URL, nil)
	relay := newRelay(t, tt.Addr)
	rc := newResumeClient(t, "ws://"+relay.Addr(), "")
	rc.open()
	const n = 1200
	drops := 0
	rc.stream(n, func(k int) {
		if k%10 == 5 && drops < 100 {
			drops++
			relay.ResetAll()
		}
	}, "")
	if drops != 100 {
		t.Fatalf("%d drops, want 100", drops)
	}
	got := nb.received()
	if len(got) != 1 {
		t.Fatalf("the backend saw %d connections, want 1", len(got))
	}
	checkNumbered(t, got[0], n, "c")
	if q := nb.lastRequest().URL.RawQuery; strings.Contains(q, "tether_") {
		t.Errorf("the backend got the query %q", q)
	}
	if v := metric(t, tt, "tether_client_resumes_total", "result=resumed"); v < 100 {
		t.Errorf("tether_client_resumes_total{resumed} = %v, want at least 100", v)
	}
	if v := metric(t, tt, "tether_client_resumes_total", "result=refused"); v != 0 {
		t.Errorf("tether_client_resumes_total{refused} = %v, want 0", v)
	}
}

// TestResumeHalfOpen: the client's old connection is blackholed (tether
// still thinks it alive); a resume over a new connection takes over at
// once and the old leg is closed.
func TestResumeHalfOpen(t *testing.T) {
	nb := newNumberedBackend(t)
	tt := startTether(t, nb.URL, nil)
	relay := newRelay(t, tt.Addr)
	rc := newResumeClient(t, "ws://"+relay.Addr(), "")
	rc.open()
	const n = 200
	var old *websocket.Conn
	rc.stream(n, func(k int) {
		if k == 50 {
			relay.Stall()
			// Messages sent into the blackhole: tether never gets
			// them, the resume re-sends them.
			for range 4 {
				_ = rc.send("c" + strconv.Itoa(len(rc.sent)))
			}
			old, rc.c = rc.c, nil // given up, not closed: tether must close it
			t.Cleanup(func() { old.Close() })
			if !rc.resume(tt.URL) {
				t.Fatal("resume over a half-open leg refused")
			}
		}
	}, tt.URL)
	if old == nil {
		t.Fatal("never stalled")
	}
	got := nb.received()
	if len(got) != 1 {
		t.Fatalf("the backend saw %d connections, want 1", len(got))
	}
	checkNumbered(t, got[0], n, "c")
	// Once the blackhole lets go, the old connection turns out closed by
	// tether (it would otherwise live until its heartbeat timeout).
	relay.Resume()
	_ = old.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := old.ReadMessage()
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the half-open leg is still open at tether")
		}
		break
	}
	if v := metric(t, tt, "tether_sessions_detached"); v != 0 {
		t.Errorf("tether_sessions_detached = %v, want 0", v)
	}
}

// TestResumeRefusals: a used token, another Origin, an ack out of range
// and an unknown token are refused: a new session with resumed:false, a
// new upstream connection.
func TestResumeRefusals(t *testing.T) {
	nb := newNumberedBackend(t)
	tt := startTether(t, nb.URL, nil)
	rc := openStreamed(t, tt.URL, "https://app.example", 10)
	first := rc.token

	// A good resume: the token changes.
	if !rc.resume("") {
		t.Fatal("resume refused")
	}
	if rc.token == first {
		t.Fatal("the token did not change on a resume")
	}
	second := rc.token
	// The old token is used up.
	other := newResumeClient(t, tt.URL, "https://app.example")
	other.token, other.recv = first, rc.recv
	if other.resume("") {
		t.Fatal("a used token resumed")
	}
	// Another Origin.
	evil := newResumeClient(t, tt.URL, "https://evil.example")
	evil.token, evil.recv = second, rc.recv
	if evil.resume("") {
		t.Fatal("a resume from another Origin was accepted")
	}
	// An ack past what tether sent.
	rc.recv += 5
	if rc.resume("") {
		t.Fatal("an ack out of range was accepted")
	}
	// An unknown token.
	guess := newResumeClient(t, tt.URL, "")
	guess.token = "AAAAAAAAAAAAAAAAAAAAAAAA"
	if guess.resume("") {
		t.Fatal("a guessed token resumed")
	}
	if v := metric(t, tt, "tether_client_resumes_total", "result=refused"); v != 4 {
		t.Errorf("tether_client_resumes_total{refused} = %v, want 4", v)
	}
	// Each refusal is a new session with its own upstream connection.
	if got := nb.connections(5); got != 5 {
		t.Errorf("the backend saw %d connections, want 5", got)
	}
}

// TestResumeOffStripsParameters: with TETHER_RESUME_WINDOW=0, tether_
// parameters are removed and no tether.session message is sent.
func TestResumeOffStripsParameters(t *testing.T) {
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.Resume.Window = 0 })
	c := dial(t, tt.URL+"/x?a=1&tether_resume=new&b=2&tether_ack=3", nil)
	if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	_, p, err := c.ReadMessage()
	if err != nil || string(p) != "hello" {
		t.Fatalf("first message %q, %v; want the echo", p, err)
	}
	if q := b.lastRequest().URL.RawQuery; q != "a=1&b=2" {
		t.Errorf("the backend got the query %q, want a=1&b=2", q)
	}
}

// endsBackend reports the close code each upstream connection ends with
// (-1: broken without a Close) and runs f on it first.
func endsBackend(t *testing.T, f func(c *websocket.Conn)) (*backend, chan int) {
	ends := make(chan int, 16)
	anyOrigin := &websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	b := newBackend(t, anyOrigin, func(c *websocket.Conn, _ *http.Request) {
		if f != nil {
			f(c)
		}
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				code, _ := closeCode(err)
				ends <- code
				return
			}
		}
	})
	return b, ends
}

// TestResumeExpiry: a detached session whose client does not come back
// within TETHER_RESUME_WINDOW ends (upstream Close 1001, nothing held),
// and its token is refused afterwards.
func TestResumeExpiry(t *testing.T) {
	b, ends := endsBackend(t, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.Resume.Window = 200 * time.Millisecond })
	relay := newRelay(t, tt.Addr)
	rc := newResumeClient(t, "ws://"+relay.Addr(), "")
	rc.open()
	relay.ResetAll()
	rcWaitMetric(t, tt, 1, "tether_sessions_detached")
	if code := coreRecv(t, ends, 10*time.Second, "upstream end"); code != 1001 {
		t.Fatalf("the upstream got %d, want 1001", code)
	}
	rcWaitMetric(t, tt, 0, "tether_sessions_detached")
	if rc.resume(tt.URL) {
		t.Fatal("an expired session resumed")
	}
}

// TestResumeOverflowWhileDetached: upstream messages held for a detached
// client pass TETHER_RESUME_MAX_MESSAGES: the session ends at once
// (upstream Close 1001).
func TestResumeOverflowWhileDetached(t *testing.T) {
	burst := make(chan struct{})
	b, ends := endsBackend(t, func(c *websocket.Conn) {
		<-burst
		for i := range 10 {
			if c.WriteMessage(websocket.TextMessage, []byte("m"+strconv.Itoa(i))) != nil {
				return
			}
		}
	})
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.Resume.MaxMessages = 4 })
	relay := newRelay(t, tt.Addr)
	rc := newResumeClient(t, "ws://"+relay.Addr(), "")
	rc.open()
	relay.ResetAll()
	rcWaitMetric(t, tt, 1, "tether_sessions_detached")
	close(burst)
	if code := coreRecv(t, ends, 10*time.Second, "upstream end"); code != 1001 {
		t.Fatalf("the upstream got %d, want 1001", code)
	}
	rcWaitMetric(t, tt, 0, "tether_sessions_detached")
}

// TestResumeDrain: on a drain, a detached session ends at once (upstream
// 1001) and an attached resumable one closes with 1012.
func TestResumeDrain(t *testing.T) {
	b, ends := endsBackend(t, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.ShutdownSpread = 0 })
	relay := newRelay(t, tt.Addr)
	gone := newResumeClient(t, "ws://"+relay.Addr(), "")
	gone.open()
	relay.ResetAll()
	rcWaitMetric(t, tt, 1, "tether_sessions_detached")
	here := newResumeClient(t, tt.URL, "")
	here.open()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tt.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if code := coreRecv(t, ends, 5*time.Second, "upstream end"); code != 1001 {
			t.Fatalf("an upstream got %d, want 1001", code)
		}
	}
	if _, err := here.next(5 * time.Second); err == nil {
		t.Fatal("a data message after the drain")
	} else if code, _ := closeCode(err); code != 1012 {
		t.Fatalf("the attached client got %v, want 1012", err)
	}
}

// TestResumeRace: two resumes with the same token at once: one resumes,
// the other gets a new session.
func TestResumeRace(t *testing.T) {
	nb := newNumberedBackend(t)
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tt := startTetherOpts(t, nb.URL, proxy.Options{Logger: log}, nil)
	rc := openStreamed(t, tt.URL, "", 20)
	results := make(chan bool, 2)
	for range 2 {
		c := newResumeClient(t, tt.URL, "")
		c.token, c.recv, c.sent = rc.token, rc.recv, rc.sent
		go func() { results <- c.resume("") }()
	}
	a, b := <-results, <-results
	if a == b {
		t.Fatalf("resumed %v and %v: want exactly one; tether's log:\n%s", a, b, logs.String())
	}
	if v := metric(t, tt, "tether_client_resumes_total", "result=refused"); v != 1 {
		t.Errorf("refused %v, want 1; tether's log:\n%s", v, logs.String())
	}
}

// TestResumeStaleLookupCannotTakeOver: a handshake that looked the token
// up just before another resume used it is refused, and the client leg
// that resume attached stays open: a used token touches nothing.
func TestResumeStaleLookupCannotTakeOver(t *testing.T) {
	nb := newNumberedBackend(t)
	tt := startTether(t, nb.URL, nil)
	rc := openStreamed(t, tt.URL, "", 20)

	// The stale handshake stops right after its lookup until the other
	// resume has completed.
	var calls atomic.Int32
	arrived, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(letGo) // a failed test does not leave the handshake held
	proxy.SetResumeLookedUp(tt.Server, func() {
		if calls.Add(1) == 1 {
			close(arrived)
			<-release
		}
	})
	stale := newResumeClient(t, tt.URL, "")
	stale.token, stale.recv, stale.sent = rc.token, rc.recv, rc.sent
	staleResumed := make(chan bool, 1)
	go func() { staleResumed <- stale.resume("") }()
	<-arrived
	if !rc.resume("") {
		t.Fatal("the first resume was refused")
	}
	letGo()
	if <-staleResumed {
		t.Fatal("a handshake with a used token resumed the session")
	}
	// The resumed leg is still attached: a round trip on it, with no
	// resume in between.
	if err := rc.send("c20"); err != nil {
		t.Fatal(err)
	}
	if m, err := rc.next(5 * time.Second); err != nil || m != "u20" {
		t.Fatalf("after the stale handshake the resumed leg read %q, %v: want u20", m, err)
	}
	if v := metric(t, tt, "tether_client_resumes_total", "result=refused"); v != 1 {
		t.Errorf("refused %v, want 1", v)
	}
}

// TestResumeDuringUpstreamReconnect: the client leg drops while the
// upstream reconnects: the status messages and the stream arrive once
// each, in order.
func TestResumeDuringUpstreamReconnect(t *testing.T) {
	nb := &numberedBackend{dedupe: true}
	nb.init(t)
	tt := startTether(t, nb.URL, func(c *proxy.Config) {
		c.Session.NotifyClient = true
		c.Session.Reconnect.InitialDelay = 50 * time.Millisecond
	})
	relay := newRelay(t, tt.Addr)
	rc := newResumeClient(t, "ws://"+relay.Addr(), "")
	rc.open()
	const n = 300
	rc.stream(n, func(k int) {
		if k == 100 {
			// Quiet first: an answer the backend writes into its dying
			// connection is lost (README "Upstream loss, reconnect and
			// the delivery guarantee"), which is not what this tests.
			for len(rc.data()) < len(rc.sent) {
				if _, err := rc.next(10 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
			nb.mu.Lock()
			for _, c := range nb.conns {
				_ = c.UnderlyingConn().Close() // broken: 1006, reconnect
			}
			nb.mu.Unlock()
			relay.ResetAll()
		}
	}, "")
	if nb.gap != "" {
		t.Fatalf("the backend saw a gap: %s", nb.gap)
	}
	var status []string
	for _, m := range rc.got {
		if strings.HasPrefix(m, `{"type":"upstream"`) {
			status = append(status, m)
		}
	}
	want := []string{`{"type":"upstream","status":"reconnecting","attempt":1}`, `{"type":"upstream","status":"connected"}`}
	if strings.Join(status, " ") != strings.Join(want, " ") {
		t.Fatalf("status messages %v, want %v", status, want)
	}
	if got := nb.connections(2); got != 2 {
		t.Errorf("%d upstream connections, want 2", got)
	}
}

// TestResumeTokensNeverLogged: the JSON log of a session that is
// created, detached and resumed tells each step and never a token.
func TestResumeTokensNeverLogged(t *testing.T) {
	var buf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	nb := newNumberedBackend(t)
	tt := startTetherOpts(t, nb.URL, proxy.Options{Logger: log}, nil)
	relay := newRelay(t, tt.Addr)
	rc := newResumeClient(t, "ws://"+relay.Addr(), "")
	rc.open()
	tokens := []string{rc.token}
	rc.stream(40, func(k int) {
		if k%10 == 0 {
			relay.ResetAll()
		}
	}, "")
	tokens = append(tokens, rc.token)
	other := newResumeClient(t, tt.URL, "")
	other.token = tokens[0]
	if other.resume("") {
		t.Fatal("a used token resumed")
	}
	tokens = append(tokens, other.token)
	rc.c.Close()
	other.c.Close()
	rcWaitMetric(t, tt, 2, "tether_sessions_detached")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = tt.Shutdown(ctx)
	out := buf.String()
	for _, w := range []string{"client detached", "client resumed", "resume refused", "detached session ended"} {
		if !strings.Contains(out, w) {
			t.Errorf("no %q in the log", w)
		}
	}
	for _, tok := range tokens {
		if strings.Contains(out, tok) {
			t.Fatalf("a token is in the log")
		}
	}
}
