package proxy_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/proxy"
)

func TestEcho(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	c := dial(t, tt.URL+"/chat?x=1", nil)
	for _, m := range []struct {
		typ int
		p   string
	}{{websocket.TextMessage, "hello"}, {websocket.BinaryMessage, "\x00\x01\x02"}} {
		if err := c.WriteMessage(m.typ, []byte(m.p)); err != nil {
			t.Fatal(err)
		}
		typ, p, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if typ != m.typ || string(p) != m.p {
			t.Fatalf("got %d %q, want %d %q", typ, p, m.typ, m.p)
		}
	}
}

// README "Running in front of a real backend": text and binary messages,
// fragmented or not, pass through unchanged in both directions, including a
// multi-byte character split across fragments.
func TestCoreRelayFragmented(t *testing.T) {
	t.Parallel()
	// The backend echoes with small write buffers: its messages arrive
	// at tether in many fragments.
	b := newBackend(t, &websocket.Upgrader{WriteBufferSize: 16}, func(c *websocket.Conn, _ *http.Request) {
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			w, err := c.NextWriter(mt)
			if err != nil {
				return
			}
			for len(p) > 0 { // several writes per message
				n := min(len(p), 7)
				_, _ = w.Write(p[:n])
				p = p[n:]
			}
			if w.Close() != nil {
				return
			}
		}
	})
	tt := startTether(t, b.URL, nil)
	d := websocket.Dialer{WriteBufferSize: 16}
	c, _, err := d.Dial(tt.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cases := []struct {
		name string
		typ  int
		p    []byte
	}{
		{"text", websocket.TextMessage, []byte(strings.Repeat("héllo wörld ✓ ", 40))},
		{"binary", websocket.BinaryMessage, func() []byte {
			p := make([]byte, 1000)
			for i := range p {
				p[i] = byte(i * 7)
			}
			return p
		}()},
		{"empty text", websocket.TextMessage, []byte{}},
		{"one byte binary", websocket.BinaryMessage, []byte{0}},
	}
	for _, tc := range cases {
		w, err := c.NextWriter(tc.typ)
		if err != nil {
			t.Fatal(err)
		}
		for p := tc.p; len(p) > 0; {
			n := min(len(p), 5)
			_, _ = w.Write(p[:n])
			p = p[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, p, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if typ != tc.typ || !bytes.Equal(p, tc.p) {
			t.Fatalf("%s: got type %d, %d bytes; want type %d, %d bytes", tc.name, typ, len(p), tc.typ, len(tc.p))
		}
	}
}

// README "Running in front of a real backend": order is kept over many
// messages in each direction.
func TestCoreRelayOrder(t *testing.T) {
	t.Parallel()
	const n = 1000
	upErr := make(chan error, 1)
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		// The backend checks the client's order and sends its own
		// numbered stream concurrently.
		go func() {
			for i := 0; i < n; i++ {
				if c.WriteMessage(websocket.TextMessage, []byte("up-"+strconv.Itoa(i))) != nil {
					return
				}
			}
		}()
		for i := 0; i < n; i++ {
			_, p, err := c.ReadMessage()
			if err != nil {
				upErr <- err
				return
			}
			if want := "down-" + strconv.Itoa(i); string(p) != want {
				upErr <- fmt.Errorf("upstream got %q, want %q", p, want)
				return
			}
		}
		upErr <- nil
		_, _, _ = c.ReadMessage()
	})
	tt := startTether(t, b.URL, nil)
	c := dial(t, tt.URL, nil)
	go func() {
		for i := 0; i < n; i++ {
			if c.WriteMessage(websocket.BinaryMessage, []byte("down-"+strconv.Itoa(i))) != nil {
				return
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := 0; i < n; i++ {
		_, p, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if want := "up-" + strconv.Itoa(i); string(p) != want {
			t.Fatalf("client got %q, want %q", p, want)
		}
	}
	if err := coreRecv(t, upErr, 10*time.Second, "the upstream's check"); err != nil {
		t.Fatal(err)
	}
}

// README "Running in front of a real backend": a 900 KB message passes both
// ways (the default limit is 1 MiB).
func TestCoreRelayLarge(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	c := dial(t, tt.URL, nil)
	p := make([]byte, 900_000)
	for i := range p {
		p[i] = byte(i % 251)
	}
	for _, typ := range []int{websocket.BinaryMessage, websocket.TextMessage} {
		q := p
		if typ == websocket.TextMessage {
			q = bytes.Repeat([]byte("abcdefghi"), 100_000)
		}
		if err := c.WriteMessage(typ, q); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		gt, got, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if gt != typ || !bytes.Equal(got, q) {
			t.Fatalf("type %d: got %d bytes of type %d", typ, len(got), gt)
		}
	}
}

// README "Heartbeats": tether answers RFC pings itself on both legs, with the
// same payload, and does not forward them.
func TestCoreRelayPings(t *testing.T) {
	t.Parallel()
	upPong := make(chan string, 4)
	upPinged := make(chan string, 4)
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		c.SetPongHandler(func(s string) error { upPong <- s; return nil })
		c.SetPingHandler(func(s string) error {
			if s == "from-client" { // tether's own pings (acknowledgements) are expected
				upPinged <- s
			}
			return c.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
		})
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if string(p) == "ping me" {
				if err := c.WriteControl(websocket.PingMessage, []byte("from-upstream"), time.Now().Add(time.Second)); err != nil {
					return
				}
			}
			_ = c.WriteMessage(websocket.TextMessage, p)
		}
	})
	tt := startTether(t, b.URL, nil)
	c := dial(t, tt.URL, nil)
	clientPong := make(chan string, 4)
	clientPinged := make(chan string, 4)
	c.SetPongHandler(func(s string) error { clientPong <- s; return nil })
	c.SetPingHandler(func(s string) error { clientPinged <- s; return nil })
	msgs := make(chan string, 4)
	go func() {
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			msgs <- string(p)
		}
	}()
	if err := c.WriteControl(websocket.PingMessage, []byte("from-client"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := coreRecv(t, clientPong, 5*time.Second, "the client's pong"); got != "from-client" {
		t.Errorf("client pong payload %q", got)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("ping me")); err != nil {
		t.Fatal(err)
	}
	if got := coreRecv(t, upPong, 5*time.Second, "the upstream's pong"); got != "from-upstream" {
		t.Errorf("upstream pong payload %q", got)
	}
	// The echo after the ping proves both pings were handled before it.
	if got := coreRecv(t, msgs, 5*time.Second, "the echo"); got != "ping me" {
		t.Errorf("echo %q", got)
	}
	select {
	case p := <-upPinged:
		t.Errorf("the client's ping %q reached the upstream", p)
	default:
	}
	select {
	case p := <-clientPinged:
		t.Errorf("the upstream's ping %q reached the client", p)
	default:
	}
}

// README "Running in front of a real backend" (issue 2): a client that stops
// reading makes tether stop reading the upstream: the backend's writes stall
// instead of tether buffering. Nothing is lost once the client reads again.
func TestCoreRelayBackpressure(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		go func() { // consume the Close at the end
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		p := make([]byte, 16<<10)
		for i := 0; ; i++ {
			binary.BigEndian.PutUint64(p, uint64(i))
			if c.WriteMessage(websocket.BinaryMessage, p) != nil {
				return
			}
			written.Add(1)
		}
	})
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.WriteTimeout = 30 * time.Second })
	c := dial(t, tt.URL, nil)
	// Do not read: wait until the backend's count stops growing.
	var last int64 = -1
	stable := 0
	deadline := time.Now().Add(15 * time.Second)
	for stable < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the backend kept writing: %d messages (%d MiB)", written.Load(), written.Load()>>6)
		}
		time.Sleep(100 * time.Millisecond)
		n := written.Load()
		if n == last {
			stable++
		} else {
			stable = 0
		}
		last = n
	}
	t.Logf("the backend stalled after %d messages of 16 KiB", last)
	// Kernel buffers on loopback hold some MiB; tether itself must hold
	// about one message.
	if mib := last * 16 / 1024; mib > 64 {
		t.Errorf("the backend wrote %d MiB before stalling", mib)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < int(last)+100; i++ {
		_, p, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint64(p); got != uint64(i) {
			t.Fatalf("message %d has sequence %d", i, got)
		}
	}
}

