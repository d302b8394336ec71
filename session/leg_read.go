package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// errIdle is returned by a read at a message boundary when the leg has
// been quiet for Env.IdleAfter: the read loop may park the leg.
var errIdle = errors.New("leg idle")

// errPumpRead would be a socket read from inside pumpRead's own: a bug,
// ended as a session error, not a deadlock.
var errPumpRead = errors.New("session: socket read inside a pumped read")

// Read buffers a leg holds while its read loop runs come in four sizes
// (tiers). A leg that cannot park holds its buffer for life: 4 KiB. A leg
// that parks holds one only while it runs and starts each run with the
// 512-byte one, enough for the pings, pongs and short messages that wake
// an idle leg: a burst of new sessions, whose legs each run for IdleAfter
// before they park, or 9,000 idle sessions waking for their heartbeats,
// then hold 0.5 KiB per running leg, not 32 (the pool keeps what the
// busiest moment took until two GCs have passed, which an idle process
// takes minutes to reach). When a socket read fills the buffer (more
// bytes were waiting), the leg takes the next size at its next message
// boundary, up to 32 KiB, and keeps it until it parks: a read then takes
// in up to 32 KiB of frames, which halves the syscalls per message when
// small messages stream (measured: +45 % messages per CPU second at 1 KiB
// for 16 KiB; 32 KiB takes a burst of 16 KiB of messages and their
// headers in one read, not two: a third fewer reads, +6 %). A frame
// larger than the buffer is read past it, straight into the message, so
// the size limits nothing but the bytes per read; a leg whose buffer was
// filled by a frame longer than the largest size does not grow (it would
// only copy more of such frames out of the buffer: see growReader).
var readBufSizes = [...]int{512, 4 << 10, 16 << 10, 32 << 10}

const (
	tierWake    uint8 = 0 // a parking leg's first size
	tierFixed   uint8 = 1 // a leg that cannot park
	tierLargest       = uint8(len(readBufSizes) - 1)
)

// readBuf is what a leg's read loop holds while it runs: the read buffer,
// room for one control frame's payload, and the state of the raw socket
// read in progress (see legReader.Read), kept here so that a read
// allocates nothing (a closure over it would escape to the heap on every
// read) and a parked leg holds none of it.
type readBuf struct {
	in   inbuf
	tier uint8
	ctl  [125]byte

	l      *leg
	p      []byte
	n      int
	err    error
	quick  bool                  // armRead asked to park at once
	pump   bool                  // pumpRead is running (no nested socket read)
	stop   bool                  // pumpRead: a message ended the read loop
	readFn func(fd uintptr) bool // rawRead, made once per readBuf
	pumpFn func(fd uintptr) bool // pumpRead, made once per readBuf
}

var readBufs [len(readBufSizes)]sync.Pool

func init() {
	for i := range readBufs {
		readBufs[i].New = func() any {
			rb := &readBuf{in: inbuf{buf: make([]byte, readBufSizes[i])}, tier: uint8(i)}
			rb.readFn, rb.pumpFn = rb.rawRead, rb.pumpRead
			return rb
		}
	}
}

// rawRead is the callback of a leg's raw socket read: one read syscall.
// On EAGAIN the frames the read loop left pending on the other leg are
// written, and the read deadline set again after that write, before the
// read waits for readiness (returning false makes RawConn.Read wait and
// call it again).
func (rb *readBuf) rawRead(fd uintptr) bool {
	l := rb.l
	rb.n, rb.err = l.readSocket(fd, rb.p)
	if rb.err != syscall.EAGAIN {
		return true
	}
	if l.flushTo != nil {
		l.flushDeferred()
		if rb.quick = l.armRead(); rb.quick {
			return true
		}
	}
	return false
}

// acquireReader gives the read loop its read buffer.
func (l *leg) acquireReader() {
	if l.rb == nil {
		l.rb = readBufs[l.tier].Get().(*readBuf)
		l.rb.l = l
		l.fr.br, l.fr.ctl = &l.rb.in, &l.rb.ctl
		l.fr.br.Reset(&l.lr)
		if t := l.s.env.test; t != nil && t.readBuf != nil {
			t.readBuf(l, l.fr.br.Size())
		}
	}
}

