package replay

import "bytes"

// STOMP 1.0–1.2 frames: a command line, header lines, a blank line, a
// body and a NUL; a WebSocket message holds one or more, with heart-beat
// EOLs between them. A frame cut off at the end of a message is not
// recognised (and is not state); its end, in a later message, is found
// (stompCut), so that a re-send never starts inside it.

type stompFrame struct {
	cmd        []byte
	hdrs       []byte // the header lines
	start, end int    // the frame is p[start:end], its NUL included
}

const (
	frameOK = iota
	frameEnd
	frameBad
)

// nextFrame parses the frame at p[i:], after heart-beat EOLs.
func nextFrame(p []byte, i int) (f stompFrame, st int) {
	for i < len(p) && (p[i] == '\n' || p[i] == '\r' && i+1 < len(p) && p[i+1] == '\n') {
		i++
	}
	if i == len(p) {
		return f, frameEnd
	}
	f.start = i
	line, i, ok := stompLine(p, i)
	if !ok || len(line) == 0 {
		return f, frameBad
	}
	f.cmd = line
	h := i
	for {
		line, i, ok = stompLine(p, i)
		if !ok {
			return f, frameBad
		}
		if len(line) == 0 {
			break
		}
	}
	f.hdrs = p[h:i]
	if v, ok := stompHeader(f.hdrs, "content-length"); ok {
		n, ok := atoi(v)
		if !ok || n >= len(p)-i {
			return f, frameBad
		}
		i += n
		if p[i] != 0 {
			return f, frameBad
		}
	} else {
		n := bytes.IndexByte(p[i:], 0)
		if n < 0 {
			return f, frameBad
		}
		i += n
	}
	f.end = i + 1
	return f, frameOK
}

