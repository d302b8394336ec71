package session

// Frame-level tests: headers, the frame reader's events (control frames
// between fragments are what lets heartbeats pass a large message), and
// Close payloads. Frames are built in a bytes.Buffer with gobwas/ws.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// hbWire encodes frames as a client (masked) or server (unmasked) sends them.
func hbWire(t testing.TB, masked bool, fs ...ws.Frame) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, f := range fs {
		f.Payload = bytes.Clone(f.Payload)
		if masked {
			f = ws.MaskFrameInPlace(f)
		}
		if err := ws.WriteFrame(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func hbFrameReader(b []byte, fromClient bool, max int64) *frameReader {
	return &frameReader{br: newInbuf(bytes.NewReader(b), 4096), fromClient: fromClient, max: max, ctl: new([125]byte)}
}

func TestFrameHeaderRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 20} {
		for _, masked := range []bool{false, true} {
			for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpPing, ws.OpClose} {
				var dst [14]byte
				key := [4]byte{1, 2, 3, 4}
				hdr := putHeader(&dst, op, false, n, masked, key)
				// gobwas agrees with our encoding.
				gh, err := ws.ReadHeader(bytes.NewReader(hdr))
				if err != nil {
					t.Fatalf("n=%d masked=%v: gobwas: %v", n, masked, err)
				}
				if gh.Length != int64(n) || gh.Masked != masked || gh.OpCode != op || !gh.Fin || (masked && gh.Mask != key) {
					t.Errorf("n=%d masked=%v: gobwas read %+v", n, masked, gh)
				}
				h, err := readHeader(newInbuf(bytes.NewReader(hdr), 4096))
				if err != nil {
					t.Fatalf("n=%d masked=%v: %v", n, masked, err)
				}
				if h.length != int64(n) || h.masked != masked || h.op != op || !h.fin || h.rsv != 0 || (masked && h.mask != key) {
					t.Errorf("n=%d masked=%v: read back %+v", n, masked, h)
				}
			}
		}
	}
}

func TestFrameHeaderErrors(t *testing.T) {
	t.Parallel()
	len16 := func(n uint16) []byte { return binary.BigEndian.AppendUint16([]byte{0x82, 126}, n) }
	len64 := func(n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{0x82, 127}, n) }
	for _, c := range []struct {
		name  string
		b     []byte
		proto bool
		err   error
	}{
		{"empty", nil, false, io.EOF},
		{"one byte", []byte{0x81}, false, io.ErrUnexpectedEOF},
		{"16-bit length cut", []byte{0x82, 126, 1}, false, io.ErrUnexpectedEOF},
		{"mask cut", []byte{0x82, 0x80 | 5, 1, 2}, false, io.ErrUnexpectedEOF},
		{"16-bit length for 125", len16(125), true, nil},
		{"64-bit length for 0xffff", len64(0xffff), true, nil},
		{"64-bit length with MSB", len64(1 << 63), true, nil},
	} {
		_, err := readHeader(newInbuf(bytes.NewReader(c.b), 4096))
		var pe *protocolError
		switch {
		case c.proto && (!errors.As(err, &pe) || pe.Code != CloseProtocolError):
			t.Errorf("%s: err %v, want a 1002 protocol error", c.name, err)
		case !c.proto && !errors.Is(err, c.err):
			t.Errorf("%s: err %v, want %v", c.name, err, c.err)
		}
	}
	// Minimal encodings at the edges are fine.
	for _, b := range [][]byte{len16(126), len64(0x10000)} {
		if _, err := readHeader(newInbuf(bytes.NewReader(b), 4096)); err != nil {
			t.Errorf("% x: %v", b, err)
		}
	}
}

// hbEvent is one result of frameReader.next, for comparisons.
type hbEvent struct {
	ev   event
	op   ws.OpCode
	p    string
	frag bool
	code CloseCode // evClose
}

