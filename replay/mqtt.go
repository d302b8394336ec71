package replay

import "bytes"

// MQTT 3.1.1 and 5 over WebSocket: each direction is a byte stream, in
// binary messages cut anywhere. A small state machine per direction
// follows the packets (fixed header byte, remaining length of 1–4 bytes,
// body); the client side copies only CONNECT, SUBSCRIBE and UNSUBSCRIBE
// packets, the upstream side only the first two body bytes of CONNACK and
// SUBACK. PUBLISH payloads are skipped by count, never copied.

const (
	mqConnect     = 1
	mqConnack     = 2
	mqSubscribe   = 8
	mqSuback      = 9
	mqUnsubscribe = 10
	mqDisconnect  = 14
)

type mqttState struct {
	level byte // protocol level of the CONNECT: 3, 4 or 5
	cl    mqttParser
	up    mqttParser
	held  [7]byte // upstream bytes of a packet whose fate is not known yet
	nheld int
}

type mqttParser struct {
	st    uint8 // psHeader, psLength, psBody
	first byte  // fixed header byte
	rem   int   // remaining length, then body bytes left
	shift uint
	nhdr  int
	hdr   [5]byte
	// client side
	buf     []byte // the state packet being copied
	lo      uint64 // sequence number of the message of its first byte
	atStart bool   // it began its message: with its end at the end of a
	// message, the messages it spans hold nothing else
	// upstream side
	body  [2]byte
	nbody int
	watch bool // CONNACK or SUBACK: the first body bytes matter
	hold  bool // its bytes wait in held until its fate is known
	drop  bool
}

const (
	psHeader = iota
	psLength
	psBody
)

// header feeds one fixed-header byte; it reports whether the header is
// complete and whether it is malformed.
func (m *mqttParser) header(b byte) (done, bad bool) {
	if m.st == psHeader {
		m.first, m.rem, m.shift, m.nhdr = b, 0, 0, 1
		m.hdr[0] = b
		m.st = psLength
		return false, b>>4 == 0
	}
	m.hdr[m.nhdr] = b
	m.nhdr++
	m.rem |= int(b&0x7f) << m.shift
	m.shift += 7
	if b&0x80 == 0 {
		m.st = psBody
		return true, false
	}
	return false, m.nhdr == 5 // a fifth length byte
}

// cut reports whether the upstream side stopped inside a packet some of
// whose bytes were forwarded (not held or dropped).
func (m *mqttParser) cut() bool { return m.st != psHeader && !m.hold && !m.drop }

// stateful reports whether a client packet of fixed header byte b is
// copied; it is false for a malformed one as well (bad).
func stateful(b byte) (copy, bad bool) {
	switch b >> 4 {
	case mqConnect:
		return true, b != 0x10
	case mqSubscribe:
		return true, b != 0x82
	case mqUnsubscribe:
		return true, b != 0xa2
	}
	return false, false
}

func (s *State) mqttBreak() {
	s.broken = true
	s.open, s.subs, s.bytes, s.unreplied = nil, nil, 0, 0
	s.win = window{}
	s.mq.cl.buf = nil
}

