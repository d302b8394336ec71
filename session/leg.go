package session

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/tether-proxy/tether/heartbeat"
	"github.com/tether-proxy/tether/internal/netpoll"
)

// Leg names, as used in logs and metric labels (README "Metrics and logs").
const (
	LegClient   = "client"
	LegUpstream = "upstream"
)

// leg is one WebSocket connection of a session: the client leg, or one
// generation of the upstream leg. Its state is in three parts, each with
// one owner:
//
//   - legReadState (leg_read.go), owned by the leg's read loop: the read
//     buffer and its size tier, the frame reader, the read deadline. Only
//     the read loop reads the connection. A parked leg has no read loop;
//     the goroutine that wakes it (a CAS on legParkState.state) owns this
//     part from then on.
//   - legWriteState (leg_write.go), guarded by the write lock (writeLock:
//     an atomic count; a goodbye write polls it, so that it can give up
//     waiting). It is held for
//     one frame write under a write deadline and never across anything
//     else. Control frames that another goroutine wants written (pongs,
//     heartbeat pings) are left as flags in pending; whoever holds or next
//     takes the lock writes them before it releases it (see unlock).
//   - legParkState (leg_park.go), shared: parking, liveness and the
//     heartbeat timer, in atomics and under ctl.
//
// Parking: a leg whose connection is a socket (not TLS, not a pipe) and
// that has been quiet for Env.IdleAfter at a message boundary parks: its
// read loop returns, its goroutine goes back to the workers, its read
// buffer goes back to a pool and the process's poller waits for the socket
// to become readable.
// Readiness, a Close to send, a failed write or a heartbeat timeout wakes
// it (wake), which runs the same read loop on a worker goroutine. So
// an idle leg costs no goroutine and no buffer, only its structs.
//
// Closing (leg.go): writeClose sends a Close under the write lock and
// marks the leg closing, which bounds what is left of its reads.
type leg struct {
	// Fixed when the leg is made, before its read loop starts.
	s       *Session
	conn    net.Conn
	gen     uint64 // upstream generation; 0 for the client leg (see upstream)
	hb      heartbeat.Config
	wt      time.Duration   // write timeout
	resume  func()          // runs the read loop again after a park
	wakeFn  func()          // wake, as a func value made once
	raw     syscall.RawConn // a socket's (TCP, Unix): written raw (rawio.go); nil: TLS, a pipe
	mask    bool            // frames we send are masked (we are the client side)
	deflate bool            // permessage-deflate on sends (client leg), set before Run
	parks   bool            // read raw (pump), and parks when idle: a socket and a poller
	// sweepAt is the leg's place in Env's sweeper, under the sweeper's
	// lock (sweep.go): index + 1 in its running legs while the read loop
	// runs, -(index + 1) in its parked probes while parked with a probe
	// armed, 0 in neither.
	sweepAt int32

	// ctl guards the ctl-marked fields of legWriteState (the pongs to
	// write) and legParkState (the heartbeat tracker and timer).
	ctl sync.Mutex

	legReadState
	legWriteState
	legParkState
}

// legReadState is the part of a leg its read loop owns (see leg).
type legReadState struct {
	rb   *readBuf // holds the frame reader's buffer; nil while parked
	tier uint8    // index in readBufSizes of the read buffer to take
	grow bool     // a read filled the buffer: take the next size
	// quiet: since the leg last parked, it has read only control frames
	// and heartbeat messages; short: its last socket read took less than
	// it asked for.
	quiet, short bool
	lr           legReader
	fr           frameReader
	ph           netpoll.Handle // the leg's registration in the poller
	// flushTo is the leg this leg's read loop left frames pending on
	// (write coalescing). It is flushed before the loop's next socket
	// read, so pending frames never wait for input.
	flushTo *leg
	// rdl is the read deadline the read loop left set on conn (unix
	// nano; 0 none; -1 perhaps a sweep's, to clear), see armRead.
	rdl int64
}

// legWriteState is the part of a leg guarded by its write lock (see leg),
// except where marked.
type legWriteState struct {
	wlock   writeLock // the write lock
	werr    error     // sticky write error
	wdl     int64     // the write deadline set on conn (unix nano; armWrite)
	ackMark uint64    // seq+1 of the last data message written
	closed  bool      // a Close frame was written
	hdr     [14]byte
	bufs    net.Buffers // bufArr, for a connection not written raw (raw nil)
	bufArr  [2][]byte
	wfn     func(fd uintptr) bool // rawWrite, made once
	zbuf    *bytes.Buffer         // deflate output, made on the first compressed send
	// wbuf holds frames appended by writeData with more set, not yet
	// written (masked already). A pooled buffer, held only while frames
	// are pending; wbox is its pool box.
	wbuf []byte
	wbox *[]byte

	// Atomic: control work left by goroutines that could not take the
	// lock (pend* flags), and why a writer tore the leg down (fail).
	pending atomic.Uint32
	failed  atomic.Pointer[error]

	// Under ctl: what the pending pongs answer.
	pong     []byte  // latest RFC ping payload to answer; 125 B cap once a ping came
	jsonPong []byte  // the JSON pong to write, in a pooled buffer
	jsonBox  *[]byte // jsonPong's pool box
}

