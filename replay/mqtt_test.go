package replay

import (
	"bytes"
	"fmt"
	"testing"
)

// MQTT packets as mqtt.js writes them, encoded by hand.

func varlen(n int) []byte {
	var b []byte
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func packet(first byte, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	return append(append([]byte{first}, varlen(len(b))...), b...)
}

func str(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func u16b(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

// mqConnectPkt: clean session, keepalive 60, username and password, as
// mqtt.connect(url, {clientId, username, password}) sends; v5 with a
// session expiry interval property.
func mqConnectPkt(v5 bool) []byte {
	if v5 {
		return packet(0x10, str("MQTT"), []byte{5, 0xc2, 0, 60}, []byte{5, 0x11, 0, 0, 0x0e, 0x10},
			str("mqttjs_8f3a1c"), str("alice"), str("s3cret"))
	}
	return packet(0x10, str("MQTT"), []byte{4, 0xc2, 0, 60}, str("mqttjs_8f3a1c"), str("alice"), str("s3cret"))
}

type filt struct {
	name string
	opts byte
}

func mqSubscribePkt(v5 bool, pid int, fs ...filt) []byte {
	body := [][]byte{u16b(pid)}
	if v5 {
		body = append(body, []byte{2, 0x0b, byte(pid)}) // a subscription identifier
	}
	for _, f := range fs {
		body = append(body, str(f.name), []byte{f.opts})
	}
	return packet(0x82, body...)
}

func mqUnsubscribePkt(v5 bool, pid int, names ...string) []byte {
	body := [][]byte{u16b(pid)}
	if v5 {
		body = append(body, []byte{0})
	}
	for _, n := range names {
		body = append(body, str(n))
	}
	return packet(0xa2, body...)
}

func mqPublishPkt(v5 bool, topic string, qos byte, pid int, payload []byte) []byte {
	body := [][]byte{str(topic)}
	if qos > 0 {
		body = append(body, u16b(pid))
	}
	if v5 {
		body = append(body, []byte{0})
	}
	body = append(body, payload)
	return packet(0x30|qos<<1, body...)
}

func mqConnackPkt(v5 bool, code byte) []byte {
	if v5 {
		return packet(0x20, []byte{0, code, 3, 0x21, 0, 20}) // receive maximum
	}
	return packet(0x20, []byte{0, code})
}

func mqSubackPkt(v5 bool, pid int, codes ...byte) []byte {
	if v5 {
		return packet(0x90, u16b(pid), []byte{0}, codes)
	}
	return packet(0x90, u16b(pid), codes)
}

var (
	mqPingreq  = []byte{0xc0, 0}
	mqPingresp = []byte{0xd0, 0}
)

func (h *sess) bin(pkts ...[]byte) {
	h.t.Helper()
	for _, p := range pkts {
		h.client(Binary, string(p))
	}
}

func (h *sess) upBin(pkts ...[]byte) {
	h.t.Helper()
	for _, p := range pkts {
		h.upPass(Binary, string(p))
	}
}

func strs(pkts ...[]byte) []string {
	out := make([]string, len(pkts))
	for i, p := range pkts {
		out[i] = string(p)
	}
	return out
}

// mqttAnswered is a session that connected and subscribed twice (ids 1
// and 2, with the filters of TestMQTTSplit), every packet answered.
func mqttAnswered(t testing.TB, v5 bool) *sess {
	h := newSess(t, MQTT)
	h.bin(mqConnectPkt(v5))
	h.upBin(mqConnackPkt(v5, 0))
	h.bin(mqSubscribePkt(v5, 1, filt{"sensors/+/temp", 1}), mqSubscribePkt(v5, 2, filt{"alerts/#", 2}, filt{"chat/room1", 0}))
	h.upBin(mqSubackPkt(v5, 1, 1), mqSubackPkt(v5, 2, 2, 0))
	return h
}

func TestMQTT(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v5=%v", v5), func(t *testing.T) { testMQTT(t, v5) })
	}
}

func testMQTT(t *testing.T, v5 bool) {
	conn := mqConnectPkt(v5)
	subA := mqSubscribePkt(v5, 1, filt{"sensors/+/temp", 1})
	subBC := mqSubscribePkt(v5, 2, filt{"alerts/#", 2}, filt{"chat/room1", 0})
	subC := mqSubscribePkt(v5, 2, filt{"chat/room1", 0})
	pub := mqPublishPkt(v5, "chat/room1", 1, 7, []byte(`{"text":"hi"}`))
	bigPub := mqPublishPkt(v5, "sensors/1/temp", 0, 0, bytes.Repeat([]byte{0x82, 0xa2, 0x10}, 5000))
	ack := mqConnackPkt(v5, 0)

	t.Run("keep and end", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(conn)
		h.upBin(ack)
		h.bin(subA, subBC, pub, mqPingreq)
		h.upBin(mqSubackPkt(v5, 1, 1), mqSubackPkt(v5, 2, 2, 0), pub, bigPub, mqPingresp)
		h.bin(mqUnsubscribePkt(v5, 3, "sensors/+/temp"))
		wantPlan(t, h.replay(), strs(conn), strs(subBC)...)
	})
	t.Run("partial unsubscribe rebuilds", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(conn, subA, subBC, mqUnsubscribePkt(v5, 3, "alerts/#", "no/such/filter"))
		pl := h.replay()
		wantPlan(t, pl, strs(conn), strs(subA, subC)...)
		if pl.Skip(2) {
			t.Error("a rebuilt SUBSCRIBE's original message is skipped")
		}
	})
	t.Run("resubscribe after end and replacement", func(t *testing.T) {
		h := newSess(t, MQTT)
		subA2 := mqSubscribePkt(v5, 4, filt{"sensors/+/temp", 2})
		h.bin(conn, subA, subBC, mqUnsubscribePkt(v5, 3, "sensors/+/temp"), subA2)
		wantPlan(t, h.replay(), strs(conn), strs(subBC, subA2)...)
		subB := mqSubscribePkt(v5, 2, filt{"alerts/#", 2})
		h.bin(mqSubscribePkt(v5, 5, filt{"chat/room1", 1}))
		wantPlan(t, h.replay(), strs(conn), strs(subB, subA2, mqSubscribePkt(v5, 5, filt{"chat/room1", 1}))...)
	})
	t.Run("replies dropped", func(t *testing.T) {
		h := mqttAnswered(t, v5)
		h.replay()
		h.upWant(Binary, string(ack), true, EventAccepted)
		h.upWant(Binary, string(mqSubackPkt(v5, 2, 2, 0)), true, EventNone)
		h.upBin(pub)
		h.upWant(Binary, string(mqSubackPkt(v5, 1, 1)), true, EventNone)
		h.upBin(mqSubackPkt(v5, 1, 1), ack) // once each
	})
	t.Run("suback the client never had passes", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(conn)
		h.upBin(ack)
		h.bin(subA, subBC)
		h.upBin(mqSubackPkt(v5, 1, 1)) // the upstream died before answering 2
		h.replay()
		h.upWant(Binary, string(ack), true, EventAccepted)
		h.upWant(Binary, string(mqSubackPkt(v5, 1, 1)), true, EventNone)
		h.upBin(mqSubackPkt(v5, 2, 2, 0))
	})
	t.Run("refusal", func(t *testing.T) {
		code := byte(5) // 3.1.1: not authorized
		if v5 {
			code = 0x87
		}
		h := newSess(t, MQTT)
		h.bin(conn)
		h.upBin(ack)
		h.bin(subA)
		h.replay()
		h.upWant(Binary, string(mqConnackPkt(v5, code)), false, EventRejected)
	})
	t.Run("replies in one message with other packets", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(conn)
		h.upBin(ack)
		h.bin(subA)
		h.upBin(mqSubackPkt(v5, 1, 1))
		h.replay()
		all := bytes.Join([][]byte{ack, mqSubackPkt(v5, 1, 1), pub, mqPingresp}, nil)
		drop, out, ev := h.up(Binary, string(all))
		if want := string(pub) + string(mqPingresp); drop || out != want || ev != EventAccepted {
			t.Fatalf("got drop %v %x %v, want %x", drop, out, ev, want)
		}
	})
	t.Run("disconnect", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(conn, subA, []byte{0xe0, 0}, subBC)
		wantPlan(t, h.replay(), nil)
	})
	t.Run("max bytes", func(t *testing.T) {
		h := newSess(t, MQTT, func(c *Config) { c.MaxBytes = 500 })
		h.bin(conn)
		overflow(t, h, Binary, func(i int) string {
			return string(mqSubscribePkt(v5, i+1, filt{fmt.Sprintf("t/%d", i), 0}))
		})
	})
	t.Run("max bytes checked before copying", func(t *testing.T) {
		h := newSess(t, MQTT, func(c *Config) { c.MaxBytes = 500 })
		h.bin(conn)
		// The fixed header announces 100 MB: refused at once.
		if err := h.clientErr(Binary, "\x82\x80\x80\x80\x30"); err != ErrStateFull {
			t.Fatalf("FromClient = %v", err)
		}
	})
	t.Run("QoS flows are not state", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(conn, pub, packet(0x40, u16b(7)), packet(0x62, u16b(8)), packet(0x70, u16b(8)))
		wantPlan(t, h.replay(), strs(conn))
	})
}

