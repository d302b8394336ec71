package main

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// jsonPing and jsonPong are tether's default JSON heartbeat (README
// "Configuration").
var (
	jsonPing = []byte(`"type":"ping"`)
	jsonPong = []byte(`{"type":"pong"}`)
)

// dialOpts say how the load tool connects.
type dialOpts struct {
	url     string
	sources int  // source addresses 127.0.0.1 .. 127.0.0.<sources>
	deflate bool // offer permessage-deflate (no context takeover)
	resume  bool // ask tether for a resumable session (tether_resume=new)
	readBuf int  // bufio.Reader size per connection
	// onConn, if set, is called with each connection as soon as it is
	// open (idle starts its reader there: a session left unread while
	// thousands more are dialled would miss tether's heartbeats).
	onConn func(*client)
}

// counters are the wire bytes of every connection of a run.
type counters struct {
	read, written atomic.Int64
	writes        atomic.Int64 // Write calls (system calls)
}

// countingConn counts the bytes that cross a connection.
type countingConn struct {
	net.Conn
	c *counters
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.read.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.written.Add(int64(n))
	c.c.writes.Add(1)
	return n, err
}

// Compressors are pooled: a flate writer is hundreds of KiB, and making
// one per message would make the tool, not the proxy, the bottleneck.
var (
	flateWriters = sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, flate.BestSpeed) // as tether does
		return w
	}}
	flateReaders = sync.Pool{New: func() any { return flate.NewReader(nil) }}
	deflateTail  = []byte{0x00, 0x00, 0xff, 0xff}
	inflateTail  = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}
)

// compress appends p compressed as one permessage-deflate message (no
// context takeover) to dst[:0].
func compress(dst *bytes.Buffer, p []byte) ([]byte, error) {
	dst.Reset()
	fw := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(fw)
	fw.Reset(dst)
	if _, err := fw.Write(p); err != nil {
		return nil, err
	}
	if err := fw.Flush(); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(dst.Bytes(), deflateTail), nil
}

// decompress inflates the message p into dst.
func decompress(dst *bytes.Buffer, p []byte) ([]byte, error) {
	dst.Reset()
	fr := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(fr)
	src := io.MultiReader(bytes.NewReader(p), bytes.NewReader(inflateTail))
	if err := fr.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, err
	}
	if _, err := dst.ReadFrom(fr); err != nil {
		return nil, err
	}
	return dst.Bytes(), nil
}

// client is one WebSocket connection of the load tool. Writes are
// serialised by wmu (the reader answers pings while a writer sends data);
// read is called from one goroutine only.
type client struct {
	conn    net.Conn
	br      *bufio.Reader
	deflate bool // permessage-deflate was negotiated
	// resume: the session is resumable (README "Client session resume"):
	// tether's tether.session and tether.ack messages are consumed, and
	// the data messages received are acknowledged every resumeAckEvery.
	resume      bool
	resumable   atomic.Bool // tether's tether.session message arrived
	recv, acked uint64
	ackBuf      []byte

	wmu  sync.Mutex
	bw   *bufio.Writer
	zbuf bytes.Buffer // compressed message being written (under wmu)
	ubuf bytes.Buffer // decompressed message read (reader only)

	pings     atomic.Int64 // RFC and JSON pings answered
	closeOnce sync.Once
	msg       []byte // message being assembled (reader only)
	scratch   []byte // a frame larger than br's buffer (reader only)
	pumping   bool   // a throughput pump is the only reader and writer, holding wmu
}

// dial opens connection i, binding it to source address
// 127.0.0.(1 + i mod sources) so that many connections fit in the
// ephemeral port range.
func dial(ctx context.Context, o dialOpts, i int, cnt *counters) (*client, error) {
	u, err := url.Parse(o.url)
	if err != nil {
		return nil, err
	}
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%max(o.sources, 1)))}
	d := ws.Dialer{
		Timeout: 30 * time.Second, // generous: a starved proxy still counts
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: src}
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{c, cnt}, nil
		},
	}
	if u.Scheme == "wss" {
		// A proxy under test on loopback serves a test certificate.
		d.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	if o.deflate {
		d.Extensions = []httphead.Option{wsflate.DefaultParameters.Option()}
	}
	if o.resume {
		q := u.Query()
		q.Set("tether_resume", "new")
		u.RawQuery = q.Encode()
	}
	conn, br, hs, err := d.Dial(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", u.Host, err)
	}
	size := max(o.readBuf, 512)
	// The write buffer holds two messages, like the read buffer
	// (throughput sizes both from the message): a 64 KiB message through
	// a 64 KiB buffer went out in two writes, and cost the harness a
	// fifth more per message (BENCHMARKS.md, seventh sitting).
	c := &client{conn: conn, bw: bufio.NewWriterSize(conn, max(64<<10, o.readBuf)), resume: o.resume}
	if br != nil {
		// Frames the server sent right after its 101 are already in br.
		c.br = br
	} else {
		c.br = bufio.NewReaderSize(conn, size)
	}
	for _, e := range hs.Extensions {
		if string(e.Name) == wsflate.ExtensionName {
			c.deflate = true
		}
	}
	return c, nil
}

