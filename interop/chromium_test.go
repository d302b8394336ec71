package interop

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
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

// newBrowser starts one headless Chromium tab (flags as in demo/e2e_test.go).
func newBrowser(t *testing.T, execPath string) context.Context {
	t.Helper()
	return testkit.Browser(t, execPath)
}

// js evaluates expr in the tab, awaiting a promise, and decodes it into T.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// page is the browser side: window.it drives WebSockets by name.
const page = `<!doctype html><meta charset="utf-8"><title>tether interop</title><script>
"use strict";
const UNIT = new TextEncoder().encode("tether ✓ interop 世界 🌍 ");
// gen is node/peer.js gen() for the browser.
function gen(type, size, seed) {
  const out = new Uint8Array(size);
  if (type === "binary") {
    for (let i = 0; i < size; i++) out[i] = (i * 131 + seed * 7 + (i >> 8)) & 0xff;
    return out;
  }
  const head = new TextEncoder().encode("#" + seed + "|");
  if (size < head.length) return out.fill(46);
  out.set(head, 0);
  let off = head.length;
  while (off + UNIT.length <= size) { out.set(UNIT, off); off += UNIT.length; }
  out.fill(46, off);
  return out;
}
function equal(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
const conns = {};
window.it = {
  open(name, url, protocols) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, protocols);
      ws.binaryType = "arraybuffer";
      const c = { ws, inbox: [], waiters: [], closed: null };
      c.closedPromise = new Promise(r => { c.onClosed = r; });
      conns[name] = c;
      ws.onopen = () => resolve({ protocol: ws.protocol, extensions: ws.extensions });
      ws.onerror = () => reject(new Error("websocket error"));
      ws.onmessage = e => {
        const m = typeof e.data === "string"
          ? { type: "text", data: new TextEncoder().encode(e.data) }
          : { type: "binary", data: new Uint8Array(e.data) };
        if (c.waiters.length) c.waiters.shift()(m); else c.inbox.push(m);
      };
      ws.onclose = e => { c.onClosed({ code: e.code, reason: e.reason, wasClean: e.wasClean }); reject(new Error("closed " + e.code)); };
    });
  },
  next(name) {
    const c = conns[name];
    if (c.inbox.length) return Promise.resolve(c.inbox.shift());
    return new Promise(r => c.waiters.push(r));
  },
  // echo sends gen(type, size, seed) and checks the next message is the same.
  async echo(name, type, size, seed) {
    const data = gen(type, size, seed);
    conns[name].ws.send(type === "text" ? new TextDecoder().decode(data) : data);
    const m = await it.next(name);
    return { type: m.type, size: m.data.length, same: m.type === type && equal(m.data, data) };
  },
  // burst sends n small text messages and returns the echoes in order.
  async burst(name, n) {
    for (let i = 0; i < n; i++) conns[name].ws.send("m" + i);
    const got = [];
    for (let i = 0; i < n; i++) got.push(new TextDecoder().decode((await it.next(name)).data));
    return got;
  },
  close(name, code, reason) {
    conns[name].ws.close(code, reason);
    return conns[name].closedPromise;
  },
  closed(name) { return conns[name].closedPromise; },
  // sendAndWaitClose sends gen(type, size, seed) and waits for the close.
  sendAndWaitClose(name, type, size, seed) {
    const data = gen(type, size, seed);
    conns[name].ws.send(type === "text" ? new TextDecoder().decode(data) : data);
    return conns[name].closedPromise;
  },
};
</script>`

// recvd is one message the echo backend received.
type recvd struct {
	typ  int
	size int
	sha  string
}

// echoBackend is a gorilla/websocket backend that serves the page on
// /page, echoes every message on any other path, and records what it saw.
type echoBackend struct {
	*httptest.Server
	received chan recvd
	closes   chan *websocket.CloseError
	conns    chan *websocket.Conn

	mu         sync.Mutex
	extensions []string // Sec-WebSocket-Extensions of each upgrade request
}

