package proxy_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/proxy"
	"github.com/tether-proxy/tether/session"
)

// README "Close codes" row 1: the client's Close reaches the upstream with the
// same code and reason, and the client's close handshake completes. A Close
// without a code is passed on without one (1005 never goes on the wire:
// gorilla would reject a received 1005 as a protocol error).
func TestCoreClientClose(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		payload []byte
		code    int
		reason  string
	}{
		{"4001 bye", websocket.FormatCloseMessage(4001, "bye"), 4001, "bye"},
		{"1000 no reason", websocket.FormatCloseMessage(1000, ""), 1000, ""},
		{"1001 reason", websocket.FormatCloseMessage(1001, "tab closed"), 1001, "tab closed"},
		{"3000", websocket.FormatCloseMessage(3000, "x"), 3000, "x"},
		{"no code", []byte{}, websocket.CloseNoStatusReceived, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ends := make(chan coreEnd, 1)
			b := newBackend(t, nil, coreEchoRecorder(ends))
			tt := startTether(t, b.URL, nil)
			c := dial(t, tt.URL, nil)
			coreEcho(t, c, "before close")
			if err := c.WriteControl(websocket.CloseMessage, tc.payload, time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			coreWantClose(t, c, tc.code, tc.reason)
			coreWantEnd(t, ends, tc.code, tc.reason)
			coreWaitSessions(t, tt, 0)
		})
	}
}

// README "Close codes" row 3: an upstream Close whose code does not trigger a
// reconnect reaches the client with its code and reason; the upstream's
// close handshake completes.
func TestCoreUpstreamClose(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		payload []byte
		code    int
		reason  string
	}{
		{"1000", websocket.FormatCloseMessage(1000, "done"), 1000, "done"},
		{"1008", websocket.FormatCloseMessage(1008, "policy"), 1008, "policy"},
		{"4000", websocket.FormatCloseMessage(4000, "app reason ✓"), 4000, "app reason ✓"},
		{"1003", websocket.FormatCloseMessage(1003, ""), 1003, ""},
		{"no code", []byte{}, websocket.CloseNoStatusReceived, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			upEnd := make(chan coreEnd, 1)
			b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
				if _, _, err := c.ReadMessage(); err != nil { // "close now"
					return
				}
				if err := c.WriteControl(websocket.CloseMessage, tc.payload, time.Now().Add(time.Second)); err != nil {
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						upEnd <- coreEnd{err: err}
						return
					}
				}
			})
			tt := startTether(t, b.URL, nil)
			c := dial(t, tt.URL, nil)
			if err := c.WriteMessage(websocket.TextMessage, []byte("close now")); err != nil {
				t.Fatal(err)
			}
			coreWantClose(t, c, tc.code, tc.reason)
			// The upstream's handshake: tether echoes its Close.
			coreWantEnd(t, upEnd, tc.code, tc.reason)
			coreWaitSessions(t, tt, 0)
		})
	}
}

// README "Close codes" row 2: a client connection that breaks gives the
// upstream Close 1001, and the session ends.
func TestCoreClientDropped(t *testing.T) {
	t.Parallel()
	ends := make(chan coreEnd, 1)
	b := newBackend(t, nil, coreEchoRecorder(ends))
	tt := startTether(t, b.URL, nil)
	c := dial(t, tt.URL, nil)
	coreEcho(t, c, "hi")
	c.UnderlyingConn().Close() // no Close frame
	coreWantEnd(t, ends, 1001, "*")
	coreWaitSessions(t, tt, 0)
}