// upCut feeds the upstream stream b cut at i and j (three messages) and
// returns what the client gets, joined, and how many EventAccepted came.
func (h *sess) upCut(b []byte, i, j int) (got []byte, accepted int) {
	for _, p := range [][]byte{b[:i], b[i:j], b[j:]} {
		v := h.st.FromUpstream(Binary, p)
		if v.Event == EventAccepted {
			accepted++
		}
		if !v.Drop {
			got = append(got, v.Msg...)
		}
	}
	return got, accepted
}

// TestMQTTSplit feeds a session's client stream and upstream stream cut at
// every byte offset, and checks the same state and verdicts result.
func TestMQTTSplit(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		conn := mqConnectPkt(v5)
		subA := mqSubscribePkt(v5, 1, filt{"sensors/+/temp", 1})
		subBC := mqSubscribePkt(v5, 2, filt{"alerts/#", 2}, filt{"chat/room1", 0})
		subC := mqSubscribePkt(v5, 2, filt{"chat/room1", 0})
		pub := mqPublishPkt(v5, "chat/room1", 1, 7, []byte("\x82\x10 payload that looks like packets \xa2"))
		stream := bytes.Join([][]byte{conn, subA, pub, subBC, mqPingreq, mqUnsubscribePkt(v5, 3, "alerts/#"), pub}, nil)
		ack := mqConnackPkt(v5, 0)
		upstream := bytes.Join([][]byte{ack, pub, mqSubackPkt(v5, 1, 1), pub, mqSubackPkt(v5, 2, 2, 0), mqPingresp}, nil)
		for cut := 1; cut < len(stream); cut++ {
			// Every packet boundary and every offset inside one, and
			// also three pieces.
			for _, pieces := range [][][]byte{{stream[:cut], stream[cut:]}, {stream[:cut/2], stream[cut/2 : cut], stream[cut:]}} {
				h := newSess(t, MQTT)
				for _, p := range pieces {
					h.bin(p)
				}
				pl := h.replay()
				if fmt.Sprint(msgs(pl.Opening), msgs(pl.Rest)) != fmt.Sprint(strs(conn), strs(subA, subC)) {
					t.Fatalf("v5=%v cut %d: plan %x %x", v5, cut, msgs(pl.Opening), msgs(pl.Rest))
				}
			}
		}
		// The upstream after a replay, cut anywhere: the client gets
		// exactly the packets that are not replies.
		want := bytes.Join([][]byte{pub, pub, mqPingresp}, nil)
		for cut := 0; cut <= len(upstream); cut++ {
			for cut2 := cut; cut2 <= len(upstream); cut2++ {
				h := mqttAnswered(t, v5)
				h.replay()
				got, accepted := h.upCut(upstream, cut, cut2)
				if !bytes.Equal(got, want) || accepted != 1 {
					t.Fatalf("v5=%v cuts %d %d: client got %x (accepted %d), want %x", v5, cut, cut2, got, accepted, want)
				}
			}
		}
	}
}

