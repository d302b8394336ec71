package replay

import (
	"bytes"
	"errors"
	"slices"
)

// Opcode is a WebSocket data opcode, with RFC 6455's values (so
// ws.OpCode(op) converts it).
type Opcode uint8

// The data opcodes.
const (
	Text   Opcode = 1
	Binary Opcode = 2
)

// ErrStateFull is returned by FromClient when keeping a state message
// would pass Config.MaxBytes; the session closes the client with 1013.
var ErrStateFull = errors.New("replay state over TETHER_REPLAY_MAX_BYTES")

// Msg is one message to replay. P is owned by the State and never
// modified: the caller must not modify it either, and may keep it.
type Msg struct {
	Op  Opcode
	P   []byte
	Seq uint64 // the sequence number of the client message it came from (its first)
}

// Plan is what to send on a new upstream connection, from Replay.
type Plan struct {
	// Opening is sent first (at most one message). When it is not empty,
	// nothing else is sent until FromUpstream reports EventAccepted (or
	// the wait passes TETHER_DIAL_TIMEOUT: a failed attempt).
	Opening []Msg
	// Rest is sent after the opening's answer (at once if there is no
	// opening), before the re-sent and buffered messages.
	Rest []Msg
	skip []seqRange
}

type seqRange struct{ lo, hi uint64 }

// Skip reports whether the client message with sequence number seq, held
// by the session for re-sending, is already sent by this plan: the
// session does not send it again, so that it is sent once (README "State
// replay on upstream reconnect").
func (p *Plan) Skip(seq uint64) bool {
	for _, r := range p.skip {
		if r.lo <= seq && seq <= r.hi {
			return true
		}
	}
	return false
}

// Len is the number of messages the plan replays.
func (p *Plan) Len() int { return len(p.Opening) + len(p.Rest) }

// Event is what an upstream message means for the replay in progress.
type Event uint8

// The events of FromUpstream.
const (
	EventNone Event = iota
	// EventAccepted: the upstream answered the replayed opening. The
	// session sends Plan.Rest, then the re-sent and buffered messages.
	EventAccepted
	// EventRejected: the upstream refused the replayed opening (MQTT
	// CONNACK with an error code, STOMP ERROR, graphql-ws
	// connection_error). The message is forwarded to the client, which
	// sees the refusal as it would without tether; the session treats the
	// connection as rejected (the upstream closes it next).
	EventRejected
)

// Verdict is what to do with one upstream data message.
type Verdict struct {
	// Drop: the message is a reply to the replay; do not forward it.
	Drop bool
	// Msg is what to forward when Drop is false: the message itself, or
	// (STOMP, MQTT, only while replies to a replay are awaited) the
	// message without the replies it carried, in a buffer owned by the
	// State and valid until its next call.
	Msg   []byte
	Event Event
}

// item is one kept state message.
type item struct {
	op     Opcode
	p      []byte
	lo, hi uint64 // sequence numbers of the client messages it came from
	// pure: messages lo..hi held nothing but this item's bytes (and STOMP
	// heart-beats), so they need not be sent again once it is replayed.
	pure bool
	id   []byte // graphql, json: raw JSON id value; stomp: raw id header
	dest []byte // stomp: raw destination header
	typ  []byte // json: raw type value

	// Replies: a STOMP receipt the frame asked for, or an MQTT SUBSCRIBE's
	// packet id. replied: the client has had the reply.
	receipt []byte
	pid     uint16
	hasPid  bool
	replied bool
	gone    bool // removed from the state

	mq *mqttSub
}

func (it *item) wantsReply() bool { return it.receipt != nil || it.hasPid }

// expect is a reply to a replayed message that the upstream still owes.
type expect struct {
	it   *item
	drop bool // the client had its reply already: keep this one from it
}

// window is the state of the upstream's replies after a Replay.
type window struct {
	await      bool // the opening was replayed, its answer not yet seen
	dropAnswer bool // the client had an answer already
	expects    []expect
	types      []string // json: reply types not yet seen
}

