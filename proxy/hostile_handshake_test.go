package proxy_test

// Hostile clients before the upgrade (issue "Hardening"): slow and
// half-open handshakes, oversize headers, header injection attempts and
// TETHER_MAX_SESSIONS under concurrency, against tether on 127.0.0.1 with
// a real backend. Helpers carry the prefix hx.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/proxy"
)

// hxClosed reads c until tether ends the connection or until deadline.
// It returns when that happened and the read error: io.EOF or a reset
// mean tether closed it, a timeout means it did not.
func hxClosed(c net.Conn, deadline time.Time) (time.Time, error) {
	_ = c.SetReadDeadline(deadline)
	var buf [512]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return time.Now(), err
		}
	}
}

// hxIsTimeout reports whether err is a read deadline, not a close.
func hxIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hxBackendHits counts the upstream handshakes of b.
func hxBackendHits(b *backend) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.requests)
}

// hxWaitGoroutines polls (as leakcheck does) until at most max goroutines
// run, and returns the last count.
func hxWaitGoroutines(t *testing.T, max int, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		n := runtime.NumGoroutine()
		if n <= max || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// README "Configuration" TETHER_HANDSHAKE_TIMEOUT against slowloris: a client
// that sends nothing, one that stops in the middle of the request line or of
// the headers, and one that trickles a valid upgrade a byte at a time are all
// cut by tether at the timeout, counted from accept (not extended by the
// trickle), without an upstream dial; meanwhile a normal client gets through.
func TestHostileSlowHandshakes(t *testing.T) {
	t.Parallel()
	// Long enough for the normal client's handshake (an upstream dial
	// included) on a loaded machine under -race.
	const timeout = time.Second
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.HandshakeTimeout = timeout })
	full := coreUpgradeReq("/slow") + "\r\n"
	cases := []struct {
		name    string
		first   string // sent at once
		trickle string // then one byte every 20 ms
	}{
		{"silent", "", ""},
		{"stops in the request line", "GET /sl", ""},
		{"stops in the headers", coreUpgradeReq("/slow")[:60], ""},
		{"stops before the blank line", coreUpgradeReq("/slow"), ""},
		{"trickles a valid upgrade", "", full},
		{"trickles the last header", coreUpgradeReq("/slow"), "X-Slow: " + strings.Repeat("z", 200) + "\r\n\r\n"},
	}
	type result struct {
		name string
		took time.Duration
		err  error
		sent int
	}
	results := make(chan result, len(cases))
	var wg sync.WaitGroup
	for _, tc := range cases {
		start := time.Now() // tether accepts after this: its deadline is later
		c, err := net.Dial("tcp", tt.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if tc.first != "" {
			if _, err := io.WriteString(c, tc.first); err != nil {
				t.Fatal(err)
			}
		}
		stop := make(chan struct{})
		var sent atomic.Int64
		if tc.trickle != "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tk := time.NewTicker(20 * time.Millisecond)
				defer tk.Stop()
				for i := 0; i < len(tc.trickle); i++ {
					select {
					case <-stop:
						return
					case <-tk.C:
					}
					if _, err := c.Write([]byte{tc.trickle[i]}); err != nil {
						return
					}
					sent.Add(1)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := hxClosed(c, start.Add(timeout+5*time.Second))
			close(stop)
			results <- result{tc.name, at.Sub(start), err, int(sent.Load())}
		}()
	}

	// A well-behaved client, while the slow ones hold their connections.
	c := dial(t, tt.URL, nil)
	coreEcho(t, c, "not slow")
	if n := tt.Sessions(); n != 1 {
		t.Errorf("%d sessions registered while slow handshakes wait, want 1 (the normal one)", n)
	}

	wg.Wait()
	close(results)
	for r := range results {
		switch {
		case hxIsTimeout(r.err):
			t.Errorf("%s: still connected after %v", r.name, r.took)
		case r.took < timeout-50*time.Millisecond:
			t.Errorf("%s: cut after %v, before the %v timeout", r.name, r.took, timeout)
		case r.took > timeout+2*time.Second:
			t.Errorf("%s: cut after %v, want about %v", r.name, r.took, timeout)
		default:
			t.Logf("%s: cut after %v (%d trickled bytes, %v)", r.name, r.took.Round(time.Millisecond), r.sent, r.err)
		}
	}
	if n := hxBackendHits(b); n != 1 {
		t.Errorf("the upstream saw %d handshakes, want 1 (the normal client only)", n)
	}
	coreEcho(t, c, "still there")
}

