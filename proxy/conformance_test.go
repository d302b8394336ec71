package proxy_test

// RFC 6455 conformance in the spirit of the Autobahn testsuite (which cannot
// run here), on both legs and on real sockets: a raw TCP client upgrades to
// tether by hand and a raw TCP backend answers tether's upgrade by hand, so
// that each case can write frames no WebSocket library would produce and read
// tether's Close frames byte for byte. Every case checks the offending leg's
// Close code (RFC 6455 §7.4.1, README "Close codes") and what the other leg
// sees.

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/sha1" //nolint:gosec // RFC 6455's accept key
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/proxy"
)

// Frame opcodes (RFC 6455 §5.2).
const (
	opCont   byte = 0x0
	opText   byte = 0x1
	opBinary byte = 0x2
	opClose  byte = 0x8
	opPing   byte = 0x9
	opPong   byte = 0xa
)

// confFrame is one frame a case sends. rsv is the three RSV bits (RSV1 =
// 4). wrongMask sends a client frame unmasked or a server frame masked.
// raw, when set, is sent as is instead.
type confFrame struct {
	fin       bool
	rsv       byte
	op        byte
	p         []byte
	wrongMask bool
	raw       []byte
}

func fin(op byte, p string) confFrame  { return confFrame{fin: true, op: op, p: []byte(p)} }
func frag(op byte, p string) confFrame { return confFrame{op: op, p: []byte(p)} }

func closeBody(code uint16, reason string) string {
	return string(binary.BigEndian.AppendUint16(nil, code)) + reason
}

