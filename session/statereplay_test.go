package session

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/replay"
)

// An MQTT upstream lost after it sent the first bytes of a packet (a
// broker that cuts a packet across WebSocket messages): the client's
// parser waits for the rest, which no new connection sends, so the client
// gets Close 1012 at once, without a dial (README "State replay on
// upstream reconnect"). Lost between two packets, the same session
// reconnects and replays its CONNECT (and waits for the CONNACK the
// test's upstream never sends).
func TestStateReplayMQTTUpstreamCutInPacket(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		sent []byte // what the lost upstream sent after the CONNACK
		cut  bool
	}{
		{"inside a PUBLISH", mqttPublish[:6], true},
		{"inside a fixed header", mqttPublish[:1], true},
		{"between packets", mqttPublish, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				r := mqttRig(t, 0)
				if err := r.up.send(ws.NewBinaryFrame(mqttConnack), ws.NewBinaryFrame(tc.sent)); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if got, want := dataOf(r.client), append(append([]byte{}, mqttConnack...), tc.sent...); !bytes.Equal(got, want) {
					t.Fatalf("client got %x before the loss, want %x", got, want)
				}
				_ = r.up.conn.Close() // lost without a Close: 1006
				r.at(5 * time.Second) // no backoff jitter: a dial at once, then the wait for the CONNACK
				code, dials := hbCloseCode(r.client.got()), len(r.dialTimes())
				if tc.cut {
					if code != int(CloseServiceRestart) || !r.ended() || dials != 0 {
						t.Fatalf("client Close %d, ended %v, %d dials; want Close 1012, the session ended, no dial", code, r.ended(), dials)
					}
					return
				}
				if ups := r.newUps(); code != 0 || r.ended() || len(ups) != 1 || !bytes.Equal(dataOf(ups[0]), mqttConnect) {
					t.Fatalf("client Close %d, ended %v, %d dials; want no Close and one dial that got the CONNECT replayed", code, r.ended(), dials)
				}
			})
		})
	}
}

// An MQTT client whose stream stops parsing while the upstream is down (a
// text message): the session holds no state it can replay any more, so
// the client gets Close 1012 when the next connection is up, and that
// connection gets nothing (README "State replay on upstream reconnect").
func TestStateReplayMQTTBrokenWhileReconnecting(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := mqttRig(t, time.Second)
		if err := r.up.send(ws.NewBinaryFrame(mqttConnack)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		_ = r.up.conn.Close()
		synctest.Wait()
		if err := r.client.send(ws.NewTextFrame([]byte("not MQTT"))); err != nil {
			t.Fatal(err)
		}
		r.at(5 * time.Second)
		ups := r.newUps()
		if code := hbCloseCode(r.client.got()); code != int(CloseServiceRestart) || !r.ended() || len(ups) != 1 || len(dataOf(ups[0])) != 0 {
			t.Fatalf("client Close %d, ended %v, %d connections; want Close 1012, the session ended, one connection that got nothing", code, r.ended(), len(ups))
		}
	})
}

// MQTT 3.1.1 CONNECT (keep-alive 60 s, empty client id), CONNACK, and a
// QoS 1 PUBLISH to "a" whose packet id 0x7171 reads as a PUBCOMP header
// with bad flags to a client that takes it for a header.
var (
	mqttConnect = []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0}
	mqttConnack = []byte{0x20, 2, 0, 0}
	mqttPublish = []byte{0x32, 8, 0, 1, 'a', 0x71, 0x71, 'x', 'y', 'z'}
)

// mqttRig is an MQTT session (no heartbeats) whose client has sent its
// CONNECT; reconnect dials succeed after dialDelay.
func mqttRig(t *testing.T, dialDelay time.Duration) *hbRig {
	cfg := hbCfg(hbOff, hbOff)
	cfg.Replay.Protocol = replay.MQTT
	r := newHBRig(t, cfg, hbOpts{dialOK: true, dialDelay: dialDelay})
	if err := r.client.send(ws.NewBinaryFrame(mqttConnect)); err != nil {
		t.Fatal(err)
	}
	return r
}

// upData is the data an upstream peer got, joined.
func dataOf(p *hbPeer) []byte {
	var b []byte
	for _, f := range hbData(p.got()) {
		b = append(b, f.p...)
	}
	return b
}

// A client stream cut across messages at random points (mqtt.js writes
// an MQTT packet's header, length and body as messages of their own;
// @stomp/stompjs with splitLargeFrames cuts a long STOMP frame into
// chunks), acknowledgement pings answered late at random (after the
// client has sent more), and the upstream lost at a random moment: the new
// connection gets the replayed opening, then whole packets from the first
// one the lost connection did not provably receive, in order, none
// missing (README "State replay on upstream reconnect"). A re-send that
// starts inside a packet makes a broker read the rest of the stream as
// one packet; with RabbitMQ's MQTT, its deliveries stopped.
func TestStateReplayResendStartsAtPacket(t *testing.T) {
	t.Parallel()
	for _, proto := range []replay.Protocol{replay.MQTT, replay.STOMP} {
		for seed := range uint64(40) {
			t.Run(proto.String()+"/"+strconv.FormatUint(seed, 10), func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) { resendAtPacket(t, proto, seed) })
			})
		}
	}
}

