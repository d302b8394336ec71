package proxy_test

import (
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/proxy"
	"github.com/tether-proxy/tether/replay"
)

// A client whose MQTT messages never end at a packet boundary (each
// carries the start of the next PUBLISH) through a retention window of 4,
// over real sockets: an upstream that answers every ping (gorilla's
// default handler) gets all of them, so the client's reads never paused
// for good; its held messages then begin inside a packet, so an upstream
// loss closes the client with 1012 instead of re-sending from there
// (README "State replay on upstream reconnect").
func TestCutMQTTStreamDoesNotStall(t *testing.T) {
	t.Parallel()
	const n = 12
	var got atomic.Int32
	all := make(chan struct{})
	upc := make(chan *websocket.Conn, 1)
	b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
		select {
		case upc <- c:
		default:
		}
		for {
			typ, _, err := c.ReadMessage() // answers pings meanwhile
			if err != nil {
				return
			}
			if typ == websocket.BinaryMessage && got.Add(1) == 1+n {
				close(all)
			}
		}
	})
	tt := startTether(t, b.URL, func(c *proxy.Config) {
		c.Session.Replay.Protocol = replay.MQTT
		c.Session.Buffer.MaxMessages = 4
	})
	c := dial(t, tt.URL, nil)
	connect := []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0}
	pub := []byte{0x30, 5, 0, 1, 't', 'x', 'y'}
	msgs := [][]byte{connect, pub[:3]}
	for range n - 1 {
		msgs = append(msgs, slices.Concat(pub[3:], pub[:3]))
	}
	go func() {
		for _, m := range msgs {
			if c.WriteMessage(websocket.BinaryMessage, m) != nil {
				return
			}
		}
	}()
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Fatalf("upstream got %d of %d messages: the client's reads paused", got.Load(), 1+n)
	}
	(<-upc).UnderlyingConn().Close() // lost without a Close
	rcExpectClose(t, c, 1012, "*")
}