// encodeFrame encodes f with the minimal length encoding, masked with a
// fixed key when mask is true.
func encodeFrame(f confFrame, mask bool) []byte {
	if f.raw != nil {
		return f.raw
	}
	if f.wrongMask {
		mask = !mask
	}
	b0 := f.op&0x0f | f.rsv<<4
	if f.fin {
		b0 |= 0x80
	}
	var mb byte
	if mask {
		mb = 0x80
	}
	out := []byte{b0}
	switch n := len(f.p); {
	case n < 126:
		out = append(out, mb|byte(n))
	case n <= 0xffff:
		out = binary.BigEndian.AppendUint16(append(out, mb|126), uint16(n))
	default:
		out = binary.BigEndian.AppendUint64(append(out, mb|127), uint64(n))
	}
	p := bytes.Clone(f.p)
	if mask {
		key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
		out = append(out, key[:]...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return append(out, p...)
}

// rawFrame is a frame read from tether.
type rawFrame struct {
	fin    bool
	rsv    byte
	op     byte
	masked bool
	p      []byte
}

func readRawFrame(br *bufio.Reader) (rawFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return rawFrame{}, err
	}
	f := rawFrame{fin: h[0]&0x80 != 0, rsv: h[0] >> 4 & 7, op: h[0] & 0x0f, masked: h[1]&0x80 != 0}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 16<<20 {
		return f, fmt.Errorf("frame of %d bytes", n)
	}
	var key [4]byte
	if f.masked {
		if _, err := io.ReadFull(br, key[:]); err != nil {
			return f, err
		}
	}
	f.p = make([]byte, n)
	if _, err := io.ReadFull(br, f.p); err != nil {
		return f, err
	}
	if f.masked {
		for i := range f.p {
			f.p[i] ^= key[i%4]
		}
	}
	return f, nil
}

// rawPeer is one end of a leg, speaking raw frames: the client (which
// masks) or the backend (which does not).
type rawPeer struct {
	t      *testing.T
	name   string
	conn   net.Conn
	br     *bufio.Reader
	client bool
}

func (p *rawPeer) send(fs ...confFrame) {
	p.t.Helper()
	var b []byte
	for _, f := range fs {
		b = append(b, encodeFrame(f, p.client)...)
	}
	if _, err := p.conn.Write(b); err != nil {
		p.t.Errorf("%s: write: %v", p.name, err)
	}
}

// confMsg is a data message or a pong as a peer received it.
type confMsg struct {
	op byte
	p  string
}

// closeSeen is a Close frame read from tether; code -1 means an empty
// payload (no status code).
type closeSeen struct {
	code   int
	reason string
}

// readUntilClose reads tether's frames until a Close, joining fragmented
// messages, and checks what RFC 6455 requires of tether's frames: masked
// towards the backend only, no RSV bits, control frames final and at most
// 125 bytes, no interleaved data messages. It returns the data messages
// and pong payloads before the Close; ok is false when the connection
// ended without one.
func (p *rawPeer) readUntilClose() (msgs []confMsg, pongs []string, c closeSeen, ok bool) {
	p.t.Helper()
	var cur []byte
	curOp := byte(0)
	for {
		f, err := readRawFrame(p.br)
		if err != nil {
			p.t.Logf("%s: read: %v", p.name, err)
			return msgs, pongs, c, false
		}
		if f.masked == p.client {
			p.t.Errorf("%s: tether's frame masked=%v", p.name, f.masked)
		}
		if f.rsv != 0 {
			p.t.Errorf("%s: tether's frame has RSV bits %03b", p.name, f.rsv)
		}
		if f.op >= 8 && (!f.fin || len(f.p) > 125) {
			p.t.Errorf("%s: bad control frame from tether: fin=%v len=%d", p.name, f.fin, len(f.p))
		}
		switch f.op {
		case opPing:
		case opPong:
			pongs = append(pongs, string(f.p))
		case opClose:
			switch len(f.p) {
			case 0:
				return msgs, pongs, closeSeen{code: -1}, true
			case 1:
				p.t.Errorf("%s: close payload of one byte from tether", p.name)
				return msgs, pongs, c, false
			}
			return msgs, pongs, closeSeen{code: int(binary.BigEndian.Uint16(f.p)), reason: string(f.p[2:])}, true
		case opText, opBinary:
			if curOp != 0 {
				p.t.Errorf("%s: new message inside a fragmented one from tether", p.name)
			}
			curOp, cur = f.op, append(cur[:0], f.p...)
		case opCont:
			if curOp == 0 {
				p.t.Errorf("%s: continuation without a message from tether", p.name)
			}
			cur = append(cur, f.p...)
		default:
			p.t.Errorf("%s: opcode %#x from tether", p.name, f.op)
		}
		if f.op < 8 && f.fin && curOp != 0 {
			msgs = append(msgs, confMsg{curOp, string(cur)})
			curOp, cur = 0, nil
		}
	}
}

// readMsg reads one unfragmented data message, skipping control frames.
func (p *rawPeer) readMsg() confMsg {
	p.t.Helper()
	for {
		f, err := readRawFrame(p.br)
		if err != nil {
			p.t.Fatalf("%s: waiting for a message: %v", p.name, err)
		}
		if f.op == opText || f.op == opBinary {
			if !f.fin {
				p.t.Fatalf("%s: fragmented message", p.name)
			}
			return confMsg{f.op, string(f.p)}
		}
		if f.op == opClose {
			p.t.Fatalf("%s: Close while waiting for a message", p.name)
		}
	}
}

// readPongs reads pongs until one with payload last.
func (p *rawPeer) readPongs(last string) []string {
	p.t.Helper()
	var pongs []string
	for {
		f, err := readRawFrame(p.br)
		if err != nil {
			p.t.Fatalf("%s: waiting for pong %q: %v", p.name, last, err)
		}
		if f.op != opPong {
			p.t.Fatalf("%s: waiting for pong %q: got op %#x", p.name, last, f.op)
		}
		pongs = append(pongs, string(f.p))
		if string(f.p) == last {
			return pongs
		}
	}
}

// expectEOF checks that tether closes the connection (after its Close).
func (p *rawPeer) expectEOF() {
	p.t.Helper()
	for {
		f, err := readRawFrame(p.br)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				p.t.Errorf("%s: tether did not close the connection", p.name)
			}
			return
		}
		p.t.Errorf("%s: frame op %#x after the Close", p.name, f.op)
	}
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + wsGUID)) //nolint:gosec // RFC 6455
	return base64.StdEncoding.EncodeToString(h[:])
}

// rawBackend is a backend on 127.0.0.1 that answers WebSocket upgrades by
// hand and hands each connection to the test.
type rawBackend struct {
	URL   string
	conns chan *rawPeer
}

func newRawBackend(t *testing.T) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{URL: "ws://" + ln.Addr().String(), conns: make(chan *rawPeer, 4)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil {
				_ = c.Close()
				continue
			}
			resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Accept: " + acceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
			if _, err := io.WriteString(c, resp); err != nil {
				_ = c.Close()
				continue
			}
			select {
			case b.conns <- &rawPeer{t: t, name: "backend", conn: c, br: br}:
			default:
				_ = c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		for {
			select {
			case p := <-b.conns:
				_ = p.conn.Close()
			default:
				return
			}
		}
	})
	return b
}