// Thousands of half-open connections (README "Configuration"
// TETHER_HANDSHAKE_TIMEOUT): while they are open a normal session works and,
// with TETHER_MAX_SESSIONS=1, they hold no session slot; every one of them is
// cut at the timeout; and tether's goroutines go back to the baseline. Not
// parallel: it counts the process's goroutines. -short opens 200.
func TestHostileHalfOpenFlood(t *testing.T) {
	n := 2000 // 4000 descriptors in this process (both ends), under the 20,000 limit
	if testing.Short() {
		n = 200
	}
	const timeout = 3 * time.Second
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		c.HandshakeTimeout = timeout
		c.MaxSessions = 1
	})
	// One session before the baseline, so that everything a first session
	// starts once (pools, the backend's accept loop) is counted in it.
	warm := dial(t, tt.URL, nil)
	coreEcho(t, warm, "warm up")
	warm.Close()
	coreWaitSessions(t, tt, 0)
	base := hxWaitGoroutines(t, 0, 200*time.Millisecond) // let the warm-up wind down for 200 ms, then count

	conns := make([]net.Conn, n)
	starts := make([]time.Time, n)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	const dialers = 8
	for d := 0; d < dialers; d++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := d; i < n; i += dialers {
				starts[i] = time.Now()
				c, err := net.Dial("tcp", tt.Addr)
				if err != nil {
					errs <- fmt.Errorf("dial %d: %w", i, err)
					return
				}
				conns[i] = c
				if i%2 == 1 { // every other one sends part of a request
					if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	dialed := time.Now()

	// tether holds a goroutine per accepted connection: wait until it has
	// accepted them all, so the normal client below really competes with
	// the flood.
	deadline := time.Now().Add(timeout / 2)
	peak := runtime.NumGoroutine()
	for peak < base+n*9/10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		peak = max(peak, runtime.NumGoroutine())
	}
	c := dial(t, tt.URL, nil)
	coreEcho(t, c, "through the flood")
	if still := time.Since(dialed); still > timeout {
		t.Logf("the normal session took until %v after the flood was open", still)
	}

	// Every half-open connection is closed by tether at the timeout.
	first := time.Time{}
	limit := dialed.Add(timeout + 5*time.Second)
	open := 0
	for i, hc := range conns {
		at, err := hxClosed(hc, limit)
		if hxIsTimeout(err) {
			open++
			continue
		}
		if i == 0 {
			first = at
		}
	}
	if open > 0 {
		t.Fatalf("%d of %d half-open connections still open %v after the flood", open, n, time.Since(dialed))
	}
	if took := first.Sub(starts[0]); took < timeout-100*time.Millisecond {
		t.Errorf("the first connection was cut after %v, before the %v timeout", took, timeout)
	}
	t.Logf("%d half-open connections cut %v after the last was opened; goroutines: base %d, peak %d",
		n, time.Since(dialed).Round(time.Millisecond), base, peak)
	if peak < base+n/2 {
		t.Logf("note: peak goroutines %d did not show the flood (base %d)", peak, base)
	}

	coreEcho(t, c, "after the flood")
	if hits := hxBackendHits(b); hits != 2 {
		t.Errorf("the upstream saw %d handshakes, want 2 (the normal clients)", hits)
	}
	for _, hc := range conns {
		hc.Close()
	}
	c.Close()
	coreWaitSessions(t, tt, 0)
	if got := hxWaitGoroutines(t, base+2, 5*time.Second); got > base+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after the flood, baseline %d:\n%s", got, base, buf[:runtime.Stack(buf, true)])
	}
}

