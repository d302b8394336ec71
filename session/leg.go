package session

import (
	"bufio"
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/netpoll"
)

// Leg names, as used in logs and metric labels (SPEC §6).
const (
	LegClient   = "client"
	LegUpstream = "upstream"
)

// pending control work, left by a goroutine that could not take the write
// lock for the goroutine that holds it.
const (
	pendPong     uint32 = 1 << iota // RFC pong with the latest ping payload
	pendJSONPong                    // JSON pong
	pendPingWS                      // RFC ping
	pendPingJSON                    // JSON ping
)

var errLegClosed = errors.New("leg closed")

// errIdle is returned by a read at a message boundary when the leg has
// been quiet for Env.IdleAfter: the read loop may park the leg.
var errIdle = errors.New("leg idle")

// Read-loop states of a leg (leg.state).
const (
	legRunning uint32 = iota // a goroutine runs the leg's read loop
	legParked                // no goroutine: waiting in the poller
	legDone                  // the read loop has ended for good
)

// parkMinInterval is the shortest heartbeat interval at which a leg parks.
const parkMinInterval = 2 * time.Second

// Read buffers a leg holds while its read loop runs come in three sizes
// (tiers). A leg that cannot park holds its buffer for life: 4 KiB. A leg
// that parks holds one only while it runs and starts each run with the
// 512-byte one, enough for the pings, pongs and short messages that wake
// an idle leg: a burst of new sessions, whose legs each run for IdleAfter
// before they park, or 9,000 idle sessions waking for their heartbeats,
// then hold 0.5 KiB per running leg, not 16 (the pool keeps what the
// busiest moment took until two GCs have passed, which an idle process
// takes minutes to reach). When a socket read fills the buffer (more
// bytes were waiting), the leg takes the next size at its next message
// boundary, up to 16 KiB, and keeps it until it parks: a read then takes
// in up to 16 KiB of frames, which halves the syscalls per message when
// small messages stream (measured: +45 % messages per CPU second at
// 1 KiB). A frame larger than the buffer is read past it, straight into
// the message, so the size limits nothing but the bytes per read.
var readBufSizes = [...]int{512, 4 << 10, 16 << 10}

const (
	tierWake    uint8 = 0 // a parking leg's first size
	tierFixed   uint8 = 1 // a leg that cannot park
	tierLargest       = uint8(len(readBufSizes) - 1)
)

// readBuf is what a leg's read loop holds while it runs: the read buffer
// and room for one control frame's payload. A parked leg holds none.
type readBuf struct {
	br   *bufio.Reader
	tier uint8
	ctl  [125]byte
}

var readBufs [len(readBufSizes)]sync.Pool

func init() {
	for i := range readBufs {
		readBufs[i].New = func() any {
			return &readBuf{br: bufio.NewReaderSize(nil, readBufSizes[i]), tier: uint8(i)}
		}
	}
}

// ctlBufs holds the payload of a control frame being written (masked in
// place), taken only for that write.
var ctlBufs = sync.Pool{New: func() any { return new([125]byte) }}

