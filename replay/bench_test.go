package replay

import (
	"bytes"
	"strings"
	"testing"
)

// preset is a session of one protocol with state kept, and a message of
// each direction that is not state (the per-message path).
type preset struct {
	name       string
	proto      Protocol
	setup      func(h *sess)
	op         Opcode
	client, up []byte
}

func presets() []preset {
	payload := strings.Repeat(`{"price":101.25,"symbol":"ACME"},`, 30)
	pub := mqPublishPkt(false, "sensors/1/temp", 0, 0, bytes.Repeat([]byte("x"), 1000))
	return []preset{
		{
			name: "graphql-transport-ws", proto: GraphQLTransportWS, op: Text,
			setup: func(h *sess) {
				h.text(gtInit)
				h.upPass(Text, gtAck)
				h.text(gtSubA, gtSubB)
			},
			client: []byte(gtPing),
			up:     []byte(`{"id":"4b1e6ddc-1","type":"next","payload":{"data":{"ticks":[` + payload + `{}]}}}`),
		},
		{
			name: "graphql-ws", proto: GraphQLWS, op: Text,
			setup: func(h *sess) {
				h.text(gwInit)
				h.upPass(Text, gwAck)
				h.text(gwStart1, gwStart2)
			},
			client: []byte(`{"type":"custom","payload":{}}`),
			up:     []byte(`{"type":"data","id":"1","payload":{"data":{"ticks":[` + payload + `{}]}}}`),
		},
		{
			name: "stomp", proto: STOMP, op: Text,
			setup: func(h *sess) {
				h.text(stConnect)
				h.upPass(Text, stConnected)
				h.text(stSub0, stSub2)
			},
			client: []byte("SEND\ndestination:/app/chat\ncontent-type:application/json\ncontent-length:" + itoa(len(payload)) + "\n\n" + payload + "\x00"),
			up:     []byte("MESSAGE\ndestination:/topic/chat\nsubscription:sub-0\nmessage-id:1\ncontent-length:" + itoa(len(payload)) + "\n\n" + payload + "\x00"),
		},
		{
			name: "mqtt", proto: MQTT, op: Binary,
			setup: func(h *sess) {
				h.bin(mqConnectPkt(false))
				h.upBin(mqConnackPkt(false, 0))
				h.bin(mqSubscribePkt(false, 1, filt{"sensors/#", 0}))
				h.upBin(mqSubackPkt(false, 1, 0))
			},
			client: pub,
			up:     pub,
		},
		{
			name: "json", proto: JSON, op: Text,
			setup: func(h *sess) {
				h.text(jsAuth, jsSubA, jsSubB)
			},
			client: []byte(`{"type":"publish","channel":"chat","text":"` + strings.Repeat("hi ", 100) + `"}`),
			up:     []byte(`{"type":"event","id":"a","data":[` + payload + `{}]}`),
		},
	}
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

func presetSess(t testing.TB, p preset) *sess {
	h := jsonSess(t)
	if p.proto != JSON {
		h = newSess(t, p.proto)
	}
	p.setup(h)
	return h
}

// TestNoAllocs: a message that is not state allocates nothing, in either
// direction, connected and while replies to a replay are awaited.
func TestNoAllocs(t *testing.T) {
	for _, p := range presets() {
		for _, replaying := range []bool{false, true} {
			h := presetSess(t, p)
			if replaying {
				h.replay()
			}
			kept := h.st.Bytes()
			n := testing.AllocsPerRun(100, func() {
				if err := h.st.FromClient(p.op, p.client, h.seq); err != nil {
					t.Fatal(err)
				}
				h.seq++
			})
			if n != 0 {
				t.Errorf("%s (replaying %v): FromClient allocates %v times", p.name, replaying, n)
			}
			n = testing.AllocsPerRun(100, func() {
				if v := h.st.FromUpstream(p.op, p.up); v.Drop || !bytes.Equal(v.Msg, p.up) {
					t.Fatalf("%s: upstream message not passed", p.name)
				}
			})
			if n != 0 {
				t.Errorf("%s (replaying %v): FromUpstream allocates %v times", p.name, replaying, n)
			}
			if h.st.Bytes() != kept {
				t.Errorf("%s: non-state messages changed the kept bytes", p.name)
			}
		}
	}
}

func BenchmarkFromClient(b *testing.B) {
	for _, p := range presets() {
		b.Run(p.name, func(b *testing.B) {
			h := presetSess(b, p)
			b.SetBytes(int64(len(p.client)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				_ = h.st.FromClient(p.op, p.client, uint64(i)+100)
			}
		})
	}
}

func BenchmarkFromUpstream(b *testing.B) {
	for _, p := range presets() {
		b.Run(p.name, func(b *testing.B) {
			h := presetSess(b, p)
			b.SetBytes(int64(len(p.up)))
			b.ReportAllocs()
			for b.Loop() {
				_ = h.st.FromUpstream(p.op, p.up)
			}
		})
	}
}
