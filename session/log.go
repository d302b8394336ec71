package session

import (
	"sync/atomic"

	"github.com/gobwas/ws"
)

// deliveryLog is the ordered log of the messages a session holds for one
// peer until that peer has provably received them (README "Upstream loss,
// reconnect and the delivery guarantee"). It numbers the messages (every
// message gets a sequence number, logged or not), keeps copies of the
// logged ones in pooled buffers, drops the acknowledged prefix, bounds
// what it holds by message count and bytes, and counts its bytes in the
// process-wide budget shared by every log of the process
// (TETHER_BUFFER_TOTAL_MAX_BYTES). A re-send cursor tells the messages
// written to the current connection from those still to write on it.
//
// Today a session has one: the client messages on their way to the
// upstream (retained until a heartbeat round trip acknowledges them,
// buffered while reconnecting). It knows nothing of connections, locks or
// metrics: its owner (the session, under Session.mu) decides when to
// push, acknowledge and re-send, and reports what changed.
type deliveryLog struct {
	msgs  []logMsg // in sequence order
	next  int      // re-send cursor: msgs[:next] were written to the current connection
	bytes int64    // payload bytes in msgs
	seq   uint64   // the next sequence number to hand out

	// Backpressure: asked is set once the owner has asked the peer for
	// an acknowledgement and cleared by the next one; stallWarned once
	// the owner has warned that acknowledgements do not come, cutWarned
	// once it has warned that messages were let go inside a packet.
	asked       bool
	stallWarned bool
	cutWarned   bool
	// midPacket: the held messages begin inside a packet of the peer's
	// protocol, since an acknowledgement let go of the packet's opening
	// messages (see ack); a re-send cannot start there.
	midPacket bool

	maxMsgs  int
	maxBytes int64
	total    *atomic.Int64 // bytes held by every log of the process
	totalMax int64
}

// logMsg is one message held by a log. The log owns p (a pooled buffer,
// box its pool box; see getBuf) until the message is dropped.
type logMsg struct {
	seq  uint64
	op   ws.OpCode
	sent bool    // written to some connection at least once
	cut  bool    // it ends inside a packet of the peer's protocol (see ack)
	mask maskKey // p is still masked with the client's key (leg_write.go)
	p    []byte
	box  *[]byte
}

// newDeliveryLog makes a log bounded by maxMsgs messages and maxBytes
// bytes, counting its bytes in total, which all logs together keep under
// totalMax.
func newDeliveryLog(maxMsgs int, maxBytes int64, total *atomic.Int64, totalMax int64) deliveryLog {
	return deliveryLog{maxMsgs: maxMsgs, maxBytes: maxBytes, total: total, totalMax: totalMax}
}

// newSeq hands out the next sequence number.
func (l *deliveryLog) newSeq() uint64 {
	s := l.seq
	l.seq++
	return s
}

// len is the number of messages held.
func (l *deliveryLog) len() int { return len(l.msgs) }

// fits reports whether one more message of n bytes stays within every
// bound: the log's messages and bytes, and the process-wide budget.
func (l *deliveryLog) fits(n int) bool {
	return len(l.msgs) < l.maxMsgs && l.bytes+int64(n) <= l.maxBytes && !l.overBudget(n)
}

// full reports whether a message of n bytes must wait (backpressure while
// connected): it does not fit and the log is not empty (an empty log
// always takes one message, however large, so that it cannot wait for
// ever).
func (l *deliveryLog) full(n int) bool { return len(l.msgs) > 0 && !l.fits(n) }

// overBudget reports whether n more bytes would pass the process-wide
// budget, which only other logs can free.
func (l *deliveryLog) overBudget(n int) bool { return l.total.Load()+int64(n) > l.totalMax }

// ackBatch is how many messages written and not acknowledged make the
// owner ask for an acknowledgement at once (see ackDue).
const ackBatch = 64

// ackDue reports whether it is time to ask for an acknowledgement early:
// the log holds more than half its messages or bytes, or ackBatch
// messages written to the current connection. The second keeps what a
// busy session holds (its memory, and what the CPU caches must hold of it)
// to about ackBatch messages, whatever the rate.
func (l *deliveryLog) ackDue() bool {
	return l.next >= ackBatch || l.halfFull()
}

// askAck reports whether the owner should ask for an acknowledgement now:
// true once until the next acknowledgement (or restart).
func (l *deliveryLog) askAck() bool {
	if l.asked {
		return false
	}
	l.asked = true
	return true
}

// push appends a copy of p. A message written to the current connection
// already (sent) moves the re-send cursor past everything held: the owner
// pushes written messages only while nothing waits to be re-sent.
func (l *deliveryLog) push(seq uint64, op ws.OpCode, p []byte, sent bool, mk maskKey) {
	// The process-wide count first: an atomic add waits for every store
	// before it to complete, and after the copy those are the copy's
	// (cache misses into a pooled buffer): that wait was a tenth of the
	// relay's CPU (README "Performance").
	l.total.Add(int64(len(p)))
	b, box := getBuf(p)
	l.add(seq, op, b, box, sent, mk)
}

// pushOwned is push for a message whose pooled buffer the log takes over
// (frameReader.give): no copy.
func (l *deliveryLog) pushOwned(seq uint64, op ws.OpCode, p []byte, box *[]byte, sent bool, mk maskKey) {
	l.total.Add(int64(len(p)))
	l.add(seq, op, p, box, sent, mk)
}