func newEchoBackend(t *testing.T) *echoBackend {
	t.Helper()
	b := &echoBackend{received: make(chan recvd, 1024), closes: make(chan *websocket.CloseError, 8), conns: make(chan *websocket.Conn, 8)}
	up := websocket.Upgrader{Subprotocols: []string{"tether.v2", "tether.v9"}}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/page" {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(page))
			return
		}
		b.mu.Lock()
		b.extensions = append(b.extensions, r.Header.Get("Sec-WebSocket-Extensions"))
		b.mu.Unlock()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		b.conns <- c
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					b.closes <- ce
				}
				return
			}
			b.received <- recvd{typ: mt, size: len(p), sha: digest(p)}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	}))
	t.Cleanup(func() {
		b.CloseClientConnections()
		b.Close()
	})
	return b
}

func (b *echoBackend) lastExtensions() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.extensions[len(b.extensions)-1]
}

func recv[T any](t *testing.T, ch chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("no %s within 20 s", what)
	}
	var zero T
	return zero
}

type openResult struct {
	Protocol   string `json:"protocol"`
	Extensions string `json:"extensions"`
}

type echoResult struct {
	Type string `json:"type"`
	Size int    `json:"size"`
	Same bool   `json:"same"`
}

type closeResult struct {
	Code     int    `json:"code"`
	Reason   string `json:"reason"`
	WasClean bool   `json:"wasClean"`
}