func TestMQTTAtBoundary(t *testing.T) {
	pub := mqPublishPkt(false, "a/b", 1, 9, []byte("payload"))
	h := newSess(t, MQTT)
	if !h.st.AtBoundary() {
		t.Fatal("not at a boundary before anything")
	}
	h.bin(mqConnectPkt(false))
	for cut := 1; cut < len(pub); cut++ {
		h.bin(pub[:cut])
		if h.st.AtBoundary() {
			t.Fatalf("at a boundary after %d bytes of a %d-byte PUBLISH", cut, len(pub))
		}
		h.bin(pub[cut:])
		if !h.st.AtBoundary() {
			t.Fatalf("not at a boundary after a whole PUBLISH (cut %d)", cut)
		}
	}
	if g := newSess(t, GraphQLTransportWS); !g.st.AtBoundary() {
		t.Fatal("graphql-transport-ws not at a boundary")
	}
}

func TestMQTTSplitPacketSkip(t *testing.T) {
	// mqtt.js may write a packet in pieces, each its own WebSocket
	// message: a held opening made of pieces is skipped whole.
	conn := mqConnectPkt(false)
	h := newSess(t, MQTT)
	h.bin(conn[:3], conn[3:10], conn[10:])
	pl := h.replay(1) // the first piece was received, the rest is held
	wantPlan(t, pl, strs(conn))
	if !pl.Skip(1) || !pl.Skip(2) || pl.Skip(3) {
		t.Errorf("Skip(1, 2, 3) = %v %v %v", pl.Skip(1), pl.Skip(2), pl.Skip(3))
	}
	// A CONNECT sharing its message with a SUBSCRIBE is not skipped.
	h = newSess(t, MQTT)
	sub := mqSubscribePkt(false, 1, filt{"a", 0})
	h.bin(append(append([]byte{}, conn...), sub...))
	pl = h.replay(0)
	wantPlan(t, pl, strs(conn))
	if pl.Skip(0) {
		t.Error("Skip(0) for a message with two packets")
	}
}