func (w *window) open() bool { return w.await || len(w.expects) > 0 || len(w.types) > 0 }

// State recognises one session's state messages. See the package doc for
// how a session drives it and for its concurrency rule.
type State struct {
	proto Protocol
	max   int
	js    jsonRules

	open  *item   // the opening (connection_init, CONNECT)
	subs  []*item // everything else kept, in original order
	bytes int     // kept bytes

	done     bool // the client ended its session (DISCONNECT, connection_terminate)
	broken   bool // MQTT: the byte stream was not understood; recognition stopped
	answered bool // the client has had an answer to the current opening

	unreplied int // kept items whose reply the client has not had
	win       window
	touched   []*item // items kept by the current FromClient call
	out       []byte  // scratch for rewritten upstream messages
	mq        mqttState
	stc       stompCut
}

// New returns the State for a session of protocol p, or nil for a
// protocol that keeps nothing (Auto, None, Opaque): callers check for nil,
// so such sessions pay nothing. c must have passed Validate.
func New(p Protocol, c *Config) *State {
	if !p.Recognised() {
		return nil
	}
	s := &State{proto: p, max: c.MaxBytes}
	if p == JSON {
		s.js = jsonRules{keep: c.JSONKeep, end: c.JSONEnd, replies: c.JSONReplies, id: c.JSONID}
	}
	return s
}

// Protocol returns the State's protocol.
func (s *State) Protocol() Protocol { return s.proto }

// Broken reports whether recognition stopped for this session (MQTT: a
// malformed or non-binary message, or, seen by Replay, an upstream
// connection lost inside a packet the client had the first bytes of):
// Replay returns nothing from then on,
// and the kept state is gone. Such a session cannot be rebuilt on a new
// connection; handling its upstream loss as Opaque (client Close 1012) is
// the safe choice.
func (s *State) Broken() bool { return s.broken }

// UpstreamCut reports whether the current upstream connection's stream
// stopped inside a packet whose first bytes reached the client (MQTT
// only: a broker may cut a packet across messages). Lost there, the
// connection leaves the client's parser waiting for the rest, which no
// new connection sends: Replay then breaks the State, and the session
// handles the loss as Opaque at once.
func (s *State) UpstreamCut() bool {
	return s.proto == MQTT && !s.done && !s.broken && s.mq.up.cut()
}

// AtBoundary reports whether, after the client messages seen so far, the
// client's byte stream is between two packets. MQTT and STOMP streams can
// end a message inside a packet (mqtt.js cuts a packet into several
// messages; @stomp/stompjs with splitLargeFrames cuts a long frame into
// chunks); for the other protocols it is always true, and for a STOMP
// stream whose frames could not be followed across messages too. A
// message held for re-sending on a new connection must start at a
// boundary, or the new upstream reads the middle of a packet: a session
// retaining such messages acknowledges them only up to a message after
// which this was true.
func (s *State) AtBoundary() bool {
	switch {
	case s.broken || s.done:
		return true
	case s.proto == MQTT:
		return s.mq.cl.st == psHeader
	case s.proto == STOMP:
		return !s.stc.in
	}
	return true
}

// Bytes returns the kept bytes (counted against Config.MaxBytes).
func (s *State) Bytes() int { return s.bytes }

// FromClient observes one client→upstream data message: p is only read
// during the call, seq is the session's sequence number of the message.
// Call it for every client data message forwarded upstream (heartbeats
// the session consumes excluded), in order, whether sent or buffered. It
// returns ErrStateFull when the kept state would pass Config.MaxBytes.
func (s *State) FromClient(op Opcode, p []byte, seq uint64) error {
	if s.done || s.broken {
		return nil
	}
	s.touched = s.touched[:0]
	switch s.proto {
	case GraphQLTransportWS, GraphQLWS:
		return s.graphqlClient(op, p, seq)
	case STOMP:
		return s.stompClient(op, p, seq)
	case MQTT:
		return s.mqttClient(op, p, seq)
	case JSON:
		return s.jsonClient(op, p, seq)
	}
	return nil
}