func (b *rawBackend) next(t *testing.T) *rawPeer {
	t.Helper()
	select {
	case p := <-b.conns:
		t.Cleanup(func() { _ = p.conn.Close() })
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("tether did not connect to the backend")
		return nil
	}
}

// rawDial upgrades a raw TCP connection to tether by hand.
func rawDial(t *testing.T, addr string, extra ...string) *rawPeer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	req := "GET /conf HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n" + strings.Join(extra, "") + "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		t.Fatalf("upgrade: %s, accept %q", resp.Status, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	if len(extra) > 0 && !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("upgrade: extension not accepted: %q", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	return &rawPeer{t: t, name: "client", conn: c, br: br, client: true}
}

// What a case expects.
type confKind int

const (
	// confRelay: the frames end with Close 1000 "done"; the other leg gets
	// want and the same Close, the sender pongs (the last one = lastPong)
	// and the Close back.
	confRelay confKind = iota
	// confCode: the sender's Close (code, reason) passes through; both
	// legs see the same Close (README "Close codes" rows 1 and 3).
	confCode
	// confFail: the sender violated the protocol and gets Close code; the
	// other leg gets 1001 (client misbehaved) or 1014 (upstream did).
	confFail
)

type confCase struct {
	name   string
	legs   string // "client", "upstream" or "" (both)
	frames []confFrame
	kind   confKind
	code   int    // confCode, confFail; -1 = Close without a code
	reason string // confCode
	want   []confMsg
	pong   string // confRelay: payload of the last pong expected, if any
}