func TestMQTTMalformed(t *testing.T) {
	conn := mqConnectPkt(false)
	subA := mqSubscribePkt(false, 1, filt{"a/b", 0})
	cases := map[string][]byte{
		"reserved type 0":        {0x00, 0x00},
		"length of five bytes":   {0x30, 0xff, 0xff, 0xff, 0xff, 0x01},
		"SUBSCRIBE bad flags":    packet(0x80, u16b(1), str("a"), []byte{0}),
		"CONNECT bad flags":      packet(0x11, str("MQTT"), []byte{4, 2, 0, 60}, str("x")),
		"SUBSCRIBE no filter":    packet(0x82, u16b(1)),
		"SUBSCRIBE cut filter":   packet(0x82, u16b(1), []byte{0, 9, 'a'}),
		"SUBSCRIBE no options":   packet(0x82, u16b(1), str("a")),
		"UNSUBSCRIBE cut filter": packet(0xa2, u16b(1), []byte{0, 9, 'a'}),
		"second CONNECT unknown": packet(0x10, str("HTTP"), []byte{4, 2, 0, 60}, str("x")),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			h := newSess(t, MQTT)
			h.bin(conn, subA, bad)
			if !h.st.Broken() {
				t.Fatal("not broken")
			}
			// From here on everything passes and nothing is replayed.
			h.bin(subA)
			h.upBin(mqConnackPkt(false, 0), []byte{0, 0, 0})
			wantPlan(t, h.replay(), nil)
		})
	}
	t.Run("text message", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(conn)
		h.text("hello")
		if !h.st.Broken() {
			t.Fatal("not broken")
		}
	})
	t.Run("SUBSCRIBE before CONNECT", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(subA)
		if !h.st.Broken() {
			t.Fatal("not broken")
		}
	})
	t.Run("upstream garbage", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(conn, subA)
		h.upBin(mqConnackPkt(false, 0))
		h.replay()
		h.upBin([]byte{0x20, 0x01, 0x00}) // a CONNACK too short to say anything
		if !h.st.Broken() {
			t.Fatal("not broken")
		}
		h.upBin(mqConnackPkt(false, 0))
	})
	t.Run("cut packet then nothing", func(t *testing.T) {
		h := newSess(t, MQTT)
		h.bin(conn, subA[:4])
		wantPlan(t, h.replay(), strs(conn))
	})
}