func hbReadAll(r *frameReader) ([]hbEvent, error) {
	var out []hbEvent
	for {
		ev, op, p, frag, ce, err := r.next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return out, err
		}
		r.mk.unmask(p) // a client's binary message comes still masked
		e := hbEvent{ev: ev, op: op, p: string(p), frag: frag}
		if ce != nil {
			e.code = ce.Code
		}
		out = append(out, e)
	}
}

func TestFrameReaderEvents(t *testing.T) {
	t.Parallel()
	frag := func(op ws.OpCode, fin bool, s string) ws.Frame { return ws.NewFrame(op, fin, []byte(s)) }
	big := strings.Repeat("y", 70000)
	for _, c := range []struct {
		name string
		fs   []ws.Frame
		want []hbEvent
	}{
		{"text", []ws.Frame{ws.NewTextFrame([]byte("hi"))}, []hbEvent{{evData, ws.OpText, "hi", false, 0}}},
		{"binary empty", []ws.Frame{ws.NewBinaryFrame(nil)}, []hbEvent{{evData, ws.OpBinary, "", false, 0}}},
		{"large", []ws.Frame{ws.NewBinaryFrame([]byte(big))}, []hbEvent{{evData, ws.OpBinary, big, false, 0}}},
		{"ping pong", []ws.Frame{ws.NewPingFrame([]byte("a")), ws.NewPongFrame([]byte("b"))},
			[]hbEvent{{evPing, ws.OpPing, "a", false, 0}, {evPong, ws.OpPong, "b", false, 0}}},
		{"fragmented", []ws.Frame{frag(ws.OpText, false, `{"type":`), frag(ws.OpContinuation, false, ""), frag(ws.OpContinuation, true, `"ping"}`)},
			[]hbEvent{{evData, ws.OpText, `{"type":"ping"}`, true, 0}}},
		// A heartbeat in the middle of a fragmented message comes out at
		// once, so it is answered while the message is still arriving.
		{"ping between fragments", []ws.Frame{frag(ws.OpBinary, false, "ab"), ws.NewPingFrame([]byte("p")), ws.NewPongFrame(nil), frag(ws.OpContinuation, true, "cd")},
			[]hbEvent{{evPing, ws.OpPing, "p", false, 0}, {evPong, ws.OpPong, "", false, 0}, {evData, ws.OpBinary, "abcd", true, 0}}},
		{"utf-8 split across fragments", []ws.Frame{frag(ws.OpText, false, "\xe2\x82"), frag(ws.OpContinuation, true, "\xac")},
			[]hbEvent{{evData, ws.OpText, "€", true, 0}}},
		{"close", []ws.Frame{ws.NewCloseFrame(ws.NewCloseFrameBody(4000, "bye"))}, []hbEvent{{evClose, ws.OpClose, "", false, 4000}}},
		{"close 1014", []ws.Frame{ws.NewCloseFrame(ws.NewCloseFrameBody(1014, ""))}, []hbEvent{{evClose, ws.OpClose, "", false, 1014}}},
		{"close without code", []ws.Frame{ws.NewCloseFrame(nil)}, []hbEvent{{evClose, ws.OpClose, "", false, CloseNoStatus}}},
	} {
		for _, fromClient := range []bool{true, false} {
			r := hbFrameReader(hbWire(t, fromClient, c.fs...), fromClient, 1<<20)
			got, err := hbReadAll(r)
			if err != nil {
				t.Errorf("%s (fromClient=%v): %v", c.name, fromClient, err)
			}
			if len(got) != len(c.want) {
				t.Errorf("%s (fromClient=%v): got %d events, want %d", c.name, fromClient, len(got), len(c.want))
				continue
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Errorf("%s (fromClient=%v): event %d = %+v, want %+v", c.name, fromClient, i, got[i], c.want[i])
				}
			}
		}
	}
}

