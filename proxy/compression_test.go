package proxy_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/proxy"
)

// countingConn counts the bytes a client reads off the wire.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func TestClientCompression(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "on", false: "off"}[on], func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, nil, nil)
			tt := startTether(t, b.URL, func(c *proxy.Config) { c.ClientCompression = on })
			var read atomic.Int64
			d := websocket.Dialer{
				EnableCompression: true,
				NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					return countingConn{c, &read}, err
				},
			}
			c, resp, err := d.Dial(tt.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ext := resp.Header.Get("Sec-WebSocket-Extensions")
			if on != strings.Contains(ext, "permessage-deflate") {
				t.Fatalf("compression %v: Sec-WebSocket-Extensions = %q", on, ext)
			}
			// The backend must never see the client's extension offer.
			if got := b.lastRequest().Header.Get("Sec-WebSocket-Extensions"); got != "" {
				t.Fatalf("backend got Sec-WebSocket-Extensions %q", got)
			}
			c.EnableWriteCompression(true)
			msg := strings.Repeat("tether compresses this line. ", 4000) // ~116 KB
			before := read.Load()
			for i := 0; i < 3; i++ {
				if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				_, p, err := c.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				if string(p) != msg {
					t.Fatalf("echo differs: %d bytes, want %d", len(p), len(msg))
				}
			}
			wire := read.Load() - before
			if on && wire > int64(len(msg)) {
				t.Fatalf("compression on, but %d bytes on the wire for 3 × %d", wire, len(msg))
			}
			if !on && wire < 3*int64(len(msg)) {
				t.Fatalf("compression off, but only %d bytes on the wire for 3 × %d", wire, len(msg))
			}
		})
	}
}

// A small compressed message that inflates past TETHER_MAX_MESSAGE_BYTES
// closes the client with 1009, without inflating it whole.
func TestClientCompressionBomb(t *testing.T) {
	t.Parallel()
	b := newBackend(t, nil, nil)
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		c.ClientCompression = true
		c.Session.MaxMessageBytes = 64 << 10
	})
	d := websocket.Dialer{EnableCompression: true}
	c, _, err := d.Dial(tt.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.EnableWriteCompression(true)
	if err := c.WriteMessage(websocket.BinaryMessage, make([]byte, 4<<20)); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("got %v, want close 1009", err)
	}
}