// leg is one WebSocket connection of a session: the client leg, or one
// generation of the upstream leg.
//
// Writes: a leg has a write lock (a 1-slot channel, so that a goodbye
// write can give up waiting). It is held for one frame write under a write
// deadline and never across anything else. Control frames that another
// goroutine wants written (pongs, heartbeat pings) are left as flags in
// pending; whoever holds or next takes the lock writes them before it
// releases it (see unlock). Reads: only the leg's read loop reads.
//
// Parking: a leg whose connection is a socket (not TLS, not a pipe) and
// that has been quiet for Env.IdleAfter at a message boundary parks: its
// read loop returns, its goroutine exits, its read buffer goes back to a
// pool and the process's poller waits for the socket to become readable.
// Readiness, a Close to send, a failed write or a heartbeat timeout wakes
// it (wake), which starts a new goroutine running the same read loop. So
// an idle leg costs no goroutine and no buffer, only its structs.
type leg struct {
	s    *Session
	name string // LegClient or LegUpstream
	conn net.Conn
	br   *bufio.Reader // nil while parked
	rb   *readBuf      // holds br; nil while parked
	tier uint8         // index in readBufSizes of the read buffer to take
	grow bool          // a read filled the buffer: take the next size
	// quiet: since the leg last parked, it has read only control frames
	// and heartbeat messages; short: its last socket read took less than
	// it asked for. Both belong to the read loop.
	quiet, short bool
	lr           legReader
	hasDL        bool // the read loop left a read deadline set on conn
	fr           frameReader

	rc       syscall.RawConn // non-nil when the leg can park
	ph       netpoll.Handle  // owned by the read loop
	state    atomic.Uint32   // legRunning, legParked or legDone
	expired  atomic.Bool     // woken because the heartbeat timeout passed
	lastRead atomic.Int64    // unix nano of the last bytes read (parking legs)
	resume   func()          // runs the read loop again after a park
	wakeFn   func()
	mask     bool   // frames we send are masked (we are the client side)
	gen      uint64 // upstream generation; 0 for the client leg
	hb       heartbeat.Config
	wt       time.Duration // write timeout
	closeW   time.Duration // how long to wait for a Close reply

	wlock   chan struct{}
	hdr     [14]byte
	bufs    net.Buffers
	bufArr  [2][]byte
	werr    error         // sticky write error, under wlock
	ackMark uint64        // seq+1 of the last data message written, under wlock
	closed  bool          // a Close frame was written, under wlock
	deflate bool          // permessage-deflate on sends (client leg), fixed before Run
	zbuf    *bytes.Buffer // deflate output, made on the first compressed send
	// wbuf holds frames appended by writeData with more set, not yet
	// written (masked already); under wlock. A pooled buffer, held only
	// while frames are pending; wbox is its pool box.
	wbuf []byte
	wbox *[]byte
	// flushTo is the leg this leg's read loop left frames pending on;
	// only the read loop touches it. It is flushed before the loop's
	// next socket read, so pending frames never wait for input.
	flushTo *leg

	pending atomic.Uint32

	ctl      sync.Mutex // guards the fields below
	pong     []byte     // latest RFC ping payload to answer; 125 B cap once a ping came
	jsonPong []byte     // the JSON pong to write, in a pooled buffer
	jsonBox  *[]byte    // jsonPong's pool box
	tracker  heartbeat.Tracker
	pingDue  int64 // unix nano of the next heartbeat ping

	closing   atomic.Bool  // a Close was sent or the leg is being torn down
	closeDL   atomic.Int64 // read deadline (unix nano) once closing
	timer     *time.Timer
	timerStop atomic.Bool
	failed    atomic.Pointer[error] // why the leg was torn down by a writer
}

func newLeg(s *Session, name string, conn net.Conn, buffered []byte, fromClient bool, hb heartbeat.Config) *leg {
	l := &leg{
		s:      s,
		name:   name,
		conn:   conn,
		mask:   !fromClient,
		hb:     hb,
		wt:     s.cfg.WriteTimeout,
		closeW: s.env.closeWait(),
		wlock:  make(chan struct{}, 1),
		tier:   tierFixed,
	}
	l.lr = legReader{l: l, pre: buffered}
	l.fr = frameReader{fromClient: fromClient, max: int64(s.cfg.MaxMessageBytes)}
	// A leg with heartbeats more often than parkMinInterval wakes for
	// every ping anyway: parking it would cost a park and a wake (an
	// epoll_ctl and a goroutine start) per interval to save memory for
	// less than that interval, so it keeps its goroutine.
	parkable := !hb.Mode.On() || hb.Interval >= s.env.parkMinInterval()
	if p := s.env.poller; p != nil && s.env.IdleAfter >= 0 && parkable {
		switch c := conn.(type) {
		case *net.TCPConn, *net.UnixConn:
			if rc, err := c.(syscall.Conn).SyscallConn(); err == nil {
				l.rc = rc
				l.tier = tierWake
				l.lastRead.Store(time.Now().UnixNano())
				l.wakeFn = l.wake
			}
		}
	}
	return l
}