// releaseReader returns the read buffer; it must hold no unread bytes
// unless the leg is done.
func (l *leg) releaseReader() {
	if l.rb != nil {
		l.fr.br.Reset(nil)
		l.rb.l, l.rb.p, l.rb.err, l.rb.pump = nil, nil, nil, false
		readBufs[l.rb.tier].Put(l.rb)
		l.rb, l.fr.br, l.fr.ctl = nil, nil, nil
	}
}

// growReader gives a parking leg the next size of read buffer once a
// read has filled its buffer (legReader sets grow), at a message boundary
// with no unread byte. The read loop calls it before each message.
func (l *leg) growReader() {
	if !l.grow || l.fr.frames != 0 || l.fr.br.Buffered() != 0 || len(l.lr.pre) != 0 {
		return
	}
	l.grow = false
	if l.fr.big {
		// A frame longer than any read buffer filled it: what of it the
		// buffer holds is copied out, the rest is read straight into the
		// message, so a larger buffer would only copy more (at 64 KiB
		// messages, 32 KiB of each instead of the 0.5 KiB a woken leg's
		// buffer holds: tether's user CPU at 64 KiB halved).
		return
	}
	l.releaseReader()
	l.tier++
	l.acquireReader()
}

// readDone ends the leg's read side for good (its read loop returned for
// a reason other than parking).
func (l *leg) readDone() {
	l.state.Store(legDone)
	if p := l.s.env.poller; p != nil {
		p.Release(&l.ph)
	}
	l.releaseReader()
}

// moreInput reports whether the read loop has bytes of a next frame
// buffered already (so that a write may wait for the next message).
func (l *leg) moreInput() bool { return l.fr.br != nil && l.fr.br.Buffered() > 0 }

// legReader refreshes the liveness deadline before every socket read, so that
// any byte received, including bytes of a frame still arriving, keeps the leg
// alive (README "Heartbeats"). It needs no goroutine and no timer of its own.
type legReader struct {
	l   *leg
	pre []byte // bytes read past the handshake, served first
}

func (r *legReader) Read(p []byte) (int, error) {
	if len(r.pre) > 0 {
		n := copy(p, r.pre)
		r.pre = r.pre[n:]
		return n, nil
	}
	l := r.l
	if l.rb != nil && l.rb.pump {
		// A message handled inside pumpRead's socket read must not read
		// the socket again (RawConn.Read holds its read lock).
		return 0, errPumpRead
	}
	if l.expired.Load() && l.expired.Swap(false) {
		return 0, os.ErrDeadlineExceeded
	}
	if !l.parks {
		// No socket to read raw (TLS, a pipe): frames this loop left
		// pending on the other leg go out before this read can block
		// (and before its deadline starts).
		l.flushDeferred()
		l.armRead()
		return l.conn.Read(p)
	}
	for {
		quick := l.armRead()
		if quick {
			l.flushDeferred()
			return 0, errIdle
		}
		// A socket is read with one read syscall while bytes are waiting;
		// the frames this loop left pending on the other leg go out only
		// when it has nothing more (EAGAIN, see rawRead), so the bytes that
		// were already there join them in the same write. One socket read
		// per batch and one write per batch the other way: measured, 1.6x
		// the 1 KiB messages per CPU second of reading through net.Conn,
		// which flushed before every read and read into EAGAIN once more.
		rb := l.rb
		rb.p, rb.n, rb.err, rb.quick = p, 0, nil, false
		cerr := l.raw.Read(rb.readFn)
		n, err := rb.n, rb.err
		rb.p, rb.err = nil, nil
		if rb.quick {
			return 0, errIdle
		}
		if n < 0 {
			n = 0
		}
		if cerr != nil {
			err = cerr
		} else if n == 0 && err == nil {
			err = io.EOF
		}
		if n > 0 {
			l.short = n < len(p)
			l.lastRead.Store(time.Now().UnixNano())
			if n == len(p) && l.tier < tierLargest {
				l.grow = true // more may be waiting: take a larger buffer
			}
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			idle, again := l.readExpired()
			if idle {
				return 0, errIdle
			}
			if again {
				continue
			}
		}
		return n, err
	}
}

// pumps reports whether l's read loop waits for its socket in pump: a leg
// read raw, at a message boundary with nothing buffered.
func (l *leg) pumps() bool {
	return l.parks && l.fr.frames == 0 && l.fr.br.Buffered() == 0 && len(l.lr.pre) == 0
}

