package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// serveBackend runs the benchmark backend on ln until ctx ends: a
// WebSocket echo server that sends every data frame back as it came
// (opcode, FIN, payload), answers RFC pings with pongs and JSON pings
// {"type":"ping"} with {"type":"pong"} (tether's heartbeats), and answers
// a Close with a Close. One goroutine per connection, frames echoed
// straight from its read buffer, so it costs little.
func serveBackend(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			echoConn(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
	}
}

// echoConn upgrades c and echoes until the peer closes or breaks. Frames
// are parsed and unmasked in place in the read buffer (no copy, no
// allocation) and every frame that has arrived goes back in one write:
// the backend must cost little next to the proxy it measures.
func echoConn(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := ws.Upgrade(c); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	br := bufio.NewReaderSize(c, 64<<10)
	bw := bufio.NewWriterSize(c, 64<<10)
	var scratch []byte
	for {
		h, err := readHeader(br)
		if err != nil {
			return
		}
		p, err := readPayload(br, h.Length, &scratch)
		if err != nil {
			return
		}
		if h.Masked {
			if h.Mask != zeroMask { // XOR with zero changes nothing
				ws.Cipher(p, h.Mask, 0)
			}
			h.Masked = false
		}
		switch h.OpCode {
		case ws.OpPing:
			h.OpCode = ws.OpPong
		case ws.OpPong:
			continue
		case ws.OpClose:
			_ = ws.WriteHeader(bw, h)
			_, _ = bw.Write(p)
			_ = bw.Flush()
			return
		case ws.OpText:
			if h.Fin && len(p) <= 4096 && len(p) > 0 && p[0] == '{' && bytes.Contains(p, jsonPing) {
				p = jsonPong
				h.Length = int64(len(p))
			}
		}
		if h.Length >= 16<<10 && bw.Size() < bigBuf {
			// Large frames: buffers that hold two, so that an echo is
			// not split across writes (allocated only for connections
			// that carry them: idle holds thousands).
			if bw.Flush() != nil {
				return
			}
			bw = bufio.NewWriterSize(c, bigBuf)
		}
		if writeHeader(bw, h) != nil {
			return
		}
		if _, err := bw.Write(p); err != nil {
			return
		}
		// Flush once the reader has nothing more buffered: a burst of
		// frames goes back in one write.
		if br.Buffered() == 0 {
			if bw.Flush() != nil {
				return
			}
		}
	}
}

// bigBuf is the backend's write buffer for a connection that carries
// frames of 16 KiB or more.
const bigBuf = 256 << 10

// writeHeader writes an unmasked frame header without allocating.
func writeHeader(bw *bufio.Writer, h ws.Header) error {
	var b [10]byte
	b[0] = byte(h.OpCode) | h.Rsv<<4
	if h.Fin {
		b[0] |= 0x80
	}
	n := 2
	switch {
	case h.Length < 126:
		b[1] = byte(h.Length)
	case h.Length <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(h.Length))
		n = 4
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(h.Length))
		n = 10
	}
	_, err := bw.Write(b[:n])
	return err
}

// serveRelay is the floor of what any proxy costs: for each connection
// accepted on ln it dials to and copies bytes both ways with io.Copy
// (splice on Linux), passing a half-close on with CloseWrite. Splice
// holds a pipe (two file descriptors) per blocked direction, six per
// session in all, so with a 20,000 open-file limit it holds about 3,300
// sessions; noSplice copies through a 16 KiB buffer per direction
// instead (two descriptors per session), for idle runs.
func serveRelay(ctx context.Context, ln net.Listener, to string, noSplice bool) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				// EMFILE and the like: refuse this one, keep serving.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			relayConn(ctx, c.(*net.TCPConn), to, noSplice)
		}()
	}
}

func relayConn(ctx context.Context, c *net.TCPConn, to string, noSplice bool) {
	defer c.Close()
	var d net.Dialer
	u, err := d.DialContext(ctx, "tcp", to)
	if err != nil {
		return
	}
	up := u.(*net.TCPConn)
	defer up.Close()
	stop := context.AfterFunc(ctx, func() {
		c.Close()
		up.Close()
	})
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(up, c, noSplice)
	}()
	copyHalf(c, up, noSplice)
	<-done
}

// plainReader and plainWriter hide ReadFrom/WriteTo so io.CopyBuffer
// uses its buffer rather than splice.
type plainReader struct{ io.Reader }
type plainWriter struct{ io.Writer }

// copyHalf copies src to dst and then half-closes dst.
func copyHalf(dst, src *net.TCPConn, noSplice bool) {
	var err error
	if noSplice {
		_, err = io.CopyBuffer(plainWriter{dst}, plainReader{src}, make([]byte, 16<<10))
	} else {
		_, err = io.Copy(dst, src)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		_ = dst.Close()
		_ = src.Close()
		return
	}
	_ = dst.CloseWrite()
}