// FromUpstream observes one upstream→client data message of the current
// upstream connection (every one the session would forward, in order)
// and says what to do with it. For a message that is not a reply to a
// replay it returns Verdict{Msg: p}.
func (s *State) FromUpstream(op Opcode, p []byte) Verdict {
	if s.done || s.broken {
		return Verdict{Msg: p}
	}
	switch s.proto {
	case GraphQLTransportWS, GraphQLWS:
		return s.graphqlUpstream(p)
	case STOMP:
		return s.stompUpstream(p)
	case MQTT:
		return s.mqttUpstream(op, p)
	case JSON:
		return s.jsonUpstream(p)
	}
	return Verdict{Msg: p}
}

// Replay returns what to send first on a new upstream connection and
// starts watching that connection's replies; call it once the upgrade
// has completed, before FromUpstream sees any message of the new
// connection. Check Broken after it: an MQTT upstream connection that
// ended inside a packet leaves the client's stream cut, and no replay
// continues it. pendingFrom is the sequence number of the first client
// message the session will send again after the plan (the first message
// not provably received by the old upstream, or of the buffer; the next
// sequence number when it holds none).
//
// The plan holds the opening (always, so that it comes first), then the
// kept messages that the old upstream provably received (first sequence
// number below pendingFrom), in their original order. Kept messages at
// or after pendingFrom are not in it: the session sends them again in
// order with the rest, and their replies reach the client. Plan.Skip
// names the held messages the plan already covers.
func (s *State) Replay(pendingFrom uint64) Plan {
	if s.UpstreamCut() {
		// The lost connection ended inside a packet whose first bytes
		// reached the client: the client's parser waits for the rest,
		// which no new connection sends.
		s.mqttBreak()
	}
	s.win.await, s.win.dropAnswer = false, false
	clear(s.win.expects)
	s.win.expects = s.win.expects[:0]
	s.win.types = s.win.types[:0]
	s.mq.up = mqttParser{}
	s.mq.nheld = 0
	var pl Plan
	if s.done || s.broken {
		return pl
	}
	add := func(it *item, to *[]Msg) {
		*to = append(*to, Msg{Op: it.op, P: it.p, Seq: it.lo})
		if it.pure && it.hi >= pendingFrom {
			pl.skip = append(pl.skip, seqRange{max(it.lo, pendingFrom), it.hi})
		}
		if it.wantsReply() {
			s.win.expects = append(s.win.expects, expect{it: it, drop: it.replied})
		}
	}
	if s.open != nil {
		add(s.open, &pl.Opening)
		s.win.await, s.win.dropAnswer = true, s.answered
	}
	for _, it := range s.subs {
		if it.lo < pendingFrom {
			add(it, &pl.Rest)
		}
	}
	if len(pl.Rest) > 0 {
		s.win.types = append(s.win.types, s.js.replies...)
	}
	return pl
}

// onAnswer handles the upstream's answer (ok) or refusal of the opening;
// it returns whether to keep the message from the client.
func (s *State) onAnswer(ok bool) (drop bool, ev Event) {
	if !s.win.await {
		if ok {
			s.answered = true
		}
		return false, EventNone
	}
	s.win.await = false
	if !ok {
		return false, EventRejected
	}
	if s.win.dropAnswer {
		return true, EventAccepted
	}
	s.answered = true
	return false, EventAccepted
}

// onReply handles a STOMP RECEIPT (receipt != nil) or an MQTT SUBACK
// (packet id pid); it returns whether to keep it from the client.
func (s *State) onReply(receipt []byte, pid uint16) bool {
	match := func(it *item) bool {
		if receipt != nil {
			return it.receipt != nil && stompValueEqual(it.receipt, receipt)
		}
		return it.hasPid && it.pid == pid
	}
	for i, e := range s.win.expects {
		if match(e.it) {
			s.win.expects = slices.Delete(s.win.expects, i, i+1)
			s.replied(e.it)
			return e.drop
		}
	}
	for _, it := range s.subs {
		if !it.replied && match(it) {
			s.replied(it)
			break
		}
	}
	return false
}