// pump waits for l's socket and reads it raw, handling every message a
// read completes inside that same RawConn.Read call (pumpRead), so that a
// read that took less than it asked for, which emptied the socket, is
// followed by a wait for readiness, not by one more read into EAGAIN:
// one read per wake, not two (README "Performance"). That is sound only
// inside one RawConn.Read: Go's poller reports every arrival after the
// wake that led to the read, but each new RawConn.Read forgets a report
// that came before it and must read first.
//
// It returns stop when a message ended the read loop (err is then the
// loop's result), errIdle when the leg may park, another error when the
// read failed, and nil when the frame reader is to go on by itself: a
// frame that does not fit the buffer or is part of a fragmented message,
// or a buffer to grow.
func (s *Session) pump(l *leg) (stop bool, err error) {
	if l.expired.Load() && l.expired.Swap(false) {
		return false, os.ErrDeadlineExceeded
	}
	rb := l.rb
	l.fr.atBoundary = true
	for {
		if l.armRead() {
			l.flushDeferred()
			return false, errIdle
		}
		rb.err, rb.quick, rb.stop = nil, false, false
		cerr := l.raw.Read(rb.pumpFn)
		err := rb.err
		rb.err = nil
		switch {
		case rb.stop:
			return true, err
		case rb.quick:
			return false, errIdle
		case err != nil:
			return false, err
		case cerr == nil:
			return false, nil
		}
		if errors.Is(cerr, os.ErrDeadlineExceeded) {
			idle, again := l.readExpired()
			if idle {
				return false, errIdle
			}
			if again {
				continue
			}
		}
		return false, cerr
	}
}

// pumpRead is pump's RawConn.Read callback: it reads, hands each whole
// message buffered to the read loop's handle, and reports true to leave
// the RawConn.Read (pump's results are in rb) or false to wait for
// readiness.
func (rb *readBuf) pumpRead(fd uintptr) bool {
	rb.pump = true
	done := rb.pumpOnce(fd)
	rb.pump = false
	return done
}

func (rb *readBuf) pumpOnce(fd uintptr) bool {
	l, b := rb.l, &rb.in
	read := false // bytes came in this call: the deadline is armed anew
	for {
		b.compact() // a frame's start to the front; at a boundary, all free
		n, err := l.readSocket(fd, b.buf[b.w:])
		if err == syscall.EAGAIN {
			if !read && l.flushTo == nil {
				return false // wait under the deadline pump set
			}
			return rb.wait()
		}
		if err != nil || n <= 0 {
			switch {
			case err != nil:
			case b.r == b.w:
				err = io.EOF
			default:
				err = io.ErrUnexpectedEOF // within a frame
			}
			rb.err = err
			return true
		}
		read = true
		short := n < len(b.buf)-b.w
		b.w += n
		l.short = short
		l.lastRead.Store(time.Now().UnixNano())
		if !short && l.tier < tierLargest {
			l.grow = true
		}
		for {
			w := wholeFrame(b.buf[b.r:b.w], len(b.buf))
			if w == framePull {
				return true // the frame reader goes on with it
			}
			if w == framePart {
				break
			}
			ev, op, p, frag, ce, err := l.fr.next()
			if err != nil {
				rb.err = err
				return true
			}
			if l.s.handle(l, ev, op, p, frag, ce) {
				rb.stop = true
				return true
			}
		}
		if l.grow && b.r == b.w {
			return true // a larger buffer, at this boundary (growReader)
		}
		if !short {
			continue // more may be waiting
		}
		// The read emptied the socket: wait for readiness.
		return rb.wait()
	}
}

// wait ends a pumpRead call that found the socket empty: the frames left
// pending on the other leg go out and the read deadline is armed for the
// wait (false), unless the leg is to park at once (true).
func (rb *readBuf) wait() bool {
	l := rb.l
	l.flushDeferred()
	l.fr.atBoundary = rb.in.Buffered() == 0
	rb.quick = l.armRead()
	return rb.quick
}

// What wholeFrame found at the start of the buffered bytes.
const (
	frameWhole = iota // a whole frame that the frame reader can take without reading
	framePart         // the start of a frame that fits the buffer: read more
	framePull         // a frame the frame reader must read itself
)