// legParkState is parking, liveness and the heartbeat timer: shared by the
// read loop, the poller, the timer and the writers (see leg).
type legParkState struct {
	// Atomic.
	state     atomic.Uint32 // legRunning, legParked, legDone, or legParking and its wakes
	expired   atomic.Bool   // woken because the heartbeat timeout passed
	lastRead  atomic.Int64  // unix nano of the last bytes read (parking legs)
	closeDL   atomic.Int64  // read deadline (unix nano) once closing
	closing   atomic.Bool   // a Close was sent or the leg is being torn down
	timerStop atomic.Bool
	// ackDue is the acknowledgement ping of an upstream leg (ack.go): 0
	// none, > 0 armed for that time (unix nano), < 0 a ping in flight,
	// overdue from -ackDue.
	// Written under ctl; read without it on the per-message path.
	ackDue atomic.Int64
	// probeDue is the unix nano of the next probe (ack.go); 0 none.
	// Written under ctl; the sweeper reads it without.
	probeDue atomic.Int64

	// Under ctl.
	timer   *time.Timer
	pingDue int64 // unix nano of the next heartbeat ping
	ackLast int64 // unix nano of the last acknowledgement ping
	tracker heartbeat.Tracker
}

func newLeg(s *Session, conn net.Conn, buffered []byte, fromClient bool, hb heartbeat.Config) *leg {
	if s.sr.strict.Load() {
		// A JSON ping would break an MQTT or STOMP stream (README
		// "Heartbeats"): RFC pings only.
		hb.Mode = hb.Mode.WithoutJSON()
	}
	l := &leg{
		s:    s,
		conn: conn,
		mask: !fromClient,
		hb:   hb,
		wt:   s.cfg.WriteTimeout,
	}
	l.tier = tierFixed
	l.lr = legReader{l: l, pre: buffered}
	l.fr = frameReader{fromClient: fromClient, max: int64(s.cfg.MaxMessageBytes)}
	// A leg with heartbeats more often than parkMinInterval wakes for
	// every ping anyway: parking it would cost a park and a wake (an
	// epoll_ctl and a hand-off to a worker goroutine) per interval to save memory for
	// less than that interval, so it keeps its goroutine.
	parkable := !hb.Mode.On() || hb.Interval >= s.env.parkMinInterval()
	switch c := conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		if rc, err := c.(syscall.Conn).SyscallConn(); err == nil {
			l.raw, l.wfn = rc, l.rawWrite
		}
	}
	if p := s.env.poller; p != nil && s.env.IdleAfter >= 0 && parkable && l.raw != nil {
		l.parks = true
		l.tier = tierWake
		l.lastRead.Store(time.Now().UnixNano())
		l.wakeFn = l.wake
	}
	return l
}

// closeConn closes the connection and wakes the leg if it is parked, so
// that its read loop sees the close and ends (a closed socket leaves the
// poller without a readiness report). A socket read raw is closed on a
// goroutine of its own: its read loop may be inside pumpRead, handling a
// message (the caller may be that loop), and net.Conn.Close waits until
// the read in progress returns.
func (l *leg) closeConn() {
	if l.parks {
		go l.conn.Close()
	} else {
		_ = l.conn.Close()
	}
	l.wake()
}

// writeClose sends a Close frame, waiting at most d for the write lock and
// d for the write, and marks the leg closing so that its read loop waits at
// most Env's close wait for the peer's reply. It reports whether the frame was
// written.
func (l *leg) writeClose(c CloseError, d time.Duration) bool {
	l.beginClose(l.s.env.closeWait())
	if !l.lockTimeout(d) {
		return false
	}
	ok := false
	if !l.closed && l.werr == nil {
		l.pending.Store(0)
		ok = l.writeFrameLocked(ws.OpClose, closePayload(c), d) == nil
	}
	l.closed = true
	l.wlock.release()
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

// name is LegClient or LegUpstream: the upstream leg is the one whose
// frames tether masks (it is the client side there).
func (l *leg) name() string {
	if l.mask {
		return LegUpstream
	}
	return LegClient
}
