package session

import (
	"bytes"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/gobwas/ws"
)

// logSeqs lists the sequence numbers a log holds.
func logSeqs(l *deliveryLog) []uint64 {
	var s []uint64
	for _, m := range l.msgs {
		s = append(s, m.seq)
	}
	return s
}

// pushN pushes messages of the given sizes with fresh sequence numbers.
func pushN(l *deliveryLog, sent bool, sizes ...int) {
	for _, n := range sizes {
		l.push(l.newSeq(), ws.OpBinary, bytes.Repeat([]byte{'x'}, n), sent, maskKey{})
	}
}

// The bounds: a log refuses (fits false) a message past its message
// count, its bytes or the process-wide budget; full (backpressure while
// connected) is the same except that an empty log takes any message.
func TestDeliveryLogBounds(t *testing.T) {
	cases := []struct {
		name       string
		other      int64 // bytes held by other logs of the process
		held       []int // sizes already held
		n          int   // the next message's size
		fits, full bool
	}{
		{"empty takes a small one", 0, nil, 10, true, false},
		{"room left", 0, []int{10, 10}, 10, true, false},
		{"at the message count", 0, []int{1, 1, 1}, 1, false, true},
		{"bytes exactly at the limit", 0, []int{60}, 40, true, false},
		{"bytes past the limit", 0, []int{60}, 41, false, true},
		{"empty, larger than the log's bytes", 0, nil, 101, false, false},
		{"the process budget exactly", 140, []int{10}, 50, true, false},
		{"past the process budget", 150, []int{10}, 41, false, true},
		{"empty, past the process budget", 200, nil, 1, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var total atomic.Int64
			total.Store(c.other)
			l := newDeliveryLog(3, 100, &total, 200)
			pushN(&l, true, c.held...)
			if got := l.fits(c.n); got != c.fits {
				t.Errorf("fits(%d) = %v, want %v", c.n, got, c.fits)
			}
			if got := l.full(c.n); got != c.full {
				t.Errorf("full(%d) = %v, want %v", c.n, got, c.full)
			}
		})
	}
}

// Every byte pushed counts in the log and in the process-wide total, and
// leaves both when acknowledged, dropped once written, or released.
func TestDeliveryLogBudget(t *testing.T) {
	var total atomic.Int64
	a := newDeliveryLog(10, 1000, &total, 1000)
	b := newDeliveryLog(10, 1000, &total, 1000)
	pushN(&a, true, 100, 200)
	pushN(&b, false, 50)
	if a.bytes != 300 || b.bytes != 50 || total.Load() != 350 {
		t.Fatalf("bytes a=%d b=%d total=%d, want 300 50 350", a.bytes, b.bytes, total.Load())
	}
	if !b.overBudget(651) || b.overBudget(650) {
		t.Fatal("the budget does not count the other log's bytes")
	}
	if n, _ := a.ack(1); n != 1 || a.bytes != 200 || total.Load() != 250 {
		t.Fatalf("ack: dropped %d, bytes %d, total %d, want 1 200 250", n, a.bytes, total.Load())
	}
	if !b.dropWritten(0) || b.bytes != 0 || total.Load() != 200 {
		t.Fatalf("dropWritten: bytes %d, total %d, want 0 200", b.bytes, total.Load())
	}
	if n := a.release(); n != 1 || a.bytes != 0 || a.len() != 0 || total.Load() != 0 {
		t.Fatalf("release: %d messages, bytes %d, total %d, want 1 0 0", n, a.bytes, total.Load())
	}
}

// ack drops the written prefix below the acknowledged sequence number,
// never a message not yet written to the current connection.
func TestDeliveryLogAck(t *testing.T) {
	cases := []struct {
		name    string
		sent    int    // messages written to the current connection (of 5)
		ackSeq  uint64 // acknowledged: seq < ackSeq
		dropped int
		left    []uint64
	}{
		{"nothing acknowledged", 5, 0, 0, []uint64{0, 1, 2, 3, 4}},
		{"a prefix", 5, 3, 3, []uint64{3, 4}},
		{"everything", 5, 5, 5, nil},
		{"past the end", 5, 99, 5, nil},
		{"not past the cursor", 2, 4, 2, []uint64{2, 3, 4}},
		{"none written yet", 0, 4, 0, []uint64{0, 1, 2, 3, 4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var total atomic.Int64
			l := newDeliveryLog(10, 1000, &total, 1000)
			pushN(&l, false, 1, 1, 1, 1, 1)
			for range c.sent {
				l.take()
			}
			if n, _ := l.ack(c.ackSeq); n != c.dropped {
				t.Fatalf("dropped %d, want %d", n, c.dropped)
			}
			if got := logSeqs(&l); !slices.Equal(got, c.left) {
				t.Fatalf("left %v, want %v", got, c.left)
			}
			if l.next != c.sent-c.dropped {
				t.Fatalf("cursor at %d, want %d", l.next, c.sent-c.dropped)
			}
			if total.Load() != int64(len(c.left)) {
				t.Fatalf("total %d, want %d", total.Load(), len(c.left))
			}
		})
	}
}

