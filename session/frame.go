package session

import (
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// CloseCode is a WebSocket close status code (RFC 6455 §7.4).
type CloseCode uint16

// Close codes used by README "Close codes". gobwas/ws does not know 1012–1014,
// so tether keeps its own list.
const (
	CloseNormal          CloseCode = 1000
	CloseGoingAway       CloseCode = 1001
	CloseProtocolError   CloseCode = 1002
	CloseUnsupported     CloseCode = 1003
	CloseNoStatus        CloseCode = 1005 // never sent
	CloseAbnormal        CloseCode = 1006 // never sent
	CloseInvalidPayload  CloseCode = 1007
	ClosePolicyViolation CloseCode = 1008
	CloseMessageTooBig   CloseCode = 1009
	CloseMandatoryExt    CloseCode = 1010
	CloseInternalError   CloseCode = 1011
	CloseServiceRestart  CloseCode = 1012
	CloseTryAgainLater   CloseCode = 1013
	CloseBadGateway      CloseCode = 1014
	CloseTLSHandshake    CloseCode = 1015 // never sent
)

// ValidOnWire reports whether c may appear in a Close frame (RFC 6455 §7.4
// and the IANA registry): 1000–1003, 1007–1014 and 3000–4999.
func (c CloseCode) ValidOnWire() bool {
	switch {
	case c >= 1000 && c <= 1003, c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// CloseError is a Close frame received from a peer or to be sent to one.
// NoCode marks a Close without a status code (1005 locally, an empty
// payload on the wire).
type CloseError struct {
	Code   CloseCode
	Reason string
	NoCode bool
}

func (e *CloseError) Error() string {
	if e.NoCode {
		return "close frame without status"
	}
	return fmt.Sprintf("close %d %q", e.Code, e.Reason)
}

// protocolError is a violation by a peer that ends its leg with Code.
type protocolError struct {
	Code CloseCode
	msg  string
}

func (e *protocolError) Error() string { return e.msg }

// Sentinels for branching on peer misbehaviour.
var (
	ErrMessageTooBig = &protocolError{CloseMessageTooBig, "message too big"}
	ErrInvalidUTF8   = &protocolError{CloseInvalidPayload, "invalid UTF-8 in text message"}
)

func protoErr(format string, args ...any) error {
	return &protocolError{CloseProtocolError, fmt.Sprintf(format, args...)}
}

// frameHeader is a decoded frame header.
type frameHeader struct {
	fin    bool
	rsv    byte
	op     ws.OpCode
	masked bool
	mask   [4]byte
	length int64
}

// readHeader decodes one frame header from br without allocating.
func readHeader(br *inbuf) (h frameHeader, err error) {
	b, err := br.Peek(2)
	if err != nil {
		return h, eofToUnexpected(err, len(b))
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = (b[0] >> 4) & 0x7
	h.op = ws.OpCode(b[0] & 0x0f)
	h.masked = b[1]&0x80 != 0
	n, l7 := headerSize(b[1])
	if b, err = br.Peek(n); err != nil {
		return h, eofToUnexpected(err, 1)
	}
	off := 2
	switch l7 {
	case 126:
		h.length = int64(binary.BigEndian.Uint16(b[2:4]))
		off = 4
		if h.length < 126 {
			return h, protoErr("non-minimal length encoding")
		}
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, protoErr("frame length has the most significant bit set")
		}
		h.length = int64(u)
		off = 10
		if h.length <= 0xffff {
			return h, protoErr("non-minimal length encoding")
		}
	default:
		h.length = int64(l7)
	}
	if h.masked {
		copy(h.mask[:], b[off:off+4])
	}
	br.Discard(n)
	return h, nil
}

// headerSize is the length of a frame header whose second byte is b1,
// and the header's 7-bit length field.
func headerSize(b1 byte) (n int, l7 byte) {
	n, l7 = 2, b1&0x7f
	switch l7 {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4 // the masking key
	}
	return n, l7
}

func eofToUnexpected(err error, got int) error {
	if err == io.EOF && got > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}

// putHeader encodes into dst a final frame header with op and length, masked
// with key when masked is true.
func putHeader(dst *[14]byte, op ws.OpCode, rsv1 bool, length int, masked bool, key [4]byte) []byte {
	dst[0] = 0x80 | byte(op)
	if rsv1 {
		dst[0] |= 0x40
	}
	n := 2
	var mb byte
	if masked {
		mb = 0x80
	}
	switch {
	case length < 126:
		dst[1] = mb | byte(length)
	case length <= 0xffff:
		dst[1] = mb | 126
		binary.BigEndian.PutUint16(dst[2:4], uint16(length))
		n = 4
	default:
		dst[1] = mb | 127
		binary.BigEndian.PutUint64(dst[2:10], uint64(length))
		n = 10
	}
	if masked {
		copy(dst[n:n+4], key[:])
		n += 4
	}
	return dst[:n]
}

// closePayload builds a Close frame payload; a CloseError with NoCode gives
// an empty payload, and codes that must not go on the wire are replaced.
func closePayload(c CloseError) []byte {
	if c.NoCode {
		return nil
	}
	code := c.Code
	if !code.ValidOnWire() {
		code = CloseGoingAway
	}
	reason := c.Reason
	if len(reason) > 123 {
		reason = truncateUTF8(reason, 123)
	}
	p := make([]byte, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	copy(p[2:], reason)
	return p
}

func truncateUTF8(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// parseClose validates and decodes a received Close payload (RFC 6455
// §5.5.1, §7.4).
func parseClose(p []byte) (*CloseError, error) {
	switch {
	case len(p) == 0:
		return &CloseError{Code: CloseNoStatus, NoCode: true}, nil
	case len(p) == 1:
		return nil, protoErr("close payload of one byte")
	}
	code := CloseCode(binary.BigEndian.Uint16(p))
	if !code.ValidOnWire() {
		return nil, protoErr("invalid close code %d", code)
	}
	if !utf8.Valid(p[2:]) {
		return nil, ErrInvalidUTF8
	}
	return &CloseError{Code: code, Reason: string(p[2:])}, nil
}
