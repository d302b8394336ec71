package heartbeat

import (
	"encoding/binary"
	"time"
)

// trackerSize is how many pings a Tracker keeps waiting for a pong: with
// the default timeout of three intervals and both kinds of ping, about six
// can be outstanding before the leg is declared dead.
const trackerSize = 8

// epoch is the origin of sentPing.at: a monotonic clock reading, so that
// round trips are measured on the monotonic clock in 4 bytes instead of a
// 24-byte time.Time (a Tracker lives in every leg of every session).
var epoch = time.Now()

// sentPing is 16 bytes: the ring of 8 is 128.
type sentPing struct {
	// at is when the ping was sent, in microseconds since epoch modulo
	// 2^32: a round trip is the difference as an int32, exact up to 35
	// minutes, far beyond any heartbeat timeout.
	at uint32
	// id is the low 32 bits of an RFC ping's payload (a counter that
	// skips values whose low 32 bits are 0); 0 marks a JSON ping. The
	// ring holds only the last few ids, so the low bits identify one.
	id     uint32
	ackSeq uint64
}

// micros is now on sentPing.at's clock.
func micros(now time.Time) uint32 {
	return uint32(now.Sub(epoch) / time.Microsecond)
}

// Tracker pairs pongs with tether's own pings on one leg, for round-trip times
// and delivery acknowledgement (README "Upstream loss, reconnect and the
// delivery guarantee" "provably received").
//
// Each ping records ackSeq, the number of data messages written to the
// connection before it, and callers pass non-decreasing values. When its
// pong arrives, every message with a sequence number below ackSeq is
// acknowledged. A Tracker keeps the last 8 outstanding pings in a fixed
// ring and never allocates; when the ring is full, the oldest outstanding
// ping is dropped to make room, which loses nothing, because the pong of
// any newer ping acknowledges at least as much.
//
// The zero value is ready to use. A Tracker is not safe for concurrent use:
// the caller holds the leg's lock.
type Tracker struct {
	ring   [trackerSize]sentPing
	lastID uint64 // last RFC ping payload handed out
	head   uint8  // index of the oldest outstanding ping
	n      uint8  // outstanding pings
	// lastRTT is the latest round trip in microseconds (0: none yet). It
	// fills the struct's padding, so a Tracker (and the leg holding it)
	// does not grow.
	lastRTT uint32
}

func (t *Tracker) push(p sentPing) {
	if t.n == trackerSize {
		t.head = (t.head + 1) % trackerSize
		t.n--
	}
	t.ring[(t.head+t.n)%trackerSize] = p
	t.n++
}

// SentWS records an RFC 6455 ping sent at now and returns the payload to
// send with it: a big-endian counter, unique for the Tracker's life (Reset
// does not restart it, so a late pong from an old connection never matches).
func (t *Tracker) SentWS(now time.Time, ackSeq uint64) [8]byte {
	t.lastID++
	if uint32(t.lastID) == 0 {
		t.lastID++ // 0 marks a JSON ping
	}
	t.push(sentPing{at: micros(now), ackSeq: ackSeq, id: uint32(t.lastID)})
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], t.lastID)
	return b
}

// SentJSON records a JSON ping sent at now.
func (t *Tracker) SentJSON(now time.Time, ackSeq uint64) {
	t.push(sentPing{at: micros(now), ackSeq: ackSeq})
}

// PongWS matches the payload of an RFC 6455 pong received at now to an
// outstanding RFC ping. For an unknown payload (an unsolicited pong, a
// wrong length, an already answered or dropped ping) ok is false and
// nothing changes. On a match it returns the round-trip time (never
// negative) and that ping's ackSeq, and forgets that ping and every older
// outstanding ping of either kind.
func (t *Tracker) PongWS(now time.Time, payload []byte) (rtt time.Duration, ackSeq uint64, ok bool) {
	if len(payload) != 8 {
		return 0, 0, false
	}
	id := binary.BigEndian.Uint64(payload)
	// Only recent ids can be outstanding; within that window the low 32
	// bits tell them apart.
	if id == 0 || id > t.lastID || t.lastID-id > 1<<31 {
		return 0, 0, false
	}
	for k := range t.n {
		if t.ring[(t.head+k)%trackerSize].id == uint32(id) {
			return t.answer(now, k)
		}
	}
	return 0, 0, false
}

// PongJSON matches a JSON pong received at now to the oldest outstanding
// JSON ping (JSON pongs carry no id), with the same contract as PongWS.
func (t *Tracker) PongJSON(now time.Time) (rtt time.Duration, ackSeq uint64, ok bool) {
	for k := range t.n {
		if t.ring[(t.head+k)%trackerSize].id == 0 {
			return t.answer(now, k)
		}
	}
	return 0, 0, false
}

// answer completes the k-th oldest outstanding ping and forgets it and
// every older one.
func (t *Tracker) answer(now time.Time, k uint8) (time.Duration, uint64, bool) {
	p := t.ring[(t.head+k)%trackerSize]
	t.head = (t.head + k + 1) % trackerSize
	t.n -= k + 1
	rtt := max(int32(micros(now)-p.at), 0)
	t.lastRTT = max(uint32(rtt), 1) // 0 means "none yet"
	return time.Duration(rtt) * time.Microsecond, p.ackSeq, true
}

// LastRTT reports the latest round trip a pong completed, to the
// microsecond (a round trip under 1 µs reads as 1 µs), and false before
// the first.
func (t *Tracker) LastRTT() (time.Duration, bool) {
	return time.Duration(t.lastRTT) * time.Microsecond, t.lastRTT != 0
}

// Outstanding reports how many pings await a pong.
func (t *Tracker) Outstanding() int { return int(t.n) }

// Reset forgets every outstanding ping, for a new connection.
func (t *Tracker) Reset() {
	t.head, t.n = 0, 0
}
