package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// session is one client connection, which is one tether session, with its
// reader and its sender.
type session struct {
	n    int
	c    *websocket.Conn
	wmu  sync.Mutex
	sent atomic.Int64 // messages 0..sent-1 were written to the socket
	kick chan struct{}

	pushes atomic.Int64 // backend pushes received
	bad    atomic.Int64 // messages that make no sense (counted as violations)

	mu     sync.Mutex
	echoes []echo // in arrival order

	readDone chan struct{}
	endErr   error       // the reader's error (after readDone)
	closing  atomic.Bool // the tool is closing it: not an unexpected end
}

type echo struct {
	at  int64 // Unix ns of arrival
	seq int64
	gen int32 // incarnation that echoed it
}

// clients runs every session.
type clients struct {
	url      string
	sources  int
	interval time.Duration
	pad      []byte
	stop     chan struct{} // closed: senders stop
	wg       sync.WaitGroup
	sess     []*session
}

func newClients(tetherAddr string, n, sources int, interval time.Duration, size int) *clients {
	return &clients{
		url:      "ws://" + tetherAddr + "/churn",
		sources:  sources,
		interval: interval,
		pad:      bytes.Repeat([]byte{'x'}, size),
		stop:     make(chan struct{}),
		sess:     make([]*session, n),
	}
}

// dialAll opens every session, at most rate handshakes a second and 64 at
// a time, and starts its reader and sender.
func (cl *clients) dialAll(ctx context.Context, rate int) error {
	var next atomic.Int64
	interval := time.Second / time.Duration(max(rate, 1))
	start := time.Now()
	errc := make(chan error, 64)
	var wg sync.WaitGroup
	for range min(64, len(cl.sess)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cl.sess) {
					return
				}
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					time.Sleep(d) // pacing the ramp-up
				}
				if err := cl.dial(ctx, i); err != nil {
					next.Store(int64(len(cl.sess)))
					errc <- fmt.Errorf("session %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// dial opens session i from source address 127.0.0.(1 + i mod sources), so
// that many connections fit in the ephemeral port range.
func (cl *clients) dial(ctx context.Context, i int) error {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%max(cl.sources, 1)))}
	d := websocket.Dialer{
		HandshakeTimeout: 30 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		NetDialContext:   (&net.Dialer{LocalAddr: src}).DialContext,
	}
	c, _, err := d.DialContext(ctx, cl.url+"?s="+strconv.Itoa(i), nil)
	if err != nil {
		return err
	}
	s := &session{n: i, c: c, kick: make(chan struct{}, 1), readDone: make(chan struct{})}
	cl.sess[i] = s
	cl.wg.Add(1)
	go cl.read(s)
	go cl.send(s, rand.New(rand.NewPCG(uint64(i), 1)))
	return nil
}

// read records every echo and push; the first push of an incarnation
// (sent on accept, so the session has a new upstream connection) makes
// the sender send at once, so that the round trip through the new
// connection is measured without waiting for the next scheduled message.
func (cl *clients) read(s *session) {
	defer cl.wg.Done()
	defer close(s.readDone)
	for {
		_, p, err := s.c.ReadMessage()
		if err != nil {
			s.endErr = err
			return
		}
		kind, gen, n, ok := parseBackendMsg(p)
		switch {
		case !ok:
			if !bytes.HasPrefix(p, []byte(`{"type":"ping"`)) { // tether's JSON heartbeat
				s.bad.Add(1)
			}
		case kind == 'p':
			s.pushes.Add(1)
			if n == 0 {
				select {
				case s.kick <- struct{}{}:
				default:
				}
			}
		case n >= s.sent.Load():
			s.bad.Add(1) // an echo of a message never sent
		default:
			s.mu.Lock()
			s.echoes = append(s.echoes, echo{at: time.Now().UnixNano(), seq: n, gen: int32(gen)})
			s.mu.Unlock()
		}
	}
}

// parseBackendMsg parses "e <gen> <seq>" and "p <gen> <n>".
func parseBackendMsg(p []byte) (kind byte, gen int, n int64, ok bool) {
	if len(p) < 5 || (p[0] != 'e' && p[0] != 'p') || p[1] != ' ' {
		return 0, 0, 0, false
	}
	a, b, ok := bytes.Cut(p[2:], []byte(" "))
	g, err1 := strconv.Atoi(string(a))
	v, err2 := strconv.ParseInt(string(b), 10, 64)
	if !ok || err1 != nil || err2 != nil || g < 0 || v < 0 {
		return 0, 0, 0, false
	}
	return p[0], g, v, true
}

// send writes a message every interval (uniform in [½, 1½] interval) and
// on a kick, until stop or a failed write.
func (cl *clients) send(s *session, rnd *rand.Rand) {
	gap := func() time.Duration {
		return cl.interval/2 + time.Duration(rnd.Int64N(int64(cl.interval)+1))
	}
	t := time.NewTimer(gap())
	defer t.Stop()
	for {
		select {
		case <-cl.stop:
			return
		case <-s.readDone:
			return
		case <-t.C:
			t.Reset(gap())
		case <-s.kick:
		}
		if _, err := cl.write(s); err != nil {
			return
		}
	}
}

// write sends the session's next message and returns its number.
func (cl *clients) write(s *session) (int64, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	seq := s.sent.Load()
	p := fmt.Appendf(nil, "m %d %d |", s.n, seq)
	p = append(p, cl.pad...)
	_ = s.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	// Counted as sent before the write: a message that may have reached
	// the socket is one tether must deliver.
	s.sent.Store(seq + 1)
	if err := s.c.WriteMessage(websocket.TextMessage, p); err != nil {
		return seq, err
	}
	return seq, nil
}

// open reports whether the session's client leg is still open.
func (s *session) open() bool {
	select {
	case <-s.readDone:
		return false
	default:
		return true
	}
}

// relayedAfter returns the arrival time of the first echo after t (Unix
// ns) from an incarnation not in dead; 0: none yet.
func (s *session) relayedAfter(t int64, dead map[int32]bool) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := int64(0)
	for i := len(s.echoes) - 1; i >= 0 && s.echoes[i].at > t; i-- {
		if !dead[s.echoes[i].gen] {
			first = s.echoes[i].at
		}
	}
	return first
}

// echoed reports whether the echo of message seq came back.
func (s *session) echoed(seq int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.echoes) - 1; i >= 0; i-- {
		if s.echoes[i].seq == seq {
			return true
		}
	}
	return false
}

// closeAll closes every session with Close 1000.
func (cl *clients) closeAll() {
	for _, s := range cl.sess {
		if s == nil {
			continue
		}
		s.closing.Store(true)
		s.wmu.Lock()
		_ = s.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		s.wmu.Unlock()
		_ = s.c.Close()
	}
	cl.wg.Wait()
}

// closeCode names how a session ended. gorilla/websocket reports the
// codes it does not know as valid (1012-1014) as a protocol error.
func closeCode(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return strconv.Itoa(ce.Code)
	}
	var code int
	if _, e := fmt.Sscanf(err.Error(), "websocket: bad close code %d", &code); e == nil {
		return strconv.Itoa(code)
	}
	return "no Close"
}
