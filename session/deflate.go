package session

import (
	"bytes"
	"compress/flate"
	"io"
	"sync"
)

// permessage-deflate (RFC 7692) on the client leg, negotiated with no
// context takeover in either direction, so that each message is
// compressed on its own and a leg keeps no compressor state between
// messages. Compressors and decompressors are large (hundreds of KiB), so
// they are pooled across the process, never held by an idle leg.

// inflateTail starts with the four bytes that end a message's compressed
// bytes (RFC 7692 §7.2.1 removes them on send); inflate appends them back
// plus an empty final stored block so that the decompressor reports
// io.EOF.
var inflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// minDeflate is the smallest message worth compressing.
const minDeflate = 128

var (
	flateWriters = sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, flate.BestSpeed)
		return w
	}}
	flateReaders = sync.Pool{New: func() any { return flate.NewReader(nil) }}
)

// inflate decompresses the message p (which inflate may extend) into dst
// and fails with ErrMessageTooBig past max bytes.
func inflate(dst []byte, p []byte, max int64, br *bytes.Reader) ([]byte, error) {
	in := append(p, inflateTail...)
	br.Reset(in)
	fr := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(fr)
	if err := fr.(flate.Resetter).Reset(br, nil); err != nil {
		return dst, err
	}
	dst = dst[:0]
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := fr.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if int64(len(dst)) > max {
			return dst, ErrMessageTooBig
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, &protocolError{CloseInvalidPayload, "invalid compressed message: " + err.Error()}
		}
	}
}

// deflate compresses p for one message into buf (reset first) and returns
// the bytes to send, without the 0x00 0x00 0xff 0xff tail.
func deflate(buf *bytes.Buffer, p []byte) ([]byte, error) {
	buf.Reset()
	w := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(w)
	w.Reset(buf)
	if _, err := w.Write(p); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if len(b) >= 4 && bytes.Equal(b[len(b)-4:], inflateTail[:4]) {
		b = b[:len(b)-4]
	}
	return b, nil
}