func (s *State) replied(it *item) {
	if !it.replied && !it.gone && it.wantsReply() {
		s.unreplied--
	}
	it.replied = true
}

// setOpening keeps it as the opening, replacing an earlier one.
func (s *State) setOpening(it *item) error {
	old := 0
	if s.open != nil {
		old = len(s.open.p)
	}
	if s.bytes-old+len(it.p) > s.max {
		return ErrStateFull
	}
	if s.open != nil {
		s.open.gone = true
	}
	s.bytes += len(it.p) - old
	s.open = it
	s.answered = false
	s.touched = append(s.touched, it)
	return nil
}

// keep appends it to the kept messages, after removing the kept message
// at index replace (-1: none).
func (s *State) keep(it *item, replace int) error {
	old := 0
	if replace >= 0 {
		old = len(s.subs[replace].p)
	}
	if s.bytes-old+len(it.p) > s.max {
		return ErrStateFull
	}
	if replace >= 0 {
		s.remove(replace)
	}
	s.bytes += len(it.p)
	s.subs = append(s.subs, it)
	if it.wantsReply() {
		s.unreplied++
	}
	s.touched = append(s.touched, it)
	return nil
}

// remove drops the kept message at index i.
func (s *State) remove(i int) {
	it := s.subs[i]
	if it.wantsReply() && !it.replied {
		s.unreplied--
	}
	it.gone = true
	s.bytes -= len(it.p)
	s.subs = slices.Delete(s.subs, i, i+1)
}

// resize accounts for a kept message rebuilt with q (smaller).
func (s *State) resize(it *item, q []byte) {
	s.bytes += len(q) - len(it.p)
	it.p = q
}

// finish ends recognition: the client ended its session.
func (s *State) finish() {
	s.done = true
	s.open, s.subs, s.bytes, s.unreplied = nil, nil, 0, 0
	s.win = window{}
	s.touched, s.out = nil, nil
}

// impure marks the items kept by this call as sharing their message with
// other content.
func (s *State) impure() {
	for _, it := range s.touched {
		it.pure = false
	}
}

// sub returns the part of cp (a copy of p) at the position of x, a
// subslice of p.
func sub(cp, p, x []byte) []byte {
	if x == nil {
		return nil
	}
	off := cap(p) - cap(x)
	return cp[off : off+len(x) : off+len(x)]
}

// emitter builds an upstream message with some byte ranges cut out:
// while nothing is cut it is a prefix of p (no copy).
type emitter struct {
	p, out []byte
	n      int // p[:n] is the output so far, until dev
	dev    bool
}

func (e *emitter) keep(i, j int) {
	if i == j {
		return
	}
	if !e.dev {
		if i == e.n {
			e.n = j
			return
		}
		e.deviate()
	}
	e.out = append(e.out, e.p[i:j]...)
}

func (e *emitter) keepBytes(b []byte) {
	if len(b) == 0 {
		return
	}
	if !e.dev {
		e.deviate()
	}
	e.out = append(e.out, b...)
}

func (e *emitter) deviate() {
	e.out = append(e.out[:0], e.p[:e.n]...)
	e.dev = true
}

// verdict returns the Verdict for the message built, with ev, and keeps
// the scratch buffer for the next message while replies are awaited.
// With eol, a message left with nothing but STOMP heart-beats is dropped
// too.
func (s *State) verdict(e *emitter, ev Event, eol bool) Verdict {
	msg := e.p[:e.n]
	if e.dev {
		msg = e.out
		s.out = e.out[:0]
	}
	if !s.win.open() {
		s.out = nil
	}
	cut := e.dev || e.n < len(e.p)
	if cut && (len(msg) == 0 || eol && len(bytes.Trim(msg, "\r\n")) == 0) {
		return Verdict{Drop: true, Event: ev}
	}
	return Verdict{Msg: msg, Event: ev}
}
