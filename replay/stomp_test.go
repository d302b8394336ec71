package replay

import (
	"fmt"
	"strings"
	"testing"
)

// Frames as @stomp/stompjs writes them (a subscribe's id before its
// destination; SEND with content-length) and as brokers answer.
const (
	stConnect   = "CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\nlogin:guest\npasscode:guest\n\n\x00"
	stConnected = "CONNECTED\nversion:1.2\nheart-beat:10000,10000\nserver:RabbitMQ/3.13.0\nsession:session-x1\n\n\x00"
	stSub0      = "SUBSCRIBE\nid:sub-0\ndestination:/topic/chat\n\n\x00"
	stSub1      = "SUBSCRIBE\nreceipt:r-1\nid:sub-1\ndestination:/queue/orders\n\n\x00"
	stSub2      = "SUBSCRIBE\nack:client-individual\nid:sub-2\ndestination:/topic/prices.ACME\n\n\x00"
	stUnsub0    = "UNSUBSCRIBE\nid:sub-0\n\n\x00"
	stUnsub2    = "UNSUBSCRIBE\nid:sub-2\n\n\x00"
	stSend      = "SEND\ndestination:/app/chat\ncontent-type:application/json\ncontent-length:14\n\n{\"text\":\"hi\"}\n\x00"
	stMessage   = "MESSAGE\ndestination:/topic/chat\ncontent-type:application/json\nsubscription:sub-0\nmessage-id:T_sub-0@@session-x1@@1\ncontent-length:14\n\n{\"text\":\"hi\"}\n\x00"
	stReceipt1  = "RECEIPT\nreceipt-id:r-1\n\n\x00"
	stError     = "ERROR\nmessage:Bad CONNECT\ncontent-type:text/plain\ncontent-length:15\n\nAccess refused\n\x00"
	stDisc      = "DISCONNECT\nreceipt:close-1\n\n\x00"
)

const (
	stStomp10 = "STOMP\naccept-version:1.0\nhost:broker\n\n\x00"
	stSubQA   = "SUBSCRIBE\ndestination:/queue/a\n\n\x00"
	stSubQB   = "SUBSCRIBE\ndestination:/queue/b\n\n\x00"
	stSubEsc  = "SUBSCRIBE\nid:a\\cb\\\\c\ndestination:/topic/x\n\n\x00"
	stSubSame = "SUBSCRIBE\nid:sub-0\ndestination:/topic/other\n\n\x00"
	stSendNUL = "SEND\ndestination:/app/bin\ncontent-length:5\n\na\x00b\x00c\x00"
)