// acquireReader gives the read loop its read buffer.
func (l *leg) acquireReader() {
	if l.rb == nil {
		l.rb = readBufs[l.tier].Get().(*readBuf)
		l.br = l.rb.br
		l.br.Reset(&l.lr)
		l.fr.br, l.fr.ctl = l.br, &l.rb.ctl
		if h := l.s.env.readBufHook; h != nil {
			h(l, l.br.Size())
		}
	}
}

// releaseReader returns the read buffer; it must hold no unread bytes
// unless the leg is done.
func (l *leg) releaseReader() {
	if l.rb != nil {
		l.br.Reset(nil)
		readBufs[l.rb.tier].Put(l.rb)
		l.rb, l.br, l.fr.br, l.fr.ctl = nil, nil, nil, nil
	}
}

// growReader gives a parking leg the next size of read buffer once a
// read has filled its buffer (legReader sets grow), at a message boundary
// with no unread byte. The read loop calls it before each message.
func (l *leg) growReader() {
	if !l.grow || l.fr.frames != 0 || l.br.Buffered() != 0 || len(l.lr.pre) != 0 {
		return
	}
	l.grow = false
	l.releaseReader()
	l.tier++
	l.acquireReader()
}

// park gives up the read loop's goroutine and buffers until the socket is
// readable or wake is called. It reports whether the leg parked (the
// caller's read loop must then return errParked at once, touching nothing
// of the leg's read side) or could not (the caller goes on reading).
func (l *leg) park() bool {
	if l.rc == nil || l.closing.Load() || l.fr.frames != 0 || (l.br != nil && l.br.Buffered() != 0) || len(l.lr.pre) != 0 {
		return false
	}
	l.flushDeferred() // already done by the read that returned errIdle
	l.releaseReader()
	l.tier, l.grow = tierWake, false // the next run starts small again
	// The next run reads at least once before it may park again.
	l.quiet, l.short = true, false
	l.fr.idle()
	l.s.env.parked.Add(1)
	l.state.Store(legParked)
	if err := l.s.env.poller.Arm(&l.ph, l.rc.Control, l.wakeFn); err != nil {
		if l.state.CompareAndSwap(legParked, legRunning) {
			l.s.env.parked.Add(-1)
			l.quiet = false
			l.acquireReader()
			return false
		}
		return true // woken meanwhile: the new goroutine owns the loop
	}
	l.scheduleTimeoutCheck()
	return true
}

// wake starts the read loop of a parked leg again. Safe from any goroutine;
// it does nothing unless the leg is parked.
func (l *leg) wake() {
	if l.state.CompareAndSwap(legParked, legRunning) {
		l.s.env.parked.Add(-1)
		go l.resume()
	}
}

// wakeExpired wakes a parked leg whose heartbeat timeout has passed: its
// read loop gets a deadline error at once.
func (l *leg) wakeExpired() {
	if l.state.CompareAndSwap(legParked, legRunning) {
		l.s.env.parked.Add(-1)
		l.expired.Store(true)
		go l.resume()
	}
}

// readDone ends the leg's read side for good (its read loop returned for
// a reason other than parking).
func (l *leg) readDone() {
	l.state.Store(legDone)
	if p := l.s.env.poller; p != nil {
		p.Release(&l.ph)
	}
	l.releaseReader()
}

// closeConn closes the connection and wakes the leg if it is parked, so
// that its read loop sees the close and ends (a closed socket leaves the
// poller without a readiness report).
func (l *leg) closeConn() {
	_ = l.conn.Close()
	l.wake()
}

// legReader refreshes the liveness deadline before every socket read, so
// that any byte received, including bytes of a frame still arriving, keeps
// the leg alive (SPEC §3). It needs no goroutine and no timer of its own.
type legReader struct {
	l   *leg
	pre []byte // bytes read past the handshake, served first
}