// mqttHeaderFlags are the fixed-header flags MQTT 3.1.1 §2.2.2 requires
// (PUBLISH's are free), as mqtt.js's parser (mqtt-packet) checks them: a
// stream cut at the wrong offset shows as a header byte with other flags
// ("Invalid header flag bits, must be 0x0 for pubcomp packet").
var mqttHeaderFlags = [16]int{0: -2, 1: 0, 2: 0, 3: -1, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0}

// checkPackets fails unless b is whole MQTT packets with valid header
// flags and lengths.
func checkPackets(t testing.TB, b []byte) {
	t.Helper()
	for i := 0; i < len(b); {
		first := b[i]
		if f := mqttHeaderFlags[first>>4]; f == -2 || f >= 0 && int(first&0x0f) != f {
			t.Fatalf("offset %d: header byte %#02x: bad type or flags in %x", i, first, b)
		}
		n, next, ok := varint(b, i+1)
		if !ok || next+n > len(b) {
			t.Fatalf("offset %d: packet %#02x cut short in %x", i, first, b)
		}
		i = next + n
	}
}

// TestMQTTRepliesAmongQoSFlows: after a replay, the upstream's replies
// (CONNACK, SUBACKs of replayed SUBSCRIBEs) share messages with, or are
// cut across messages between, the packets of QoS 1 and 2 flows both ways
// (PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP), a SUBACK the client is
// waiting for and a PINGRESP, with packet ids whose bytes are header bytes
// with bad flags (0x71: a PUBCOMP with flags 1). Cut into three messages
// at every pair of offsets, the client gets exactly the packets that are
// not replies, byte for byte, whole and in order: the replies' bytes are
// cut at their own boundaries and nothing else is lost, added or altered.
func TestMQTTRepliesAmongQoSFlows(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v5=%v", v5), func(t *testing.T) {
			ack := mqConnackPkt(v5, 0)
			pubrel := packet(0x62, u16b(0x7172))
			pubcomp := packet(0x70, u16b(0x7172))
			pubrec := packet(0x50, u16b(0x7b7b))
			puback := packet(0x40, u16b(0x7101))
			pub2 := mqPublishPkt(v5, "alerts/x", 2, 0x7172, []byte(`{"type":"ping"}`))
			pub1 := mqPublishPkt(v5, "sensors/1/temp", 1, 0x717f, []byte("\x90\x03\x00\x01\x01"))
			newSub := mqSubscribePkt(v5, 0x7171, filt{"chat/room2", 1})
			newSuback := mqSubackPkt(v5, 0x7171, 1)
			stream := [][]byte{
				ack, pub2, mqSubackPkt(v5, 1, 1), pubrel, pubcomp, pubrec,
				mqSubackPkt(v5, 2, 2, 0), puback, pub1, newSuback, mqPingresp,
			}
			want := bytes.Join([][]byte{pub2, pubrel, pubcomp, pubrec, puback, pub1, newSuback, mqPingresp}, nil)
			all := bytes.Join(stream, nil)
			for cut := 0; cut <= len(all); cut++ {
				for cut2 := cut; cut2 <= len(all); cut2++ {
					h := mqttAnswered(t, v5)
					h.replay()
					h.bin(newSub) // the client subscribes again while the replay's replies come
					got, accepted := h.upCut(all, cut, cut2)
					if !bytes.Equal(got, want) || accepted != 1 {
						t.Fatalf("cuts %d %d: client got %x (accepted %d), want %x", cut, cut2, got, accepted, want)
					}
					checkPackets(t, got)
				}
			}
		})
	}
}