func TestFrameReaderErrors(t *testing.T) {
	t.Parallel()
	frag := func(op ws.OpCode, fin bool, s string) ws.Frame { return ws.NewFrame(op, fin, []byte(s)) }
	rsv := ws.NewTextFrame([]byte("x"))
	rsv.Header.Rsv = ws.Rsv(false, true, false)
	for _, c := range []struct {
		name string
		fs   []ws.Frame
		code CloseCode
	}{
		{"fragmented ping", []ws.Frame{frag(ws.OpPing, false, "p")}, CloseProtocolError},
		{"ping over 125 bytes", []ws.Frame{ws.NewPingFrame(bytes.Repeat([]byte("p"), 126))}, CloseProtocolError},
		{"continuation first", []ws.Frame{frag(ws.OpContinuation, true, "x")}, CloseProtocolError},
		{"text inside fragmented", []ws.Frame{frag(ws.OpText, false, "a"), frag(ws.OpText, true, "b")}, CloseProtocolError},
		{"reserved opcode", []ws.Frame{frag(ws.OpCode(3), true, "x")}, CloseProtocolError},
		{"reserved control opcode", []ws.Frame{frag(ws.OpCode(0xb), true, "x")}, CloseProtocolError},
		{"rsv bits", []ws.Frame{rsv}, CloseProtocolError},
		{"close with one byte", []ws.Frame{ws.NewCloseFrame([]byte{3})}, CloseProtocolError},
		{"close 1005", []ws.Frame{ws.NewCloseFrame(ws.NewCloseFrameBody(1005, ""))}, CloseProtocolError},
		{"close 999", []ws.Frame{ws.NewCloseFrame(ws.NewCloseFrameBody(999, ""))}, CloseProtocolError},
		{"close reason not utf-8", []ws.Frame{ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "\xff"))}, CloseInvalidPayload},
		{"text not utf-8", []ws.Frame{ws.NewTextFrame([]byte("a\xffb"))}, CloseInvalidPayload},
		{"too big", []ws.Frame{ws.NewBinaryFrame(make([]byte, 101))}, CloseMessageTooBig},
		{"too big across fragments", []ws.Frame{frag(ws.OpBinary, false, strings.Repeat("a", 60)), frag(ws.OpContinuation, true, strings.Repeat("b", 41))}, CloseMessageTooBig},
		// A declared length that overflows int64 when added to the
		// fragments so far (no payload follows: it must not be read).
		{"length overflow across fragments", []ws.Frame{frag(ws.OpBinary, false, "a"), {Header: ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 1<<63 - 1}}}, CloseMessageTooBig},
	} {
		for _, fromClient := range []bool{true, false} {
			_, err := hbReadAll(hbFrameReader(hbWire(t, fromClient, c.fs...), fromClient, 100))
			var pe *protocolError
			if !errors.As(err, &pe) || pe.Code != c.code {
				t.Errorf("%s (fromClient=%v): err %v, want close code %d", c.name, fromClient, err, c.code)
			}
		}
	}
	// Masking is mandatory from clients and forbidden from servers.
	for _, fromClient := range []bool{true, false} {
		b := hbWire(t, !fromClient, ws.NewTextFrame([]byte("x")))
		_, err := hbReadAll(hbFrameReader(b, fromClient, 100))
		var pe *protocolError
		if !errors.As(err, &pe) || pe.Code != CloseProtocolError {
			t.Errorf("wrong masking (fromClient=%v): err %v, want 1002", fromClient, err)
		}
	}
	// A frame cut short is an unexpected EOF, not a clean end.
	b := hbWire(t, true, ws.NewTextFrame([]byte("hello")))
	if _, err := hbReadAll(hbFrameReader(b[:len(b)-1], true, 100)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut frame: err %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestFrameClosePayload(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 100) // 200 bytes
	for _, c := range []struct {
		in   CloseError
		code int // -1: empty payload
		why  string
	}{
		{CloseError{NoCode: true}, -1, ""},
		{CloseError{Code: CloseGoingAway, Reason: "bye"}, 1001, "bye"},
		{CloseError{Code: CloseBadGateway}, 1014, ""},
		{CloseError{Code: 4321, Reason: "app"}, 4321, "app"},
		{CloseError{Code: CloseAbnormal}, 1001, ""}, // never on the wire
		{CloseError{Code: CloseNoStatus}, 1001, ""},
		{CloseError{Code: CloseTLSHandshake}, 1001, ""},
		{CloseError{Code: CloseNormal, Reason: long}, 1000, strings.Repeat("é", 61)},
	} {
		p := closePayload(c.in)
		if c.code < 0 {
			if len(p) != 0 {
				t.Errorf("%+v: payload % x, want empty", c.in, p)
			}
			continue
		}
		if len(p) > 125 || len(p) < 2 {
			t.Fatalf("%+v: payload of %d bytes", c.in, len(p))
		}
		if code := int(binary.BigEndian.Uint16(p)); code != c.code || string(p[2:]) != c.why || !utf8.Valid(p[2:]) {
			t.Errorf("%+v: payload %d %q, want %d %q", c.in, code, p[2:], c.code, c.why)
		}
		// What we send, we accept.
		if ce, err := parseClose(p); err != nil || int(ce.Code) != c.code {
			t.Errorf("%+v: parseClose(our payload) = %v, %v", c.in, ce, err)
		}
	}
}

