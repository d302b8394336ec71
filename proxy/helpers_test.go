package proxy_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-proxy/tether/internal/leakcheck"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// backend is a gorilla/websocket server on 127.0.0.1.
type backend struct {
	*httptest.Server
	URL string // ws://...

	mu       sync.Mutex
	requests []*http.Request
	conns    []*websocket.Conn
}

// newBackend starts a backend whose handler runs per connection. A nil
// handler echoes every message.
func newBackend(t *testing.T, upgrader *websocket.Upgrader, handle func(c *websocket.Conn, r *http.Request)) *backend {
	t.Helper()
	if upgrader == nil {
		upgrader = &websocket.Upgrader{}
	}
	if handle == nil {
		handle = echo
	}
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.requests = append(b.requests, r.Clone(context.Background()))
		b.mu.Unlock()
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.mu.Unlock()
		defer c.Close()
		handle(c, r)
	}))
	b.URL = "ws" + strings.TrimPrefix(b.Server.URL, "http")
	t.Cleanup(func() {
		b.CloseClientConnections()
		b.Close()
	})
	return b
}

func (b *backend) lastRequest() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.requests) == 0 {
		return nil
	}
	return b.requests[len(b.requests)-1]
}

func echo(c *websocket.Conn, _ *http.Request) {
	for {
		mt, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(mt, p); err != nil {
			return
		}
	}
}

// tether is a running proxy.Server on 127.0.0.1.
type tether struct {
	*proxy.Server
	URL  string // ws://127.0.0.1:port
	Addr string
	reg  *prometheus.Registry
	done chan struct{}
}

func startTether(t *testing.T, upstream string, mod func(*proxy.Config)) *tether {
	t.Helper()
	return startTetherOpts(t, upstream, proxy.Options{}, mod)
}

// startTetherOpts starts tether with opts (a fresh registry, the test
// logger and a 1 s close wait unless opts says otherwise).
func startTetherOpts(t testing.TB, upstream string, opts proxy.Options, mod func(*proxy.Config)) *tether {
	t.Helper()
	cfg, err := proxy.DefaultConfig(upstream)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ListenAddr = "127.0.0.1:0"
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	opts.Registry = reg
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.CloseWait == 0 {
		opts.CloseWait = time.Second
	}
	srv, err := proxy.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tt := &tether{Server: srv, Addr: ln.Addr().String(), URL: "ws://" + ln.Addr().String(), reg: reg, done: make(chan struct{})}
	go func() {
		defer close(tt.done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-tt.done
	})
	return tt
}

// badCode matches gorilla's error for a close code it does not know: gorilla
// v1.5.3 rejects 1014 (Bad Gateway, README "Close codes") as a protocol error
// that still names the code.
var badCode = regexp.MustCompile(`^websocket: bad close code (\d+)$`)

// closeCode returns the close code and reason of a gorilla read error, or
// -1 when err is not a Close. For a code gorilla rejects (1014) the reason
// is unknown and returned as "*".
func closeCode(err error) (int, string) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Text
	}
	if err != nil {
		if m := badCode.FindStringSubmatch(err.Error()); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n, "*"
		}
	}
	return -1, ""
}

// reasonMatches compares a Close reason with want; "*" on either side
// matches anything.
func reasonMatches(got, want string) bool {
	return want == "*" || got == "*" || got == want
}

// metric returns the value of a counter or gauge, or the sample count of
// a histogram, whose labels include every "name=value" given (0 when no
// such series exists yet). The metric must be registered.
func metric(t *testing.T, tt *tether, name string, labels ...string) float64 {
	t.Helper()
	return testkit.Metric(t, tt.reg, name, labels...)
}

func dial(t *testing.T, url string, h http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", url, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
