package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/internal/testkit"
)

// These tests record what real client libraries send (mqtt.js,
// @stomp/stompjs, graphql-ws, run by testdata/node/clients.js against a
// WebSocket server here that answers as a broker would), feed the
// recording through a State, and check what it would replay and which
// replies it would keep from the client.

var nodeCheck = sync.OnceValues(func() (string, string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "node not found on PATH; install it with `apt-get install -y nodejs` to run the client library tests"
	}
	if _, err := os.Stat(filepath.Join("testdata", "node", "node_modules", "mqtt", "package.json")); err != nil {
		return "", "replay/testdata/node/node_modules missing; run `(cd replay/testdata/node && npm ci --no-audit --no-fund)` to run the client library tests"
	}
	return node, ""
})

// wire is one recorded message.
type wire struct {
	client bool
	op     Opcode
	p      []byte
}

// record runs clients.js in mode against a server that selects subprotocol
// sub and answers each client message with answer's replies; the server
// closes the connection when answer says so.
func record(t *testing.T, mode, sub string, answer func(p []byte) (replies [][]byte, op Opcode, end bool)) []wire {
	t.Helper()
	node, why := nodeCheck()
	if node == "" {
		testkit.Missing(t, why)
	}
	var (
		mu  sync.Mutex
		log []wire
	)
	done := make(chan struct{})
	up := websocket.Upgrader{Subprotocols: []string{sub}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer close(done)
		defer c.Close()
		if c.Subprotocol() != sub {
			t.Errorf("subprotocol %q, want %q", c.Subprotocol(), sub)
			return
		}
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				t.Errorf("server read: %v", err)
				return
			}
			mu.Lock()
			log = append(log, wire{client: true, op: Opcode(mt), p: p})
			mu.Unlock()
			replies, op, end := answer(p)
			for _, r := range replies {
				mu.Lock()
				log = append(log, wire{op: op, p: r})
				mu.Unlock()
				if err := c.WriteMessage(int(op), r); err != nil {
					t.Errorf("server write: %v", err)
					return
				}
			}
			if end {
				_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
				return
			}
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "clients.js", mode, "ws"+strings.TrimPrefix(srv.URL, "http")+"/session")
	cmd.Dir = filepath.Join("testdata", "node")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("node clients.js %s: %v\n%s", mode, err, out)
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	return log
}

// feed plays a recording through a fresh State: every upstream message
// must pass unchanged. It returns the State and the next sequence number.
func feed(t *testing.T, p Protocol, log []wire) (*State, uint64) {
	t.Helper()
	c := Defaults()
	st := New(p, &c)
	var seq uint64
	for _, w := range log {
		b := bytes.Clone(w.p)
		if w.client {
			if err := st.FromClient(w.op, b, seq); err != nil {
				t.Fatal(err)
			}
			seq++
		} else if v := st.FromUpstream(w.op, b); v.Drop || !bytes.Equal(v.Msg, w.p) || v.Event != EventNone {
			t.Fatalf("upstream %q: %+v", w.p, v)
		}
		scribble(b)
	}
	return st, seq
}

// mqttPackets splits a complete MQTT byte stream into packets (the
// test's own reading of MQTT, independent of the package's).
func mqttPackets(t *testing.T, b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n, i := 0, 1
		for shift := 0; ; shift += 7 {
			n |= int(b[i]&0x7f) << shift
			i++
			if b[i-1]&0x80 == 0 {
				break
			}
		}
		if i+n > len(b) {
			t.Fatalf("cut packet %x", b)
		}
		out = append(out, b[:i+n])
		b = b[i+n:]
	}
	return out
}

// mqttBody returns a packet's body.
func mqttBody(pkt []byte) []byte {
	i := 1
	for pkt[i]&0x80 != 0 {
		i++
	}
	return pkt[i+1:]
}