// zeroMask is the masking key of every frame the tool sends. RFC 6455
// wants an unpredictable key, but no server can tell, and XOR with zero
// spares the tool a copy of each payload: its CPU goes to the proxy.
var zeroMask [4]byte

// writeFrame sends one unfragmented frame; flush says whether to flush
// the buffered writer afterwards.
func (c *client) writeFrame(op ws.OpCode, p []byte, flush bool) error {
	if c.pumping {
		// The pump holds wmu and flushes before it next reads; a pong
		// written from inside read must not wait for a read that may
		// block.
		return c.writeFrameLocked(op, p, flush && c.br.Buffered() == 0)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeFrameLocked(op, p, flush)
}

func (c *client) writeFrameLocked(op ws.OpCode, p []byte, flush bool) error {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: zeroMask, Length: int64(len(p))}
	if c.deflate && op.IsData() && len(p) >= 128 {
		z, err := compress(&c.zbuf, p)
		if err != nil {
			return err
		}
		p = z
		h.Length = int64(len(p))
		h.Rsv = ws.Rsv(true, false, false)
	}
	if err := ws.WriteHeader(c.bw, h); err != nil {
		return err
	}
	if _, err := c.bw.Write(p); err != nil {
		return err
	}
	if flush {
		return c.bw.Flush()
	}
	return nil
}

func (c *client) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.bw.Flush()
}

// tetherMsg starts tether's own messages on a resumable session.
var (
	tetherMsg     = []byte(`{"type":"tether.`)
	tetherSession = []byte(`{"type":"tether.session"`)
)

// resumeAckEvery is how often a resumable client acknowledges what it
// received (tether.js acknowledges every 32 messages or 100 ms).
const resumeAckEvery = 32

// errClosed is a Close frame from the server.
var errClosed = errors.New("server sent close")

// readHeader parses one frame header from br without allocating (gobwas's
// ws.ReadHeader allocates a scratch slice per frame, which at hundreds of
// thousands of frames a second makes the tool, not the proxy, the cost).
func readHeader(br *bufio.Reader) (ws.Header, error) {
	var h ws.Header
	b, err := br.Peek(2)
	if err != nil {
		return h, err
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] >> 4) & 0x07
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n, ext := 2, 0
	switch b[1] & 0x7f {
	case 126:
		ext = 2
	case 127:
		ext = 8
	default:
		h.Length = int64(b[1] & 0x7f)
	}
	n += ext
	if h.Masked {
		n += 4
	}
	if n > 2 {
		if b, err = br.Peek(n); err != nil {
			return h, err
		}
		switch ext {
		case 2:
			h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		case 8:
			h.Length = int64(binary.BigEndian.Uint64(b[2:10]) & (1<<63 - 1))
		}
		if h.Masked {
			copy(h.Mask[:], b[2+ext:n])
		}
	}
	_, err = br.Discard(n)
	return h, err
}

// readPayload returns the next length bytes of br: a slice of br's own
// buffer (valid until br is read again) or a copy in *scratch.
func readPayload(br *bufio.Reader, length int64, scratch *[]byte) ([]byte, error) {
	// In place when the bytes are buffered already or the frame is small;
	// a large frame is read straight into scratch (bufio then reads the
	// socket into it directly instead of through its own buffer).
	if length <= int64(br.Buffered()) || length <= 16<<10 && length <= int64(br.Size()) {
		p, err := br.Peek(int(length))
		if err != nil {
			return nil, err
		}
		_, _ = br.Discard(len(p))
		return p, nil
	}
	if int64(cap(*scratch)) < length {
		*scratch = make([]byte, length)
	}
	p := (*scratch)[:length]
	_, err := io.ReadFull(br, p)
	return p, err
}