// An acknowledgement covering only messages that end inside a packet
// drops none of them while the log is at most half full, and all of them
// once it is more (the log then begins inside a packet, midPacket, until
// an acknowledgement drops up to a packet's end again).
func TestDeliveryLogAckCut(t *testing.T) {
	var total atomic.Int64
	l := newDeliveryLog(6, 1000, &total, 1000)
	pushCut := func(cut ...bool) {
		for _, c := range cut {
			pushN(&l, true, 1)
			if c {
				l.markCut()
			}
		}
	}
	pushCut(true, true, true)
	if n, loose := l.ack(l.seq); n != 0 || loose || l.midPacket {
		t.Fatalf("half full: dropped %d (loose %v, midPacket %v), want none held back", n, loose, l.midPacket)
	}
	pushCut(true)
	if n, loose := l.ack(l.seq); n != 4 || !loose || !l.midPacket {
		t.Fatalf("over half full: dropped %d (loose %v, midPacket %v), want all 4 let go", n, loose, l.midPacket)
	}
	pushCut(false, true)
	if n, loose := l.ack(l.seq); n != 1 || loose || l.midPacket {
		t.Fatalf("a packet's end covered: dropped %d (loose %v, midPacket %v), want 1 and the log at a packet again", n, loose, l.midPacket)
	}
	if got := logSeqs(&l); !slices.Equal(got, []uint64{5}) {
		t.Fatalf("left %v, want [5]", got)
	}
}

// The re-send cursor: take hands out, in order, each message not yet
// written to the current connection, with whether it was ever written
// before (then counted as re-sent); a restart (new connection) or rewind
// hands them all out again.
func TestDeliveryLogResendCursor(t *testing.T) {
	var total atomic.Int64
	l := newDeliveryLog(10, 1000, &total, 1000)
	pushN(&l, true, 1, 1) // retained: written once
	pushN(&l, false, 1)   // buffered while reconnecting
	if m, ok := l.take(); !ok || m.seq != 2 || m.sent {
		t.Fatalf("take: seq %d %v, want 2, the one not written yet", m.seq, ok)
	}
	if _, ok := l.take(); ok {
		t.Fatal("take handed out a message although the cursor is at the end")
	}
	l.restart()
	type got struct {
		seq  uint64
		sent bool
	}
	var seen []got
	for {
		m, ok := l.take()
		if !ok {
			break
		}
		seen = append(seen, got{m.seq, m.sent})
	}
	want := []got{{0, true}, {1, true}, {2, true}}
	if !slices.Equal(seen, want) {
		t.Fatalf("re-sent %v, want %v", seen, want)
	}
	l.rewind()
	if m, ok := l.take(); !ok || m.seq != 0 || !m.sent {
		t.Fatalf("after rewind: %v %v, want seq 0, written before", m.seq, ok)
	}
	// A pushed sent message moves the cursor past everything held.
	pushN(&l, true, 1)
	if l.next != l.len() {
		t.Fatalf("cursor at %d after a sent push, want %d", l.next, l.len())
	}
}

// askAck asks once per acknowledgement (or new connection); ackDue says
// when to ask early: half full, or ackBatch messages written.
func TestDeliveryLogAskAck(t *testing.T) {
	var total atomic.Int64
	l := newDeliveryLog(4, 100, &total, 1000)
	pushN(&l, true, 1, 1)
	if l.ackDue() {
		t.Fatal("2 of 4 messages is half full")
	}
	pushN(&l, true, 1)
	if !l.ackDue() {
		t.Fatal("3 of 4 messages is not half full")
	}
	if !l.askAck() || l.askAck() {
		t.Fatal("askAck is not true exactly once")
	}
	l.ack(0) // an acknowledgement that frees nothing still answers
	if !l.askAck() {
		t.Fatal("askAck false after an acknowledgement")
	}
	l.restart()
	if !l.askAck() {
		t.Fatal("askAck false on a new connection")
	}
	b := newDeliveryLog(100, 10, &total, 1000)
	pushN(&b, true, 6)
	if !b.ackDue() {
		t.Fatal("6 of 10 bytes is not half full")
	}
	c := newDeliveryLog(1024, 1<<20, &total, 1<<20)
	for range ackBatch - 1 {
		pushN(&c, true, 1)
	}
	if c.ackDue() {
		t.Fatalf("%d messages written of 1024 is due", ackBatch-1)
	}
	d := c
	pushN(&d, false, 1) // held, not written (ack.go)
	if d.ackDue() {
		t.Fatal("a message not written counts toward ackBatch")
	}
	pushN(&c, true, 1)
	if !c.ackDue() {
		t.Fatalf("%d messages written is not due", ackBatch)
	}
}

// Dropping the acknowledged prefix of a steady stream reuses the log's
// backing array.
func TestDeliveryLogSteadyStateAllocs(t *testing.T) {
	var total atomic.Int64
	l := newDeliveryLog(64, 1<<20, &total, 1<<20)
	p := make([]byte, 100)
	pushN(&l, true, 1, 1, 1, 1) // grow the array once
	l.ack(l.seq)
	allocs := testing.AllocsPerRun(100, func() {
		l.push(l.newSeq(), ws.OpBinary, p, true, maskKey{})
		l.ack(l.seq)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message, want 0", allocs)
	}
}

// The replay opening keeps copies of the first messages only, and each
// new connection drops the configured number of replies.
func TestReplayOpening(t *testing.T) {
	var r replayOpening
	r.keep, r.dropN = 2, 1
	for seq, m := range []string{"a", "b", "c"} {
		p := []byte(m)
		r.record(uint64(seq), ws.OpText, p, maskKey{})
		p[0] = '!' // the caller's buffer is reused
	}
	first, covered := r.start()
	if covered != 2 || len(first) != 2 || string(first[0].p) != "a" || string(first[1].p) != "b" {
		t.Fatalf("opening %v covering %d, want a, b covering 2", first, covered)
	}
	if !r.dropReply() || r.dropReply() {
		t.Fatal("not exactly one reply dropped")
	}
	r.start()
	if !r.dropReply() {
		t.Fatal("a new connection drops no reply")
	}
}