// TestChromium runs headless Chromium's WebSocket, which offers
// permessage-deflate, through tether with TETHER_CLIENT_COMPRESSION on and
// off: the answered extension, compressed frames on the wire when on, messages
// intact either way, RFC heartbeats answered by the browser, and close codes
// both ways (README "Configuration" and "Running in front of a real backend"
// and "Heartbeats" and "Close codes").
func TestChromium(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, testkit.FindChromium(t))
	for _, on := range []bool{true, false} {
		ok := t.Run(map[bool]string{true: "compression on", false: "compression off"}[on], func(t *testing.T) {
			be := newEchoBackend(t)
			tt := startTether(t, "ws"+strings.TrimPrefix(be.URL, "http")+"/app", func(c *proxy.Config) {
				c.ClientCompression = on
				c.Session.ClientHeartbeat = heartbeat.Config{Mode: heartbeat.ModeWS, Interval: 100 * time.Millisecond, Timeout: 20 * time.Second}
			})
			nav, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if err := chromedp.Do(nav, chromedp.Navigate(be.URL+"/page")); err != nil {
				t.Fatalf("open the page: %v", err)
			}

			o := js[openResult](t, ctx, fmt.Sprintf(`it.open("a", %q, ["tether.v1", "tether.v2"])`, tt.URL+"/ws"))
			offer, answer := header(tt.wire.lastRequest(), "Sec-WebSocket-Extensions"), header(tt.wire.lastResponse(), "Sec-WebSocket-Extensions")
			t.Logf("Chromium offered %q; tether answered %q; ws.extensions %q", offer, answer, o.Extensions)
			if !strings.Contains(offer, "permessage-deflate") {
				t.Fatalf("Chromium offered Sec-WebSocket-Extensions %q, want permessage-deflate", offer)
			}
			if on {
				if !strings.HasPrefix(answer, "permessage-deflate") || !strings.Contains(o.Extensions, "permessage-deflate") {
					t.Errorf("compression on: tether answered %q, the browser accepted %q; want permessage-deflate", answer, o.Extensions)
				}
			} else if answer != "" || o.Extensions != "" {
				t.Errorf("compression off: tether answered %q, the browser accepted %q; want no extension", answer, o.Extensions)
			}
			if got := be.lastExtensions(); got != "" {
				t.Errorf("backend got Sec-WebSocket-Extensions %q, want none", got)
			}
			if o.Protocol != "tether.v2" {
				t.Errorf("browser got subprotocol %q, want the backend's choice tether.v2", o.Protocol)
			}

			for i, m := range []message{{"text", mib, 1, false}, {"binary", mib, 1, false}, {"text", 200, 1, false}, {"binary", 0, 1, false}} {
				seed := i + 1
				read, written := tt.wire.read.Load(), tt.wire.written.Load()
				r := js[echoResult](t, ctx, fmt.Sprintf(`it.echo("a", %q, %d, %d)`, m.typ, m.size, seed))
				in, out := tt.wire.read.Load()-read, tt.wire.written.Load()-written
				got := recv(t, be.received, "message at the backend")
				if got.size != m.size || got.sha != digest(gen(m.typ, m.size, seed)) {
					t.Errorf("backend received %d bytes sha256 %.12s, want the browser's %s of %d bytes", got.size, got.sha, m.typ, m.size)
				}
				if !r.Same {
					t.Errorf("browser got back %+v for its %s of %d bytes", r, m.typ, m.size)
				}
				if m.size == mib && m.typ == "text" {
					t.Logf("%d-byte text: %d bytes from the browser, %d to it", m.size, in, out)
					if on && (in > mib/8 || out > mib/8) {
						t.Errorf("compression on: %d bytes from the browser and %d to it for a %d-byte text, want compressed frames", in, out, m.size)
					}
					if !on && (in < mib || out < mib) {
						t.Errorf("compression off: %d bytes from the browser and %d to it for a %d-byte text", in, out, m.size)
					}
				}
			}
			got := js[[]string](t, ctx, `it.burst("a", 200)`)
			for i, s := range got {
				if s != fmt.Sprintf("m%d", i) {
					t.Fatalf("echo %d is %q: messages out of order or lost (%d echoes)", i, s, len(got))
				}
			}
			for range 200 {
				recv(t, be.received, "burst message at the backend")
			}

			// Browsers answer RFC 6455 pings by themselves.
			waitMetric(t, tt, 3, "tether_heartbeat_pongs_received_total", "leg=client")
			if n := metric(t, tt, "tether_heartbeat_timeouts_total", "leg=client"); n != 0 {
				t.Errorf("%v client heartbeat timeouts", n)
			}

			c := js[closeResult](t, ctx, `it.close("a", 4001, "bye")`)
			if ce := recv(t, be.closes, "close at the backend"); ce.Code != 4001 || ce.Text != "bye" {
				t.Errorf("backend saw close %d %q, want 4001 \"bye\"", ce.Code, ce.Text)
			}
			if c.Code != 4001 || !c.WasClean {
				t.Errorf("browser's close ended %+v, want a clean 4001", c)
			}

			js[openResult](t, ctx, fmt.Sprintf(`it.open("b", %q, ["tether.v2"])`, tt.URL+"/ws"))
			conn := recv(t, be.conns, "first backend connection")
			if conn = recv(t, be.conns, "second backend connection"); conn == nil {
				t.Fatal("no second backend connection")
			}
			if err := conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4002, "later"), time.Now().Add(5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if c := js[closeResult](t, ctx, `it.closed("b")`); c.Code != 4002 || c.Reason != "later" || !c.WasClean {
				t.Errorf("browser saw close %+v, want a clean 4002 \"later\"", c)
			}
			if ce := recv(t, be.closes, "close reply at the backend"); ce.Code != 4002 {
				t.Errorf("backend's close handshake ended with %d %q, want 4002", ce.Code, ce.Text)
			}

			// One byte over TETHER_MAX_MESSAGE_BYTES (compressed, it is
			// over only once inflated): the browser gets 1009 (README "Close codes"),
			// the backend 1001.
			js[openResult](t, ctx, fmt.Sprintf(`it.open("c", %q, ["tether.v2"])`, tt.URL+"/ws"))
			recv(t, be.conns, "third backend connection")
			if c := js[closeResult](t, ctx, fmt.Sprintf(`it.sendAndWaitClose("c", "text", %d, 9)`, mib+1)); c.Code != 1009 {
				t.Errorf("browser saw close %+v after a message over the limit, want 1009", c)
			}
			if ce := recv(t, be.closes, "close at the backend"); ce.Code != 1001 {
				t.Errorf("backend saw close %d %q, want 1001", ce.Code, ce.Text)
			}
		})
		if !ok {
			return
		}
	}
}