func TestSTOMP(t *testing.T) {
	runPlanCases(t, STOMP, []planCase{
		{"keep and end", steps(cls(stConnect), ups(stConnected), cls(stSub0, stSub1, stSub2, stSend, "\n", stUnsub0),
			ups(stReceipt1, stMessage, "\n", "\r\n"), []step{cl(Binary, stUnsub2)}), // binary frames are STOMP as well
			[]string{stConnect}, []string{stSub1}},
		{"resubscribe after end", cls(stConnect, stSub0, stSub2, stUnsub0, stSub0), []string{stConnect}, []string{stSub2, stSub0}},
		{"STOMP command, 1.0 destination match", cls(stStomp10, stSubQA, stSubQB, "UNSUBSCRIBE\ndestination:/queue/a\n\n\x00"),
			[]string{stStomp10}, []string{stSubQB}},
		{"escaped id, CRLF", cls(stConnect, stSubEsc, "UNSUBSCRIBE\r\nid:a\\cb\\\\c\r\n\r\n\x00"), []string{stConnect}, nil},
		{"same id replaces", cls(stConnect, stSub0, stSub2, stSubSame), []string{stConnect}, []string{stSub2, stSubSame}},
		{"disconnect", cls(stConnect, stSub0, stDisc, stSub2), nil, nil},
		{"content-length body with NUL", cls(stConnect, stSendNUL+stSub0), []string{stConnect}, []string{stSub0}},
	})
	t.Run("replies dropped", func(t *testing.T) {
		h := newSess(t, STOMP)
		h.text(stConnect)
		h.upPass(Text, stConnected)
		h.text(stSub0, stSub1)
		h.upPass(Text, stReceipt1)
		wantPlan(t, h.replay(), []string{stConnect}, stSub0, stSub1)
		h.upPass(Text, "\n")
		h.upWant(Text, stConnected, true, EventAccepted)
		h.upPass(Text, stMessage)
		h.upWant(Text, stReceipt1, true, EventNone)
		h.upPass(Text, stReceipt1, stConnected) // once each
	})
	t.Run("receipt the client never had passes", func(t *testing.T) {
		h := newSess(t, STOMP)
		h.text(stConnect)
		h.upPass(Text, stConnected)
		h.text(stSub1) // the upstream died before its RECEIPT
		h.replay()
		h.upWant(Text, stConnected, true, EventAccepted)
		h.upPass(Text, stReceipt1)
		h.replay()
		h.upWant(Text, stConnected, true, EventAccepted)
		h.upWant(Text, stReceipt1, true, EventNone)
	})
	t.Run("replies cut out of a message with several frames", func(t *testing.T) {
		h := newSess(t, STOMP)
		h.text(stConnect)
		h.upPass(Text, stConnected)
		h.text(stSub1)
		h.upPass(Text, stReceipt1)
		h.replay()
		h.upWant(Text, stConnected+"\n", true, EventAccepted)
		drop, out, ev := h.up(Text, stMessage+"\n"+stReceipt1+stMessage)
		if want := stMessage + "\n" + stMessage; drop || out != want || ev != EventNone {
			t.Fatalf("got drop %v %q %v, want %q", drop, out, ev, want)
		}
	})
	t.Run("refusal", func(t *testing.T) {
		h := newSess(t, STOMP)
		h.text(stConnect)
		h.upPass(Text, stConnected)
		h.replay()
		h.upWant(Text, stError, false, EventRejected)
	})
	t.Run("error after the answer is not a refusal", func(t *testing.T) {
		h := newSess(t, STOMP)
		h.text(stConnect)
		h.upPass(Text, stConnected)
		h.text(stSub0)
		h.replay()
		h.upWant(Text, stConnected, true, EventAccepted)
		h.upPass(Text, stError)
	})
	t.Run("several frames in one message", func(t *testing.T) {
		h := newSess(t, STOMP)
		h.text(stConnect)
		h.text(stSend + stSub0 + "\n" + stSub2 + stUnsub2) // seq 1
		pl := h.replay(1)
		wantPlan(t, pl, []string{stConnect})
		pl = h.replay(2)
		wantPlan(t, pl, []string{stConnect}, stSub0)
		// A held CONNECT sharing its message with another frame is
		// replayed, and the message is still sent: not skipped.
		h = newSess(t, STOMP)
		h.text(stConnect + stSub0)
		pl = h.replay(0)
		wantPlan(t, pl, []string{stConnect})
		if pl.Skip(0) {
			t.Error("a message with other frames is skipped")
		}
		h = newSess(t, STOMP)
		h.text(stConnect + "\n\n")
		if pl = h.replay(0); !pl.Skip(0) {
			t.Error("a CONNECT alone (with heart-beats) is not skipped")
		}
	})
	t.Run("malformed passes", func(t *testing.T) {
		h := newSess(t, STOMP)
		h.text(stConnect)
		h.upPass(Text, stConnected)
		h.text(
			"SUBSCRIBE\nid:sub-9\ndestination:/x\n\n",        // no NUL
			"SUBSCRIBE\nid:sub-9\ndestination:/x",            // cut in the headers
			"SUBSCRIBE\ncontent-length:99\nid:sub-9\n\n\x00", // body shorter than its length
			"SUBSCRIBE\ncontent-length:x\nid:sub-9\n\n\x00",  // bad length
			"SUBSCRIBE\n\n\x00",                              // neither id nor destination
			"\x00", "", "\n\n", "\xff\x00",
			"UNSUBSCRIBE\nid:sub-0", // cut: does not end sub-0
		)
		h.text(stSub0)
		h.text("UNSUBSCRIBE\nid:sub-0\n\n") // no NUL: not an end
		h.upPass(Text, "RECEIPT\nreceipt-id:r-1\n\n", "\x00\x00", "")
		wantPlan(t, h.replay(), []string{stConnect}, stSub0)
		h.upPass(Text, "CONNECTED\nversion:1.2\n\n") // cut: not the answer
		h.upWant(Text, stConnected, true, EventAccepted)
	})
	t.Run("max bytes", func(t *testing.T) {
		h := newSess(t, STOMP, func(c *Config) { c.MaxBytes = 2000 })
		h.text(stConnect)
		overflow(t, h, Text, func(i int) string {
			return fmt.Sprintf("SUBSCRIBE\nid:sub-%d\ndestination:/topic/t%d\n\n\x00", i, i)
		})
	})
	t.Run("no upstream cost once answered", func(t *testing.T) {
		h := newSess(t, STOMP)
		h.text(stConnect)
		h.upPass(Text, stConnected)
		h.text(stSub0)
		// Nothing owed: upstream frames are not even parsed, so a
		// CONNECTED now is not taken as an answer.
		if h.st.win.open() || !h.st.answered || h.st.unreplied != 0 {
			t.Fatalf("still watching: %+v answered %v unreplied %d", h.st.win, h.st.answered, h.st.unreplied)
		}
	})
}

