package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tether-proxy/tether/proxy"
)

// A session's opening (README "Performance"): what the proxy allocates to
// accept a client's handshake, dial and upgrade the upstream, relay one
// message each way and close. The peers are written on the bytes, so that
// nearly all the allocations counted are the proxy's.

// byteEchoBackend is a WebSocket echo server on 127.0.0.1 written on the bytes:
// it answers an upgrade, echoes data frames unmasked, answers pings and
// echoes a Close.
func byteEchoBackend(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go byteEcho(c)
		}
	}()
	return "ws://" + ln.Addr().String()
}

var keyHeader = []byte("\r\nsec-websocket-key:")

// echoState is a connection's buffers, pooled so that the benchmark's
// allocations are the proxy's.
type echoState struct {
	br   *bufio.Reader
	head [4096]byte
	buf  [4096]byte
	out  [256]byte
}

var echoStates = sync.Pool{New: func() any { return &echoState{br: bufio.NewReaderSize(nil, 4096)} }}

func byteEcho(c net.Conn) {
	defer c.Close()
	st := echoStates.Get().(*echoState)
	defer echoStates.Put(st)
	st.br.Reset(c)
	n := 0
	for !bytes.Contains(st.head[:n], []byte("\r\n\r\n")) {
		if n == len(st.head) {
			return
		}
		m, err := st.br.Read(st.head[n:])
		if err != nil {
			return
		}
		n += m
	}
	req := st.head[:n]
	i := bytes.Index(bytes.ToLower(req), keyHeader)
	if i < 0 {
		return
	}
	key := req[i+len(keyHeader):]
	key = bytes.TrimSpace(key[:bytes.IndexByte(key, '\r')])
	h := sha1.New()
	h.Write(key)
	h.Write([]byte(wsGUID))
	var sum [sha1.Size]byte
	out := append(st.out[:0], "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	out = base64.StdEncoding.AppendEncode(out, h.Sum(sum[:0]))
	out = append(out, "\r\n\r\n"...)
	if _, err := c.Write(out); err != nil {
		return
	}
	for {
		op, payload, err := readFrame(st.br, st.buf[:])
		if err != nil {
			return
		}
		switch op {
		case 0x9: // ping
			op = 0xA
		case 0xA:
			continue
		}
		if _, err := c.Write(appendFrame(st.out[:0], op, payload, false)); err != nil || op == 0x8 {
			return
		}
	}
}

// readFrame reads one frame of up to len(buf) bytes into buf, unmasked.
func readFrame(r io.Reader, buf []byte) (op byte, payload []byte, err error) {
	var h [14]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return 0, nil, err
	}
	op = h[0] & 0x0f
	masked := h[1]&0x80 != 0
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(r, h[2:4]); err != nil {
			return 0, nil, err
		}
		n = int(h[2])<<8 | int(h[3])
	case 127:
		return 0, nil, errors.New("frame too long")
	}
	var mask [4]byte
	if masked {
		if _, err := io.ReadFull(r, mask[:]); err != nil {
			return 0, nil, err
		}
	}
	if n > len(buf) {
		return 0, nil, errors.New("frame too long")
	}
	payload = buf[:n]
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
	}
	return op, payload, nil
}

// appendFrame appends a final frame of payload (at most 65535 bytes);
// masked with a zero key when mask is set (a client's frame).
func appendFrame(dst []byte, op byte, payload []byte, mask bool) []byte {
	var m byte
	if mask {
		m = 0x80
	}
	if len(payload) < 126 {
		dst = append(dst, 0x80|op, m|byte(len(payload)))
	} else {
		dst = append(dst, 0x80|op, m|126, byte(len(payload)>>8), byte(len(payload)))
	}
	if mask {
		dst = append(dst, 0, 0, 0, 0)
	}
	return append(dst, payload...)
}

// BenchmarkSessionOpen opens a session, relays a 64-byte text message
// each way and closes it, one session at a time.
func BenchmarkSessionOpen(b *testing.B) {
	tt := startTetherOpts(b, byteEchoBackend(b), proxy.Options{}, nil)
	req := []byte("GET /chat HTTP/1.1\r\nHost: " + tt.Addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	msg := appendFrame(nil, 0x1, bytes.Repeat([]byte("m"), 64), true)
	bye := appendFrame(nil, 0x8, []byte{0x03, 0xe8}, true)
	var buf [4096]byte
	br := bufio.NewReaderSize(nil, 4096)
	open := func() error {
		c, err := net.Dial("tcp", tt.Addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(req); err != nil {
			return err
		}
		br.Reset(c)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(line) == 2 {
				break
			}
		}
		if _, err := c.Write(msg); err != nil {
			return err
		}
		for got := false; !got; {
			op, p, err := readFrame(br, buf[:])
			if err != nil {
				return err
			}
			got = op == 0x1 && len(p) == 64
		}
		if _, err := c.Write(bye); err != nil {
			return err
		}
		for {
			op, _, err := readFrame(br, buf[:])
			if err != nil {
				return err
			}
			if op == 0x8 {
				return nil
			}
		}
	}
	if err := open(); err != nil { // the first one warms the pools up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := open(); err != nil {
			b.Fatal(err)
		}
	}
}