func (r *legReader) Read(p []byte) (int, error) {
	if len(r.pre) > 0 {
		n := copy(p, r.pre)
		r.pre = r.pre[n:]
		return n, nil
	}
	l := r.l
	if l.expired.Load() && l.expired.Swap(false) {
		return 0, os.ErrDeadlineExceeded
	}
	// Frames this loop left pending on the other leg go out before this
	// read can block (and before its deadline starts).
	if t := l.flushTo; t != nil {
		l.flushTo = nil
		t.flushPending()
	}
	idle := false
	if !l.closing.Load() {
		var dl time.Time
		hb := l.hb.Mode.On() && l.hb.Timeout > 0
		// At a message boundary with nothing buffered, a leg that can
		// park waits only IdleAfter with its goroutine.
		park := l.rc != nil && l.fr.atBoundary && l.br.Buffered() == 0
		if park && l.quiet && l.short {
			// Woken for a ping, a pong or a heartbeat message only, and
			// the socket had nothing more: park again now instead of
			// reading into EAGAIN and waiting IdleAfter. The poller is
			// level-triggered, so bytes that arrive meanwhile wake the
			// leg at once.
			l.quiet = false // once: a park that fails goes on reading
			if h := l.s.env.quickParkHook; h != nil {
				h(l)
			}
			return 0, errIdle
		}
		if hb || park {
			now := time.Now()
			if hb {
				dl = now.Add(l.hb.Timeout)
			}
			if park {
				if idl := now.Add(l.s.env.idleAfter()); dl.IsZero() || idl.Before(dl) {
					dl, idle = idl, true
				}
			}
		}
		if !dl.IsZero() || l.hasDL {
			_ = l.conn.SetReadDeadline(dl)
			l.hasDL = !dl.IsZero()
		}
		if l.closing.Load() { // lost a race with beginClose
			idle = false
			_ = l.conn.SetReadDeadline(time.Unix(0, l.closeDL.Load()))
		}
	}
	n, err := l.conn.Read(p)
	if n > 0 && l.rc != nil {
		l.short = n < len(p)
		l.lastRead.Store(time.Now().UnixNano())
		if n == len(p) && l.tier < tierLargest {
			l.grow = true // more may be waiting: take a larger buffer
		}
	}
	if idle && n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, errIdle
	}
	return n, err
}

func (l *leg) lock() { l.wlock <- struct{}{} }

