package proxy_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/proxy"
)

// A peer still writing a message over TETHER_MAX_MESSAGE_BYTES when
// tether closes it with 1009 must read that Close: tether half-closes and
// discards the rest instead of closing a socket with unread bytes, which
// would reset the connection (Node's ws then reported 1006, not 1009;
// found by interop/).
func TestOverLimitCloseWithoutReset(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	const flood = 32 << 20 // more than loopback socket buffers hold

	t.Run("client", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t, nil, nil)
		tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.MaxMessageBytes = limit })
		conn, br, _, err := ws.Dial(t.Context(), tt.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if br != nil {
			ws.PutReader(br)
		}
		// One binary frame that claims 1 GiB, then flood bytes of it.
		hdr := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 1 << 30, Masked: true}
		if err := ws.WriteHeader(conn, hdr); err != nil {
			t.Fatal(err)
		}
		werr := make(chan error, 1)
		go func() {
			chunk := make([]byte, 64<<10)
			var err error
			for n := 0; n < flood && err == nil; n += len(chunk) {
				_, err = conn.Write(chunk)
			}
			werr <- err
		}()
		code, rerr := readClose(conn)
		if err := <-werr; err != nil {
			t.Errorf("writing the rest of the message: %v (tether reset the connection)", err)
		}
		if rerr != nil || code != 1009 {
			t.Fatalf("read Close %d, %v; want 1009", code, rerr)
		}
		// After its Close, tether sends FIN, not a reset.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.Copy(io.Discard, conn); err != nil || n != 0 {
			t.Errorf("after the Close: %d bytes, %v; want EOF", n, err)
		}
	})

	t.Run("upstream", func(t *testing.T) {
		t.Parallel()
		got := make(chan error, 1)
		b := newBackend(t, nil, func(c *websocket.Conn, _ *http.Request) {
			w, err := c.NextWriter(websocket.BinaryMessage)
			if err != nil {
				got <- err
				return
			}
			chunk := make([]byte, 64<<10)
			for n := 0; n < flood && err == nil; n += len(chunk) {
				_, err = w.Write(chunk)
			}
			if err != nil {
				got <- err
				return
			}
			_, _, err = c.ReadMessage()
			got <- err
		})
		tt := startTether(t, b.URL, func(c *proxy.Config) { c.Session.MaxMessageBytes = limit })
		c := dial(t, tt.URL, nil)
		if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 1014) && !strings.Contains(err.Error(), "1014") {
			t.Errorf("client: %v, want close 1014", err)
		}
		select {
		case err := <-got:
			if code, _ := closeCode(err); code != 1009 {
				t.Fatalf("backend: %v, want close 1009 (a reset means tether closed with unread bytes)", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("backend still writing after 20 s")
		}
	})
}

// readClose reads server frames until a Close and returns its code.
func readClose(conn net.Conn) (int, error) {
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return 0, err
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			return 0, err
		}
		if h.OpCode == ws.OpClose {
			if len(p) < 2 {
				return 0, errors.New("close without a code")
			}
			return int(binary.BigEndian.Uint16(p)), nil
		}
	}
}