// STOMP frames cut across messages (@stomp/stompjs with splitLargeFrames
// sends a frame longer than maxWebSocketChunkSize in chunks): the stream
// is at a boundary only between frames, and the cut frame's bytes are not
// taken for frames (a SEND whose body reads as a SUBSCRIBE is not kept).
func TestSTOMPAtBoundary(t *testing.T) {
	bodySub := "SUBSCRIBE\nid:bogus\ndestination:/x\n\n"
	sends := []string{
		stSend, stSendNUL, // content-length, with NULs in the body
		"SEND\ndestination:/a\n\n" + bodySub + "\x00",               // up to the NUL
		"SEND\r\ndestination:/a\r\ncontent-length:3\r\n\r\nabc\x00", // CRLF lines
	}
	for _, send := range sends {
		for cut := 1; cut < len(send); cut++ {
			for _, pieces := range [][]string{{send[:cut], send[cut:]}, {send[:cut/2], send[cut/2 : cut], send[cut:]}} {
				h := newSess(t, STOMP)
				h.text(stConnect)
				h.text("\n")
				for k, p := range pieces {
					if p == "" {
						continue
					}
					if k == len(pieces)-1 {
						p += stSub0 // a frame in the same message after the cut one ends
					}
					h.text(p)
					if last := k == len(pieces)-1; h.st.AtBoundary() != last {
						t.Fatalf("%q cut %v: AtBoundary %v after piece %d", send, pieces, !last, k)
					}
				}
				pl := h.replay()
				if fmt.Sprint(msgs(pl.Rest)) != fmt.Sprint([]string{stSub0}) || h.st.subs[0].pure {
					t.Fatalf("%q cut %v: replays %q (pure %v), want the SUBSCRIBE after the SEND, impure", send, pieces, msgs(pl.Rest), h.st.subs[0].pure)
				}
			}
		}
	}
	// Malformed, not cut: boundaries are not followed from then on.
	for _, bad := range []string{"SEND\ncontent-length:x\n\nabc", "SEND\nbad\x00line\n", "SEND\ncontent-length:1\n\nab\x00"} {
		h := newSess(t, STOMP)
		h.text(stConnect + bad)
		h.text("more")
		if !h.st.AtBoundary() {
			t.Fatalf("%q: not at a boundary after a malformed frame", bad)
		}
	}
	// Headers cut across messages: followed up to stompCutMax, and let
	// go of once read; past it, not followed (never a stall).
	long := "SEND\nx-pad:" + strings.Repeat("p", 4000) + "\n"
	h := newSess(t, STOMP)
	h.text(stConnect + long[:100])
	h.text(long[100:])
	if h.st.AtBoundary() {
		t.Fatal("at a boundary inside a frame's headers")
	}
	h.text("\nbody\x00")
	if !h.st.AtBoundary() || h.st.stc.hdr != nil {
		t.Fatalf("after the frame's end: AtBoundary %v, %d header bytes kept", h.st.AtBoundary(), cap(h.st.stc.hdr))
	}
	h.text("SEND\n")
	for range stompCutMax / len(long) {
		h.text(long)
	}
	if h.st.AtBoundary() {
		t.Fatal("at a boundary inside headers not yet over the bound")
	}
	h.text(long)
	if !h.st.AtBoundary() || !h.st.stc.lost || len(h.st.stc.hdr) != 0 {
		t.Fatalf("headers over %d bytes: AtBoundary %v, lost %v, %d bytes kept", stompCutMax, h.st.AtBoundary(), h.st.stc.lost, len(h.st.stc.hdr))
	}
}

// TestSTOMPCutAllocs: following frames cut across messages (stompjs with
// splitLargeFrames: every frame longer than a chunk) allocates nothing
// per frame once a session has followed one: the body is not copied, and
// short headers keep their buffer.
func TestSTOMPCutAllocs(t *testing.T) {
	frame := "SEND\ndestination:/a\ncontent-length:6000\n\n" + strings.Repeat("b", 6000) + "\x00"
	h := newSess(t, STOMP)
	h.text(stConnect)
	var chunks [][]byte
	for i := 0; i < len(frame); i += 2000 {
		chunks = append(chunks, []byte(frame[i:min(i+2000, len(frame))]))
	}
	seq := uint64(100)
	send := func() {
		for _, c := range chunks {
			if err := h.st.FromClient(Text, c, seq); err != nil {
				t.Fatal(err)
			}
			seq++
		}
	}
	send() // the header buffer
	if n := testing.AllocsPerRun(20, send); n != 0 {
		t.Errorf("%v allocations per frame of three chunks", n)
	}
	if !h.st.AtBoundary() || h.st.stc.lost {
		t.Fatalf("after whole frames: AtBoundary %v, lost %v", h.st.AtBoundary(), h.st.stc.lost)
	}
}