// wholeFrame tells whether q, the bytes buffered in a buffer of size
// bytes, start with a whole control frame or a whole final data frame.
// Other frames (the first of a fragmented message, one longer than the
// buffer) are the frame reader's (framePull).
func wholeFrame(q []byte, size int) int {
	if len(q) < 2 {
		return framePart
	}
	n, l7 := headerSize(q[1])
	if len(q) < n {
		return framePart
	}
	length := uint64(l7)
	switch l7 {
	case 126:
		length = uint64(binary.BigEndian.Uint16(q[2:4]))
	case 127:
		length = binary.BigEndian.Uint64(q[2:10])
	}
	fin, control := q[0]&0x80 != 0, q[0]&0x08 != 0
	if (!fin && !control) || length > uint64(size-n) {
		return framePull
	}
	if uint64(len(q)-n) < length {
		return framePart
	}
	return frameWhole
}

// armRead sets the read deadline of the read about to start. quick asks
// the caller to park at once without reading (see below).
//
// A leg read through net.Conn (TLS, pipes) reads under a deadline of now
// + its heartbeat timeout, set at every read. A leg read raw (one that
// can park) reads with no deadline: Env's sweeper finds it quiet for
// IdleAfter or for its heartbeat timeout and interrupts its read
// (readExpired then tells what that means); armRead only clears a
// deadline a sweep left (rdl), which a busy leg never has, so that its
// reads touch no runtime timer at all (README "Architecture").
func (l *leg) armRead() (quick bool) {
	if l.closing.Load() {
		return false
	}
	if !l.parks {
		if l.hb.Mode.On() && l.hb.Timeout > 0 {
			l.setReadDeadline(time.Now().Add(l.hb.Timeout))
		}
		return false
	}
	// At a message boundary with nothing buffered, a leg that can park
	// may park.
	park := l.fr.atBoundary && l.fr.br.Buffered() == 0
	if park && l.quiet && l.short {
		// Woken for a ping, a pong or a heartbeat message only, and the
		// socket had nothing more: park again now instead of reading
		// into EAGAIN and waiting IdleAfter. The poller is
		// level-triggered, so bytes that arrive meanwhile wake the leg at
		// once.
		l.quiet = false // once: a park that fails goes on reading
		if t := l.s.env.test; t != nil && t.quickPark != nil {
			t.quickPark(l)
		}
		return true
	}
	if l.rdl == 0 {
		return false
	}
	if t := l.s.env.test; t != nil && t.clearing != nil {
		t.clearing(l)
	}
	l.setReadDeadline(time.Time{})
	if !l.s.env.sweep.asked(l) {
		return false
	}
	// A sweep may have set its deadline just before this clearing. One
	// that found the leg dead does not come again (it interrupts once
	// per quiet spell): interrupt the read as it did. One that found it
	// quiet for IdleAfter: park as it asked.
	quiet := time.Now().UnixNano() - l.lastRead.Load()
	if quiet >= l.timeout() {
		l.interrupt()
		return false
	}
	return park && quiet >= int64(l.s.env.idleAfter())
}

// setReadDeadline sets the read loop's deadline, unless the leg is
// closing: beginClose set its own then.
func (l *leg) setReadDeadline(dl time.Time) {
	if t := l.s.env.test; t != nil && t.deadline != nil {
		t.deadline(l)
	}
	_ = l.conn.SetReadDeadline(dl)
	l.rdl = 0
	if !dl.IsZero() {
		l.rdl = dl.UnixNano()
	}
	if l.closing.Load() { // lost a race with beginClose
		_ = l.conn.SetReadDeadline(time.Unix(0, l.closeDL.Load()))
	}
}

// readExpired tells what a raw read that ended on a deadline with no
// bytes means: idle (quiet for IdleAfter at a message boundary: park),
// dead (quiet for the heartbeat timeout, or closing), or, when a sweep
// found the leg inside a frame or bytes came since it looked, neither:
// again, and armRead clears the sweep's deadline. Quiet is measured from
// the last bytes received; bytes that came since would be in the socket.
func (l *leg) readExpired() (idle, again bool) {
	l.rdl = -1 // a sweep's deadline: armRead clears it
	at := time.Now().UnixNano()
	if l.closing.Load() {
		if dl := l.closeDL.Load(); at < dl {
			// A sweep's deadline, set before the leg began closing:
			// the Close wait goes on under its own.
			_ = l.conn.SetReadDeadline(time.Unix(0, dl))
			return false, true
		}
		return false, false
	}
	last := l.lastRead.Load()
	if l.hb.Mode.On() && l.hb.Timeout > 0 && at >= last+int64(l.hb.Timeout) {
		return false, false
	}
	if l.fr.atBoundary && l.fr.br.Buffered() == 0 && at-last >= int64(l.s.env.idleAfter()) {
		return true, false
	}
	if t := l.s.env.test; t != nil && t.early != nil {
		t.early(l)
	}
	return false, true
}

