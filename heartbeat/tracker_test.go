package heartbeat

import (
	"encoding/binary"
	"testing"
	"time"
	"unsafe"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func TestTracker(t *testing.T) {
	t.Parallel()
	type step struct {
		op      string // "ws", "json": send; "pong-ws", "pong-json": receive; "raw": PongWS with payload
		ms      int    // time of the step
		ackSeq  uint64 // for sends
		ping    int    // for pong-ws: index of the WS ping (in send order) whose payload is echoed
		payload []byte // for raw
		// expectations for pongs
		ok          bool
		rtt         time.Duration
		wantAck     uint64
		outstanding int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"ws round trip", []step{
			{op: "ws", ms: 0, ackSeq: 5, outstanding: 1},
			{op: "pong-ws", ms: 40, ping: 0, ok: true, rtt: 40 * time.Millisecond, wantAck: 5},
		}},
		{"json round trip", []step{
			{op: "json", ms: 100, ackSeq: 9, outstanding: 1},
			{op: "pong-json", ms: 350, ok: true, rtt: 250 * time.Millisecond, wantAck: 9},
		}},
		{"unsolicited pongs", []step{
			{op: "pong-json", ms: 0},
			{op: "raw", ms: 0, payload: []byte("hello")},
			{op: "ws", ms: 0, ackSeq: 1, outstanding: 1},
			{op: "raw", ms: 1, payload: nil, outstanding: 1},
			{op: "raw", ms: 1, payload: []byte{0, 0, 0, 0, 0, 0, 0, 1, 0}, outstanding: 1},
			{op: "raw", ms: 1, payload: []byte{0, 0, 0, 0, 0, 0, 0, 0}, outstanding: 1},
			{op: "raw", ms: 1, payload: []byte{0, 0, 0, 0, 0, 0, 0, 99}, outstanding: 1},
			{op: "pong-json", ms: 1, outstanding: 1}, // only a WS ping is outstanding
			{op: "pong-ws", ms: 2, ping: 0, ok: true, rtt: 2 * time.Millisecond, wantAck: 1},
			{op: "pong-ws", ms: 3, ping: 0}, // already answered
		}},
		{"newer pong forgets older pings", []step{
			{op: "ws", ms: 0, ackSeq: 1},
			{op: "json", ms: 10, ackSeq: 2},
			{op: "ws", ms: 20, ackSeq: 3},
			{op: "json", ms: 30, ackSeq: 4},
			{op: "ws", ms: 40, ackSeq: 5, outstanding: 5},
			{op: "pong-ws", ms: 45, ping: 1, ok: true, rtt: 25 * time.Millisecond, wantAck: 3, outstanding: 2},
			{op: "pong-ws", ms: 46, ping: 0, outstanding: 2}, // forgotten
			{op: "pong-json", ms: 50, ok: true, rtt: 20 * time.Millisecond, wantAck: 4, outstanding: 1},
			{op: "pong-ws", ms: 60, ping: 2, ok: true, rtt: 20 * time.Millisecond, wantAck: 5},
		}},
		{"json pongs are FIFO", []step{
			{op: "json", ms: 0, ackSeq: 1},
			{op: "ws", ms: 5, ackSeq: 1},
			{op: "json", ms: 10, ackSeq: 2},
			{op: "json", ms: 20, ackSeq: 3, outstanding: 4},
			{op: "pong-json", ms: 30, ok: true, rtt: 30 * time.Millisecond, wantAck: 1, outstanding: 3},
			{op: "pong-json", ms: 31, ok: true, rtt: 21 * time.Millisecond, wantAck: 2, outstanding: 1}, // drops the WS ping too
			{op: "pong-ws", ms: 32, ping: 0, outstanding: 1},
			{op: "pong-json", ms: 40, ok: true, rtt: 20 * time.Millisecond, wantAck: 3},
			{op: "pong-json", ms: 41},
		}},
		{"negative rtt clamps to zero", []step{
			{op: "ws", ms: 100, ackSeq: 1},
			{op: "pong-ws", ms: 50, ping: 0, ok: true, rtt: 0, wantAck: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tr Tracker
			var payloads [][8]byte
			for i, s := range tt.steps {
				var (
					rtt time.Duration
					ack uint64
					ok  bool
				)
				switch s.op {
				case "ws":
					payloads = append(payloads, tr.SentWS(at(s.ms), s.ackSeq))
				case "json":
					tr.SentJSON(at(s.ms), s.ackSeq)
				case "pong-ws":
					rtt, ack, ok = tr.PongWS(at(s.ms), payloads[s.ping][:])
				case "pong-json":
					rtt, ack, ok = tr.PongJSON(at(s.ms))
				case "raw":
					rtt, ack, ok = tr.PongWS(at(s.ms), s.payload)
				}
				if ok != s.ok || rtt != s.rtt || ack != s.wantAck {
					t.Fatalf("step %d (%s): got rtt=%v ack=%d ok=%v, want rtt=%v ack=%d ok=%v",
						i, s.op, rtt, ack, ok, s.rtt, s.wantAck, s.ok)
				}
				if s.outstanding != 0 || s.op == "pong-ws" || s.op == "pong-json" {
					if got := tr.Outstanding(); got != s.outstanding {
						t.Fatalf("step %d (%s): Outstanding() = %d, want %d", i, s.op, got, s.outstanding)
					}
				}
			}
		})
	}
}

func TestTrackerPayloadsUnique(t *testing.T) {
	t.Parallel()
	var tr Tracker
	seen := map[[8]byte]bool{}
	for i := range 100 {
		p := tr.SentWS(at(i), uint64(i))
		if seen[p] {
			t.Fatalf("payload %x repeated", p)
		}
		seen[p] = true
		if i%10 == 9 {
			tr.Reset()
		}
	}
	first := [8]byte{0, 0, 0, 0, 0, 0, 0, 1}
	if !seen[first] {
		t.Errorf("first payload is not the big-endian counter 1")
	}
}

func TestTrackerOverflow(t *testing.T) {
	t.Parallel()
	var tr Tracker
	var payloads [][8]byte
	const n = trackerSize + 4
	for i := range n {
		payloads = append(payloads, tr.SentWS(at(i), uint64(i)))
		if want := min(i+1, trackerSize); tr.Outstanding() != want {
			t.Fatalf("after %d pings Outstanding() = %d, want %d", i+1, tr.Outstanding(), want)
		}
	}
	// The 4 oldest were dropped.
	for i := range n - trackerSize {
		if _, _, ok := tr.PongWS(at(100), payloads[i][:]); ok {
			t.Fatalf("pong of dropped ping %d matched", i)
		}
	}
	if tr.Outstanding() != trackerSize {
		t.Fatalf("unknown pongs changed Outstanding() to %d", tr.Outstanding())
	}
	oldest := n - trackerSize
	rtt, ack, ok := tr.PongWS(at(100), payloads[oldest][:])
	if !ok || ack != uint64(oldest) || rtt != time.Duration(100-oldest)*time.Millisecond {
		t.Fatalf("pong of oldest kept ping = %v, %d, %v", rtt, ack, ok)
	}
	// Wrap the ring a few times with mixed kinds.
	for i := range 3 * trackerSize {
		tr.SentJSON(at(200+i), uint64(100+i))
	}
	if tr.Outstanding() != trackerSize {
		t.Fatalf("Outstanding() = %d", tr.Outstanding())
	}
	if _, ack, ok := tr.PongJSON(at(300)); !ok || ack != uint64(100+2*trackerSize) {
		t.Fatalf("PongJSON after wrap = %d, %v", ack, ok)
	}
	tr.Reset()
	if tr.Outstanding() != 0 {
		t.Fatalf("Outstanding() after Reset = %d", tr.Outstanding())
	}
	if _, _, ok := tr.PongJSON(at(400)); ok {
		t.Fatal("PongJSON matched after Reset")
	}
	p := tr.SentWS(at(500), 7)
	if binary.BigEndian.Uint64(p[:]) != n+1 {
		t.Fatalf("counter restarted after Reset: %x", p)
	}
}

func TestTrackerNoAlloc(t *testing.T) {
	// Not parallel: testing.AllocsPerRun panics in parallel tests.
	var tr Tracker
	var seq uint64
	n := testing.AllocsPerRun(100, func() {
		seq++
		p := tr.SentWS(t0, seq)
		tr.SentJSON(t0, seq)
		tr.PongWS(t0, p[:])
		tr.PongJSON(t0)
	})
	if n != 0 {
		t.Errorf("Tracker allocates %v times", n)
	}
}

// The ring stores the low 32 bits of an RFC ping's id and the send time
// in microseconds modulo 2^32: ids skip low bits of 0 (the JSON mark), a
// pong carrying an id from outside the window of recent ids never
// matches by its low bits, and a round trip across the clock's wrap is
// still right.
func TestTrackerCompactFields(t *testing.T) {
	var tr Tracker
	tr.lastID = 1<<32 - 2
	now := epoch.Add((1<<32 - 10) * time.Microsecond) // 10 µs before at wraps
	a := tr.SentWS(now, 1)
	b := tr.SentWS(now, 2)
	if got := binary.BigEndian.Uint64(a[:]); got != 1<<32-1 {
		t.Fatalf("first id %#x, want %#x", got, uint64(1<<32-1))
	}
	if got := binary.BigEndian.Uint64(b[:]); got != 1<<32+1 {
		t.Fatalf("second id %#x, want %#x (skipping low bits 0)", got, uint64(1<<32+1))
	}
	var old, future [8]byte
	binary.BigEndian.PutUint64(old[:], 1)          // same low bits as b
	binary.BigEndian.PutUint64(future[:], 1<<32+2) // never handed out
	for _, p := range [][8]byte{old, future} {
		if _, _, ok := tr.PongWS(now, p[:]); ok {
			t.Fatalf("pong %x matched", p)
		}
	}
	rtt, ack, ok := tr.PongWS(now.Add(25*time.Microsecond), b[:])
	if !ok || ack != 2 || rtt != 25*time.Microsecond {
		t.Fatalf("pong across the wrap: rtt %v ack %d ok %v, want 25µs 2 true", rtt, ack, ok)
	}
	if tr.Outstanding() != 0 {
		t.Fatalf("Outstanding() = %d, want 0", tr.Outstanding())
	}
}

// LastRTT is the latest completed round trip, kept through unmatched
// pongs and Reset, and it costs the Tracker no size: it fills padding
// (the Tracker lives in every leg, whose size class is checked in
// package session).
func TestTrackerLastRTT(t *testing.T) {
	var tr Tracker
	if _, ok := tr.LastRTT(); ok {
		t.Fatal("LastRTT before any pong")
	}
	p := tr.SentWS(at(0), 1)
	tr.SentJSON(at(5), 2)
	if _, _, ok := tr.PongWS(at(30), p[:]); !ok {
		t.Fatal("pong did not match")
	}
	if rtt, ok := tr.LastRTT(); !ok || rtt != 30*time.Millisecond {
		t.Fatalf("LastRTT = %v %v, want 30ms", rtt, ok)
	}
	tr.PongWS(at(40), []byte("nope")) // unmatched: no change
	if rtt, _ := tr.LastRTT(); rtt != 30*time.Millisecond {
		t.Fatalf("LastRTT after an unmatched pong = %v, want 30ms", rtt)
	}
	if _, _, ok := tr.PongJSON(at(12)); !ok {
		t.Fatal("JSON pong did not match")
	}
	if rtt, _ := tr.LastRTT(); rtt != 7*time.Millisecond {
		t.Fatalf("LastRTT = %v, want 7ms", rtt)
	}
	tr.SentJSON(at(20), 3)
	tr.PongJSON(at(20)) // 0 µs: still reported as a round trip
	if rtt, ok := tr.LastRTT(); !ok || rtt != time.Microsecond {
		t.Fatalf("LastRTT of an instant pong = %v %v, want 1µs true", rtt, ok)
	}
	if n := unsafe.Sizeof(Tracker{}); n != 144 {
		t.Fatalf("Tracker is %d bytes, want 144 (the ring, lastID and padding)", n)
	}
}