// TestMQTTUpstreamResetOnReplay: the upstream side's byte-stream state
// belongs to one connection. A connection lost inside a reply being
// dropped, or while a CONNACK's first bytes were held, leaves nothing
// behind: the next connection's first byte is a fixed header, its replies
// are dropped whole and its other packets pass byte for byte, and the held
// bytes never reach the client. A connection lost inside a packet whose
// first bytes reached the client leaves the client's stream cut: the
// State is broken (the session closes the client with 1012) and replays
// nothing.
func TestMQTTUpstreamResetOnReplay(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v5=%v", v5), func(t *testing.T) {
			ack := mqConnackPkt(v5, 0)
			pub := mqPublishPkt(v5, "sensors/1/temp", 1, 0x7171, []byte("payload"))
			next := bytes.Join([][]byte{ack, mqSubackPkt(v5, 1, 1), mqSubackPkt(v5, 2, 2, 0), pub}, nil)
			fresh := func(t *testing.T, h *sess, what string) {
				t.Helper()
				if h.st.Broken() {
					t.Fatalf("%s: broken", what)
				}
				drop, out, ev := h.up(Binary, string(next))
				if drop || out != string(pub) || ev != EventAccepted {
					t.Fatalf("%s: got drop %v %x %v, want %x", what, drop, out, ev, pub)
				}
			}
			t.Run("loss inside a dropped reply", func(t *testing.T) {
				suback := mqSubackPkt(v5, 1, 1)
				for cut := 1; cut < len(suback); cut++ {
					h := mqttAnswered(t, v5)
					h.replay()
					h.upWant(Binary, string(ack), true, EventAccepted)
					h.upWant(Binary, string(suback[:cut]), true, EventNone) // the rest died with the connection
					h.replay()
					fresh(t, h, fmt.Sprintf("cut %d", cut))
				}
			})
			t.Run("loss while a reply is held", func(t *testing.T) {
				for cut := 1; cut < 4; cut++ { // the fixed header and the first body byte
					h := mqttAnswered(t, v5)
					h.replay()
					h.upWant(Binary, string(ack[:cut]), true, EventNone) // held, then the connection died
					h.replay()
					fresh(t, h, fmt.Sprintf("cut %d", cut))
				}
			})
			t.Run("loss inside a forwarded packet", func(t *testing.T) {
				for cut := 1; cut < len(pub); cut++ {
					h := mqttAnswered(t, v5)
					h.upBin(pub[:cut]) // the client has these bytes
					if h.st.Broken() {
						t.Fatal("broken before the replay")
					}
					wantPlan(t, h.replay(), nil)
					if !h.st.Broken() {
						t.Fatalf("cut %d: not broken", cut)
					}
					h.upBin(next) // from here on everything passes
				}
			})
			t.Run("loss between packets", func(t *testing.T) {
				h := mqttAnswered(t, v5)
				h.upBin(pub)
				wantPlan(t, h.replay(), strs(mqConnectPkt(v5)), strs(mqSubscribePkt(v5, 1, filt{"sensors/+/temp", 1}), mqSubscribePkt(v5, 2, filt{"alerts/#", 2}, filt{"chat/room1", 0}))...)
				fresh(t, h, "whole PUBLISH")
			})
		})
	}
}