// message kinds returned by frameReader.next.
type event uint8

const (
	evData event = iota
	evPing
	evPong
	evClose
)

// frameReader reads whole messages from one leg. Control frames, also
// between fragments, are returned as their own events. It is not safe for
// concurrent use; the leg's read loop owns it.
type frameReader struct {
	br  *inbuf
	max int64
	buf []byte     // message being assembled; reused
	box *[]byte    // buf's pool box, if buf came from the pool
	ctl *[125]byte // control frame payload (the leg's readBuf)

	z      *inflated // made by the first compressed message
	frames int

	fromClient bool // frames must be masked (we are the server side)
	deflate    bool // permessage-deflate negotiated (client leg)

	// The message being assembled, kept across the control frames that
	// may arrive between its fragments (RFC 6455 §5.4).
	msgOp      ws.OpCode
	compressed bool

	// atBoundary is set while the header of a frame that starts a
	// message (or a control frame between messages) is being read.
	atBoundary bool

	// mk is the client's masking key of the message last returned when
	// it is returned still masked: a whole binary message in one
	// uncompressed frame from the client is (README "Performance").
	mk maskKey
	// own: the message last returned is buf itself, a pooled buffer that
	// give may hand over.
	own bool
	// big: a frame of the last data message (returned or being
	// assembled) was longer than the largest read buffer (readBufSizes):
	// no read buffer holds it whole.
	big bool
}

// give hands the buffer of p, the message last returned, over to the
// caller (a delivery log that retains it), when p is the assembly buffer
// itself: the reader takes a new one for its next message, and the caller
// saves the copy. The caller returns it with putBuf.
func (r *frameReader) give(p []byte) (b []byte, box *[]byte, ok bool) {
	if !r.own || len(p) == 0 || len(p) != len(r.buf) || &p[0] != &r.buf[0] {
		return nil, nil, false
	}
	b, box = r.buf, r.box
	r.buf, r.box, r.own = nil, nil, false
	return b, box, true
}

// inflated is a compressed message's output buffer and input reader,
// made only for a leg that receives one.
type inflated struct {
	buf []byte
	r   bytes.Reader
}

