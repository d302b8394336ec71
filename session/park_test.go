package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/netpoll"
)

// Parking needs real sockets (net.Pipe has no file descriptor), so these
// tests run over loopback TCP; their waits are for states, not times.

// parkPair returns the two ends of a loopback TCP connection: tether's end
// and the peer's.
func parkPair(t *testing.T) (tether, peer net.Conn) {
	t.Helper()
	peer, tether = hbTCPPair(t)
	t.Cleanup(func() { tether.Close(); peer.Close() })
	return tether, peer
}

type parkRig struct {
	t        *testing.T
	env      *Env
	s        *Session
	client   net.Conn // the client peer's end
	upstream net.Conn // the first upstream peer's end
	done     chan struct{}
	dials    chan net.Conn // peer ends of reconnected upstreams
	metrics  *hbMetrics
}

func newParkRig(t *testing.T, cfg Config) *parkRig {
	t.Helper()
	return newParkRigWith(t, cfg, nil)
}

// newParkRigWith is newParkRig with setup applied to the Env before the
// session starts.
func newParkRigWith(t *testing.T, cfg Config, setup func(*Env)) *parkRig {
	t.Helper()
	if !netpoll.Supported() {
		t.Skip("parking needs epoll (Linux)")
	}
	m := newHBMetrics()
	env, err := NewEnv(cfg, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	env.IdleAfter = 10 * time.Millisecond
	env.test = &testHooks{parkMin: time.Millisecond} // the tests' heartbeats are fast
	env.CloseWait = 200 * time.Millisecond
	env.Jitter = func(int64) int64 { return 0 }
	if setup != nil {
		setup(env)
	}
	r := &parkRig{t: t, env: env, done: make(chan struct{}), dials: make(chan net.Conn, 4), metrics: m}
	ct, cp := parkPair(t)
	ut, up := parkPair(t)
	r.client, r.upstream = cp, up
	dial := func(ctx context.Context) (Upstream, error) {
		tt, pp := parkPair(t)
		select {
		case r.dials <- pp:
		case <-ctx.Done():
			// Nobody takes more connections (a test that is over
			// closes its peers, and the session reconnects until it
			// is closed): a dialer gives up when the session ends.
			tt.Close()
			pp.Close()
			return Upstream{}, ctx.Err()
		}
		return Upstream{Conn: tt}, nil
	}
	r.s = New(env, "park", ct, nil, Upstream{Conn: ut}, dial)
	r.s.Start(context.Background(), finished(func() { close(r.done) }))
	t.Cleanup(func() {
		r.s.Close()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Errorf("the session did not finish after Close; its goroutines:\n%s", buf[:n])
		}
	})
	return r
}

// finished is an EndFunc that calls f once the session has finished.
func finished(f func()) EndFunc {
	return func(st Stage, _ Outcome) {
		if st == Finished {
			f()
		}
	}
}

// waitParked waits until the given legs are parked.
func (r *parkRig) waitParked(legs ...*leg) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		all := true
		for _, l := range legs {
			if l.state.Load() != legParked {
				all = false
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatal("legs did not park")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// exchange sends "hello" from the client peer and "world" back from the
// upstream peer, each checked where it arrives.
func (r *parkRig) exchange() {
	t := r.t
	t.Helper()
	if err := wsutil.WriteClientText(r.client, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got := readClientMsg(t, r.upstream); got != "hello" {
		t.Fatalf("upstream got %q", got)
	}
	if err := wsutil.WriteServerText(r.upstream, []byte("world")); err != nil {
		t.Fatal(err)
	}
	if got := readServerMsg(t, r.client); got != "world" {
		t.Fatalf("client got %q", got)
	}
}

func (r *parkRig) up() *leg {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.up
}

func (r *parkRig) waitDone() {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		r.t.Fatal("the session did not finish")
	}
}

// readServerMsg reads the next data message the client peer gets
// (answering pings on the way).
func readServerMsg(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := wsutil.ReadServerText(c)
	if err != nil {
		t.Fatalf("client peer read: %v", err)
	}
	return string(p)
}

func readClientMsg(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := wsutil.ReadClientText(c)
	if err != nil {
		t.Fatalf("upstream peer read: %v", err)
	}
	return string(p)
}

// readCloseCode reads frames until a Close and returns its code.
func readCloseCode(t *testing.T, c net.Conn, fromServer bool) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := ws.ReadFrame(c)
		if err != nil {
			t.Fatalf("read close: %v", err)
		}
		if f.Header.Masked {
			ws.Cipher(f.Payload, f.Header.Mask, 0)
		}
		if f.Header.OpCode == ws.OpClose {
			if len(f.Payload) < 2 {
				return int(CloseNoStatus)
			}
			return int(f.Payload[0])<<8 | int(f.Payload[1])
		}
	}
}

// An idle session parks both legs: no read loop, no read buffer. Messages
// wake them, are relayed both ways, and the legs park again.
func TestParkIdleLegsRelay(t *testing.T) {
	r := newParkRig(t, hbCfg(hbOff, hbOff))
	c, u := r.s.client, r.up()
	r.waitParked(c, u)
	if n := r.env.ParkedLegs(); n != 2 {
		t.Fatalf("ParkedLegs = %d, want 2", n)
	}
	for i := 0; i < 3; i++ {
		r.exchange()
		r.waitParked(c, u)
	}
	// A Close from the client ends the session through parked legs.
	if err := ws.WriteFrame(r.client, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))); err != nil {
		t.Fatal(err)
	}
	if code := readCloseCode(t, r.upstream, false); code != 1000 {
		t.Fatalf("upstream got Close %d, want 1000", code)
	}
	_ = ws.WriteFrame(r.upstream, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))
	if code := readCloseCode(t, r.client, true); code != 1000 {
		t.Fatalf("client got Close %d, want 1000", code)
	}
	r.waitDone()
	if n := r.env.ParkedLegs(); n != 0 {
		t.Fatalf("ParkedLegs = %d after the end, want 0", n)
	}
}