func confCases() []confCase {
	bye := fin(opClose, closeBody(1000, "done"))
	big := strings.Repeat("z", 70000)
	ping125 := strings.Repeat("p", 125)
	cs := []confCase{
		{name: "text and binary", frames: []confFrame{fin(opText, "hi"), fin(opBinary, "\x00\xff"), fin(opText, ""), bye},
			want: []confMsg{{opText, "hi"}, {opBinary, "\x00\xff"}, {opText, ""}}},
		{name: "64-bit length", frames: []confFrame{fin(opBinary, big), bye}, want: []confMsg{{opBinary, big}}},
		{name: "pings answered, pongs consumed", frames: []confFrame{fin(opPing, ""), fin(opPong, "unsolicited"), fin(opPing, ping125), bye},
			pong: ping125},
		{name: "fragmented text with pings between fragments",
			frames: []confFrame{frag(opText, "Hel"), fin(opPing, "p1"), frag(opCont, "lo "), fin(opPong, "x"), fin(opPing, "p2"), frag(opCont, ""), fin(opCont, "world"), bye},
			want:   []confMsg{{opText, "Hello world"}}, pong: "p2"},
		{name: "fragmented binary with a ping", frames: []confFrame{frag(opBinary, "\x01"), fin(opPing, "bp"), fin(opCont, "\x02"), bye},
			want: []confMsg{{opBinary, "\x01\x02"}}, pong: "bp"},
		{name: "codepoint split at a fragment boundary", frames: []confFrame{frag(opText, "\xe2\x82"), fin(opCont, "\xac"), bye},
			want: []confMsg{{opText, "€"}}},
		{name: "4-byte codepoint over three fragments", frames: []confFrame{frag(opText, "a\xf0\x9f"), frag(opCont, "\x98"), fin(opCont, "\x80b"), bye},
			want: []confMsg{{opText, "a😀b"}}},

		{name: "RSV1 without extension", frames: []confFrame{{fin: true, rsv: 4, op: opText, p: []byte("x")}}, kind: confFail, code: 1002},
		{name: "RSV2", frames: []confFrame{{fin: true, rsv: 2, op: opText, p: []byte("x")}}, kind: confFail, code: 1002},
		{name: "RSV3", frames: []confFrame{{fin: true, rsv: 1, op: opBinary, p: []byte("x")}}, kind: confFail, code: 1002},
		{name: "RSV1 on a ping", frames: []confFrame{{fin: true, rsv: 4, op: opPing}}, kind: confFail, code: 1002},
		{name: "ping of 126 bytes", frames: []confFrame{fin(opPing, strings.Repeat("p", 126))}, kind: confFail, code: 1002},
		{name: "close of 126 bytes", frames: []confFrame{fin(opClose, closeBody(1000, strings.Repeat("r", 124)))}, kind: confFail, code: 1002},
		{name: "fragmented ping", frames: []confFrame{frag(opPing, "a"), fin(opCont, "b")}, kind: confFail, code: 1002},
		{name: "fragmented close", frames: []confFrame{frag(opClose, closeBody(1000, ""))}, kind: confFail, code: 1002},
		{name: "fragmented pong inside a message", frames: []confFrame{frag(opText, "a"), frag(opPong, "")}, kind: confFail, code: 1002},
		{name: "continuation without a start", frames: []confFrame{fin(opCont, "x")}, kind: confFail, code: 1002},
		{name: "continuation after a final frame", frames: []confFrame{fin(opText, "a"), fin(opCont, "b")}, kind: confFail, code: 1002, want: []confMsg{{opText, "a"}}},
		{name: "text inside a fragmented message", frames: []confFrame{frag(opText, "a"), fin(opText, "b")}, kind: confFail, code: 1002},
		{name: "binary inside a fragmented message", frames: []confFrame{frag(opBinary, "a"), fin(opPing, ""), frag(opBinary, "b")}, kind: confFail, code: 1002},
		{name: "non-minimal 16-bit length", frames: []confFrame{{raw: []byte{0x82, 126, 0, 1, 'x'}}}, kind: confFail, code: 1002},

		{name: "invalid UTF-8", frames: []confFrame{fin(opText, "a\xffb")}, kind: confFail, code: 1007},
		{name: "invalid UTF-8 across fragments", frames: []confFrame{frag(opText, "a\xe2"), fin(opCont, "(b")}, kind: confFail, code: 1007},
		{name: "codepoint cut at the end of the message", frames: []confFrame{frag(opText, "ok"), fin(opCont, "\xe2\x82")}, kind: confFail, code: 1007},
		{name: "surrogate", frames: []confFrame{fin(opText, "\xed\xa0\x80")}, kind: confFail, code: 1007},
		{name: "overlong encoding", frames: []confFrame{fin(opText, "\xc0\xaf")}, kind: confFail, code: 1007},
		{name: "invalid UTF-8 in a close reason", frames: []confFrame{fin(opClose, closeBody(1000, "a\xff"))}, kind: confFail, code: 1007},
		{name: "close payload of one byte", frames: []confFrame{fin(opClose, "\x03")}, kind: confFail, code: 1002},

		{name: "close without a code", frames: []confFrame{fin(opClose, "")}, kind: confCode, code: -1},
		{name: "close 1000 after a binary fragment", frames: []confFrame{frag(opBinary, "partial"), fin(opClose, closeBody(1000, "mid"))}, kind: confCode, code: 1000, reason: "mid"},
		{name: "close with a UTF-8 reason", frames: []confFrame{fin(opClose, closeBody(4001, "ciao ☺"))}, kind: confCode, code: 4001, reason: "ciao ☺"},
	}
	for op := byte(3); op <= 0xf; op++ {
		if op == opClose || op == opPing || op == opPong {
			continue
		}
		cs = append(cs, confCase{name: fmt.Sprintf("opcode %#x", op), frames: []confFrame{fin(op, "x")}, kind: confFail, code: 1002})
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cs = append(cs, confCase{name: fmt.Sprintf("close %d", code), frames: []confFrame{fin(opClose, closeBody(code, "r"))}, kind: confFail, code: 1002})
	}
	// Valid codes the upstream sends pass through only when they are not in
	// TETHER_RECONNECT_ON_CODES (default 1001,1006,1011,1012,1013,1014).
	for _, code := range []uint16{1000, 1002, 1003, 1007, 1008, 1009, 1010, 3000, 4000, 4999} {
		cs = append(cs, confCase{name: fmt.Sprintf("close %d", code), frames: []confFrame{fin(opClose, closeBody(code, "why"))}, kind: confCode, code: int(code), reason: "why"})
	}
	for _, code := range []uint16{1001, 1011, 1012, 1013, 1014} {
		cs = append(cs, confCase{name: fmt.Sprintf("close %d", code), legs: "client", frames: []confFrame{fin(opClose, closeBody(code, "why"))}, kind: confCode, code: int(code), reason: "why"})
	}
	cs = append(cs,
		confCase{name: "unmasked client frame", legs: "client", frames: []confFrame{{fin: true, op: opText, p: []byte("x"), wrongMask: true}}, kind: confFail, code: 1002},
		confCase{name: "unmasked client ping", legs: "client", frames: []confFrame{{fin: true, op: opPing, wrongMask: true}}, kind: confFail, code: 1002},
		confCase{name: "masked server frame", legs: "upstream", frames: []confFrame{{fin: true, op: opText, p: []byte("x"), wrongMask: true}}, kind: confFail, code: 1002},
		confCase{name: "masked server close", legs: "upstream", frames: []confFrame{{fin: true, op: opClose, p: []byte(closeBody(1000, "")), wrongMask: true}}, kind: confFail, code: 1002},
	)
	return cs
}

