package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// How a client connection ended.
const (
	endOpen       int32 = iota // still open (kept to the end of the run)
	endDropped                 // the client dropped it on purpose
	endUnexpected              // tether closed it, or it broke
)

// connStat is one client connection, which is one tether session.
type connStat struct {
	id      string
	sent    atomic.Int64 // messages numbered 0..sent-1 were handed to the socket
	echoMax atomic.Int64 // highest number echoed back; -1: none
	echoes  atomic.Int64
	pings   atomic.Int64 // heartbeats received (RFC and JSON pings)
	end     atomic.Int32
}

// liveConn is an open client connection with its reader running.
type liveConn struct {
	c        *websocket.Conn
	st       *connStat
	readErr  chan error // the reader's end (buffered: 1)
	wmu      sync.Mutex // serialises data writes (the idle reader answers JSON pings)
	dropping atomic.Bool
	opened   time.Time
}

// clients runs the client slots: each keeps one connection open at a time,
// sends numbered messages on it and drops it now and then.
type clients struct {
	cfg    *Config
	url    string // ws://tether/soak
	viol   *violations
	stop   chan struct{} // closed: stop sending and dropping, keep the conns
	dialer websocket.Dialer
	wg     sync.WaitGroup

	mu         sync.Mutex
	all        []*connStat
	kept       []*liveConn
	failStatus map[int]int // handshake failures by HTTP status (0: no response)
	endCodes   map[int]int // unexpected ends by close code (0: no Close)

	handshakesOK      atomic.Int64
	handshakesFailed  atomic.Int64
	handshakesTimeout atomic.Int64 // abandoned by our deadline: tether may count them
	drops             [3]atomic.Int64
	unexpected        atomic.Int64
	sentTotal         atomic.Int64
	echoTotal         atomic.Int64
}

var dropNames = [3]string{"rst", "fin", "close-1000"}

func newClients(cfg *Config, tetherAddr string, viol *violations) *clients {
	return &clients{
		cfg:        cfg,
		url:        "ws://" + tetherAddr + "/soak",
		viol:       viol,
		stop:       make(chan struct{}),
		dialer:     websocket.Dialer{HandshakeTimeout: 30 * time.Second},
		failStatus: map[int]int{},
		endCodes:   map[int]int{},
	}
}

func (cl *clients) stopped() bool {
	select {
	case <-cl.stop:
		return true
	default:
		return false
	}
}