// read returns the next data message, answering RFC pings and JSON pings
// on the way. The returned slice is valid until the next call.
func (c *client) read() ([]byte, error) {
	c.msg = c.msg[:0]
	compressed := false
	for {
		// A pump's queued writes go out before this read can block: a
		// frame read consumes (a heartbeat, tether's own messages) must
		// not leave them waiting for the next ping.
		if c.pumping && c.br.Buffered() == 0 && c.bw.Buffered() > 0 {
			if err := c.bw.Flush(); err != nil {
				return nil, err
			}
		}
		h, err := readHeader(c.br)
		if err != nil {
			return nil, err
		}
		if h.OpCode.IsControl() {
			p, err := readPayload(c.br, h.Length, &c.scratch)
			if err != nil {
				return nil, err
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPing:
				c.pings.Add(1)
				if err := c.writeFrame(ws.OpPong, p, true); err != nil {
					return nil, err
				}
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(p)
				return nil, fmt.Errorf("%w: %d %s", errClosed, code, reason)
			}
			continue
		}
		if h.OpCode != ws.OpContinuation {
			compressed = h.Rsv1()
		}
		var msg []byte
		if h.Fin && len(c.msg) == 0 {
			// One frame: no joining, no copy.
			if msg, err = readPayload(c.br, h.Length, &c.scratch); err != nil {
				return nil, err
			}
			if h.Masked {
				ws.Cipher(msg, h.Mask, 0)
			}
		} else {
			n := len(c.msg)
			if need := n + int(h.Length); need > cap(c.msg) {
				c.msg = append(c.msg[:cap(c.msg)], make([]byte, need-cap(c.msg))...)
			}
			c.msg = c.msg[:n+int(h.Length)]
			if _, err := io.ReadFull(c.br, c.msg[n:]); err != nil {
				return nil, err
			}
			if h.Masked {
				ws.Cipher(c.msg[n:], h.Mask, 0)
			}
			if !h.Fin {
				continue
			}
			msg = c.msg
		}
		if compressed {
			if msg, err = decompress(&c.ubuf, msg); err != nil {
				return nil, fmt.Errorf("inflate: %w", err)
			}
		}
		if len(msg) > 0 && len(msg) <= 4096 && msg[0] == '{' && bytes.Contains(msg, jsonPing) {
			c.pings.Add(1)
			if err := c.writeFrame(ws.OpText, jsonPong, true); err != nil {
				return nil, err
			}
			c.msg = c.msg[:0]
			continue
		}
		if c.resume {
			if bytes.HasPrefix(msg, tetherMsg) {
				if bytes.HasPrefix(msg, tetherSession) {
					c.resumable.Store(true)
				}
				c.msg = c.msg[:0] // tether.session, tether.ack: not data
				continue
			}
			c.recv++
			if c.recv-c.acked >= resumeAckEvery {
				c.acked = c.recv
				c.ackBuf = strconv.AppendUint(append(c.ackBuf[:0], `{"type":"tether.ack","ack":`...), c.recv, 10)
				c.ackBuf = append(c.ackBuf, '}')
				if err := c.writeFrame(ws.OpText, c.ackBuf, true); err != nil {
					return nil, err
				}
			}
		}
		return msg, nil
	}
}

// close sends a Close frame (1000) and closes the connection.
func (c *client) close() {
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.writeFrameLocked(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""), true)
		c.wmu.Unlock()
		_ = c.conn.Close()
	})
}

// dialAll opens n connections at most rate per second (0: no limit),
// with up to 64 handshakes in flight.
func dialAll(ctx context.Context, o dialOpts, n, rate int, cnt *counters) ([]*client, error) {
	cs := make([]*client, n)
	var next atomic.Int64
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	start := time.Now()
	errc := make(chan error, 64)
	var wg sync.WaitGroup
	for range min(64, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if interval > 0 {
					if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
						time.Sleep(d)
					}
				}
				c, err := dial(ctx, o, i, cnt)
				if err != nil {
					next.Store(int64(n)) // stop the others
					errc <- fmt.Errorf("session %d: %w", i, err)
					return
				}
				cs[i] = c
				if o.onConn != nil {
					o.onConn(c)
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		closeAll(cs)
		return nil, err
	}
	return cs, nil
}

func closeAll(cs []*client) {
	for _, c := range cs {
		if c != nil {
			c.close()
		}
	}
}