// README "Close codes" row 5: a client message over TETHER_MAX_MESSAGE_BYTES
// (also across fragments) or invalid UTF-8 ends only that session: client 1009
// / 1007, upstream 1001. Another session keeps working.
func TestCoreClientBadMessage(t *testing.T) {
	t.Parallel()
	const limit = 1024
	cases := []struct {
		name  string
		send  func(c *websocket.Conn) error
		code  int
		dialW int // client write buffer (fragment size)
	}{
		{"oversize", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.BinaryMessage, make([]byte, limit+1))
		}, 1009, 0},
		{"oversize across fragments", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.BinaryMessage, make([]byte, 3*limit))
		}, 1009, 512},
		{"invalid UTF-8", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.TextMessage, []byte{'a', 0xff, 'b'})
		}, 1007, 0},
		{"truncated UTF-8 across fragments", func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.TextMessage, append(bytes.Repeat([]byte("é"), 40), 0xc3))
		}, 1007, 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ends := make(chan coreEnd, 2)
			b := newBackend(t, nil, coreEchoRecorder(ends))
			tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.MaxMessageBytes = limit })
			other := dial(t, tt.URL, nil)
			coreEcho(t, other, "other")
			d := websocket.Dialer{WriteBufferSize: tc.dialW}
			c, _, err := d.Dial(tt.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Exactly at the limit passes.
			if err := c.WriteMessage(websocket.BinaryMessage, make([]byte, limit)); err != nil {
				t.Fatal(err)
			}
			if _, p, err := c.ReadMessage(); err != nil || len(p) != limit {
				t.Fatalf("message at the limit: %d bytes, %v", len(p), err)
			}
			if err := tc.send(c); err != nil {
				// tether may close before the last fragment is written;
				// its Close frame is still there to read.
				t.Logf("send: %v", err)
			}
			coreWantClose(t, c, tc.code, "*")
			coreWantEnd(t, ends, 1001, "*")
			coreEcho(t, other, "other still works")
			coreWaitSessions(t, tt, 1)
		})
	}
}

// README "Close codes" row 6: an upstream message over the limit or with
// invalid UTF-8 closes the client with 1014 and the upstream with 1009 / 1007.
func TestCoreUpstreamBadMessage(t *testing.T) {
	t.Parallel()
	const limit = 1024
	cases := []struct {
		name string
		typ  int
		p    []byte
		code int
	}{
		{"oversize", websocket.BinaryMessage, make([]byte, limit+1), 1009},
		{"invalid UTF-8", websocket.TextMessage, []byte{0xed, 0xa0, 0x80}, 1007}, // a surrogate
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ends := make(chan coreEnd, 1)
			b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				_ = c.WriteMessage(tc.typ, tc.p)
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						ends <- coreEnd{err: err}
						return
					}
				}
			})
			tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.MaxMessageBytes = limit })
			c := dial(t, tt.URL, nil)
			if err := c.WriteMessage(websocket.TextMessage, []byte("go")); err != nil {
				t.Fatal(err)
			}
			coreWantClose(t, c, 1014, "*")
			coreWantEnd(t, ends, tc.code, "*")
			coreWaitSessions(t, tt, 0)
		})
	}
}

// README "Close codes" row 5: a protocol error from the client gives it Close
// 1002 and the upstream Close 1001.
func TestCoreClientProtocolError(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		frame []byte
	}{
		{"unmasked frame", coreFrame(true, 0, 1, false, []byte("hi"))},
		{"reserved bit", coreFrame(true, 4, 1, true, []byte("hi"))},
		{"unknown opcode", coreFrame(true, 0, 3, true, []byte("hi"))},
		{"continuation without a message", coreFrame(true, 0, 0, true, []byte("hi"))},
		{"fragmented ping", coreFrame(false, 0, 9, true, []byte("hi"))},
		{"control frame over 125 bytes", coreFrame(true, 0, 9, true, make([]byte, 126))},
		{"new message inside a fragmented one", append(coreFrame(false, 0, 1, true, []byte("a")), coreFrame(true, 0, 1, true, []byte("b"))...)},
		{"close with one byte", coreFrame(true, 0, 8, true, []byte{3})},
		{"close with code 1005", coreFrame(true, 0, 8, true, []byte{0x03, 0xed})},
		{"close with invalid UTF-8 reason", coreFrame(true, 0, 8, true, []byte{0x03, 0xe8, 0xff})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ends := make(chan coreEnd, 1)
			b := newBackend(t, nil, coreEchoRecorder(ends))
			tt := startTether(t, b.URL, nil)
			c, br := coreRawUpgrade(t, tt.Addr)
			// A valid message first: the leg works.
			if _, err := c.Write(coreFrame(true, 0, 1, true, []byte("ok"))); err != nil {
				t.Fatal(err)
			}
			if op, p := coreReadFrame(t, br); op != 1 || string(p) != "ok" {
				t.Fatalf("echo: op %d %q", op, p)
			}
			if _, err := c.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			want := 1002
			if tc.name == "close with invalid UTF-8 reason" {
				want = 1007
			}
			if got := coreReadClose(t, c, br); got != want {
				t.Errorf("client got close %d, want %d", got, want)
			}
			coreWantEnd(t, ends, 1001, "*")
			coreWaitSessions(t, tt, 0)
		})
	}
}