// dial opens the connection for session id and starts its reader.
func (cl *clients) dial(ctx context.Context, id string, idle bool) (*liveConn, error) {
	st := &connStat{id: id}
	st.echoMax.Store(-1)
	c, resp, err := cl.dialer.DialContext(ctx, cl.url+"?conn="+id, nil)
	if err != nil {
		cl.handshakesFailed.Add(1)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		var ne net.Error
		if status == 0 && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()) {
			cl.handshakesTimeout.Add(1)
		}
		cl.mu.Lock()
		cl.failStatus[status]++
		cl.mu.Unlock()
		return nil, err
	}
	cl.handshakesOK.Add(1)
	cl.mu.Lock()
	cl.all = append(cl.all, st)
	cl.mu.Unlock()
	lc := &liveConn{c: c, st: st, readErr: make(chan error, 1), opened: time.Now()}
	c.SetPingHandler(func(data string) error {
		st.pings.Add(1)
		err := c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
	go cl.read(lc, idle)
	return lc, nil
}

var (
	jsonPing = []byte(`{"type":"ping"}`)
	jsonPong = []byte(`{"type":"pong"}`)
)

// read is a connection's reader: it checks every echo and counts
// heartbeats. The idle session answers JSON pings as an app would.
func (cl *clients) read(lc *liveConn, idle bool) {
	st := lc.st
	for {
		op, p, err := lc.c.ReadMessage()
		if err != nil {
			lc.readErr <- err
			return
		}
		if bytes.Equal(p, jsonPing) {
			st.pings.Add(1)
			if idle {
				lc.wmu.Lock()
				_ = lc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				_ = lc.c.WriteMessage(websocket.TextMessage, jsonPong)
				lc.wmu.Unlock()
			}
			continue
		}
		m, err := parseMsg(p)
		switch {
		case err != nil:
			cl.viol.add("client %s: %v", st.id, err)
			continue
		case m.conn != st.id:
			cl.viol.add("client %s: received session %s's message %d", st.id, m.conn, m.seq)
			continue
		case m.seq >= st.sent.Load():
			cl.viol.add("client %s: echo of message %d, which was never sent", st.id, m.seq)
			continue
		case (op == websocket.BinaryMessage) != m.binary:
			cl.viol.add("client %s: echo of message %d with opcode %d", st.id, m.seq, op)
		}
		st.echoes.Add(1)
		cl.echoTotal.Add(1)
		for {
			cur := st.echoMax.Load()
			if m.seq <= cur || st.echoMax.CompareAndSwap(cur, m.seq) {
				break
			}
		}
	}
}

// send writes the connection's next numbered message.
func (cl *clients) send(lc *liveConn, rnd *rand.Rand) error {
	seq := lc.st.sent.Add(1) - 1
	binary := rnd.IntN(4) == 0
	p := makeMsg(lc.st.id, seq, binary, rnd.IntN(cl.cfg.MaxSize+1))
	op := websocket.TextMessage
	if binary {
		op = websocket.BinaryMessage
	}
	lc.wmu.Lock()
	defer lc.wmu.Unlock()
	_ = lc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := lc.c.WriteMessage(op, p)
	if err == nil {
		cl.sentTotal.Add(1)
	}
	return err
}

// slot runs client slot i until stop: connect, send, drop, reconnect.
func (cl *clients) slot(ctx context.Context, i int, rnd *rand.Rand, start time.Duration) {
	defer cl.wg.Done()
	if !cl.wait(ctx, start) {
		return
	}
	for k := 0; !cl.stopped() && ctx.Err() == nil; k++ {
		lc, err := cl.dial(ctx, fmt.Sprintf("s%d.%d", i, k), false)
		if err != nil {
			// Expected while the relay refuses or resets (502).
			if !cl.wait(ctx, time.Duration(100+rnd.IntN(500))*time.Millisecond) {
				return
			}
			continue
		}
		if cl.drive(lc, rnd) {
			cl.mu.Lock()
			cl.kept = append(cl.kept, lc)
			cl.mu.Unlock()
			return
		}
	}
}

// wait sleeps for d unless the run stops first.
func (cl *clients) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-cl.stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// gap is the random time before a connection's next message: uniform in
// [0, 2 × interval], so the mean is the interval.
func (cl *clients) gap(rnd *rand.Rand) time.Duration {
	return time.Duration(rnd.Int64N(int64(2*cl.cfg.Interval) + 1))
}

// drive sends on lc until the run stops (it reports true: the connection
// is kept for the final checks), the client drops it, or it ends
// unexpectedly.
func (cl *clients) drive(lc *liveConn, rnd *rand.Rand) bool {
	life := time.Duration(math.MaxInt64)
	if cl.cfg.DropMean > 0 {
		life = time.Duration(rnd.ExpFloat64() * float64(cl.cfg.DropMean))
	}
	dropT := time.NewTimer(life)
	defer dropT.Stop()
	msgT := time.NewTimer(cl.gap(rnd))
	defer msgT.Stop()
	for {
		select {
		case <-cl.stop:
			return true
		case err := <-lc.readErr:
			cl.ended(lc, err)
			return false
		case <-dropT.C:
			cl.drop(lc, rnd.IntN(3))
			return false
		case <-msgT.C:
			if err := cl.send(lc, rnd); err != nil {
				_ = lc.c.Close()
				cl.ended(lc, fmt.Errorf("write: %w", err))
				<-lc.readErr
				return false
			}
			msgT.Reset(cl.gap(rnd))
		}
	}
}

// drop ends lc on the client's initiative: a TCP reset, a TCP close
// without a WebSocket Close, or a Close 1000 handshake.
func (cl *clients) drop(lc *liveConn, how int) {
	lc.dropping.Store(true)
	cl.drops[how].Add(1)
	lc.st.end.Store(endDropped)
	switch how {
	case 0:
		if tc, ok := lc.c.UnderlyingConn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = lc.c.Close()
		<-lc.readErr
	case 1:
		_ = lc.c.Close()
		<-lc.readErr
	case 2:
		closeGracefully(lc)
	}
}

// closeGracefully sends Close 1000, waits up to 5 s for tether's reply
// and closes the connection.
func closeGracefully(lc *liveConn) {
	lc.dropping.Store(true)
	_ = lc.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(5*time.Second))
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-lc.readErr:
		_ = lc.c.Close()
	case <-t.C:
		_ = lc.c.Close()
		<-lc.readErr
	}
}

// ended records a connection that ended without the client asking: tether
// closed it or it broke. With the faults this tool injects, tether (README
// "Upstream loss, reconnect and the delivery guarantee") keeps every client
// leg open, so each one is a violation.
func (cl *clients) ended(lc *liveConn, err error) {
	lc.st.end.Store(endUnexpected)
	cl.unexpected.Add(1)
	code := 0
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	cl.mu.Lock()
	cl.endCodes[code]++
	cl.mu.Unlock()
	_ = lc.c.Close()
	cl.viol.add("client %s: session ended without the client asking after %v: %v", lc.st.id, time.Since(lc.opened).Round(time.Millisecond), err)
}

// statusText names an HTTP status for the report (0: no response).
func statusText(code int) string {
	if code == 0 {
		return "no response"
	}
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}