// A parked leg has no read in progress, so no read deadline can fire: its
// heartbeat timeout comes from its timer. A client that stops answering is
// found dead while its leg is parked.
func TestParkedHeartbeatTimeout(t *testing.T) {
	cfg := hbCfg(hbLeg(heartbeat.ModeWS, 40*time.Millisecond, 150*time.Millisecond), hbOff)
	r := newParkRig(t, cfg)
	// The client peer never reads: tether's pings go unanswered.
	r.waitParked(r.s.client)
	if code := readCloseCode(t, r.upstream, false); code != int(CloseGoingAway) {
		t.Fatalf("upstream got Close %d, want 1001", code)
	}
	_ = ws.WriteFrame(r.upstream, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "")))
	r.waitDone()
	if n := r.metrics.timeoutsOf(LegClient); n != 1 {
		t.Fatalf("client heartbeat timeouts = %d, want 1", n)
	}
}

// Pongs wake a parked leg and count as life: a peer that answers stays
// connected across many timeouts' worth of parking. (The leg parks 10 ms
// after each pong; the timeout is five intervals, so that a loaded
// machine's late ping or pong is not a miss: this is about parking.)
func TestParkedHeartbeatAnswered(t *testing.T) {
	cfg := hbCfg(hbLeg(heartbeat.ModeWS, 50*time.Millisecond, 250*time.Millisecond), hbOff)
	r := newParkRig(t, cfg)
	pongs := make(chan struct{}, 64)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// Answer pings as a browser does, and count the answers.
		for {
			_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
			h, err := ws.ReadHeader(r.client)
			if err != nil {
				return
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(r.client, p); err != nil {
				return
			}
			if h.OpCode == ws.OpPing {
				if ws.WriteFrame(r.client, ws.MaskFrame(ws.NewPongFrame(p))) != nil {
					return
				}
				select {
				case pongs <- struct{}{}:
				case <-stop:
					return
				}
			}
		}
	}()
	for i := 0; i < 20; i++ { // 20 intervals = 4 timeouts
		select {
		case <-pongs:
		case <-r.done:
			t.Fatal("session ended although every ping was answered")
		case <-time.After(10 * time.Second):
			t.Fatal("no ping")
		}
	}
	if n := r.metrics.timeoutsOf(LegClient); n != 0 {
		t.Fatalf("client heartbeat timeouts = %d, want 0", n)
	}
	if err := wsutil.WriteClientText(r.client, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if got := readClientMsg(t, r.upstream); got != "still here" {
		t.Fatalf("upstream got %q", got)
	}
}

// Closing a parked leg's connection must wake it: a closed socket leaves
// epoll without a readiness report. Session.Close with both legs parked
// finishes the session.
func TestParkedForcedClose(t *testing.T) {
	r := newParkRig(t, hbCfg(hbOff, hbOff))
	r.waitParked(r.s.client, r.up())
	r.s.Close()
	r.waitDone()
}

// A client that hangs up while its leg is parked ends the session.
func TestParkedClientHangup(t *testing.T) {
	r := newParkRig(t, hbCfg(hbOff, hbOff))
	r.waitParked(r.s.client, r.up())
	r.client.Close()
	if code := readCloseCode(t, r.upstream, false); code != int(CloseGoingAway) {
		t.Fatalf("upstream got Close %d, want 1001", code)
	}
	r.waitDone()
}

// An upstream lost while parked is reconnected, and the new upstream leg
// parks and relays too.
func TestParkedUpstreamReconnect(t *testing.T) {
	r := newParkRig(t, hbCfg(hbOff, hbOff))
	old := r.up()
	r.waitParked(r.s.client, old)
	r.upstream.Close() // abnormal closure: reconnect (README "Upstream loss, reconnect and the delivery guarantee")
	var up net.Conn
	select {
	case up = <-r.dials:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect")
	}
	// The new connection is installed once dialled; wait for its leg.
	var nu *leg
	deadline := time.Now().Add(10 * time.Second)
	for nu = r.up(); nu == nil || nu == old; nu = r.up() {
		if time.Now().After(deadline) {
			t.Fatal("new upstream leg not installed")
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.waitParked(r.s.client, nu)
	if err := wsutil.WriteClientText(r.client, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := readClientMsg(t, up); got != "after" {
		t.Fatalf("new upstream got %q", got)
	}
	if old.state.Load() != legDone {
		t.Fatal("the lost upstream leg's read loop did not end")
	}
}

// A leg whose heartbeat interval is shorter than parkMinInterval keeps its
// goroutine: it would wake at every ping anyway.
func TestFastHeartbeatNeverParks(t *testing.T) {
	env, err := NewEnv(hbCfg(hbOff, hbOff), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := parkPair(t)
	s := &Session{env: env, cfg: &env.Config}
	if l := newLeg(s, c, nil, true, hbLeg(heartbeat.ModeWS, parkMinInterval/2, 0)); l.parks {
		t.Fatal("a leg with a heartbeat under parkMinInterval can park")
	}
	if l := newLeg(s, c, nil, true, hbLeg(heartbeat.ModeWS, parkMinInterval, 0)); !l.parks {
		t.Fatal("a leg with a heartbeat at parkMinInterval cannot park")
	}
	if l := newLeg(s, c, nil, true, hbOff); !l.parks {
		t.Fatal("a leg without heartbeats cannot park")
	}
	// 500 ms heartbeats park (BENCHMARKS.md "Heartbeat cost": 42 % of the
	// memory for the same CPU); 250 ms ones keep their goroutine.
	if l := newLeg(s, c, nil, true, hbLeg(heartbeat.ModeWS, 500*time.Millisecond, 0)); !l.parks {
		t.Fatal("a leg with 500 ms heartbeats cannot park")
	}
	if l := newLeg(s, c, nil, true, hbLeg(heartbeat.ModeWS, 250*time.Millisecond, 0)); l.parks {
		t.Fatal("a leg with 250 ms heartbeats can park")
	}
}

// A leg over a connection without a file descriptor never parks.
func TestPipeNeverParks(t *testing.T) {
	env, err := NewEnv(hbCfg(hbOff, hbOff), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.IdleAfter = time.Millisecond
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	s := &Session{env: env, cfg: &env.Config}
	l := newLeg(s, a, nil, true, hbOff)
	if l.parks {
		t.Fatal("a net.Pipe leg can park")
	}
	var woke atomic.Bool
	l.resume = func() { woke.Store(true) }
	l.wake()
	if woke.Load() {
		t.Fatal("wake started a loop that was not parked")
	}
}

// BenchmarkIdleParked holds sessions over loopback TCP until their legs
// park and reports what one idle session costs: goroutines, heap and
// stack. Run with -memprofile to see where the heap goes.
//
//	go test -run x -bench IdleParked -benchtime 1x ./session/
func BenchmarkIdleParked(b *testing.B) {
	if !netpoll.Supported() {
		b.Skip("parking needs epoll (Linux)")
	}
	sessions := 2000
	if testing.Short() {
		sessions = 200
	}
	hb := heartbeat.Config{Mode: heartbeat.ModeWS, Interval: 15 * time.Second, Timeout: 45 * time.Second}
	client := hb
	client.Mode = heartbeat.ModeBoth
	env, err := NewEnv(hbCfg(client, hb), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	env.IdleAfter = 10 * time.Millisecond
	env.CloseWait = time.Millisecond
	dial := func(context.Context) (Upstream, error) { return Upstream{}, errors.New("no") }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	pair := func() (net.Conn, net.Conn) {
		acc := make(chan net.Conn, 1)
		go func() { c, _ := ln.Accept(); acc <- c }()
		p, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		return <-acc, p
	}
	var gPer, heapPer, stackPer float64
	for i := 0; i < b.N; i++ {
		peers := make([]net.Conn, 0, 2*sessions)
		tconns := make([][2]net.Conn, sessions)
		for k := range tconns {
			ct, cp := pair()
			ut, up := pair()
			tconns[k] = [2]net.Conn{ct, ut}
			peers = append(peers, cp, up)
		}
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		g0 := runtime.NumGoroutine()
		done := make(chan struct{}, sessions)
		ss := make([]*Session, sessions)
		for k := range ss {
			ss[k] = New(env, "bench", tconns[k][0], nil, Upstream{Conn: tconns[k][1]}, dial)
			ss[k].Start(context.Background(), finished(func() { done <- struct{}{} }))
		}
		for env.ParkedLegs() < int64(2*sessions) {
			time.Sleep(10 * time.Millisecond)
		}
		// The workers that ran the legs until they parked end within
		// two seconds (workers.go): what stays is the idle sessions.
		for idle, _ := env.workers.counts(); idle > 0; idle, _ = env.workers.counts() {
			time.Sleep(10 * time.Millisecond)
		}
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		g1 := runtime.NumGoroutine()
		for _, s := range ss {
			s.Close()
		}
		for range ss {
			<-done
		}
		for _, p := range peers {
			p.Close()
		}
		gPer += float64(g1-g0) / float64(sessions)
		heapPer += float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(sessions)
		stackPer += float64(int64(m1.StackInuse)-int64(m0.StackInuse)) / float64(sessions)
	}
	n := float64(b.N)
	b.ReportMetric(gPer/n, "goroutines/session")
	b.ReportMetric(heapPer/n, "heap-B/session")
	b.ReportMetric(stackPer/n, "stack-B/session")
}

// A parking leg reads with the 512-byte buffer until a read fills it, then
// takes the next size (4, 16, then 32 KiB) at the next message boundary,
// and starts small again after it parks: a burst of sessions that go idle
// costs 0.5 KiB per running leg, a streaming leg reads 32 KiB at a time.
func TestParkReadBufferGrowsWhenBusy(t *testing.T) {
	r, sizes := newReadBufRig(t)
	c := r.s.client
	next := func(what string) int {
		t.Helper()
		select {
		case n := <-sizes:
			return n
		case <-time.After(10 * time.Second):
			t.Fatalf("no read buffer taken: %s", what)
			return 0
		}
	}
	send := r.sendBurst

	small := readBufSizes[tierWake]
	send([]byte("small"))
	if n := next("a small message"); n != small {
		t.Fatalf("a leg woken by a small message took %d B, want %d", n, small)
	}
	// Bursts of 64 KiB in one write each: a read fills the buffer, and
	// the leg takes the next size where a burst ends (the first message
	// boundary with no unread byte), until the largest.
	burst := make([][]byte, 64)
	for i := range burst {
		burst[i] = make([]byte, 1000)
	}
	largest := readBufSizes[tierLargest]
	var took []int
	for range 2 * len(readBufSizes) {
		if len(took) > 0 && took[len(took)-1] == largest {
			break
		}
		send(burst...)
		for len(sizes) > 0 {
			took = append(took, <-sizes)
		}
	}
	r.waitParked(c)
	for len(sizes) > 0 {
		took = append(took, <-sizes)
	}
	// The leg may have parked since the small message: it then wakes
	// with the small buffer again before it grows.
	if len(took) > 0 && took[0] == small {
		took = took[1:]
	}
	if want := readBufSizes[tierWake+1:]; !slices.Equal(took, want) {
		t.Fatalf("during a burst the leg took buffers of %v B, want %v", took, want)
	}
	send([]byte("small again"))
	if n := next("a small message after parking"); n != small {
		t.Fatalf("after parking the leg took %d B, want %d (small again)", n, small)
	}
	select {
	case n := <-sizes:
		t.Fatalf("an extra read buffer of %d B was taken", n)
	default:
	}
}

// newReadBufRig is a parking session whose client leg reports each read
// buffer it takes on sizes, once both legs have parked.
func newReadBufRig(t *testing.T) (*parkRig, chan int) {
	t.Helper()
	sizes := make(chan int, 64)
	r := newParkRigWith(t, hbCfg(hbOff, hbOff), func(env *Env) {
		// Long enough that a stalled machine does not park the leg in
		// the middle of a burst.
		env.IdleAfter = 300 * time.Millisecond
		env.test.readBuf = func(l *leg, size int) {
			if l.name() == LegClient {
				sizes <- size
			}
		}
	})
	r.waitParked(r.s.client, r.up())
	for len(sizes) > 0 {
		<-sizes // the buffers taken before the first park
	}
	return r, sizes
}

// sendBurst writes msgs from the client peer in one write and waits until
// the upstream peer has read them all.
func (r *parkRig) sendBurst(msgs ...[]byte) { r.sendFrames(false, msgs...) }

// sendFrames is sendBurst, with a ping after each message if pings.
func (r *parkRig) sendFrames(pings bool, msgs ...[]byte) {
	t := r.t
	t.Helper()
	var wire []byte
	for _, m := range msgs {
		var b bytesWriter
		if err := wsutil.WriteClientBinary(&b, m); err != nil {
			t.Fatal(err)
		}
		if pings {
			if err := wsutil.WriteClientMessage(&b, ws.OpPing, []byte("p")); err != nil {
				t.Fatal(err)
			}
		}
		wire = append(wire, b...)
	}
	// Written while the upstream peer reads: a burst larger than the
	// sockets' buffers would block both otherwise.
	wrote := make(chan error, 1)
	go func() {
		_, err := r.client.Write(wire)
		wrote <- err
	}()
	_ = r.upstream.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range msgs {
		if _, err := wsutil.ReadClientBinary(r.upstream); err != nil {
			t.Fatalf("upstream peer read: %v", err)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// A leg streaming messages longer than the largest read buffer keeps the
// buffer it woke with: a larger one would hold no whole message, only
// more of one to copy out (what it holds of a frame is copied into the
// message, the rest is read straight into it). A ping after each message
// changes nothing: control frames between messages are not messages.
func TestParkReadBufferNotGrownForLargeMessages(t *testing.T) {
	r, sizes := newReadBufRig(t)
	burst := make([][]byte, 4)
	for i := range burst {
		burst[i] = make([]byte, readBufSizes[tierLargest]+1000)
	}
	var took []int
	for i := range 2 * len(readBufSizes) {
		r.sendFrames(i%2 == 1, burst...)
		for len(sizes) > 0 {
			took = append(took, <-sizes)
		}
	}
	r.waitParked(r.s.client)
	for len(sizes) > 0 {
		took = append(took, <-sizes)
	}
	for _, n := range took {
		if n != readBufSizes[tierWake] {
			t.Fatalf("streaming %d-byte messages the leg took read buffers of %v B, want only %d", len(burst[0]), took, readBufSizes[tierWake])
		}
	}
	if len(took) == 0 {
		t.Fatal("the leg never woke")
	}
}

type bytesWriter []byte

func (b *bytesWriter) Write(p []byte) (int, error) {
	*b = append(*b, p...)
	return len(p), nil
}

// Every idle session holds two legs, so a leg's size is memory per
// session: it fits the 768-byte size class of the Go allocator (it was
// 1,040 bytes, in the 1,152 class, before pong payloads, compression
// state and the heartbeat tracker were made compact). A field that pushes
// it over costs 384 B per leg; make room or say so here.
func TestLegFitsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(leg{}); n > 768 {
		t.Fatalf("leg is %d bytes, over the 768-byte size class", n)
	}
	// Every session has one, idle or not (README "Performance": idle
	// memory per session).
	if n := unsafe.Sizeof(Session{}); n > 576 {
		t.Fatalf("Session is %d bytes, over the 576-byte size class", n)
	}
}

// A parked leg's timer fires at whichever comes first: its next ping or
// its heartbeat timeout (last byte received + timeout). Without the
// second, a silent peer would be found dead up to one interval late,
// which TestParkedHeartbeatTimeout cannot tell from on time.
func TestParkedTimerFiresAtTimeout(t *testing.T) {
	now := time.Now().UnixNano()
	l := &leg{hb: hbLeg(heartbeat.ModeWS, 10*time.Second, 12*time.Second)}
	l.pingDue = now + int64(10*time.Second)
	l.lastRead.Store(now - int64(11*time.Second)) // quiet for 11 s: dead in 1 s
	cases := []struct {
		name  string
		state uint32
		want  time.Duration
	}{
		{"running: its read deadline finds the timeout", legRunning, 10 * time.Second},
		{"parked: the timeout comes before the ping", legParked, time.Second},
	}
	for _, c := range cases {
		l.state.Store(c.state)
		if got := time.Duration(l.nextTickLocked(now)); got != c.want {
			t.Errorf("%s: next tick in %v, want %v", c.name, got, c.want)
		}
	}
	// Overdue: at once, never negative.
	l.state.Store(legParked)
	l.lastRead.Store(now - int64(time.Minute))
	if got := l.nextTickLocked(now); got != 0 {
		t.Errorf("overdue timeout: next tick in %v, want 0", time.Duration(got))
	}
}

// A parked leg woken by control frames only (here a ping from the peer,
// which tether answers) parks again as soon as the socket has nothing
// more, without reading into EAGAIN and waiting IdleAfter with its
// goroutine; a leg woken by a data message waits IdleAfter as before,
// since more messages tend to follow.
func TestParkedLegReparksAfterControlOnlyWake(t *testing.T) {
	quick := make(chan string, 16)
	r := newParkRigWith(t, hbCfg(hbOff, hbOff), func(env *Env) {
		env.IdleAfter = 200 * time.Millisecond
		env.test.quickPark = func(l *leg) { quick <- l.name() }
	})
	c, u := r.s.client, r.up()
	r.waitParked(c, u)
	if len(quick) != 0 {
		t.Fatalf("a quick park before any wake: %s", <-quick)
	}

	// A ping wakes the client leg: answered, then parked again at once.
	ping := ws.MaskFrame(ws.NewPingFrame([]byte("are you there")))
	if err := ws.WriteFrame(r.client, ping); err != nil {
		t.Fatal(err)
	}
	_ = r.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ws.ReadFrame(r.client)
	if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" {
		t.Fatalf("client peer: %v %v %q, want the pong", err, f.Header.OpCode, f.Payload)
	}
	select {
	case leg := <-quick:
		if leg != LegClient {
			t.Fatalf("quick park of the %s leg, want the client's", leg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client leg did not park right after the ping")
	}
	r.waitParked(c)

	// A data message wakes it too, but it waits IdleAfter before parking.
	if err := wsutil.WriteClientText(r.client, []byte("data")); err != nil {
		t.Fatal(err)
	}
	if got := readClientMsg(t, r.upstream); got != "data" {
		t.Fatalf("upstream got %q", got)
	}
	r.waitParked(c, u)
	select {
	case leg := <-quick:
		t.Fatalf("quick park of the %s leg after a data message", leg)
	default:
	}
}

// A busy leg that can park reads with no deadline (armRead): 200
// messages, each read on its own, set none (the sweeper, not a deadline,
// finds the leg idle or dead).
func TestReadDeadlineKeptWhileBusy(t *testing.T) {
	var sets atomic.Int32
	r := newParkRigWith(t, hbCfg(hbLeg(heartbeat.ModeWS, 10*time.Second, 30*time.Second), hbOff), func(env *Env) {
		env.IdleAfter = time.Second
		env.test.deadline = func(l *leg) {
			if l.name() == LegClient {
				sets.Add(1)
			}
		}
	})
	const n = 200
	for i := range n {
		if err := wsutil.WriteClientText(r.client, []byte("m"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if got := readClientMsg(t, r.upstream); got != "m"+strconv.Itoa(i) {
			t.Fatalf("upstream got %q", got)
		}
	}
	if got := sets.Load(); got != 0 {
		t.Fatalf("%d read deadlines set for %d messages read one by one, want none", got, n)
	}
}

// newSweptRig is a park rig whose client leg pings every interval and
// times out after timeout, with IdleAfter 50 ms, and the count of the
// sweeper's interrupts of its client leg.
func newSweptRig(t *testing.T, interval, timeout time.Duration) (*parkRig, *atomic.Int32) {
	t.Helper()
	var sweeps atomic.Int32
	r := newParkRigWith(t, hbCfg(hbLeg(heartbeat.ModeWS, interval, timeout), hbOff), func(env *Env) {
		env.IdleAfter = 50 * time.Millisecond
		env.test.sweep = func(l *leg) {
			if l.name() == LegClient {
				sweeps.Add(1)
			}
		}
	})
	return r, &sweeps
}

// waitClientTimedOut waits for the session to end by the client leg's
// heartbeat timeout (Close 1001 to the upstream, one timeout counted),
// no sooner than timeout after the client's last bytes.
func (r *parkRig) waitClientTimedOut(last time.Time, timeout time.Duration) {
	t := r.t
	t.Helper()
	if code := readCloseCode(t, r.upstream, false); code != int(CloseGoingAway) {
		t.Fatalf("upstream got Close %d, want 1001 (heartbeat timeout)", code)
	}
	if d := time.Since(last); d < timeout {
		t.Fatalf("heartbeat timeout after %v of silence, want at least %v", d, timeout)
	}
	_ = ws.WriteFrame(r.upstream, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "")))
	r.waitDone()
	if n := r.metrics.timeoutsOf(LegClient); n != 1 {
		t.Fatalf("client heartbeat timeouts = %d, want 1", n)
	}
}

// A sweep that finds a leg quiet for IdleAfter in the middle of a frame
// neither parks the leg nor ends it, and does not interrupt it again
// until more bytes come: the frame's rest arriving later is relayed, and
// the heartbeat timeout still counts from the last bytes received.
func TestSweepInsideFrameInterruptsOnce(t *testing.T) {
	const timeout = 600 * time.Millisecond
	r, sweeps := newSweptRig(t, timeout/2, timeout)
	var frame bytesWriter
	if err := wsutil.WriteClientText(&frame, []byte("split across an idle deadline")); err != nil {
		t.Fatal(err)
	}
	half := len(frame) / 2
	if _, err := r.client.Write(frame[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * 50 * time.Millisecond) // past IdleAfter, short of the timeout
	// A dozen sweeps came: one interrupted the leg.
	if n := sweeps.Load(); n != 1 {
		t.Fatalf("the client leg was interrupted %d times inside one frame, want once", n)
	}
	// Marked before tether can read the last bytes.
	last := time.Now()
	if _, err := r.client.Write(frame[half:]); err != nil {
		t.Fatal(err)
	}
	if got := readClientMsg(t, r.upstream); got != "split across an idle deadline" {
		t.Fatalf("upstream got %q", got)
	}
	// Silent from now on: the timeout ends the session, not before it is
	// due from the last bytes.
	r.waitClientTimedOut(last, timeout)
}

// A leg whose messages come a little less often than IdleAfter is never
// woken between them: no sweep interrupts it, no deadline passes early,
// and it keeps the one read deadline it set (before the sweeper, such a
// leg moved its IdleAfter deadline at every message).
func TestSteadyTrafficNotWoken(t *testing.T) {
	const idle = 200 * time.Millisecond
	var early, sets, sweeps atomic.Int32
	count := func(n *atomic.Int32) func(*leg) {
		return func(l *leg) {
			if l.name() == LegClient {
				n.Add(1)
			}
		}
	}
	r := newParkRigWith(t, hbCfg(hbLeg(heartbeat.ModeWS, 10*time.Second, 30*time.Second), hbOff), func(env *Env) {
		env.IdleAfter = idle
		env.test.early, env.test.deadline, env.test.sweep = count(&early), count(&sets), count(&sweeps)
	})
	for i := range 8 {
		if err := wsutil.WriteClientText(r.client, []byte("m"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if got := readClientMsg(t, r.upstream); got != "m"+strconv.Itoa(i) {
			t.Fatalf("upstream got %q", got)
		}
		time.Sleep(idle * 7 / 10)
	}
	if e, d, w := early.Load(), sets.Load(), sweeps.Load(); e != 0 || d != 0 || w != 0 {
		t.Fatalf("8 messages %v apart: %d reads ended early, %d deadlines set, %d sweeps interrupted the leg; want none", idle*7/10, e, d, w)
	}
}

// A running leg whose peer stops in the middle of a frame cannot park and
// has no read deadline: the sweeper finds its heartbeat timeout (after
// the one interrupt for IdleAfter, which it survives) and the leg ends
// as timed out, not before the timeout is due from its last bytes.
func TestSweepFindsTimeoutInsideFrame(t *testing.T) {
	const timeout = 300 * time.Millisecond
	r, sweeps := newSweptRig(t, timeout, timeout)
	var frame bytesWriter
	if err := wsutil.WriteClientText(&frame, []byte("never finished")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := r.client.Write(frame[:len(frame)/2]); err != nil {
		t.Fatal(err)
	}
	r.waitClientTimedOut(start, timeout)
	if n := sweeps.Load(); n != 2 {
		t.Fatalf("the sweeper interrupted the leg %d times, want 2 (idle, then dead)", n)
	}
}

// A sweep that finds a leg dead just before its read loop clears the
// deadline an earlier sweep left (inside a frame, the idle one) is not
// lost, though the sweeper interrupts only once per quiet spell: the
// loop sees it was asked and interrupts itself, and the leg ends as
// timed out. The hook widens the window: it holds the loop just before
// the clearing until the timeout has passed and a sweep has found it.
func TestSweepDeadJustBeforeClearing(t *testing.T) {
	const timeout = 300 * time.Millisecond
	var once sync.Once
	var start atomic.Int64
	r := newParkRigWith(t, hbCfg(hbLeg(heartbeat.ModeWS, timeout, timeout), hbOff), func(env *Env) {
		env.IdleAfter = 50 * time.Millisecond
		env.test.clearing = func(l *leg) {
			// The clearing after a sweep's interrupt (not after a park).
			if l.name() != LegClient || !env.sweep.asked(l) {
				return
			}
			once.Do(func() {
				time.Sleep(time.Until(time.Unix(0, start.Load()).Add(timeout + 10*time.Millisecond)))
				env.sweep.sweep() // found dead (or already, by the timer's)
			})
		}
	})
	var frame bytesWriter
	if err := wsutil.WriteClientText(&frame, []byte("never finished")); err != nil {
		t.Fatal(err)
	}
	start.Store(time.Now().UnixNano())
	if _, err := r.client.Write(frame[:len(frame)/2]); err != nil {
		t.Fatal(err)
	}
	r.waitClientTimedOut(time.Unix(0, start.Load()), timeout)
}

// A sweep that interrupts a leg waiting for its peer's Close reply (woken
// from parking by the Close tether sent, so the sweeper finds it quiet)
// does not cut that wait short: the leg keeps reading until the reply or
// its close deadline, and ends once the reply comes.
func TestSweepKeepsCloseWait(t *testing.T) {
	var closingSweeps atomic.Int32
	r := newParkRigWith(t, hbCfg(hbOff, hbOff), func(env *Env) {
		env.IdleAfter = 50 * time.Millisecond
		env.CloseWait = 5 * time.Second
		env.test.sweep = func(l *leg) {
			if l.name() == LegClient && l.closing.Load() {
				closingSweeps.Add(1)
			}
		}
	})
	r.waitParked(r.s.client)
	if err := ws.WriteFrame(r.upstream, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))); err != nil {
		t.Fatal(err)
	}
	if code := readCloseCode(t, r.client, true); code != int(ws.StatusNormalClosure) {
		t.Fatalf("client got Close %d, want 1000", code)
	}
	// Sweeps come every 12.5 ms: wait until one has interrupted the
	// closing leg, then a little longer, and answer.
	deadline := time.Now().Add(3 * time.Second)
	for closingSweeps.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no sweep interrupted the closing client leg")
		}
		time.Sleep(2 * time.Millisecond)
	}
	_ = r.client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := r.client.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read %d bytes, %v while tether waits for its Close reply; want a timeout (connection open)", n, err)
	}
	if err := ws.WriteFrame(r.client, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))); err != nil {
		t.Fatal(err)
	}
	_ = r.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, r.client); err != nil {
		t.Fatalf("client read after its Close reply: %v, want EOF", err)
	}
}

// The sweeper runs only while a leg that can park is running: once every
// leg has parked, its timer is no longer set, and a message that wakes a
// leg sets it again, which parks the leg after IdleAfter.
func TestSweeperStopsWhenAllParked(t *testing.T) {
	r := newParkRig(t, hbCfg(hbOff, hbOff))
	c, u := r.s.client, r.up()
	armed := func() bool {
		r.env.sweep.mu.Lock()
		defer r.env.sweep.mu.Unlock()
		return r.env.sweep.armed
	}
	for round := range 2 {
		r.waitParked(c, u)
		deadline := time.Now().Add(10 * time.Second)
		for armed() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the sweeper's timer is still set with every leg parked", round)
			}
			time.Sleep(2 * time.Millisecond)
		}
		if err := wsutil.WriteClientText(r.client, []byte("wake")); err != nil {
			t.Fatal(err)
		}
		if got := readClientMsg(t, r.upstream); got != "wake" {
			t.Fatalf("upstream got %q", got)
		}
	}
	r.waitParked(c, u)
}

// readMaskedFrame reads one data frame a peer got from tether's upstream
// side, skipping control frames, and returns its opcode, masking key and
// unmasked payload.
func readMaskedFrame(t *testing.T, c net.Conn) (ws.OpCode, [4]byte, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, err := ws.ReadHeader(c)
		if err != nil {
			t.Fatalf("upstream peer read: %v", err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c, p); err != nil {
			t.Fatalf("upstream peer read: %v", err)
		}
		if !h.Masked {
			t.Fatalf("unmasked %v frame from tether", h.OpCode)
		}
		ws.Cipher(p, h.Mask, 0)
		if !h.OpCode.IsControl() {
			return h.OpCode, h.Mask, p
		}
	}
}

// A client's binary message is forwarded as the client masked it, under
// its key, and retained that way: re-sent after an upstream loss, it
// arrives intact, under the same key, also from TETHER_REPLAY_FIRST's
// copies. A text message is unmasked (UTF-8 is checked) and masked again
// under a key of tether's.
func TestClientBinaryForwardedMasked(t *testing.T) {
	for _, first := range []int{0, 2} {
		t.Run(fmt.Sprintf("replay-first-%d", first), func(t *testing.T) { testClientBinaryForwardedMasked(t, first) })
	}
}

func testClientBinaryForwardedMasked(t *testing.T, replayFirst int) {
	cfg := hbCfg(hbOff, hbLeg(heartbeat.ModeWS, 10*time.Second, 30*time.Second))
	cfg.ReplayFirst = replayFirst
	r := newParkRig(t, cfg)
	send := func(op ws.OpCode, p []byte, key [4]byte) {
		t.Helper()
		f := ws.MaskFrameWith(ws.NewFrame(op, true, bytes.Clone(p)), key)
		if err := ws.WriteFrame(r.client, f); err != nil {
			t.Fatal(err)
		}
	}
	first := bytes.Repeat([]byte("first "), 10) // the first message is read for recognition
	small := bytes.Repeat([]byte{1, 2, 3, 250}, 300)
	large := bytes.Repeat([]byte{9, 8, 7, 6, 5}, 20000) // past the read buffer: assembled
	k1, k2, k3 := [4]byte{1, 2, 3, 4}, [4]byte{0xa, 0xb, 0xc, 0xd}, [4]byte{0x55, 0x66, 0x77, 0x88}
	send(ws.OpBinary, first, k3)
	send(ws.OpBinary, small, k1)
	send(ws.OpBinary, large, k2)
	send(ws.OpText, []byte("text"), k3)
	// firstMasked: the first message comes under the client's key (a
	// replay opening's copy was taken before it was read, still masked).
	check := func(up net.Conn, firstMasked bool) {
		t.Helper()
		for _, w := range []struct {
			op     ws.OpCode
			p      []byte
			key    [4]byte
			client bool // under the client's key
		}{{ws.OpBinary, first, k3, firstMasked}, {ws.OpBinary, small, k1, true}, {ws.OpBinary, large, k2, true}, {ws.OpText, []byte("text"), k3, false}} {
			op, key, p := readMaskedFrame(t, up)
			if op != w.op || !bytes.Equal(p, w.p) {
				t.Fatalf("upstream got %v of %d bytes, want %v of %d bytes intact", op, len(p), w.op, len(w.p))
			}
			if (key == w.key) != w.client {
				t.Errorf("%v message of %d bytes under key %x; the client's was %x, want it used: %v", op, len(p), key, w.key, w.client)
			}
		}
	}
	check(r.upstream, false)
	// The pings go unanswered: all four are retained. The upstream goes.
	r.upstream.Close()
	var up2 net.Conn
	select {
	case up2 = <-r.dials:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect")
	}
	check(up2, replayFirst > 0)
}

// A leg read raw reads its socket once per message that comes alone, not
// twice: the read that took less than it asked for emptied the socket, so
// the message is handled and the leg waits for readiness inside the same
// RawConn.Read, without a read into EAGAIN (pump). A frame split over
// two segments is read in two reads and relayed whole.
func TestPumpOneReadPerMessage(t *testing.T) {
	var data, again atomic.Int64
	read := make(chan struct{}, 1)
	r := newParkRigWith(t, hbCfg(hbOff, hbOff), func(env *Env) {
		env.IdleAfter = time.Minute // the leg stays in its read
		env.test.read = func(l *leg, n int, err error) {
			if l.name() != LegClient {
				return
			}
			switch {
			case err == syscall.EAGAIN:
				again.Add(1)
			case n > 0:
				data.Add(1)
				select {
				case read <- struct{}{}:
				default:
				}
			}
		}
	})
	r.sendBurst([]byte("first"))
	const n = 40
	d0, a0 := data.Load(), again.Load()
	for i := range n {
		r.sendBurst([]byte(fmt.Sprintf("message %d", i)))
	}
	if d := data.Load() - d0; d != n {
		t.Errorf("%d messages took %d reads with data, want %d", n, d, n)
	}
	if a := again.Load() - a0; a > n/8 {
		t.Errorf("%d messages took %d reads into EAGAIN, want none (one read per message)", n, a)
	}

	// One frame in two writes: the first part waits in the buffer.
	var b bytesWriter
	if err := wsutil.WriteClientBinary(&b, []byte("split over two writes")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-read:
	default:
	}
	if _, err := r.client.Write(b[:5]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-read:
	case <-time.After(10 * time.Second):
		t.Fatal("the first part of the frame was not read")
	}
	if _, err := r.client.Write(b[5:]); err != nil {
		t.Fatal(err)
	}
	_ = r.upstream.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := wsutil.ReadClientBinary(r.upstream)
	if err != nil || string(got) != "split over two writes" {
		t.Fatalf("split frame relayed as %q, %v", got, err)
	}
}

// A write failure on a leg while its read loop handles a message inside
// pumpRead closes that leg from the loop itself: the Close must not wait
// for the socket read it is called from (it would never return), and the
// session ends. Here the pong answering a ping cannot be written (the
// socket's write side is shut). closeConn closes a socket read raw on a
// goroutine of its own, also when another goroutine calls it: that
// reader may be waiting, inside pumpRead, for what the caller does next.
func TestPumpClosesItsOwnLeg(t *testing.T) {
	r := newParkRigWith(t, hbCfg(hbOff, hbOff), func(env *Env) {
		env.IdleAfter = time.Minute // the leg stays in its read
	})
	r.sendBurst([]byte("first"))
	if err := r.s.client.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := wsutil.WriteClientMessage(r.client, ws.OpPing, []byte("p")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end after its client leg failed a write")
	}
}

// A leg on a socket writes raw (rawio.go): each write is one write or
// writev system call made without telling the scheduler, and a socket
// that takes only part of a message is waited for and written on from
// where it stopped. Here a 4 MiB message meets an upstream peer that
// reads only once a write has found its socket full.
func TestRawWritesResumeWhereTheSocketStopped(t *testing.T) {
	var writes atomic.Int64
	full := make(chan struct{})
	var once sync.Once
	r := newParkRigWith(t, hbCfg(hbOff, hbOff), func(env *Env) {
		env.Config.MaxMessageBytes = 8 << 20
		env.test.write = func(l *leg, n int, err error) {
			if l.name() != LegUpstream {
				return
			}
			writes.Add(1)
			if err == syscall.EAGAIN {
				once.Do(func() { close(full) })
			}
		}
	})
	msg := make([]byte, 4<<20)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	wrote := make(chan error, 1)
	go func() { wrote <- wsutil.WriteClientBinary(r.client, msg) }()
	select {
	case <-full:
	case <-time.After(10 * time.Second):
		t.Fatal("no raw write found the upstream socket full")
	}
	_ = r.upstream.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := wsutil.ReadClientBinary(r.upstream)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("upstream got %d bytes, not the %d sent", len(got), len(msg))
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if writes.Load() < 2 {
		t.Fatalf("%d raw writes for a message larger than the socket takes", writes.Load())
	}
}

// Messages of 4 to 16 KiB that arrive together go upstream together,
// copied into one write buffer of up to 64 KiB (coalesceBuf), the last of
// a read's batch included: 8 KiB messages written one write each cost
// twice Caddy's CPU per message (README "Performance").
func TestCoalesceMidSizeMessages(t *testing.T) {
	var writes atomic.Int64 // of data: acknowledgement pings go alone too
	r := newParkRigWith(t, hbCfg(hbOff, hbLeg(heartbeat.ModeWS, time.Hour, 0)), func(env *Env) {
		env.IdleAfter = time.Minute // the leg keeps its grown buffer
		env.test.write = func(l *leg, n int, err error) {
			if l.name() == LegUpstream && n > 1<<10 {
				writes.Add(1)
			}
		}
	})
	msgs := make([][]byte, 32)
	for i := range msgs {
		msgs[i] = bytes.Repeat([]byte{byte('a' + i%26)}, 8<<10)
	}
	r.sendBurst(msgs...) // the client leg's read buffer grows to 32 KiB
	w0 := writes.Load()
	r.sendBurst(msgs...)
	// Each read takes in at most four of them (a 32 KiB read buffer):
	// eight writes when every read is full, one per message before.
	w := writes.Load() - w0
	t.Logf("%d messages of 8 KiB in %d writes upstream", len(msgs), w)
	if w > int64(len(msgs))*3/4 {
		t.Fatalf("%d messages of 8 KiB that arrived together took %d writes upstream, want at most %d", len(msgs), w, len(msgs)*3/4)
	}

	// Three at a time, each three in one read: the third, the last of
	// its batch, goes in the same write as the two before it (two
	// writes, a flush and its own, without that).
	const bursts = 12
	w0 = writes.Load()
	for range bursts {
		r.sendBurst(msgs[:3]...)
	}
	w = writes.Load() - w0
	t.Logf("%d bursts of three in %d writes upstream", bursts, w)
	if w >= bursts*3/2 {
		t.Fatalf("%d bursts of three messages of 8 KiB took %d writes upstream, want about one each", bursts, w)
	}
}

// Legs that go quiet together are parked a batch at a time: one sweep
// interrupts at most maxInterrupts of them, and the next comes
// sweepBacklog later, so that the read loops those interrupts wake do not
// put everything else behind them at once (slow round trips at every
// sweep before, with many sessions sending now and then).
func TestSweepInterruptsInBatches(t *testing.T) {
	if !netpoll.Supported() {
		t.Skip("parking needs epoll (Linux)")
	}
	env, err := NewEnv(hbCfg(hbOff, hbOff), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.IdleAfter = 40 * time.Millisecond
	env.CloseWait = 200 * time.Millisecond
	var mu sync.Mutex
	var counts []int
	env.test = &testHooks{swept: func(n int) {
		if n > 0 {
			mu.Lock()
			counts = append(counts, n)
			mu.Unlock()
		}
	}}
	const sessions = 40 // 80 legs, quiet from the start
	dial := func(context.Context) (Upstream, error) { return Upstream{}, errors.New("no") }
	for range sessions {
		ct, _ := parkPair(t)
		ut, _ := parkPair(t)
		done := make(chan struct{})
		s := New(env, "batch", ct, nil, Upstream{Conn: ut}, dial)
		s.Start(context.Background(), finished(func() { close(done) }))
		t.Cleanup(func() {
			s.Close()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("a session did not finish after Close")
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for env.ParkedLegs() < 2*sessions {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d legs parked", env.ParkedLegs(), 2*sessions)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	most := 0
	for _, n := range counts {
		most = max(most, n)
	}
	if most > maxInterrupts {
		t.Fatalf("sweeps interrupted %v legs: one took %d at once, over %d", counts, most, maxInterrupts)
	}
	if most < maxInterrupts {
		t.Fatalf("sweeps interrupted %v legs: the %d legs that went quiet together never filled a sweep", counts, 2*sessions)
	}
}