// README "Shutdown": a client that does not drain a write within
// TETHER_WRITE_TIMEOUT is dead: the upstream gets Close 1001.
func TestCoreRelayWriteTimeout(t *testing.T) {
	t.Parallel()
	ends := make(chan coreEnd, 1)
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		go func() {
			p := make([]byte, 64<<10)
			for c.WriteMessage(websocket.BinaryMessage, p) == nil {
			}
		}()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				ends <- coreEnd{err: err, at: time.Now()}
				return
			}
		}
	})
	tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.WriteTimeout = 500 * time.Millisecond })
	c := dial(t, tt.URL, nil)
	_ = c // never read
	coreWantEnd(t, ends, 1001, "*")
	coreWaitSessions(t, tt, 0)
}

// Issue 2: 200 sessions echo concurrently through one tether.
func TestCoreConcurrentSessions(t *testing.T) {
	t.Parallel()
	const sessions, msgs = 200, 20
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, nil)
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := websocket.DefaultDialer.Dial(tt.URL, nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			for j := 0; j < msgs; j++ {
				want := fmt.Sprintf("s%d-m%d", i, j)
				if err := c.WriteMessage(websocket.TextMessage, []byte(want)); err != nil {
					errs <- err
					return
				}
				_, p, err := c.ReadMessage()
				if err != nil {
					errs <- err
					return
				}
				if string(p) != want {
					errs <- fmt.Errorf("got %q, want %q", p, want)
					return
				}
			}
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
			if _, _, err := c.ReadMessage(); websocket.IsUnexpectedCloseError(err, 1000) {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	coreWaitSessions(t, tt, 0)
}
