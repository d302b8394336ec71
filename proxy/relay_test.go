package proxy_test

import (
	"testing"

	"github.com/gorilla/websocket"
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