// FuzzFrameReader: peer input never panics the frame reader, and what it
// returns keeps its invariants: messages within the limit, text valid
// UTF-8, control payloads at most 125 bytes, errors that map to a close
// code or an I/O condition. It covers both legs (fromClient: frames must
// be masked; otherwise they must not be) and the client leg with
// permessage-deflate negotiated.
func FuzzFrameReader(f *testing.F) {
	f.Add(hbWire(f, true, ws.NewTextFrame([]byte(`{"type":"ping"}`))), true, false)
	f.Add(hbWire(f, false, ws.NewFrame(ws.OpText, false, []byte("a")), ws.NewPingFrame([]byte("p")), ws.NewFrame(ws.OpContinuation, true, []byte("b"))), false, false)
	f.Add(hbWire(f, true, ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "x"))), true, false)
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}, false, false)
	f.Add([]byte{0x02, 1, 'a', 0x80, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false, false)
	var z bytes.Buffer
	if _, err := deflate(&z, []byte(strings.Repeat("compressed ", 20))); err != nil {
		f.Fatal(err)
	}
	zf := ws.NewFrame(ws.OpText, false, bytes.Clone(z.Bytes()[:4]))
	zf.Header.Rsv = ws.Rsv(true, false, false)
	f.Add(hbWire(f, true, zf, ws.NewPingFrame(nil), ws.NewFrame(ws.OpContinuation, true, z.Bytes()[4:])), true, true)
	f.Fuzz(func(t *testing.T, b []byte, fromClient, compressed bool) {
		const max = 1 << 12
		r := hbFrameReader(b, fromClient, max)
		r.deflate = compressed
		for range 64 {
			ev, op, p, _, ce, err := r.next()
			if err != nil {
				var pe *protocolError
				if errors.As(err, &pe) {
					if pe.Code != CloseProtocolError && pe.Code != CloseInvalidPayload && pe.Code != CloseMessageTooBig {
						t.Fatalf("protocol error with close code %d: %v", pe.Code, err)
					}
				} else if err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			switch ev {
			case evData:
				if len(p) > max {
					t.Fatalf("message of %d bytes over the %d limit", len(p), max)
				}
				if op != ws.OpText && op != ws.OpBinary {
					t.Fatalf("data message with opcode %d", op)
				}
				if op == ws.OpText && !utf8.Valid(p) {
					t.Fatalf("invalid UTF-8 text %q", p)
				}
				if r.mk.set && (op != ws.OpBinary || !fromClient || r.compressed) {
					t.Fatalf("opcode %d (from client %v, compressed %v) returned still masked", op, fromClient, r.compressed)
				}
			case evPing, evPong:
				if len(p) > 125 {
					t.Fatalf("control payload of %d bytes", len(p))
				}
			case evClose:
				if ce == nil || (!ce.NoCode && !ce.Code.ValidOnWire()) || !utf8.ValidString(ce.Reason) || len(ce.Reason) > 123 {
					t.Fatalf("close %+v", ce)
				}
			}
		}
	})
}

// A client's binary message assembled in the reader's buffer comes still
// masked, and give hands that buffer over (the delivery log keeps it
// without a copy): the next message is assembled in another one. A message
// returned in place (inside the read buffer) or unmasked cannot be given.
func TestFrameReaderGive(t *testing.T) {
	t.Parallel()
	big1, big2 := bytes.Repeat([]byte{1}, 10000), bytes.Repeat([]byte{2}, 10000)
	wire := hbWire(t, true, ws.NewBinaryFrame(big1), ws.NewBinaryFrame(big2), ws.NewBinaryFrame([]byte("small")), ws.NewTextFrame(bytes.Repeat([]byte("t"), 10000)))
	r := &frameReader{br: newInbuf(bytes.NewReader(wire), 4096), fromClient: true, max: 1 << 20, ctl: new([125]byte)}
	next := func(want []byte) []byte {
		t.Helper()
		_, _, p, _, _, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		got := bytes.Clone(p)
		mk := r.mk
		mk.unmask(got)
		if !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes %.8q, want %d bytes %.8q", len(got), got, len(want), want)
		}
		return p
	}
	p1 := next(big1)
	if !r.mk.set {
		t.Fatal("an assembled binary message came unmasked")
	}
	b1, box, ok := r.give(p1)
	if !ok || &b1[0] != &p1[0] || box == nil {
		t.Fatal("the assembled message's buffer was not given")
	}
	kept := bytes.Clone(b1)
	if _, _, ok := r.give(p1); ok {
		t.Fatal("a buffer was given twice")
	}
	p2 := next(big2)
	if &p2[0] == &b1[0] {
		t.Fatal("the next message was assembled in the buffer given away")
	}
	if !bytes.Equal(b1, kept) {
		t.Fatal("the given buffer changed under the next message")
	}
	p3 := next([]byte("small"))
	if _, _, ok := r.give(p3); ok {
		t.Fatal("a message in the read buffer was given")
	}
	next(bytes.Repeat([]byte("t"), 10000))
	if r.mk.set {
		t.Fatal("a text message came masked")
	}
}