func (l *leg) tryLock() bool {
	select {
	case l.wlock <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l *leg) lockTimeout(d time.Duration) bool {
	if l.tryLock() {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case l.wlock <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// unlock writes the control frames other goroutines left in pending, then
// releases the lock. A flag set after the last check is picked up by the
// goroutine that set it (its tryLock succeeds) or by the next holder.
func (l *leg) unlock() {
	for {
		if l.pending.Load() != 0 {
			l.flushControlLocked()
		}
		err := l.werr
		<-l.wlock
		if err != nil {
			l.fail(err)
			return
		}
		if l.pending.Load() == 0 || !l.tryLock() {
			return
		}
	}
}

// signal asks for control work to be done as soon as the write lock is
// free, without waiting for it.
func (l *leg) signal(flags uint32) {
	l.pending.Or(flags)
	if l.tryLock() {
		l.unlock()
	}
}

// fail tears the leg down after a write error: it records why and closes
// the connection, so that the leg's read loop (the only goroutine that
// decides about a leg) returns and handles it. Safe from any goroutine.
func (l *leg) fail(err error) {
	if l.failed.CompareAndSwap(nil, &err) {
		l.closeConn()
	}
}

// failure returns the error recorded by fail, or nil.
func (l *leg) failure() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// writeFrameLocked writes one final frame. The caller holds the lock.
func (l *leg) writeFrameLocked(op ws.OpCode, p []byte, deadline time.Duration) error {
	return l.writeFrameRSV(op, false, p, deadline)
}

func (l *leg) writeFrameRSV(op ws.OpCode, rsv1 bool, p []byte, deadline time.Duration) error {
	if l.werr != nil {
		return l.werr
	}
	if len(l.wbuf) > 0 {
		// Frames are pending: this one goes after them, in the same
		// write when it is small.
		if len(p) <= 4096 {
			l.appendFrameLocked(op, rsv1, p)
			return l.flushLocked(deadline)
		}
		if err := l.flushLocked(deadline); err != nil {
			return err
		}
	}
	var key [4]byte
	if l.mask {
		k := rand.Uint32()
		key = [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
		ws.Cipher(p, key, 0)
	}
	l.bufArr[0] = putHeader(&l.hdr, op, rsv1, len(p), l.mask, key)
	l.bufArr[1] = p
	l.bufs = l.bufArr[:]
	_ = l.conn.SetWriteDeadline(time.Now().Add(deadline))
	_, err := l.bufs.WriteTo(l.conn)
	l.bufArr = [2][]byte{}
	if l.mask {
		ws.Cipher(p, key, 0) // restore the caller's bytes
	}
	if err != nil {
		l.werr = err
	}
	return err
}

// coalesceBuf is the buffer for frames held back for one write; they are
// written once it is half full.
const coalesceBuf = 32 << 10

// appendFrameLocked appends one final frame to wbuf, masking the copy.
func (l *leg) appendFrameLocked(op ws.OpCode, rsv1 bool, p []byte) {
	if l.wbuf == nil {
		l.wbuf, l.wbox = takeBuf(coalesceBuf)
		l.wbuf = l.wbuf[:0]
	}
	var key [4]byte
	if l.mask {
		k := rand.Uint32()
		key = [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
	}
	l.wbuf = append(l.wbuf, putHeader(&l.hdr, op, rsv1, len(p), l.mask, key)...)
	n := len(l.wbuf)
	l.wbuf = append(l.wbuf, p...)
	if l.mask {
		ws.Cipher(l.wbuf[n:], key, 0)
	}
}

// flushLocked writes the pending frames in one write and gives the
// buffer back.
func (l *leg) flushLocked(deadline time.Duration) error {
	if len(l.wbuf) == 0 {
		return l.werr
	}
	var err error
	if l.werr == nil {
		_ = l.conn.SetWriteDeadline(time.Now().Add(deadline))
		if _, err = l.conn.Write(l.wbuf); err != nil {
			l.werr = err
		}
	}
	putBuf(l.wbox, l.wbuf)
	l.wbuf, l.wbox = nil, nil
	if err == nil {
		err = l.werr
	}
	return err
}

// deferFlush records that l's read loop left frames pending on t.
func (l *leg) deferFlush(t *leg) {
	if l.flushTo != nil && l.flushTo != t {
		l.flushTo.flushPending()
	}
	l.flushTo = t
}

// flushDeferred flushes what l's read loop left pending; the loop calls it
// when it returns.
func (l *leg) flushDeferred() {
	if t := l.flushTo; t != nil {
		l.flushTo = nil
		t.flushPending()
	}
}

// moreInput reports whether the read loop has bytes of a next frame
// buffered already (so that a write may wait for the next message).
func (l *leg) moreInput() bool { return l.br != nil && l.br.Buffered() > 0 }

// flushPending writes the frames another leg's read loop left pending.
func (l *leg) flushPending() {
	l.lock()
	_ = l.flushLocked(l.wt)
	l.unlock()
}

// writeData writes one data message. seq is the session sequence number
// of a client message (used for acknowledgement) or 0 for upstream
// messages. It blocks while another frame is being written. With more
// set (the caller's read loop has more input buffered), a small message
// may be held back to go out with the next ones in one write; the caller
// must then call from.deferFlush(l), and its loop flushes before it next
// reads its socket.
func (l *leg) writeData(op ws.OpCode, p []byte, seq uint64, more bool) error {
	l.lock()
	var err error
	switch {
	case l.closed:
		err = errLegClosed
	case more && !l.deflate && l.werr == nil && len(l.wbuf)+len(p)+14 <= coalesceBuf/2:
		l.appendFrameLocked(op, false, p)
	case l.deflate && len(p) >= minDeflate:
		var z []byte
		if l.zbuf == nil {
			l.zbuf = new(bytes.Buffer)
		}
		if z, err = deflate(l.zbuf, p); err == nil {
			err = l.writeFrameRSV(op, true, z, l.wt)
		}
		if l.zbuf.Cap() > 64<<10 {
			l.zbuf = nil
		}
	default:
		err = l.writeFrameLocked(op, p, l.wt)
	}
	if err == nil && seq >= l.ackMark {
		l.ackMark = seq + 1
	}
	l.unlock()
	return err
}

// flushControlLocked writes the pending control frames. Pongs go first:
// they answer the peer; pings after.
func (l *leg) flushControlLocked() {
	f := l.pending.Swap(0)
	if l.werr != nil || l.closed {
		return
	}
	s := l.s
	if f&pendPong != 0 {
		l.ctl.Lock()
		buf := ctlBufs.Get().(*[125]byte)
		n := copy(buf[:], l.pong)
		l.ctl.Unlock()
		err := l.writeFrameLocked(ws.OpPong, buf[:n], l.wt)
		ctlBufs.Put(buf)
		if err != nil {
			return
		}
	}
	if f&pendJSONPong != 0 {
		l.ctl.Lock()
		p, box := l.jsonPong, l.jsonBox
		l.jsonPong, l.jsonBox = nil, nil
		l.ctl.Unlock()
		if p != nil {
			err := l.writeFrameLocked(ws.OpText, p, l.wt)
			putBuf(box, p)
			if err != nil {
				return
			}
		}
	}
	if f&pendPingWS != 0 {
		l.ctl.Lock()
		id := l.tracker.SentWS(time.Now(), l.ackMark)
		l.ctl.Unlock()
		buf := ctlBufs.Get().(*[125]byte)
		n := copy(buf[:], id[:])
		err := l.writeFrameLocked(ws.OpPing, buf[:n], l.wt)
		ctlBufs.Put(buf)
		if err != nil {
			return
		}
		s.pingSent(l)
	}
	if f&pendPingJSON != 0 {
		l.ctl.Lock()
		l.tracker.SentJSON(time.Now(), l.ackMark)
		l.ctl.Unlock()
		ping := s.env.Messages.Ping()
		// writeFrameLocked masks in place; never mask the shared bytes:
		// a masked leg writes a pooled copy.
		tmp, box := ping, (*[]byte)(nil)
		if l.mask {
			tmp, box = getBuf(ping)
		}
		err := l.writeFrameLocked(ws.OpText, tmp, l.wt)
		if box != nil {
			putBuf(box, tmp)
		}
		if err != nil {
			return
		}
		s.pingSent(l)
	}
}

// queuePong records the latest RFC ping payload to answer (RFC 6455
// §5.5.3: only the latest needs an answer, so a ping flood costs nothing).
func (l *leg) queuePong(p []byte) {
	l.ctl.Lock()
	if l.pong == nil && len(p) > 0 {
		l.pong = make([]byte, 0, 125) // once per leg: most legs never get a ping
	}
	l.pong = append(l.pong[:0], p...)
	l.ctl.Unlock()
	l.signal(pendPong)
}

// queueJSONPong records the JSON pong answering ping (latest wins), in a
// pooled buffer that the writer returns once it has written it.
func (l *leg) queueJSONPong(ping []byte) {
	m := l.s.env.Messages
	buf, box := takeBuf(len(ping) + len(m.Pong()) + 16) // room for the echoed members
	pong := m.AppendPong(buf[:0], ping)
	l.ctl.Lock()
	old, oldBox := l.jsonPong, l.jsonBox
	l.jsonPong, l.jsonBox = pong, box
	l.ctl.Unlock()
	putBuf(oldBox, old) // a pong not yet written is replaced, never sent
	l.signal(pendJSONPong)
}

// startHeartbeat arms the leg's ping timer (no goroutine until it fires).
// The timer is guarded by ctl so that start, stop and re-arming never race.
func (l *leg) startHeartbeat() {
	if !l.hb.Mode.On() {
		return
	}
	l.ctl.Lock()
	if !l.timerStop.Load() && l.timer == nil {
		l.pingDue = time.Now().Add(l.hb.Interval).UnixNano()
		l.timer = time.AfterFunc(l.hb.Interval, l.tick)
	}
	l.ctl.Unlock()
}

// tick runs when the leg's timer fires: at the ping interval, and for a
// parked leg also when its heartbeat timeout is due (nothing else reads
// the socket then, so no read deadline can fire).
func (l *leg) tick() {
	if l.timerStop.Load() {
		return
	}
	now := time.Now().UnixNano()
	l.ctl.Lock()
	ping := now >= l.pingDue
	if ping {
		l.pingDue = now + int64(l.hb.Interval)
	}
	l.ctl.Unlock()
	if ping {
		var f uint32
		if l.hb.Mode.SendsWS() {
			f |= pendPingWS
		}
		if l.hb.Mode.SendsJSON() {
			f |= pendPingJSON
		}
		l.signal(f)
	}
	if l.state.Load() == legParked && l.hb.Timeout > 0 && now >= l.lastRead.Load()+int64(l.hb.Timeout) {
		l.wakeExpired()
	}
	l.ctl.Lock()
	if !l.timerStop.Load() {
		l.timer.Reset(time.Duration(l.nextTickLocked(now)))
	}
	l.ctl.Unlock()
}

// nextTickLocked is the time from now to the timer's next firing: the next
// ping, or the heartbeat timeout of a parked leg if that comes first.
func (l *leg) nextTickLocked(now int64) int64 {
	next := l.pingDue
	if l.state.Load() == legParked && l.hb.Timeout > 0 {
		if due := l.lastRead.Load() + int64(l.hb.Timeout); due < next {
			next = due
		}
	}
	if next < now {
		next = now
	}
	return next - now
}

// scheduleTimeoutCheck makes the timer of a leg that just parked fire by
// its heartbeat timeout.
func (l *leg) scheduleTimeoutCheck() {
	if !l.hb.Mode.On() || l.hb.Timeout <= 0 {
		return
	}
	l.ctl.Lock()
	if l.timer != nil && !l.timerStop.Load() {
		now := time.Now().UnixNano()
		if l.lastRead.Load()+int64(l.hb.Timeout) < l.pingDue {
			l.timer.Reset(time.Duration(l.nextTickLocked(now)))
		}
	}
	l.ctl.Unlock()
}

// earlyPing sends a ping now (SPEC §4: retained bytes past half the limit).
func (l *leg) earlyPing() {
	var f uint32
	if l.hb.Mode.SendsWS() {
		f |= pendPingWS
	} else if l.hb.Mode.SendsJSON() {
		f |= pendPingJSON
	}
	if f != 0 {
		l.signal(f)
	}
}

func (l *leg) stopHeartbeat() {
	l.ctl.Lock()
	l.timerStop.Store(true)
	if l.timer != nil {
		l.timer.Stop()
	}
	l.ctl.Unlock()
}

// writeClose sends a Close frame, waiting at most d for the write lock and
// d for the write, and marks the leg closing so that its read loop waits at
// most closeW for the peer's reply. It reports whether the frame was
// written.
func (l *leg) writeClose(c CloseError, d time.Duration) bool {
	l.beginClose(l.closeW)
	if !l.lockTimeout(d) {
		return false
	}
	ok := false
	if !l.closed && l.werr == nil {
		l.pending.Store(0)
		ok = l.writeFrameLocked(ws.OpClose, closePayload(c), d) == nil
	}
	l.closed = true
	<-l.wlock
	return ok
}

// beginClose stops the heartbeat and bounds the remaining read time.
func (l *leg) beginClose(wait time.Duration) {
	l.stopHeartbeat()
	dl := time.Now().Add(wait)
	l.closeDL.Store(dl.UnixNano())
	l.closing.Store(true)
	_ = l.conn.SetReadDeadline(dl)
	l.wake() // a parked leg reads the Close reply under that deadline
}

// upstream reports whether l is an upstream connection (the direction of
// its messages: to the client); the client leg has generation 0.
func (l *leg) upstream() bool { return l.gen != 0 }