// README "Running in front of a real backend": request headers over 32 KiB in
// all get 431 and the connection is closed, whether the excess comes from one
// header, many small ones, the request line, or a header that never ends. A
// very large number of small headers under the limit is forwarded intact.
func TestHostileOversizeHeaders(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.HandshakeTimeout = 5 * time.Second })
	many := func(k int, f string) string {
		var sb strings.Builder
		for i := 0; i < k; i++ {
			fmt.Fprintf(&sb, f, i)
		}
		return sb.String()
	}
	cases := []struct {
		name string
		req  string
		end  bool // the request ends; otherwise more bytes would follow
	}{
		{"4000 headers", coreUpgradeReq("/") + many(4000, "X-H-%d: vvvvv\r\n") + "\r\n", true},
		{"one 33 KiB header", coreUpgradeReq("/") + "X-Big: " + strings.Repeat("b", 33<<10) + "\r\n\r\n", true},
		{"40 KiB request line", coreUpgradeReq("/"+strings.Repeat("p", 40<<10)) + "\r\n", true},
		{"a header that never ends", coreUpgradeReq("/") + "X-Endless: " + strings.Repeat("e", 40<<10), false},
		{"headers that never end", coreUpgradeReq("/") + many(3000, "X-More-%d: mmmmmmmm\r\n"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", tt.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			// tether may answer and close before the whole request is
			// written: write in the background and ignore the error.
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = io.WriteString(c, tc.req)
			}()
			_ = c.SetReadDeadline(time.Now().Add(4 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %d, want 431", resp.StatusCode)
			}
			if _, err := hxClosed(c, time.Now().Add(3*time.Second)); hxIsTimeout(err) {
				t.Errorf("connection still open after the 431")
			}
			if !tc.end && time.Since(start) > 3*time.Second {
				t.Errorf("431 after %v: tether waited for the end of the headers", time.Since(start))
			}
			c.Close()
			<-done
		})
	}
	if n := hxBackendHits(b); n != 0 {
		t.Errorf("the upstream was dialed %d times for oversize headers", n)
	}

	// 2000 small headers, 28 KiB in all: under the limit, forwarded.
	h := http.Header{}
	for i := 0; i < 2000; i++ {
		h.Set(fmt.Sprintf("X-Many-%d", i), "v")
	}
	c := dial(t, tt.URL, h)
	coreEcho(t, c, "many headers")
	got := 0
	for k := range b.lastRequest().Header {
		if strings.HasPrefix(k, "X-Many-") {
			got++
		}
	}
	if got != 2000 {
		t.Errorf("the upstream got %d of the 2000 headers", got)
	}
}

// hxRawUp is an upstream that records the raw bytes of each handshake
// request and answers 403, so a test sees exactly what tether sent.
type hxRawUp struct {
	ln   net.Listener
	URL  string
	mu   sync.Mutex
	reqs [][]byte
	wg   sync.WaitGroup
}

func hxNewRawUp(t *testing.T) *hxRawUp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &hxRawUp{ln: ln, URL: "ws://" + ln.Addr().String()}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				var raw []byte
				buf := make([]byte, 4096)
				for !bytes.Contains(raw, []byte("\r\n\r\n")) && len(raw) < 1<<20 {
					n, err := c.Read(buf)
					raw = append(raw, buf[:n]...)
					if err != nil {
						break
					}
				}
				u.mu.Lock()
				u.reqs = append(u.reqs, raw)
				u.mu.Unlock()
				_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.wg.Wait()
	})
	return u
}

func (u *hxRawUp) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *hxRawUp) last() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reqs[len(u.reqs)-1]
}

// hxCheckHead checks a raw request head as the upstream received it: CRLF
// line ends only, no bare CR or LF anywhere, a three-part request line,
// and no header whose name is in banned.
func hxCheckHead(raw []byte, banned ...string) error {
	head, _, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		return fmt.Errorf("no end of header in %q", raw)
	}
	lines := strings.Split(string(head), "\r\n")
	for i, l := range lines {
		if strings.ContainsAny(l, "\r\n\x00") {
			return fmt.Errorf("line %d holds a bare CR, LF or NUL: %q", i, l)
		}
		if i == 0 {
			if parts := strings.Split(l, " "); len(parts) != 3 || parts[2] != "HTTP/1.1" {
				return fmt.Errorf("request line %q", l)
			}
			continue
		}
		name, _, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return fmt.Errorf("line %d is not a header: %q", i, l)
		}
		for _, b := range banned {
			if strings.EqualFold(name, b) {
				return fmt.Errorf("injected header %q reached the upstream", l)
			}
		}
	}
	return nil
}