// atoi parses a content-length: decimal digits, at most 9.
func atoi(v []byte) (int, bool) {
	if len(v) == 0 || len(v) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// stompLine returns the line at p[i:] without its EOL, and the index
// after the EOL; a NUL before the EOL is malformed.
func stompLine(p []byte, i int) ([]byte, int, bool) {
	n := bytes.IndexByte(p[i:], '\n')
	if n < 0 {
		return nil, 0, false
	}
	line := p[i : i+n]
	if bytes.IndexByte(line, 0) >= 0 {
		return nil, 0, false
	}
	return bytes.TrimSuffix(line, []byte{'\r'}), i + n + 1, true
}

// stompHeader returns the raw value of the first header called name
// (STOMP: a repeated header's first value counts).
func stompHeader(hdrs []byte, name string) ([]byte, bool) {
	for len(hdrs) > 0 {
		var line []byte
		if n := bytes.IndexByte(hdrs, '\n'); n >= 0 {
			line, hdrs = hdrs[:n], hdrs[n+1:]
		} else {
			line, hdrs = hdrs, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if k, v, ok := bytes.Cut(line, []byte{':'}); ok && string(k) == name {
			return v, true
		}
	}
	return nil, false
}

// stompValueEqual compares two header values as decoded (STOMP 1.1/1.2
// escapes \c \n \r \\; an unknown escape counts as written, as in 1.0).
func stompValueEqual(a, b []byte) bool {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		var x, y byte
		x, i = stompByte(a, i)
		y, j = stompByte(b, j)
		if x != y {
			return false
		}
	}
	return i == len(a) && j == len(b)
}

func stompByte(v []byte, i int) (byte, int) {
	if v[i] == '\\' && i+1 < len(v) {
		switch v[i+1] {
		case 'c':
			return ':', i + 2
		case 'n':
			return '\n', i + 2
		case 'r':
			return '\r', i + 2
		case '\\':
			return '\\', i + 2
		}
	}
	return v[i], i + 1
}

// stompCut follows a client frame cut at the end of a message into the
// messages that continue it: @stomp/stompjs with splitLargeFrames sends a
// frame longer than maxWebSocketChunkSize as several messages. Only the
// frame's end matters (a re-send must not start inside a frame, see
// AtBoundary); the frame itself is not recognised (state frames are far
// shorter than a chunk).
type stompCut struct {
	in   bool   // the client's stream is inside a frame
	hdr  []byte // the frame's bytes while its headers are incomplete
	body bool   // its headers are complete
	need int    // body bytes left, its NUL included; -1: up to a NUL
	lost bool   // the stream was not understood: boundaries are not followed
}

// stompCutMax bounds the headers of a frame cut across messages.
const stompCutMax = 16 << 10

// feed consumes the bytes of the cut frame at the start of p and returns
// how many; in is false after it when the frame ended there.
func (c *stompCut) feed(p []byte) int {
	i := 0
	if !c.body {
		// Up to the blank line that ends the headers: "\n\n" or "\r\n\r\n"
		// (lines may end in either), looked for across the cut. Only
		// header bytes are kept: the body that follows them in p is not
		// copied.
		k := len(c.hdr)
		at := func(j int) byte { // byte j of the headers so far and p
			if j < k {
				return c.hdr[j]
			}
			return p[j-k]
		}
		end := -1
		for j := max(k-3, 0); j < k+len(p); j++ {
			b := at(j)
			if b == 0 {
				c.fail() // a NUL in a header line
				return len(p)
			}
			if b == '\n' && (j > 0 && at(j-1) == '\n' || j > 1 && at(j-1) == '\r' && at(j-2) == '\n') {
				end = j + 1
				break
			}
		}
		if end < 0 {
			if k+len(p) > stompCutMax {
				c.fail()
				return len(p)
			}
			c.hdr = append(c.hdr, p...)
			return len(p)
		}
		c.hdr = append(c.hdr, p[:end-k]...)
		c.need = -1
		if v, ok := stompHeader(c.hdr[:end], "content-length"); ok {
			n, ok := atoi(v)
			if !ok {
				c.fail()
				return len(p)
			}
			c.need = n + 1
		}
		i = end - k // the body starts here in p
		c.hdr, c.body = c.hdr[:0], true
		if cap(c.hdr) > 1<<10 {
			c.hdr = nil // a session holds no chunk's worth of bytes between frames
		}
	}
	if c.need < 0 {
		n := bytes.IndexByte(p[i:], 0)
		if n < 0 {
			return len(p)
		}
		i += n + 1
	} else {
		n := min(c.need, len(p)-i)
		i += n
		if c.need -= n; c.need > 0 {
			return len(p)
		}
		if p[i-1] != 0 {
			c.fail() // content-length bytes not followed by a NUL
			return len(p)
		}
	}
	c.in, c.body = false, false
	return i
}

// start begins following the frame cut at the end of the message, p its
// bytes.
func (c *stompCut) start(p []byte) {
	for len(p) > 0 && p[0] == '\n' || len(p) > 1 && p[0] == '\r' && p[1] == '\n' {
		p = p[1:] // heart-beats before it
	}
	c.in, c.body, c.hdr = true, false, c.hdr[:0]
	if c.feed(p); !c.in {
		c.fail() // nextFrame found it malformed, not cut
	}
}

func (c *stompCut) fail() { *c = stompCut{lost: true} }

func (s *State) stompClient(op Opcode, p []byte, seq uint64) error {
	frames := 0
	i := 0
	if c := &s.stc; c.in {
		i = c.feed(p)
		frames++ // the cut frame's end shares the message
		if c.in || c.lost {
			return nil
		}
	}
	for {
		f, st := nextFrame(p, i)
		if st == frameEnd {
			break
		}
		if st == frameBad {
			frames++ // a broken tail shares the message
			if !s.stc.lost {
				s.stc.start(p[i:])
			}
			break
		}
		frames++
		i = f.end
		var err error
		switch string(f.cmd) {
		case "CONNECT", "STOMP":
			cp := bytes.Clone(p[f.start:f.end])
			err = s.setOpening(&item{op: op, p: cp, lo: seq, hi: seq, pure: true})
		case "SUBSCRIBE":
			err = s.stompSubscribe(op, p, seq, &f)
		case "UNSUBSCRIBE":
			s.stompUnsubscribe(&f)
		case "DISCONNECT":
			s.finish()
			return nil
		}
		if err != nil {
			return err
		}
	}
	if frames > 1 {
		s.impure()
	}
	return nil
}

func (s *State) stompSubscribe(op Opcode, p []byte, seq uint64, f *stompFrame) error {
	id, hasID := stompHeader(f.hdrs, "id")
	dest, hasDest := stompHeader(f.hdrs, "destination")
	if !hasID && !hasDest {
		return nil
	}
	receipt, _ := stompHeader(f.hdrs, "receipt")
	fp := p[f.start:f.end]
	cp := bytes.Clone(fp)
	it := &item{op: op, p: cp, lo: seq, hi: seq, pure: true,
		id: sub(cp, fp, id), dest: sub(cp, fp, dest), receipt: sub(cp, fp, receipt)}
	if hasID && it.id == nil {
		it.id = cp[:0] // an empty id is still an id
	}
	replace := -1
	for i, k := range s.subs {
		if hasID && k.id != nil && stompValueEqual(k.id, it.id) || !hasID && k.id == nil && stompValueEqual(k.dest, it.dest) {
			replace = i
			break
		}
	}
	return s.keep(it, replace)
}

// stompUnsubscribe ends the subscription with the frame's id header or,
// without one (STOMP 1.0), every subscription to its destination.
func (s *State) stompUnsubscribe(f *stompFrame) {
	id, hasID := stompHeader(f.hdrs, "id")
	dest, hasDest := stompHeader(f.hdrs, "destination")
	for i := 0; i < len(s.subs); {
		k := s.subs[i]
		if hasID && k.id != nil && stompValueEqual(k.id, id) || !hasID && hasDest && k.dest != nil && stompValueEqual(k.dest, dest) {
			s.remove(i)
			continue
		}
		i++
	}
}

// stompUpstream looks at upstream frames only while something is owed:
// the answer to the opening, or receipts asked for by kept frames.
func (s *State) stompUpstream(p []byte) Verdict {
	if !s.win.open() && (s.answered || s.open == nil) && s.unreplied == 0 {
		return Verdict{Msg: p}
	}
	e := emitter{p: p, out: s.out[:0]}
	ev := EventNone
	i := 0
	for {
		f, st := nextFrame(p, i)
		if st != frameOK {
			e.keep(i, len(p))
			break
		}
		e.keep(i, f.start) // heart-beats
		drop := false
		switch string(f.cmd) {
		case "CONNECTED":
			var ev2 Event
			drop, ev2 = s.onAnswer(true)
			ev = max(ev, ev2)
		case "ERROR":
			if _, ev2 := s.onAnswer(false); ev2 != EventNone {
				ev = ev2
			}
		case "RECEIPT":
			if id, ok := stompHeader(f.hdrs, "receipt-id"); ok {
				if id == nil {
					id = p[f.start:f.start]
				}
				drop = s.onReply(id, 0)
			}
		}
		if !drop {
			e.keep(f.start, f.end)
		}
		i = f.end
	}
	return s.verdict(&e, ev, true)
}
