package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// backendEnv, set in the environment of a re-executed tetherchurn, makes it
// run as one backend process (see runBackend).
const backendEnv = "TETHERCHURN_BACKEND"

// The backend's reports to the parent, one line each on its stdout (a
// pipe), written before the backend acts on what they report:
//
//	L                 listening
//	a <sess> <ns>     upstream connection of session <sess> accepted (Unix ns of the request)
//	r <sess> <seq>    message <seq> of session <sess> received
//	v <text>          something that must not happen (a malformed message)
//
// A pipe keeps what was written to it when the writer dies, so a receipt
// reported before a SIGKILL still reaches the parent; the echo and, for
// the messages before one of tether's pings, the pong follow the report,
// so tether never sees proof of receipt for a message the parent was not
// told of.

// Messages on the wire:
//
//	client → backend   m <sess> <seq> |<padding>
//	backend → client   e <gen> <seq>       the echo of message <seq>
//	                   p <gen> <n>         push number <n> (0: sent on accept)
//
// <gen> numbers the backend incarnation (a restart is a new one), so that a
// client can tell whether an echo came through a connection opened after a
// kill.

// backendMain runs one backend process until SIGKILL, or SIGTERM (then it
// sends every connection Close 1001 first). It returns the exit code.
func backendMain(args []string) int {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	addr := fs.String("addr", "", "listen address")
	gen := fs.Int("gen", 0, "incarnation number, echoed in every message")
	push := fs.Duration("push", time.Second, "gap between pushes to each connection")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tetherchurn backend:", err)
		return 2
	}
	b := &backend{gen: *gen, push: *push, out: os.Stdout, conns: map[*bconn]struct{}{}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.report([]byte("L\n"))
	<-ctx.Done()
	_ = ln.Close()
	b.goAway()
	return 0
}

type backend struct {
	gen  int
	push time.Duration

	outMu sync.Mutex
	out   io.Writer

	mu    sync.Mutex
	conns map[*bconn]struct{}
	wg    sync.WaitGroup // connections' readers
}

// bconn is one upstream connection; wmu serialises its data writes (the
// echo from the reader, pushes from the pusher).
type bconn struct {
	c   *websocket.Conn
	wmu sync.Mutex
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 1024,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// report writes one or more report lines to the parent in one write, and
// returns when the pipe has them.
func (b *backend) report(p []byte) {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	if _, err := b.out.Write(p); err != nil {
		os.Exit(3) // the parent is gone
	}
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now().UnixNano()
	sess := r.URL.Query().Get("s")
	if _, err := strconv.Atoi(sess); err != nil {
		http.Error(w, "no session number", http.StatusBadRequest)
		return
	}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	b.report(fmt.Appendf(nil, "a %s %d\n", sess, at))
	bc := &bconn{c: c}
	b.wg.Add(1)
	defer b.wg.Done()
	b.mu.Lock()
	b.conns[bc] = struct{}{}
	b.mu.Unlock()
	done := make(chan struct{})
	go b.pusher(bc, done)
	b.readLoop(bc, sess)
	close(done)
	b.mu.Lock()
	delete(b.conns, bc)
	b.mu.Unlock()
	_ = c.Close()
}

// readLoop reports and echoes every message. Pings are answered by
// gorilla/websocket inside ReadMessage, so a pong always follows the
// reports of the messages before its ping.
func (b *backend) readLoop(bc *bconn, sess string) {
	line := make([]byte, 0, 64)
	echo := make([]byte, 0, 64)
	for {
		_, p, err := bc.c.ReadMessage()
		if err != nil {
			return
		}
		s, seq, ok := parseClientMsg(p)
		if !ok || s != sess {
			b.report(fmt.Appendf(nil, "v session %s: malformed or foreign message %.40q\n", sess, p))
			continue
		}
		line = append(append(append(append(line[:0], "r "...), s...), ' '), seq...)
		b.report(append(line, '\n'))
		echo = append(append(strconv.AppendInt(append(echo[:0], "e "...), int64(b.gen), 10), ' '), seq...)
		if !b.write(bc, echo) {
			return
		}
	}
}

func (b *backend) write(bc *bconn, p []byte) bool {
	bc.wmu.Lock()
	defer bc.wmu.Unlock()
	_ = bc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return bc.c.WriteMessage(websocket.TextMessage, p) == nil
}

// pusher sends push 0 at once, then one every b.push, starting at a random
// phase so that the backend's pushes are spread over the interval.
func (b *backend) pusher(bc *bconn, done <-chan struct{}) {
	msg := make([]byte, 0, 32)
	for n := int64(0); ; n++ {
		msg = strconv.AppendInt(append(strconv.AppendInt(append(msg[:0], "p "...), int64(b.gen), 10), ' '), n, 10)
		if !b.write(bc, msg) {
			return
		}
		d := b.push
		if n == 0 {
			d = time.Duration(rand.Int64N(int64(b.push)) + 1)
		}
		t := time.NewTimer(d)
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// goAway sends every connection Close 1001 (going away), as a backend
// does on a graceful restart, and waits up to a second for tether's
// answers.
func (b *backend) goAway() {
	b.mu.Lock()
	conns := make([]*bconn, 0, len(b.conns))
	for bc := range b.conns {
		conns = append(conns, bc)
	}
	b.mu.Unlock()
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "restart")
	for _, bc := range conns {
		_ = bc.c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	}
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// parseClientMsg returns the session and message number of
// "m <sess> <seq> |<padding>" as slices of p.
func parseClientMsg(p []byte) (sess, seq string, ok bool) {
	rest, ok := bytes.CutPrefix(p, []byte("m "))
	if !ok {
		return "", "", false
	}
	s, rest, ok1 := bytes.Cut(rest, []byte(" "))
	q, _, ok2 := bytes.Cut(rest, []byte(" |"))
	if !ok1 || !ok2 || len(s) == 0 || len(q) == 0 {
		return "", "", false
	}
	if _, err := strconv.ParseUint(string(q), 10, 63); err != nil {
		return "", "", false
	}
	return string(s), string(q), true
}