// README "Running in front of a real backend": CR/LF in a header gets 400;
// encoded attempts are forwarded as the opaque bytes they are. Either way the
// upstream never receives an injected header or a bare CR or LF.
func TestHostileHeaderInjection(t *testing.T) {
	t.Parallel()
	up := hxNewRawUp(t)
	tt := startTether(t, up.URL, nil)
	const inj = "X-Injected"
	cases := []struct {
		name string
		req  string
		want int    // 400 (tether refuses) or 403 (forwarded: the upstream's answer)
		has  string // forwarded: the upstream's request head contains this
	}{
		{"bare CR in Sec-WebSocket-Protocol", coreUpgradeReq("/") + "Sec-WebSocket-Protocol: chat\rX-Injected: 1\r\n\r\n", 400, ""},
		{"bare CR in Cookie", coreUpgradeReq("/") + "Cookie: a=b\rX-Injected: 1\r\n\r\n", 400, ""},
		{"bare CR in X-Forwarded-For", coreUpgradeReq("/") + "X-Forwarded-For: 10.0.0.1\rX-Injected: 1\r\n\r\n", 400, ""},
		{"bare CR in Origin", coreUpgradeReq("/") + "Origin: https://a.example\rX-Injected: 1\r\n\r\n", 400, ""},
		{"CR CR LF", coreUpgradeReq("/") + "X-A: a\r\r\nX-Injected: 1\r\n\r\n", 400, ""},
		{"bare CR in the path", "GET /a\rX-Injected: 1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + coreKey + "\r\n\r\n", 400, ""},
		{"obs-fold in Cookie", coreUpgradeReq("/") + "Cookie: a=b\r\n X-Injected: 1\r\n\r\n", 400, ""},
		{"NUL in Origin", coreUpgradeReq("/") + "Origin: https://a\x00.example\r\n\r\n", 400, ""},
		{"space before the colon", coreUpgradeReq("/") + "X-Injected : 1\r\n\r\n", 400, ""},
		{"encoded CRLF in the path", coreUpgradeReq("/a%0d%0aX-Injected:%201%0d%0a") + "\r\n", 403, "GET /a%0d%0aX-Injected:%201%0d%0a HTTP/1.1\r\n"},
		{"encoded CRLF in the query", coreUpgradeReq("/q?x=%0d%0aX-Injected:%201&y=%0A") + "\r\n", 403, "?x=%0d%0aX-Injected:%201&y=%0A"},
		{"encoded CRLF in Sec-WebSocket-Protocol", coreUpgradeReq("/") + "Sec-WebSocket-Protocol: chat%0d%0aX-Injected, v2\r\n\r\n", 403, "Sec-WebSocket-Protocol: chat%0d%0aX-Injected, v2\r\n"},
		{"Sec-WebSocket-Protocol that is not a token list", coreUpgradeReq("/") + "Sec-WebSocket-Protocol: chat%0d%0aX-Injected: 1, v2\r\n\r\n", 400, ""},
		{"encoded CRLF in Cookie", coreUpgradeReq("/") + "Cookie: a=b%0d%0aX-Injected: 1\r\n\r\n", 403, "Cookie: a=b%0d%0aX-Injected: 1\r\n"},
		{"encoded CRLF in X-Forwarded-For", coreUpgradeReq("/") + "X-Forwarded-For: 10.0.0.1%0d%0aX-Injected: 1\r\n\r\n", 403, "X-Forwarded-For: 10.0.0.1%0d%0aX-Injected: 1, 127.0.0.1\r\n"},
		{"encoded CRLF in Origin", coreUpgradeReq("/") + "Origin: https://a.example%0d%0aX-Injected: 1\r\n\r\n", 403, "Origin: https://a.example%0d%0aX-Injected: 1\r\n"},
		// U+010D and U+010A end in 0x0D and 0x0A: a proxy that truncated
		// characters to bytes would write CR LF.
		{"UTF-8 whose low bytes are CR LF", coreUpgradeReq("/") + "Cookie: a=\xc4\x8d\xc4\x8aX-Injected: 1\r\n\r\n", 403, "Cookie: a=\xc4\x8d\xc4\x8aX-Injected: 1\r\n"},
		{"U+2028 in Origin", coreUpgradeReq("/") + "Origin: https://a.example\xe2\x80\xa8X-Injected: 1\r\n\r\n", 403, "\xe2\x80\xa8X-Injected: 1\r\n"},
		{"encoded CRLF in Host (X-Forwarded-Host)", strings.Replace(coreUpgradeReq("/"), "Host: tether.test", "Host: tether.test%0d%0aX-Injected:1", 1) + "\r\n", 403, "X-Forwarded-Host: tether.test%0d%0aX-Injected:1\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count()
			resp, _, _ := coreRaw(t, tt.Addr, tc.req)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			after := up.count()
			switch {
			case tc.want == 400 && after != before:
				t.Fatalf("refused with 400, but the upstream was dialed")
			case tc.want == 400:
				return
			case after != before+1:
				t.Fatalf("forwarded, but the upstream saw %d handshakes", after-before)
			}
			raw := up.last()
			if err := hxCheckHead(raw, inj); err != nil {
				t.Errorf("%v\nupstream received:\n%q", err, raw)
			}
			if !bytes.Contains(raw, []byte(tc.has)) {
				t.Errorf("upstream request lacks %q:\n%q", tc.has, raw)
			}
		})
	}
}

