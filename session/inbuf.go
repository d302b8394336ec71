package session

import (
	"bufio"
	"io"
)

// inbuf is a leg's read buffer: bufio.Reader's Peek, Discard, Read and
// Buffered, with its indices open to the read loop, so that a socket
// read made outside a Peek or a Read (pumpRead) can append to it and the
// frames it completed be parsed at once. The frame reader reads through
// it as through a bufio.Reader; error semantics are bufio's (an error
// is returned once, then cleared).
type inbuf struct {
	buf  []byte
	rd   io.Reader
	r, w int // buf[r:w] is unread
	err  error
}

func newInbuf(rd io.Reader, size int) *inbuf {
	return &inbuf{buf: make([]byte, size), rd: rd}
}

// Reset drops what is buffered and reads from rd from now on.
func (b *inbuf) Reset(rd io.Reader) {
	b.rd, b.r, b.w, b.err = rd, 0, 0, nil
}

// Size is the buffer's length.
func (b *inbuf) Size() int { return len(b.buf) }

// Buffered is the number of unread bytes in the buffer.
func (b *inbuf) Buffered() int { return b.w - b.r }

func (b *inbuf) readErr() error {
	err := b.err
	b.err = nil
	return err
}

// compact moves the unread bytes to the front of the buffer.
func (b *inbuf) compact() {
	if b.r > 0 {
		copy(b.buf, b.buf[b.r:b.w])
		b.w -= b.r
		b.r = 0
	}
}

// fill reads once more into the free end of the buffer.
func (b *inbuf) fill() {
	b.compact()
	for i := 0; i < 100; i++ { // as bufio: a reader that makes no progress
		n, err := b.rd.Read(b.buf[b.w:])
		if n < 0 || n > len(b.buf)-b.w {
			panic("session: inbuf: reader returned a bad count")
		}
		b.w += n
		if err != nil {
			b.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	b.err = io.ErrNoProgress
}

// Peek returns the next n bytes without consuming them; fewer with the
// error that stopped it (bufio.ErrBufferFull when n exceeds the buffer).
func (b *inbuf) Peek(n int) ([]byte, error) {
	for b.w-b.r < n && b.w-b.r < len(b.buf) && b.err == nil {
		b.fill()
	}
	if n > len(b.buf) {
		return b.buf[b.r:b.w], bufio.ErrBufferFull
	}
	var err error
	if avail := b.w - b.r; avail < n {
		n = avail
		if err = b.readErr(); err == nil {
			err = bufio.ErrBufferFull
		}
	}
	return b.buf[b.r : b.r+n], err
}

// Discard consumes n buffered bytes; callers discard only what they
// peeked.
func (b *inbuf) Discard(n int) {
	if n > b.w-b.r {
		panic("session: inbuf: discard past the buffered bytes")
	}
	b.r += n
}

// Read reads into p as bufio.Reader does: from the buffer, or, when it is
// empty and p is at least as large, straight from the reader (a frame
// longer than the buffer is read into its message, not through it).
func (b *inbuf) Read(p []byte) (int, error) {
	if len(p) == 0 {
		if b.Buffered() > 0 {
			return 0, nil
		}
		return 0, b.readErr()
	}
	if b.r == b.w {
		if b.err != nil {
			return 0, b.readErr()
		}
		if len(p) >= len(b.buf) {
			n, err := b.rd.Read(p)
			if n < 0 || n > len(p) {
				panic("session: inbuf: reader returned a bad count")
			}
			return n, err
		}
		b.r, b.w = 0, 0
		n, err := b.rd.Read(b.buf)
		if n < 0 || n > len(b.buf) {
			panic("session: inbuf: reader returned a bad count")
		}
		if n == 0 {
			return 0, err
		}
		b.w += n
		b.err = err
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}
