package session

import (
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/replay"
)

// retained returns how many client messages the session holds.
func (r *hbRig) retained() int {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.upLog.len()
}

// Acknowledgement pings (README "Upstream loss, reconnect and the delivery
// guarantee"): a retained message is acknowledged ackPingDelay after it was
// sent, not at the next interval ping; an idle session sends no extra
// ping.
func TestAckPingSoonAfterSend(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0)), hbOpts{})
		r.at(time.Second)
		r.client.text("m1")
		synctest.Wait()
		if n := len(hbOps(r.up.got(), ws.OpPing)); n != 0 {
			t.Fatalf("%d pings at the send, want none yet (a burst shares one)", n)
		}
		time.Sleep(ackPingDelay)
		synctest.Wait()
		pings := hbOps(r.up.got(), ws.OpPing)
		if len(pings) != 1 {
			t.Fatalf("%d pings %v after the send, want one acknowledgement ping", len(pings), ackPingDelay)
		}
		if got := pings[0].at.Sub(r.start); got != time.Second+ackPingDelay {
			t.Fatalf("acknowledgement ping at %v, want %v", got, time.Second+ackPingDelay)
		}
		if r.retained() != 1 {
			t.Fatal("message not retained while its ping is unanswered")
		}
		if err := r.up.send(ws.NewPongFrame(pings[0].p)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := r.retained(); n != 0 {
			t.Fatalf("%d messages retained after the pong, want 0", n)
		}
		// Idle: no ping until the interval's.
		r.at(10*time.Second - time.Millisecond)
		if n := len(hbOps(r.up.got(), ws.OpPing)); n != 1 {
			t.Fatalf("%d pings before the interval while idle, want 1", n)
		}
		r.at(10 * time.Second)
		if n := len(hbOps(r.up.got(), ws.OpPing)); n != 2 {
			t.Fatalf("%d pings at the interval, want 2", n)
		}
	})
}

// A busy session sends at most one acknowledgement ping per ackSpacing, and
// its messages are acknowledged within about that.
func TestAckPingBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0)), hbOpts{upAutoPong: true})
		const n = 1000 // one per ms for a second
		for i := range n {
			r.client.text(strconv.Itoa(i))
			time.Sleep(time.Millisecond)
		}
		synctest.Wait()
		pings := len(hbOps(r.up.got(), ws.OpPing))
		if max := int(time.Second/ackSpacing) + 1; pings > max || pings < max/2 {
			t.Fatalf("%d acknowledgement pings in a busy second, want at most %d (and not far fewer)", pings, max)
		}
		time.Sleep(ackSpacing + ackPingDelay)
		synctest.Wait()
		if k := r.retained(); k != 0 {
			t.Fatalf("%d messages retained %v after the last send, want 0", k, ackSpacing+ackPingDelay)
		}
		t.Logf("%d acknowledgement pings for %d messages in 1s", pings, n)
	})
}

// json mode: pings are messages the backend sees; no acknowledgement
// pings, only the interval's.
func TestAckPingNotInJSONMode(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r := newHBRig(t, hbCfg(hbOff, hbLeg(heartbeat.ModeJSON, 10*time.Second, 0)), hbOpts{})
		r.client.text("m1")
		r.at(time.Second)
		for _, f := range r.up.got() {
			if f.op == ws.OpPing || string(f.p) == `{"type":"ping"}` {
				t.Fatalf("upstream got %v before the interval", f)
			}
		}
	})
}

// MQTT (README "State replay on upstream reconnect"): a retained message
// that ends inside a packet is not acknowledged until the packet's end is
// acknowledged too, so a re-send never starts in the middle of a packet.
func TestAckMQTTPacketBoundary(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cfg := hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 0))
		cfg.Replay.Protocol = replay.MQTT
		r := newHBRig(t, cfg, hbOpts{})
		// MQTT 3.1.1 CONNECT, keep-alive 60 s, empty client id, cut in two.
		connect := []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0}
		pong := func() {
			t.Helper()
			time.Sleep(ackPingDelay + ackSpacing)
			synctest.Wait()
			pings := hbOps(r.up.take(), ws.OpPing)
			if len(pings) != 1 {
				t.Fatalf("%d pings, want one acknowledgement ping", len(pings))
			}
			if err := r.up.send(ws.NewPongFrame(pings[0].p)); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		if err := r.client.send(ws.NewBinaryFrame(connect[:6])); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		pong()
		if n := r.retained(); n != 1 {
			t.Fatalf("%d messages retained after the pong, want 1: its packet is not complete", n)
		}
		if err := r.client.send(ws.NewBinaryFrame(connect[6:])); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		pong()
		if n := r.retained(); n != 0 {
			t.Fatalf("%d messages retained after the packet's end was acknowledged, want 0", n)
		}
	})
}