// mqttFilters returns a SUBSCRIBE's or UNSUBSCRIBE's packet id and topic
// filters.
func mqttFilters(pkt []byte, v5, options bool) (int, []string) {
	body := mqttBody(pkt)
	pid := int(body[0])<<8 | int(body[1])
	i := 2
	if v5 {
		i += 1 + int(body[2]) // the tests' properties are short
	}
	var fs []string
	for i < len(body) {
		n := int(body[i])<<8 | int(body[i+1])
		fs = append(fs, string(body[i+2:i+2+n]))
		i += 2 + n
		if options {
			i++
		}
	}
	return pid, fs
}

func TestMQTTJS(t *testing.T) {
	for _, v := range []string{"4", "5"} {
		t.Run("v"+v, func(t *testing.T) {
			v5 := v == "5"
			var stream []byte
			log := record(t, "mqtt-"+v, "mqtt", func(p []byte) ([][]byte, Opcode, bool) {
				stream = append(stream, p...)
				var replies [][]byte
				for {
					pkts := mqttPacketsPrefix(stream)
					if len(pkts) == 0 {
						return replies, Binary, false
					}
					pkt := pkts[0]
					stream = stream[len(pkt):]
					switch pkt[0] >> 4 {
					case 1:
						replies = append(replies, mqConnackPkt(v5, 0))
					case 8:
						pid, fs := mqttFilters(pkt, v5, true)
						codes := bytes.Repeat([]byte{1}, len(fs))
						replies = append(replies, mqSubackPkt(v5, pid, codes...))
					case 10:
						pid, fs := mqttFilters(pkt, v5, false)
						if v5 {
							replies = append(replies, packet(0xb0, u16b(pid), []byte{0}, make([]byte, len(fs))))
						} else {
							replies = append(replies, packet(0xb0, u16b(pid)))
						}
					case 3:
						return replies, Binary, true
					}
				}
			})
			var all []byte
			messages := 0
			for _, w := range log {
				if w.client {
					if w.op != Binary {
						t.Fatalf("mqtt.js sent a %d message", w.op)
					}
					all = append(all, w.p...)
					messages++
				}
			}
			pkts := mqttPackets(t, all)
			t.Logf("mqtt.js v%s: %d packets in %d messages", v, len(pkts), messages)
			st, seq := feed(t, MQTT, log)
			pl := st.Replay(seq)
			if len(pl.Opening) != 1 || !bytes.Equal(pl.Opening[0].P, pkts[0]) || pkts[0][0] != 0x10 {
				t.Fatalf("opening %x, want the CONNECT %x", msgs(pl.Opening), pkts[0])
			}
			// Replayed: the first SUBSCRIBE without alerts/#, the second
			// one, each one packet per message, with their packet ids.
			var subs [][]byte
			for _, p := range pkts {
				if p[0] == 0x82 {
					subs = append(subs, p)
				}
			}
			if len(pl.Rest) != 2 || len(subs) != 2 {
				t.Fatalf("replayed %d, client subscribed %d times", len(pl.Rest), len(subs))
			}
			wantFilters := []string{"[sensors/+/temp]", "[chat/room1]"}
			var pids []int
			for i, m := range pl.Rest {
				if got := mqttPackets(t, m.P); len(got) != 1 {
					t.Fatalf("replay message %d holds %d packets", i, len(got))
				}
				pid, fs := mqttFilters(m.P, v5, true)
				opid, _ := mqttFilters(subs[i], v5, true)
				if pid != opid || strings.Join(fs, " ") != strings.Trim(wantFilters[i], "[]") {
					t.Errorf("replayed SUBSCRIBE %d: id %d filters %v, want id %d %s", i, pid, fs, opid, wantFilters[i])
				}
				pids = append(pids, pid)
			}
			// The new connection answers: the CONNACK and both SUBACKs are
			// kept from the client, a PUBLISH is not.
			h := &sess{t: t, st: st, seq: seq}
			h.upWant(Binary, string(mqConnackPkt(v5, 0)), true, EventAccepted)
			h.upWant(Binary, string(mqSubackPkt(v5, pids[1], 0)), true, EventNone)
			h.upBin(mqPublishPkt(v5, "chat/room1", 0, 0, []byte("after")))
			h.upWant(Binary, string(mqSubackPkt(v5, pids[0], 1)), true, EventNone)
		})
	}
}