// README "Configuration" TETHER_MAX_SESSIONS under concurrency: of a burst of
// 3×limit simultaneous handshakes exactly limit succeed and the others get 503
// (with Retry-After) without an upstream dial; when k sessions end, a second
// burst gets exactly k sessions.
func TestHostileMaxSessionsBurst(t *testing.T) {
	t.Parallel()
	limit := 60
	if testing.Short() {
		limit = 12
	}
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.MaxSessions = limit })
	var (
		mu    sync.Mutex
		conns []*websocket.Conn
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	burst := func(k int) (ok, full int) {
		t.Helper()
		var wg sync.WaitGroup
		var nOK, nFull atomic.Int32
		errs := make(chan error, k)
		startGun := make(chan struct{})
		for i := 0; i < k; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-startGun
				d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
				c, resp, err := d.Dial(tt.URL, nil)
				switch {
				case err == nil:
					nOK.Add(1)
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
					if resp.Header.Get("Retry-After") == "" {
						errs <- errors.New("503 without Retry-After")
					}
					nFull.Add(1)
				default:
					errs <- fmt.Errorf("dial: %v", err)
				}
			}()
		}
		close(startGun)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		return int(nOK.Load()), int(nFull.Load())
	}

	ok, full := burst(3 * limit)
	if ok != limit || full != 2*limit {
		t.Fatalf("first burst of %d: %d sessions and %d 503s, want %d and %d", 3*limit, ok, full, limit, 2*limit)
	}
	if n := hxBackendHits(b); n != limit {
		t.Errorf("the upstream saw %d handshakes, want %d (503s never dial)", n, limit)
	}

	// End a third of the sessions: half with a Close handshake, half by
	// dropping the TCP connection without one.
	k := limit / 3
	mu.Lock()
	ending := conns[:k]
	conns = append([]*websocket.Conn(nil), conns[k:]...)
	mu.Unlock()
	polite, abrupt := ending[:k/2], ending[k/2:]
	for _, c := range polite {
		if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range abrupt {
		c.Close()
	}
	for _, c := range polite {
		coreWantClose(t, c, 1000, "")
		c.Close()
	}
	coreWaitSessions(t, tt, limit-k)

	ok, full = burst(3 * k)
	if ok != k || full != 2*k {
		t.Fatalf("second burst of %d after %d sessions ended: %d sessions and %d 503s, want %d and %d", 3*k, k, ok, full, k, 2*k)
	}
	mu.Lock()
	for i, c := range conns {
		coreEcho(t, c, fmt.Sprintf("session %d", i))
	}
	mu.Unlock()
}

// hxCheckHead itself finds what TestHostileHeaderInjection looks for.
func TestHostileCheckHead(t *testing.T) {
	t.Parallel()
	const ok = "GET /a HTTP/1.1\r\nHost: h\r\nCookie: a=b\r\n\r\n"
	if err := hxCheckHead([]byte(ok), "X-Injected"); err != nil {
		t.Errorf("clean head: %v", err)
	}
	for _, bad := range []string{
		"GET /a HTTP/1.1\r\nHost: h\r\nCookie: a=b\r\nX-Injected: 1\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: h\r\nCookie: a=b\nX-Injected: 1\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: h\r\nCookie: a=b\rX: 1\r\n\r\n",
		"GET /a\r\nX-Injected: 1 HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /a HTTP/1.1 x\r\nHost: h\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: h\r\n",
	} {
		if hxCheckHead([]byte(bad), "X-Injected") == nil {
			t.Errorf("%q passed", bad)
		}
	}
}