// README "Close codes" row 6: a protocol error from the upstream gives the
// client 1014 and the upstream 1002.
func TestCoreUpstreamProtocolError(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		frame []byte
	}{
		{"masked frame", coreFrame(true, 0, 2, true, []byte("hi"))},
		{"reserved bit", coreFrame(true, 2, 2, false, []byte("hi"))},
		{"unknown opcode", coreFrame(true, 0, 11, false, nil)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ends := make(chan coreEnd, 1)
			b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				if _, err := c.UnderlyingConn().Write(tc.frame); err != nil {
					return
				}
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						ends <- coreEnd{err: err}
						return
					}
				}
			})
			tt := startTether(t, b.URL, nil)
			c := dial(t, tt.URL, nil)
			if err := c.WriteMessage(websocket.TextMessage, []byte("go")); err != nil {
				t.Fatal(err)
			}
			coreWantClose(t, c, 1014, "*")
			coreWantEnd(t, ends, 1002, "*")
			coreWaitSessions(t, tt, 0)
		})
	}
}

// README "Close codes": the reserved codes never go on the wire, whatever a
// peer sends; checked on a raw client leg for the upstream's no-code Close.
func TestCoreNoReservedCodesOnWire(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
		_ = c.WriteControl(websocket.CloseMessage, []byte{}, time.Now().Add(time.Second))
		_, _, _ = c.ReadMessage()
	})
	tt := startTether(t, b.URL, nil)
	c, br := coreRawUpgrade(t, tt.Addr)
	if _, err := c.Write(coreFrame(true, 0, 1, true, []byte("go"))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		op, p := coreReadFrame(t, br)
		if op != 8 {
			continue
		}
		if len(p) != 0 {
			t.Fatalf("client got a Close payload %x, want none", p)
		}
		break
	}
}

// README "Close codes" row 7 and row 3: with a code removed from
// TETHER_RECONNECT_ON_CODES, losing the upstream ends the session instead
// of reconnecting: a broken connection (1006, never sent) gives the client
// 1014, and a Close with a removed code is passed through.
func TestCoreUpstreamLostWithoutReconnect(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		codes []session.CloseCode
		end   func(c *websocket.Conn)
		want  int
	}{
		{"connection dropped, 1006 not listed", []session.CloseCode{1001}, func(c *websocket.Conn) {
			c.UnderlyingConn().Close()
		}, 1014},
		{"Close 1001, 1001 not listed", []session.CloseCode{1006}, func(c *websocket.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1001, "restart"), time.Now().Add(time.Second))
			_, _, _ = c.ReadMessage()
		}, 1001},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				tc.end(c)
			})
			tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.Reconnect.OnCodes = tc.codes })
			c := dial(t, tt.URL, nil)
			if err := c.WriteMessage(websocket.TextMessage, []byte("go")); err != nil {
				t.Fatal(err)
			}
			coreWantClose(t, c, tc.want, "*")
			coreWaitSessions(t, tt, 0)
			b.mu.Lock()
			n := len(b.requests)
			b.mu.Unlock()
			if n != 1 {
				t.Errorf("upstream dialed %d times, want no reconnect", n)
			}
		})
	}
}
