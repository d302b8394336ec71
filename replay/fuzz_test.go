package replay

import (
	"bytes"
	"fmt"
	"testing"
)

// A fuzz input is a script of steps: a control byte, a two-byte length and
// that many bytes. Control bits 0–1: 0 a client message, 1 an upstream
// message, 2 a replay (pendingFrom = next seq − control>>3), 3 a client
// message then a replay of everything; bit 2: binary opcode.
type step struct {
	ctrl byte
	p    []byte
}

const (
	stepClient = iota
	stepUpstream
	stepReplay
	stepClientReplay
)

func parseScript(b []byte) []step {
	var out []step
	for len(b) >= 3 {
		n := int(b[1])<<8 | int(b[2])
		ctrl := b[0]
		b = b[3:]
		n = min(n, len(b))
		out = append(out, step{ctrl, b[:n]})
		b = b[n:]
	}
	return out
}

func script(steps ...step) []byte {
	var b []byte
	for _, s := range steps {
		b = append(b, s.ctrl, byte(len(s.p)>>8), byte(len(s.p)))
		b = append(b, s.p...)
	}
	return b
}

func cl(op Opcode, p string) step {
	c := byte(stepClient)
	if op == Binary {
		c |= 4
	}
	return step{c, []byte(p)}
}

func up(op Opcode, p string) step {
	c := byte(stepUpstream)
	if op == Binary {
		c |= 4
	}
	return step{c, []byte(p)}
}

func rp(back byte) step { return step{stepReplay | back<<3, nil} }

// runScript plays a script against a fresh State and checks the
// invariants: no panic, kept bytes within MaxBytes and equal to what is
// kept, replays in original order and within MaxBytes, every upstream
// message either dropped or forwarded.
func runScript(t *testing.T, p Protocol, max int, data []byte) {
	c := Config{Protocol: p, JSONKeep: []string{"subscribe", "auth"}, JSONEnd: []string{"unsubscribe", "complete"},
		JSONReplies: []string{"subscribed"}, JSONID: "id", MaxBytes: max}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	st := New(p, &c)
	var seq uint64
	full := false
	for _, s := range parseScript(data) {
		op := Text
		if s.ctrl&4 != 0 {
			op = Binary
		}
		buf := bytes.Clone(s.p)
		switch s.ctrl & 3 {
		case stepClient, stepClientReplay:
			if full {
				continue // the session is closed
			}
			if err := st.FromClient(op, buf, seq); err != nil {
				if err != ErrStateFull {
					t.Fatalf("FromClient: %v", err)
				}
				full = true
			}
			seq++
			if s.ctrl&3 == stepClientReplay {
				checkPlan(t, st, st.Replay(seq), seq, max)
			}
		case stepUpstream:
			v := st.FromUpstream(op, buf)
			if !v.Drop && v.Msg == nil && len(buf) > 0 {
				t.Fatalf("FromUpstream(%q): neither dropped nor forwarded", s.p)
			}
			if !v.Drop && len(v.Msg) > len(buf)+len(st.mq.held) {
				t.Fatalf("FromUpstream(%q) forwards %d bytes", s.p, len(v.Msg))
			}
		case stepReplay:
			back := uint64(s.ctrl >> 3)
			from := seq - min(back, seq)
			checkPlan(t, st, st.Replay(from), from, max)
		}
		scribble(buf)
		checkKept(t, st, max)
	}
}

func checkKept(t *testing.T, st *State, max int) {
	n := 0
	if st.open != nil {
		n += len(st.open.p)
	}
	unreplied := 0
	for _, it := range st.subs {
		n += len(it.p)
		if it.wantsReply() && !it.replied {
			unreplied++
		}
		if it.gone {
			t.Fatal("a removed item is kept")
		}
	}
	if n != st.Bytes() || n > max {
		t.Fatalf("kept %d bytes, counted %d, limit %d", n, st.Bytes(), max)
	}
	if unreplied != st.unreplied {
		t.Fatalf("unreplied %d, counted %d", unreplied, st.unreplied)
	}
}

func checkPlan(t *testing.T, st *State, pl Plan, from uint64, max int) {
	checkPlanOrder(t, pl)
	n := 0
	for _, m := range append(append([]Msg(nil), pl.Opening...), pl.Rest...) {
		n += len(m.P)
		if m.Op != Text && m.Op != Binary {
			t.Fatalf("replay opcode %d", m.Op)
		}
	}
	if n > max || len(pl.Opening) > 1 {
		t.Fatalf("plan of %d bytes, %d openings", n, len(pl.Opening))
	}
	for _, m := range pl.Rest {
		if m.Seq >= from {
			t.Fatalf("replayed seq %d, not provably received (from %d)", m.Seq, from)
		}
	}
	for _, r := range pl.skip {
		if r.lo < from || r.hi < r.lo {
			t.Fatalf("skip %d–%d with pendingFrom %d", r.lo, r.hi, from)
		}
	}
}