// retain keeps a masked message assembled in the reader's buffer without
// a copy (the log takes the buffer), and copies anything else.
func TestRetainTakesAssembledBuffer(t *testing.T) {
	s := writeSession(t)
	big := bytes.Repeat([]byte{7}, 10000)
	wire := hbWire(t, true, ws.NewBinaryFrame(big), ws.NewTextFrame(bytes.Repeat([]byte("t"), 10000)))
	r := &frameReader{br: newInbuf(bytes.NewReader(wire), 4096), fromClient: true, max: 1 << 20, ctl: new([125]byte)}
	for i := range 2 {
		_, op, p, _, _, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		s.retain(uint64(i), op, p, true, false, r.mk, r)
		kept := s.upLog.msgs[i]
		s.mu.Unlock()
		if shared := &kept.p[0] == &p[0]; shared != (i == 0) {
			t.Fatalf("message %d (%v): log shares the reader's buffer: %v, want %v", i, op, shared, i == 0)
		}
		if kept.mask != r.mk {
			t.Fatalf("message %d: log keeps mask %v, want %v", i, kept.mask, r.mk)
		}
	}
	s.mu.Lock()
	s.upLog.release()
	s.mu.Unlock()
}

// big marks the last data message that had a frame longer than the
// largest read buffer (growReader's test for not growing): a control frame
// after it leaves the mark, the next data message sets it anew.
func TestFrameReaderBigMarksDataMessages(t *testing.T) {
	t.Parallel()
	large := make([]byte, readBufSizes[tierLargest]+1)
	wire := hbWire(t, true, ws.NewBinaryFrame(large), ws.NewPingFrame([]byte("p")),
		ws.NewBinaryFrame([]byte("small")), ws.NewPongFrame(nil))
	r := &frameReader{br: newInbuf(bytes.NewReader(wire), 512), fromClient: true, max: 1 << 20, ctl: new([125]byte)}
	for i, want := range []struct {
		ev  event
		big bool
	}{{evData, true}, {evPing, true}, {evData, false}, {evPong, false}} {
		ev, _, _, _, _, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev != want.ev || r.big != want.big {
			t.Fatalf("event %d: %v with big %v, want %v with big %v", i, ev, r.big, want.ev, want.big)
		}
	}
}