// cutStream is a client stream of sixty packets of proto after its
// opening: MQTT PUBACKs and QoS 0 PUBLISHes, STOMP SENDs with and without
// content-length.
func cutStream(proto replay.Protocol, i int) []byte {
	if proto == replay.STOMP {
		if i%2 == 0 {
			return []byte("SEND\ndestination:/queue/a\n\nmessage " + strconv.Itoa(i) + "\x00")
		}
		body := "body\x00" + strconv.Itoa(i)
		return []byte("SEND\ndestination:/queue/a\ncontent-length:" + strconv.Itoa(len(body)) + "\n\n" + body + "\x00")
	}
	if i%2 == 0 {
		return []byte{0x40, 2, 0, byte(i)}
	}
	pkt := append([]byte{0x30, 0, 0, 1, 'a'}, strconv.Itoa(i)...)
	pkt[1] = byte(len(pkt) - 2)
	return pkt
}

func resendAtPacket(t *testing.T, proto replay.Protocol, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, 7))
	cfg := hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0))
	cfg.Replay.Protocol = proto
	open, answer, op := mqttConnect, mqttConnack, ws.OpBinary
	if proto == replay.STOMP {
		open, answer, op = []byte("CONNECT\naccept-version:1.2\n\n\x00"), []byte("CONNECTED\nversion:1.2\n\n\x00"), ws.OpText
	}
	r := newHBRig(t, cfg, hbOpts{dialOK: true})
	if err := r.client.send(ws.NewFrame(op, true, open)); err != nil {
		t.Fatal(err)
	}
	if err := r.up.send(ws.NewFrame(op, true, answer)); err != nil {
		t.Fatal(err)
	}
	var stream []byte // every packet, in order
	var ends []int    // stream offsets where a packet ends
	var pieces [][]byte
	for i := range 60 {
		pkt := cutStream(proto, i)
		for len(pkt) > 0 {
			n := 1 + rnd.IntN(len(pkt))
			pieces = append(pieces, pkt[:n])
			stream = append(stream, pkt[:n]...)
			pkt = pkt[n:]
		}
		ends = append(ends, len(stream))
	}
	var old []byte      // what the first upstream got
	var pings []hbFrame // its pings not answered yet
	collect := func() {
		for _, f := range r.up.take() {
			switch f.op {
			case ws.OpPing:
				pings = append(pings, f)
			case op:
				old = append(old, f.p...)
			}
		}
	}
	lossAt := rnd.IntN(len(pieces))
	for i, p := range pieces {
		if i == lossAt {
			collect()
			_ = r.up.conn.Close()
			synctest.Wait()
		}
		if err := r.client.send(ws.NewFrame(op, true, p)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rnd.IntN(30)) * time.Millisecond)
		synctest.Wait()
		if i >= lossAt {
			continue
		}
		collect()
		// Answer the pings so far now, or leave them for later pieces.
		if len(pings) > 0 && rnd.IntN(3) == 0 {
			for _, f := range pings {
				if err := r.up.send(ws.NewPongFrame(f.p)); err != nil {
					t.Fatal(err)
				}
			}
			pings = nil
			synctest.Wait()
		}
	}
	time.Sleep(time.Second) // the reconnect (no backoff jitter), its opening replayed
	synctest.Wait()
	ups := r.newUps()
	if len(ups) != 1 {
		t.Fatalf("%d reconnect dials, want 1", len(ups))
	}
	if got := dataOf(ups[0]); !bytes.Equal(got, open) {
		t.Fatalf("new upstream got %q before the answer, want the opening %q", got, open)
	}
	if err := ups[0].send(ws.NewFrame(op, true, answer)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	synctest.Wait()
	got := dataOf(ups[0])[len(open):]
	// got must be stream from a packet's start on, and the lost
	// connection must have had everything before it.
	from := len(stream) - len(got)
	if from < 0 || !bytes.Equal(got, stream[from:]) {
		t.Fatalf("new upstream got %q after the opening: not the end of the client's stream %q", got, stream)
	}
	if from > 0 && !slices.Contains(ends, from) {
		t.Fatalf("the re-send starts at offset %d, inside a packet (packets end at %v); the lost connection got %q", from, ends, old)
	}
	if sent := old[min(len(old), len(open)):]; len(sent) < from || !bytes.Equal(sent[:from], stream[:from]) {
		t.Fatalf("the re-send starts at offset %d, but the lost connection got only %q", from, sent)
	}
}