func (l *deliveryLog) add(seq uint64, op ws.OpCode, b []byte, box *[]byte, sent bool, mk maskKey) {
	l.bytes += int64(len(b))
	l.msgs = append(l.msgs, logMsg{seq: seq, op: op, p: b, box: box, sent: sent, mask: mk})
	if sent {
		l.next = len(l.msgs)
	}
}

// ack drops the messages written to the current connection with a
// sequence number below ackSeq (the peer has them) and returns how many
// it dropped. It also clears asked: the acknowledgement asked for came.
//
// It stops after the last of them that ends at a packet boundary: the
// rest of a packet cut across messages (MQTT, STOMP) may not have been written
// before the acknowledgement was asked for, and a re-send on a new
// connection must start at a packet, never inside one. The messages up
// to the packet's end go with a later acknowledgement.
//
// Unless none of them ends at a boundary and the log is more than half
// full: a client whose every message carries the start of the next
// packet would otherwise fill the log and have its reads paused for
// good. Then all the covered messages go (the peer has them) and the log
// begins inside a packet (midPacket, until an acknowledgement lets go up
// to a packet's end again); cutLoose reports it.
func (l *deliveryLog) ack(ackSeq uint64) (n int, cutLoose bool) {
	l.asked = false
	for n < l.next && l.msgs[n].seq < ackSeq {
		n++
	}
	covered := n
	for n > 0 && l.msgs[n-1].cut {
		n--
	}
	switch {
	case n == 0 && covered > 0 && l.halfFull():
		n, cutLoose = covered, true
		l.midPacket = true
	case n > 0:
		l.midPacket = false
	}
	l.drop(n)
	return n, cutLoose
}

// halfFull reports whether the log holds more than half the messages or
// bytes it may.
func (l *deliveryLog) halfFull() bool {
	return 2*len(l.msgs) > l.maxMsgs || 2*l.bytes > l.maxBytes
}

// markCut marks the last message as ending inside a packet (see ack).
func (l *deliveryLog) markCut() { l.msgs[len(l.msgs)-1].cut = true }

// dropWritten drops the first message if it is seq, once written: for a
// peer that acknowledges nothing, writing is delivering. It reports
// whether it dropped it.
func (l *deliveryLog) dropWritten(seq uint64) bool {
	if len(l.msgs) == 0 || l.msgs[0].seq != seq {
		return false
	}
	l.drop(1)
	return true
}

// drop removes the first n messages, which must be written, and gives
// their buffers back. It keeps the backing array (moving the rest down),
// so that a steady stream of acknowledged messages allocates nothing.
func (l *deliveryLog) drop(n int) {
	if n == 0 {
		return
	}
	var bytes int64
	for i := range l.msgs[:n] {
		bytes += int64(len(l.msgs[i].p))
		putBuf(l.msgs[i].box, l.msgs[i].p)
	}
	k := copy(l.msgs, l.msgs[n:])
	clear(l.msgs[k:])
	l.msgs = l.msgs[:k]
	l.next -= n
	l.bytes -= bytes
	l.total.Add(-bytes)
}

// restart is a new connection: nothing is written to it yet, and no
// acknowledgement is asked for.
func (l *deliveryLog) restart() {
	l.next = 0
	l.asked = false
}

// rewind moves the re-send cursor back to the first message: the
// connection they were written to is gone.
func (l *deliveryLog) rewind() { l.next = 0 }

// take returns the next message to write to the current connection, a
// copy (the log may move while the caller writes it) with sent as it was,
// and moves the cursor past it. ok is false when every message is
// written.
func (l *deliveryLog) take() (m logMsg, ok bool) {
	if l.next == len(l.msgs) {
		return logMsg{}, false
	}
	m = l.msgs[l.next]
	l.msgs[l.next].sent = true
	l.next++
	return m, true
}

// release drops every message and returns how many there were. Their
// buffers are left to the garbage collector: a re-send may still be
// writing one.
func (l *deliveryLog) release() int {
	n := len(l.msgs)
	l.total.Add(-l.bytes)
	l.msgs, l.next, l.bytes = nil, 0, 0
	return n
}

// replayOpening is TETHER_REPLAY_FIRST and TETHER_REPLAY_DROP_REPLIES
// (README "Upstream loss, reconnect and the delivery guarantee"): copies of
// the session's first messages, kept for its life and written first on
// every new upstream connection, and the count of the new connection's
// first replies to drop.
type replayOpening struct {
	first []logMsg // under Session.mu; never dropped, so never pooled
	keep  uint32   // TETHER_REPLAY_FIRST
	// dropN is TETHER_REPLAY_DROP_REPLIES; drop counts down what is left
	// of it for the current connection, lock-free: the upstream read loop
	// checks it per message.
	dropN int32
	drop  atomic.Int64
}

// record keeps a copy of message seq if it is one of the first.
func (r *replayOpening) record(seq uint64, op ws.OpCode, p []byte, mk maskKey) {
	if seq < uint64(r.keep) {
		r.first = append(r.first, logMsg{seq: seq, op: op, p: clone(p), mask: mk})
	}
}

// start is a new connection: it returns the opening to write on it (a
// snapshot; covered is the sequence number below which the snapshot holds
// every message, so that the log's copies of those are not written
// again) and arms the reply drop.
func (r *replayOpening) start() (first []logMsg, covered uint64) {
	r.drop.Store(int64(r.dropN))
	return r.first, uint64(len(r.first))
}

// dropReply reports whether the current connection's next reply is to be
// dropped.
func (r *replayOpening) dropReply() bool {
	return r.drop.Load() > 0 && r.drop.Add(-1) >= 0
}

func clone(p []byte) []byte {
	c := make([]byte, len(p))
	copy(c, p)
	return c
}
