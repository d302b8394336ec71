package proxy_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/proxy"
)

// README "Shutdown" Shutdown: /readyz turns 503, new handshakes are refused,
// every client gets 1012 and every upstream 1001, spread over
// TETHER_SHUTDOWN_SPREAD, and Shutdown returns before its deadline.
func TestCoreShutdown(t *testing.T) {
	t.Parallel()
	const n = 3
	ends := make(chan coreEnd, n)
	b := newBackend(t, nil, coreEchoRecorder(ends))
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		// Wide enough that a client that sees its Close late on a
		// loaded machine cannot make three closes look simultaneous.
		c.ShutdownSpread = 1200 * time.Millisecond
		c.ShutdownTimeout = 6 * time.Second
	})
	admin := httptest.NewServer(tt.AdminHandler())
	defer admin.Close()
	readyz := func() int {
		resp, err := http.Get(admin.URL + "/readyz")
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := readyz(); got != http.StatusOK {
		t.Fatalf("/readyz = %d before the drain", got)
	}

	type closed struct {
		end    coreEnd
		readyz int // /readyz when the Close arrived
	}
	clientEnds := make(chan closed, n)
	for i := 0; i < n; i++ {
		c := dial(t, tt.URL, nil)
		coreEcho(t, c, "hello")
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					at := time.Now()
					clientEnds <- closed{coreEnd{err, at}, readyz()}
					return
				}
			}
		}()
	}

	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	start := time.Now()
	go func() {
		err := tt.Shutdown(ctx)
		done <- result{err, time.Since(start)}
	}()

	var times []time.Time
	for i := 0; i < n; i++ {
		ce := coreRecv(t, clientEnds, 5*time.Second, "a client's close")
		if code, _ := closeCode(ce.end.err); code != 1012 {
			t.Errorf("client got %v, want close 1012", ce.end.err)
		}
		if ce.readyz != http.StatusServiceUnavailable {
			t.Errorf("/readyz = %d while draining, want 503", ce.readyz)
		}
		times = append(times, ce.end.at)
		if i == 0 {
			// New handshakes are refused while draining.
			c, resp, err := (&websocket.Dialer{HandshakeTimeout: 2 * time.Second}).Dial(tt.URL, nil)
			if err == nil {
				c.Close()
				t.Error("a new session was accepted while draining")
			} else if resp != nil && resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("handshake while draining: status %d, want 503 or refused", resp.StatusCode)
			}
		}
	}
	for i := 0; i < n; i++ {
		coreWantEnd(t, ends, 1001, "*")
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	// Three closes over 1.2 s: at about 0, 400 and 800 ms.
	if span := times[n-1].Sub(times[0]); span < 400*time.Millisecond {
		t.Errorf("client closes within %v, want them spread over about 800ms", span)
	}
	r := coreRecv(t, done, 5*time.Second, "Shutdown")
	if r.err != nil {
		t.Errorf("Shutdown: %v", r.err)
	}
	if r.took >= 6*time.Second {
		t.Errorf("Shutdown took %v, its timeout is 6s", r.took)
	}
	if tt.Sessions() != 0 {
		t.Errorf("%d sessions after Shutdown", tt.Sessions())
	}
	if got := readyz(); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d after the drain", got)
	}
}

// README "Shutdown": Shutdown with a deadline that passes still ends every
// session and returns (sessions whose clients never answer the Close).
func TestCoreShutdownDeadline(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		c.ShutdownSpread = 5 * time.Second
	})
	for i := 0; i < 3; i++ {
		c := dial(t, tt.URL, nil)
		coreEcho(t, c, "x") // and never read again: no Close reply
	}
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = tt.Shutdown(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Shutdown took %v with a 600ms deadline", took)
	}
	coreWaitSessions(t, tt, 0)
}