// startConf starts a raw backend and tether (heartbeats off, so that every
// frame read is the case's) with one session through them.
// With deflate, the client leg negotiates permessage-deflate.
func startConf(t *testing.T, deflate bool) (be *rawBackend, client, up *rawPeer) {
	t.Helper()
	be = newRawBackend(t)
	tt := startTether(t, be.URL, func(c *proxy.Config) {
		c.Session.ClientHeartbeat.Mode = heartbeat.ModeOff
		c.Session.UpstreamHeartbeat.Mode = heartbeat.ModeOff
		c.ClientCompression = deflate
	})
	if deflate {
		client = rawDial(t, tt.Addr, "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n")
	} else {
		client = rawDial(t, tt.Addr)
	}
	up = be.next(t)
	return be, client, up
}

// TestConformance runs every case on both legs: the client leg with a raw
// client sending masked frames, the upstream leg with a raw backend sending
// unmasked ones.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, leg := range []string{"client", "upstream"} {
		for _, c := range confCases() {
			if c.legs != "" && c.legs != leg {
				continue
			}
			t.Run(leg+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				_, client, up := startConf(t, false)
				sender, other := client, up
				if leg == "upstream" {
					sender, other = up, client
				}
				var pongs []string
				if c.pong != "" {
					// Wait for the pong before the Close, which would
					// make an unsent pong moot (RFC 6455 §5.5.2).
					sender.send(c.frames[:len(c.frames)-1]...)
					pongs = sender.readPongs(c.pong)
					sender.send(c.frames[len(c.frames)-1])
				} else {
					sender.send(c.frames...)
				}
				checkConf(t, c, leg, sender, other, pongs)
			})
		}
	}
}

func checkConf(t *testing.T, c confCase, leg string, sender, other *rawPeer, pongs []string) {
	t.Helper()
	// What the sender gets back.
	_, more, sc, ok := sender.readUntilClose()
	pongs = append(pongs, more...)
	if !ok {
		t.Fatalf("%s: no Close from tether", sender.name)
	}
	wantSender := closeSeen{code: c.code}
	switch c.kind {
	case confRelay:
		wantSender = closeSeen{code: 1000, reason: "done"}
	case confCode:
		wantSender.reason = c.reason
	}
	if sc.code != wantSender.code || (c.kind != confFail && sc.reason != wantSender.reason) {
		t.Errorf("%s got Close %d %q, want %d %q", sender.name, sc.code, sc.reason, wantSender.code, wantSender.reason)
	}
	if c.kind == confFail && sc.code == 1002 && sc.reason == "" {
		t.Errorf("%s: protocol error Close without a reason", sender.name)
	}
	for _, p := range pongs {
		found := false
		for _, f := range c.frames {
			found = found || (f.op == opPing && string(f.p) == p)
		}
		if !found {
			t.Errorf("%s: pong %q answers no ping", sender.name, p)
		}
	}
	if c.pong != "" && (len(pongs) == 0 || pongs[len(pongs)-1] != c.pong) {
		t.Errorf("%s: pongs %q, want the last to be %q", sender.name, pongs, c.pong)
	}
	// Tether answered our Close (README "Close codes": handshake completed) or
	// failed the connection (RFC 6455 §7.1.7, without waiting for our Close):
	// either way it closes the TCP connection now.
	sender.expectEOF()

	// What the other leg gets.
	msgs, _, oc, ok := other.readUntilClose()
	if !ok {
		t.Fatalf("%s: no Close from tether", other.name)
	}
	wantOther := wantSender
	if c.kind == confFail {
		wantOther = closeSeen{code: 1001} // README "Close codes": client protocol error
		if leg == "upstream" {
			wantOther = closeSeen{code: 1014} // upstream protocol error
		}
	}
	if oc.code != wantOther.code || (c.kind != confFail && oc.reason != wantOther.reason) {
		t.Errorf("%s got Close %d %q, want %d %q", other.name, oc.code, oc.reason, wantOther.code, wantOther.reason)
	}
	if len(msgs) != len(c.want) {
		t.Errorf("%s got %d messages, want %d", other.name, len(msgs), len(c.want))
	} else {
		for i := range msgs {
			if msgs[i] != c.want[i] {
				t.Errorf("%s: message %d = %d %.40q, want %d %.40q", other.name, i, msgs[i].op, msgs[i].p, c.want[i].op, c.want[i].p)
			}
		}
	}
	// Complete the closing handshake tether started, then it closes.
	reply := ""
	if oc.code >= 0 {
		reply = closeBody(uint16(oc.code), "")
	}
	other.send(fin(opClose, reply))
	other.expectEOF()
}