// mqttPacketsPrefix returns the complete packets at the start of b.
func mqttPacketsPrefix(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 2 {
		n, i := 0, 1
		for shift := 0; ; shift += 7 {
			if i >= len(b) {
				return out
			}
			n |= int(b[i]&0x7f) << shift
			i++
			if b[i-1]&0x80 == 0 {
				break
			}
		}
		if i+n > len(b) {
			return out
		}
		out = append(out, b[:i+n])
		b = b[i+n:]
	}
	return out
}

func TestStompJS(t *testing.T) {
	stompHdr := func(frame []byte, name string) string {
		for _, line := range strings.Split(string(frame), "\n")[1:] {
			if line == "" {
				break
			}
			if k, v, ok := strings.Cut(line, ":"); ok && k == name {
				return v
			}
		}
		return ""
	}
	log := record(t, "stomp", "v12.stomp", func(p []byte) ([][]byte, Opcode, bool) {
		cmd, _, _ := strings.Cut(string(p), "\n")
		var replies [][]byte
		if cmd == "CONNECT" || cmd == "STOMP" {
			replies = append(replies, []byte("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00"))
		}
		if r := stompHdr(p, "receipt"); r != "" {
			replies = append(replies, []byte("RECEIPT\nreceipt-id:"+r+"\n\n\x00"))
		}
		return replies, Text, cmd == "SEND" && stompHdr(p, "destination") == "/app/bye"
	})
	var connect, orders []byte
	for _, w := range log {
		if w.client && bytes.HasPrefix(w.p, []byte("CONNECT\n")) {
			connect = w.p
		}
		if w.client && bytes.HasPrefix(w.p, []byte("SUBSCRIBE\n")) && stompHdr(w.p, "destination") == "/queue/orders" {
			orders = w.p
		}
	}
	if connect == nil || orders == nil {
		t.Fatalf("no CONNECT or SUBSCRIBE recorded: %v", log)
	}
	st, seq := feed(t, STOMP, log)
	wantPlan(t, st.Replay(seq), []string{string(connect)}, string(orders))
	h := &sess{t: t, st: st, seq: seq}
	h.upWant(Text, "CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00", true, EventAccepted)
	h.upWant(Text, "RECEIPT\nreceipt-id:r-2\n\n\x00", false, EventNone) // not asked for by the replay
	h.upWant(Text, "RECEIPT\nreceipt-id:r-1\n\n\x00", true, EventNone)
}

func TestGraphQLWSLibrary(t *testing.T) {
	type msg struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	log := record(t, "graphql-ws", "graphql-transport-ws", func(p []byte) ([][]byte, Opcode, bool) {
		var m msg
		if err := json.Unmarshal(p, &m); err != nil {
			t.Errorf("client sent %q: %v", p, err)
		}
		switch m.Type {
		case "connection_init":
			return [][]byte{[]byte(`{"type":"connection_ack"}`)}, Text, false
		case "subscribe":
			return [][]byte{[]byte(`{"id":"` + m.ID + `","type":"next","payload":{"data":{"greetings":"Hi"}}}`)}, Text, false
		}
		return nil, Text, m.Type == "complete"
	})
	var init, second []byte
	subs := 0
	for _, w := range log {
		var m msg
		if !w.client || json.Unmarshal(w.p, &m) != nil {
			continue
		}
		switch m.Type {
		case "connection_init":
			init = w.p
		case "subscribe":
			if subs++; bytes.Contains(w.p, []byte("OnPrice")) {
				second = w.p
			}
		}
	}
	if init == nil || second == nil || subs != 2 {
		t.Fatalf("recorded %v", log)
	}
	st, seq := feed(t, GraphQLTransportWS, log)
	wantPlan(t, st.Replay(seq), []string{string(init)}, string(second))
	h := &sess{t: t, st: st, seq: seq}
	h.upWant(Text, `{"type":"connection_ack"}`, true, EventAccepted)
}