func FuzzReplayGraphQL(f *testing.F) {
	f.Add(script(cl(Text, gtInit), up(Text, gtAck), cl(Text, gtSubA), cl(Text, gtSubB), up(Text, gtNextA),
		cl(Text, gtDoneB), up(Text, gtErrorC), rp(0), up(Text, gtAck), rp(2), up(Text, gtPing), up(Text, gtAck)), 1<<10)
	f.Add(script(cl(Text, gwInit), cl(Text, gwStart1), cl(Text, gwStart2), up(Text, gwDone2), rp(1),
		up(Text, gwRefuse), cl(Text, gwStop1), cl(Text, gwTerm)), 300)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		max = 1 + max&0xffff
		runScript(t, GraphQLTransportWS, max, data)
		runScript(t, GraphQLWS, max, data)
	})
}

func FuzzReplayJSON(f *testing.F) {
	f.Add(script(cl(Text, `{"type":"auth","token":"t"}`), cl(Text, `{"type":"subscribe","id":"a"}`),
		cl(Text, `{"type":"subscribe","id":2}`), up(Text, `{"type":"complete","id":2}`), rp(1),
		up(Text, `{"type":"subscribed","id":"a"}`), cl(Text, `{"type":"unsubscribe","id":"\u0061"}`)), 200)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		runScript(t, JSON, 1+max&0xffff, data)
	})
}

func FuzzReplaySTOMP(f *testing.F) {
	f.Add(script(cl(Text, stConnect), up(Text, stConnected), cl(Text, stSub0), cl(Text, stSub1+stSend),
		up(Text, stReceipt1+stMessage), cl(Text, stUnsub0), rp(1), up(Text, "\n"+stConnected+stReceipt1),
		up(Text, stError), cl(Binary, stSub2), rp(0), up(Text, stConnected), cl(Text, stDisc)), 1<<10)
	f.Add(script(cl(Text, "STOMP\naccept-version:1.0\n\n\x00SUBSCRIBE\ndestination:/q/a\nreceipt:x\\c\n\n\x00"),
		cl(Text, "SEND\ncontent-length:3\n\na\x00b\x00"), rp(0), up(Text, "RECEIPT\nreceipt-id:x:\n\n\x00")), 100)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		runScript(t, STOMP, 1+max&0xffff, data)
	})
}

func FuzzReplayMQTT(f *testing.F) {
	for _, v5 := range []bool{false, true} {
		conn, subA := mqConnectPkt(v5), mqSubscribePkt(v5, 1, filt{"a/+", 1}, filt{"b/#", 0})
		pub := mqPublishPkt(v5, "a/1", 1, 3, []byte("\x82\x02payload"))
		both := string(subA) + string(pub)
		f.Add(script(cl(Binary, string(conn[:5])), cl(Binary, string(conn[5:])), up(Binary, string(mqConnackPkt(v5, 0))),
			cl(Binary, both[:7]), cl(Binary, both[7:]), up(Binary, string(mqSubackPkt(v5, 1, 1, 0))),
			cl(Binary, string(mqUnsubscribePkt(v5, 2, "b/#"))), rp(0),
			up(Binary, string(mqConnackPkt(v5, 0))[:3]), up(Binary, string(mqConnackPkt(v5, 0))[3:]+string(pub)),
			up(Binary, string(mqSubackPkt(v5, 1, 1))), rp(3), up(Binary, string(mqConnackPkt(v5, 0x87)))), 1<<10)
	}
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		max = 1 + max&0xffff
		runScript(t, MQTT, max, data)
		// The client stream cut differently gives the same state.
		var whole []byte
		c := Config{Protocol: MQTT, JSONID: "id", MaxBytes: max}
		pieces := New(MQTT, &c)
		var seq uint64
		var errP error
		for _, s := range parseScript(data) {
			if s.ctrl&3 == stepClient && errP == nil {
				whole = append(whole, s.p...)
				errP = pieces.FromClient(Binary, bytes.Clone(s.p), seq)
				seq++
			}
		}
		one := New(MQTT, &c)
		errO := one.FromClient(Binary, whole, 0)
		if (errP == nil) != (errO == nil) {
			return // a state full error cuts the streams at different points
		}
		a, b := pieces.Replay(seq), one.Replay(1)
		if fmt.Sprint(msgs(a.Opening), msgs(a.Rest)) != fmt.Sprint(msgs(b.Opening), msgs(b.Rest)) || pieces.Broken() != one.Broken() {
			t.Fatalf("in pieces: %x %x broken %v; whole: %x %x broken %v",
				msgs(a.Opening), msgs(a.Rest), pieces.Broken(), msgs(b.Opening), msgs(b.Rest), one.Broken())
		}
	})
}