// README "Upstream loss, reconnect and the delivery guarantee" and "Close
// codes": a valid upstream Close whose code is in TETHER_RECONNECT_ON_CODES
// does not reach the client: tether completes the closing handshake with the
// backend and reconnects, and the client leg stays open.
func TestConformanceUpstreamCloseReconnects(t *testing.T) {
	t.Parallel()
	for _, code := range []uint16{1001, 1011, 1012, 1013, 1014} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			be, client, up := startConf(t, false)
			up.send(fin(opClose, closeBody(code, "restart")))
			_, _, c, ok := up.readUntilClose()
			if !ok || c.code != int(code) {
				t.Fatalf("backend: Close %+v (ok=%v), want tether's reply %d", c, ok, code)
			}
			up.expectEOF()
			up2 := be.next(t)
			// The message may be buffered until the reconnect completes;
			// a Close before then would end the session and drop it.
			client.send(fin(opText, "after"))
			if m := up2.readMsg(); m != (confMsg{opText, "after"}) {
				t.Fatalf("new upstream got %+v, want the client's message", m)
			}
			client.send(fin(opClose, closeBody(1000, "done")))
			msgs, _, c, ok := up2.readUntilClose()
			if !ok || len(msgs) != 0 || c.code != 1000 {
				t.Fatalf("new upstream got %q then Close %+v (ok=%v)", msgs, c, ok)
			}
			up2.send(fin(opClose, closeBody(1000, "")))
			if _, _, c, ok := client.readUntilClose(); !ok || c.code != 1000 || c.reason != "done" {
				t.Fatalf("client: Close %+v (ok=%v), want 1000 done", c, ok)
			}
			client.expectEOF()
		})
	}
}

// compress is a permessage-deflate payload of s (RFC 7692 §7.2.1: the
// final empty stored block's 00 00 ff ff removed).
func compress(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\x00\x00\xff\xff")
}

// RSV1 on a client leg with permessage-deflate (RFC 7692 §6): allowed on
// the first frame of a data message only, and what it marks must inflate.
func TestConformanceCompression(t *testing.T) {
	t.Parallel()
	z := compress(t, "hello, compressed world")
	zBad := compress(t, "bad \xff text")
	rsv1 := func(op byte, finBit bool, p string) confFrame {
		return confFrame{fin: finBit, rsv: 4, op: op, p: []byte(p)}
	}
	bye := fin(opClose, closeBody(1000, "done"))
	for _, c := range []confCase{
		{name: "compressed text", frames: []confFrame{rsv1(opText, true, z), fin(opText, "plain"), bye},
			want: []confMsg{{opText, "hello, compressed world"}, {opText, "plain"}}},
		{name: "compressed and fragmented with a ping", frames: []confFrame{rsv1(opBinary, false, z[:3]), fin(opPing, "zp"), fin(opCont, z[3:]), bye},
			want: []confMsg{{opBinary, "hello, compressed world"}}, pong: "zp"},
		{name: "RSV1 on a continuation", frames: []confFrame{frag(opText, "a"), rsv1(opCont, true, "b")}, kind: confFail, code: 1002},
		{name: "RSV1 on a ping", frames: []confFrame{rsv1(opPing, true, "")}, kind: confFail, code: 1002},
		{name: "RSV2 with deflate", frames: []confFrame{{fin: true, rsv: 2, op: opText, p: []byte(z)}}, kind: confFail, code: 1002},
		{name: "not deflate data", frames: []confFrame{rsv1(opBinary, true, "\xff\xff\xff")}, kind: confFail, code: 1007},
		{name: "invalid UTF-8 once inflated", frames: []confFrame{rsv1(opText, true, zBad)}, kind: confFail, code: 1007},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, client, up := startConf(t, true)
			var pongs []string
			if c.pong != "" {
				client.send(c.frames[:len(c.frames)-1]...)
				pongs = client.readPongs(c.pong)
				client.send(c.frames[len(c.frames)-1])
			} else {
				client.send(c.frames...)
			}
			checkConf(t, c, "client", client, up, pongs)
		})
	}
}