// wholeFrame tells pump which buffered frames the frame reader can take
// without a read of its own.
func TestWholeFrame(t *testing.T) {
	frame := func(fin bool, op ws.OpCode, n int, masked bool) []byte {
		var b bytesWriter
		h := ws.Header{Fin: fin, OpCode: op, Length: int64(n), Masked: masked}
		if err := ws.WriteHeader(&b, h); err != nil {
			t.Fatal(err)
		}
		return append(b, make([]byte, n)...)
	}
	const size = 512
	cases := []struct {
		name string
		q    []byte
		want int
	}{
		{"empty", nil, framePart},
		{"one byte", frame(true, ws.OpBinary, 10, true)[:1], framePart},
		{"header in part", frame(true, ws.OpBinary, 300, true)[:3], framePart},
		{"payload in part", frame(true, ws.OpBinary, 300, true)[:100], framePart},
		{"whole", frame(true, ws.OpText, 10, true), frameWhole},
		{"whole, 16-bit length", frame(true, ws.OpBinary, 300, false), frameWhole},
		{"whole, then more", append(frame(true, ws.OpBinary, 10, true), 0x82), frameWhole},
		{"whole control", frame(true, ws.OpPing, 4, true), frameWhole},
		{"fragment", frame(false, ws.OpBinary, 10, true), framePull},
		{"continuation, final", frame(true, ws.OpContinuation, 10, true), frameWhole},
		{"fills the buffer", frame(true, ws.OpBinary, size-8, true), frameWhole},
		{"longer than the buffer", frame(true, ws.OpBinary, size-7, true)[:20], framePull},
		{"64-bit length", frame(true, ws.OpBinary, 70000, false)[:10], framePull},
		{"length over 2^63", []byte{0x82, 127, 0xff, 0, 0, 0, 0, 0, 0, 0}, framePull},
	}
	for _, c := range cases {
		if got := wholeFrame(c.q, size); got != c.want {
			t.Errorf("%s: wholeFrame = %d, want %d", c.name, got, c.want)
		}
	}
}

// inbuf reads as bufio.Reader does: Peek fills, Read copies what is
// buffered or reads a long p straight, and an error is returned once.
func TestInbufLikeBufio(t *testing.T) {
	src := make([]byte, 3000)
	for i := range src {
		src[i] = byte(i)
	}
	b := newInbuf(iotest.OneByteReader(bytes.NewReader(src)), 16)
	p, err := b.Peek(10)
	if err != nil || !bytes.Equal(p, src[:10]) {
		t.Fatalf("Peek(10) = %v, %v", p, err)
	}
	if _, err := b.Peek(17); err != bufio.ErrBufferFull {
		t.Fatalf("Peek past the buffer: %v, want ErrBufferFull", err)
	}
	b.Discard(16)
	if b.Buffered() != 0 {
		t.Fatalf("Buffered = %d after discarding all", b.Buffered())
	}
	long := make([]byte, 100) // read straight, one byte per read here
	n, err := b.Read(long)
	if n != 1 || err != nil || long[0] != src[16] {
		t.Fatalf("Read(100) = %d, %v, %d", n, err, long[0])
	}
	rest, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(rest, src[17:]) {
		t.Fatalf("ReadAll: %d bytes, %v", len(rest), err)
	}
	e := errors.New("boom")
	b = newInbuf(iotest.ErrReader(e), 16)
	if _, err := b.Peek(1); err != e {
		t.Fatalf("Peek error = %v, want %v", err, e)
	}
	if b.err != nil {
		t.Fatal("an error was kept after it was returned")
	}
}