// README "Configuration" TETHER_HANDSHAKE_TIMEOUT is one deadline from TCP
// accept, also on a TLS listener: a client that waits almost the whole timeout
// before its TLS handshake and then sends part of its request is cut at the
// timeout counted from accept, not a second timeout after the TLS handshake.
func TestHostileSlowTLSHandshake(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	certFile, keyFile, pool := coreSelfSigned(t)
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.HandshakeTimeout = timeout
	})
	raw, err := net.Dial("tcp", tt.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	start := time.Now()
	time.Sleep(timeout / 2) // the hostile client's idea of a handshake
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	_ = c.SetDeadline(start.Add(timeout * 9 / 10))
	if err := c.Handshake(); err != nil {
		t.Skipf("the TLS handshake did not finish within the timeout on this machine: %v", err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	at, err := hxClosed(c, start.Add(timeout+5*time.Second))
	took := at.Sub(start)
	if hxIsTimeout(err) {
		t.Fatalf("still connected after %v", took)
	}
	// Two deadlines (TLS, then headers) would cut it after 3 s or more.
	if took > timeout*29/20 {
		t.Errorf("cut %v after accept, want about %v (one deadline from accept)", took, timeout)
	}
	t.Logf("cut %v after accept (%v)", took.Round(time.Millisecond), err)
}

// README "Running in front of a real backend": a malformed upgrade gets 400
// without an upstream dial, and a valid one is not refused after the dial.
// tether dials the upstream before it upgrades the client, so every check of
// the client's upgrade (its own and gobwas's) has to happen before the dial:
// Connection split over two lines (valid: the token is in the second),
// Sec-WebSocket-Protocol that is not a token list, an empty Host, and, with
// TETHER_CLIENT_COMPRESSION, Sec-WebSocket-Extensions that does not parse. A
// permessage-deflate offer with invalid parameters is declined (RFC 7692 §5:
// the session runs uncompressed), not answered with 500.
func TestHostileUpgradeCheckedBeforeDial(t *testing.T) {
	t.Parallel()
	b := newBackend(t, &websocket.Upgrader{Subprotocols: []string{"chat"}}, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.ClientCompression = true })
	noConn := strings.Replace(coreUpgradeReq("/"), "Connection: Upgrade\r\n", "", 1)
	cases := []struct {
		name string
		req  string
		want int
		ext  string // 101: the Sec-WebSocket-Extensions answered
	}{
		{"Connection over two lines", noConn + "Connection: keep-alive\r\nConnection: Upgrade\r\n\r\n", 101, ""},
		{"protocol list with a bad token first", coreUpgradeReq("/") + "Sec-WebSocket-Protocol: bad:token, chat\r\n\r\n", 400, ""},
		{"protocol list of commas", coreUpgradeReq("/") + "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: ;\r\n\r\n", 400, ""},
		{"empty Host", strings.Replace(coreUpgradeReq("/"), "Host: tether.test", "Host:", 1) + "\r\n", 400, ""},
		{"extensions that do not parse", coreUpgradeReq("/") + "Sec-WebSocket-Extensions: permessage-deflate;;;\r\n\r\n", 400, ""},
		{"extensions with an open quote", coreUpgradeReq("/") + "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\"15\r\n\r\n", 400, ""},
		{"window bits out of range", coreUpgradeReq("/") + "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=99999999999999999999\r\n\r\n", 101, ""},
		{"valueless server_max_window_bits", coreUpgradeReq("/") + "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits\r\n\r\n", 101, ""},
		{"repeated parameter", coreUpgradeReq("/") + "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_no_context_takeover\r\n\r\n", 101, ""},
		{"bad offer, then a good one", coreUpgradeReq("/") + "Sec-WebSocket-Extensions: permessage-deflate; x=1, permessage-deflate\r\n\r\n", 101, "permessage-deflate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := hxBackendHits(b)
			resp, c, br := coreRaw(t, tt.Addr, tc.req)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			dialed := hxBackendHits(b) - before
			if tc.want != 101 {
				if dialed != 0 {
					t.Errorf("refused with %d after an upstream dial", resp.StatusCode)
				}
				return
			}
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(got, tc.ext) || (tc.ext == "") != (got == "") {
				t.Errorf("Sec-WebSocket-Extensions %q, want %q", got, tc.ext)
			}
			if tc.ext != "" {
				return // compressed frames: the session itself is tested elsewhere
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(coreFrame(true, 0, 1, true, []byte("hi"))); err != nil {
				t.Fatal(err)
			}
			if op, p := coreReadFrame(t, br); op != 1 || string(p) != "hi" {
				t.Errorf("echo: op %d %q", op, p)
			}
		})
	}
}