// next returns the next event. For evData, op is the message opcode and
// payload the whole message, valid until the next call; fragmented tells
// whether it arrived in more than one frame. For evPing/evPong payload is
// the control payload; for evClose, closeErr is set.
func (r *frameReader) next() (ev event, op ws.OpCode, payload []byte, fragmented bool, closeErr *CloseError, err error) {
	if r.frames == 0 {
		r.buf = r.buf[:0]
		r.compressed = false
	}
	r.mk, r.own = maskKey{}, false
	for {
		r.atBoundary = r.frames == 0
		h, err := readHeader(r.br)
		r.atBoundary = false
		if err != nil {
			return 0, 0, nil, false, nil, err
		}
		if h.rsv != 0 {
			// RSV1 marks a compressed message, on its first frame only.
			if !r.deflate || h.rsv != 4 || h.op.IsControl() || h.op == ws.OpContinuation {
				return 0, 0, nil, false, nil, protoErr("reserved bits set without a negotiated extension")
			}
			r.compressed = true
		}
		if h.masked != r.fromClient {
			if r.fromClient {
				return 0, 0, nil, false, nil, protoErr("unmasked frame from client")
			}
			return 0, 0, nil, false, nil, protoErr("masked frame from server")
		}
		if h.op.IsControl() {
			if !h.fin {
				return 0, 0, nil, false, nil, protoErr("fragmented control frame")
			}
			if h.length > 125 {
				return 0, 0, nil, false, nil, protoErr("control frame payload over 125 bytes")
			}
			p := r.ctl[:h.length]
			if _, err := io.ReadFull(r.br, p); err != nil {
				return 0, 0, nil, false, nil, eofToUnexpected(err, 1)
			}
			if h.masked {
				ws.Cipher(p, h.mask, 0)
			}
			switch h.op {
			case ws.OpPing:
				return evPing, h.op, p, false, nil, nil
			case ws.OpPong:
				return evPong, h.op, p, false, nil, nil
			case ws.OpClose:
				ce, err := parseClose(p)
				if err != nil {
					return 0, 0, nil, false, nil, err
				}
				return evClose, h.op, nil, false, ce, nil
			default:
				return 0, 0, nil, false, nil, protoErr("unknown control opcode %d", h.op)
			}
		}
		switch h.op {
		case ws.OpContinuation:
			if r.frames == 0 {
				return 0, 0, nil, false, nil, protoErr("continuation frame without a message")
			}
		case ws.OpText, ws.OpBinary:
			if r.frames != 0 {
				return 0, 0, nil, false, nil, protoErr("new message inside a fragmented message")
			}
			r.msgOp = h.op
			r.big = false // control frames between messages leave it
		default:
			return 0, 0, nil, false, nil, protoErr("unknown data opcode %d", h.op)
		}
		r.frames++
		// Compare without adding: a declared length near 2^63 plus the
		// fragments so far would overflow into a negative total.
		if h.length > r.max-int64(len(r.buf)) {
			return 0, 0, nil, false, nil, ErrMessageTooBig
		}
		if h.fin && r.frames == 1 && !r.compressed && h.length <= int64(r.br.Size()) {
			// A whole message in one frame that fits the read buffer is
			// returned in place, unmasked there: no copy into the
			// assembly buffer (the relay writes it on, or copies it into
			// a delivery log, before the next read).
			p, err := r.br.Peek(int(h.length))
			if err != nil {
				return 0, 0, nil, false, nil, eofToUnexpected(err, 1)
			}
			r.br.Discard(len(p))
			if h.masked {
				if h.op == ws.OpBinary {
					r.mk = maskKey{key: h.mask, set: true}
				} else {
					ws.Cipher(p, h.mask, 0)
				}
			}
			r.frames = 0
			if h.op == ws.OpText && !utf8.Valid(p) {
				return 0, 0, nil, false, nil, ErrInvalidUTF8
			}
			return evData, h.op, p, false, nil, nil
		}
		r.big = r.big || h.length > int64(readBufSizes[tierLargest])
		total := int64(len(r.buf)) + h.length
		start := len(r.buf)
		if cap(r.buf) == 0 {
			r.buf, r.box = takeBuf(max(int(total), 512))
		}
		r.buf = grow(r.buf, int(total))
		p := r.buf[start:total]
		if _, err := io.ReadFull(r.br, p); err != nil {
			return 0, 0, nil, false, nil, eofToUnexpected(err, 1)
		}
		if h.masked {
			if h.fin && r.frames == 1 && !r.compressed && h.op == ws.OpBinary {
				r.mk = maskKey{key: h.mask, set: true}
			} else {
				ws.Cipher(p, h.mask, 0)
			}
		}
		if !h.fin {
			continue
		}
		msg, msgOp, frag := r.buf, r.msgOp, r.frames > 1
		r.frames = 0
		r.own = r.box != nil && !r.compressed
		if r.compressed {
			if r.z == nil {
				r.z = new(inflated)
			}
			if r.z.buf, err = inflate(r.z.buf, r.buf, r.max, &r.z.r); err != nil {
				return 0, 0, nil, false, nil, err
			}
			msg = r.z.buf
		}
		if msgOp == ws.OpText && !utf8.Valid(msg) {
			return 0, 0, nil, false, nil, ErrInvalidUTF8
		}
		return evData, msgOp, msg, frag, nil, nil
	}
}

// grow returns b with length n, reusing its capacity when possible.
func grow(b []byte, n int) []byte {
	if n <= cap(b) {
		return b[:n]
	}
	c := 2 * cap(b)
	if c < n {
		c = n
	}
	if c < 512 {
		c = 512
	}
	nb := make([]byte, n, c)
	copy(nb, b)
	return nb
}

// idle drops the assembly buffers of a leg that parks.
func (r *frameReader) idle() {
	putBuf(r.box, r.buf)
	r.buf, r.box, r.z = nil, nil, nil
}

// release drops a large assembly buffer so that an idle leg does not keep
// the memory of its largest message.
func (r *frameReader) release() {
	if cap(r.buf) > 64<<10 {
		r.buf = nil
	}
	if r.z != nil && cap(r.z.buf) > 64<<10 {
		r.z.buf = nil
	}
}