func (s *State) mqttClient(op Opcode, p []byte, seq uint64) error {
	if op != Binary {
		s.mqttBreak() // MQTT over WebSocket is binary only
		return nil
	}
	c := &s.mq.cl
	for i := 0; i < len(p); {
		if c.st != psBody {
			if c.st == psHeader {
				c.lo, c.atStart = seq, i == 0
			}
			done, bad := c.header(p[i])
			i++
			if bad {
				s.mqttBreak()
				return nil
			}
			if !done {
				continue
			}
			copy, bad := stateful(c.first)
			if bad {
				s.mqttBreak()
				return nil
			}
			if copy {
				if c.nhdr+c.rem > s.max {
					if c.first>>4 == mqUnsubscribe {
						s.mqttBreak()
						return nil
					}
					return ErrStateFull
				}
				c.buf = append(make([]byte, 0, c.nhdr+c.rem), c.hdr[:c.nhdr]...)
			}
		} else {
			n := min(c.rem, len(p)-i)
			if c.buf != nil {
				c.buf = append(c.buf, p[i:i+n]...)
			}
			c.rem -= n
			i += n
		}
		if c.st != psBody || c.rem > 0 {
			continue
		}
		c.st = psHeader
		t := c.first >> 4
		if t == mqDisconnect {
			s.finish()
			return nil
		}
		if c.buf == nil {
			continue
		}
		pkt, nhdr := c.buf, c.nhdr
		c.buf = nil
		it := &item{op: Binary, p: pkt, lo: c.lo, hi: seq, pure: c.atStart && i == len(p)}
		var err error
		ok := true
		switch t {
		case mqConnect:
			ok, err = s.mqttConnect(it, pkt[nhdr:])
		case mqSubscribe:
			ok, err = s.mqttSubscribe(it, pkt[nhdr:])
		case mqUnsubscribe:
			ok = s.mqttUnsubscribe(pkt[nhdr:])
		}
		if !ok {
			s.mqttBreak()
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func u16(b []byte, i int) (int, bool) {
	if i+2 > len(b) {
		return 0, false
	}
	return int(b[i])<<8 | int(b[i+1]), true
}

// varint decodes an MQTT variable byte integer at b[i:].
func varint(b []byte, i int) (n, next int, ok bool) {
	for k := 0; k < 4; k++ {
		if i+k >= len(b) {
			return 0, 0, false
		}
		n |= int(b[i+k]&0x7f) << (7 * k)
		if b[i+k]&0x80 == 0 {
			return n, i + k + 1, true
		}
	}
	return 0, 0, false
}

func (s *State) mqttConnect(it *item, body []byte) (bool, error) {
	n, ok := u16(body, 0)
	if !ok || 2+n >= len(body) {
		return false, nil
	}
	name, level := body[2:2+n], body[2+n]
	switch {
	case string(name) == "MQTT" && (level == 4 || level == 5):
	case string(name) == "MQIsdp" && level == 3:
	default:
		return false, nil
	}
	s.mq.level = level
	return true, s.setOpening(it)
}

// mqttSub is a kept SUBSCRIBE: its packet id, its properties (MQTT 5,
// with their length) and its topic filters.
type mqttSub struct {
	props   []byte
	filters []mqttFilter
}

type mqttFilter struct {
	name []byte
	opts byte
}

// subHead parses a SUBSCRIBE or UNSUBSCRIBE body's packet id and
// properties; it returns the index of the payload.
func (s *State) subHead(body []byte) (pid int, props []byte, i int, ok bool) {
	if s.mq.level == 0 {
		return 0, nil, 0, false // no CONNECT seen: the layout is unknown
	}
	pid, ok = u16(body, 0)
	i = 2
	if ok && s.mq.level == 5 {
		var n int
		n, i, ok = varint(body, 2)
		if !ok || i+n > len(body) {
			return 0, nil, 0, false
		}
		props = body[2 : i+n]
		i += n
	}
	return pid, props, i, ok
}

func (s *State) mqttSubscribe(it *item, body []byte) (bool, error) {
	pid, props, i, ok := s.subHead(body)
	if !ok || i == len(body) {
		return false, nil
	}
	sub := &mqttSub{props: props}
	for i < len(body) {
		n, ok := u16(body, i)
		if !ok || i+2+n >= len(body) {
			return false, nil
		}
		sub.filters = append(sub.filters, mqttFilter{name: body[i+2 : i+2+n], opts: body[i+2+n]})
		i += 3 + n
	}
	// A filter subscribed again replaces the earlier subscription.
	for _, f := range sub.filters {
		s.unsubscribe(f.name)
	}
	it.pid, it.hasPid, it.mq = uint16(pid), true, sub
	return true, s.keep(it, -1)
}

func (s *State) mqttUnsubscribe(body []byte) bool {
	_, _, i, ok := s.subHead(body)
	if !ok || i == len(body) {
		return false
	}
	for i < len(body) {
		n, ok := u16(body, i)
		if !ok || i+2+n > len(body) {
			return false
		}
		s.unsubscribe(body[i+2 : i+2+n])
		i += 2 + n
	}
	return true
}

// unsubscribe removes the topic filter name from the kept SUBSCRIBEs,
// rebuilding one that keeps other filters.
func (s *State) unsubscribe(name []byte) {
	for i := 0; i < len(s.subs); i++ {
		it := s.subs[i]
		k := -1
		for j, f := range it.mq.filters {
			if bytes.Equal(f.name, name) {
				k = j
				break
			}
		}
		if k < 0 {
			continue
		}
		if len(it.mq.filters) == 1 {
			s.remove(i)
			i--
			continue
		}
		filters := append(it.mq.filters[:k:k], it.mq.filters[k+1:]...)
		q := encodeSubscribe(it.pid, it.mq.props, filters)
		it.mq = &mqttSub{props: it.mq.props, filters: filters}
		it.pure = false // no longer what the client sent
		s.resize(it, q)
	}
}

// encodeSubscribe builds a SUBSCRIBE packet.
func encodeSubscribe(pid uint16, props []byte, filters []mqttFilter) []byte {
	n := 2 + len(props)
	for _, f := range filters {
		n += 3 + len(f.name)
	}
	q := make([]byte, 0, 5+n)
	q = append(q, 0x82)
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		q = append(q, b)
		if n == 0 {
			break
		}
	}
	q = append(q, byte(pid>>8), byte(pid))
	q = append(q, props...)
	for _, f := range filters {
		q = append(q, byte(len(f.name)>>8), byte(len(f.name)))
		q = append(q, f.name...)
		q = append(q, f.opts)
	}
	return q
}

// mqttUpstream follows the broker's byte stream. While replies to a
// replay are awaited, a CONNACK or SUBACK is held back until its first
// two body bytes say whether it is one of them.
func (s *State) mqttUpstream(op Opcode, p []byte) Verdict {
	if op != Binary {
		s.mqttBreak()
		return Verdict{Msg: p}
	}
	u := &s.mq.up
	e := emitter{p: p, out: s.out[:0]}
	ev := EventNone
	i := 0
	for i < len(p) && !s.broken {
		if u.st != psBody {
			if u.st == psHeader {
				t := p[i] >> 4
				u.watch = t == mqConnack || t == mqSuback
				u.hold = u.watch && (s.win.await || len(s.win.expects) > 0)
				u.drop, u.nbody, s.mq.nheld = false, 0, 0
			}
			done, bad := u.header(p[i])
			s.mqttEmit(&e, i)
			i++
			if bad {
				s.mqttBreak()
			} else if done && u.rem < 2 && u.watch {
				s.mqttBreak() // CONNACK and SUBACK have at least 2 body bytes
			}
		} else if u.watch && u.nbody < 2 {
			u.body[u.nbody] = p[i]
			u.nbody++
			u.rem--
			s.mqttEmit(&e, i)
			i++
			if u.nbody == 2 {
				var ev2 Event
				u.drop, ev2 = s.mqttDecide()
				ev = max(ev, ev2)
				if u.hold {
					if !u.drop {
						e.keepBytes(s.mq.held[:s.mq.nheld])
					}
					u.hold = false
				}
			}
		} else {
			n := min(u.rem, len(p)-i)
			if !u.drop {
				e.keep(i, i+n)
			}
			u.rem -= n
			i += n
		}
		if u.st == psBody && u.rem == 0 {
			u.st = psHeader
		}
	}
	if s.broken {
		// Recognition stopped: everything passes from here on.
		if u.hold {
			e.keepBytes(s.mq.held[:s.mq.nheld])
		}
		e.keep(i, len(p))
	}
	return s.verdict(&e, ev, false)
}

// mqttEmit passes or holds the byte p[i] of the current packet.
func (s *State) mqttEmit(e *emitter, i int) {
	u := &s.mq.up
	switch {
	case u.hold:
		s.mq.held[s.mq.nheld] = e.p[i]
		s.mq.nheld++
	case !u.drop:
		e.keep(i, i+1)
	}
}

// mqttDecide handles a CONNACK's or SUBACK's first two body bytes.
func (s *State) mqttDecide() (drop bool, ev Event) {
	u := &s.mq.up
	if u.first>>4 == mqConnack {
		// 3.1.1: return code 0 accepts; 5: reason code 0 is success,
		// 0x80 and above are errors.
		return s.onAnswer(u.body[1] == 0)
	}
	return s.onReply(nil, uint16(u.body[0])<<8|uint16(u.body[1])), EventNone
}
