package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// maxViolations bounds how many violation texts are kept (all are counted).
const maxViolations = 20

// violations collects invariant violations found while the run goes on.
type violations struct {
	mu    sync.Mutex
	n     int
	first []string
}

func (v *violations) add(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.n++
	if len(v.first) < maxViolations {
		v.first = append(v.first, fmt.Sprintf(format, args...))
	}
}

func (v *violations) snapshot() (int, []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.n, append([]string(nil), v.first...)
}

// sessRec is what the backend knows about one client connection (one tether
// session), across all the upstream connections tether opened for it.
type sessRec struct {
	mu      sync.Mutex
	max     int64 // highest message number received; -1: none
	frames  int64 // data messages received, duplicates included
	upConns int   // upstream connections tether opened for the session
	open    int   // of which open now
}

// backend is the WebSocket server behind the fault relay. It checks every
// message it receives (see the package doc) and echoes it.
type backend struct {
	ln   net.Listener
	srv  *http.Server
	viol *violations

	mu    sync.Mutex
	sess  map[string]*sessRec
	conns map[*websocket.Conn]struct{}

	upgrades atomic.Int64 // upstream connections accepted
	frames   atomic.Int64 // data messages received, duplicates included
	distinct atomic.Int64 // first arrivals of a (session, number)
	echoes   atomic.Int64 // echoes written without error
	open     atomic.Int64 // upstream connections open now
	wg       sync.WaitGroup
}

func newBackend(viol *violations) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{ln: ln, viol: viol, sess: map[string]*sessRec{}, conns: map[*websocket.Conn]struct{}{}}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		_ = b.srv.Serve(ln)
	}()
	return b, nil
}

func (b *backend) addr() string { return b.ln.Addr().String() }

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("conn")
	if id == "" {
		b.viol.add("backend: upstream connection without a conn id: %s", r.URL)
		http.Error(w, "no conn id", http.StatusBadRequest)
		return
	}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the relay reset it mid-handshake
	}
	b.upgrades.Add(1)
	b.open.Add(1)
	b.mu.Lock()
	rec := b.sess[id]
	if rec == nil {
		rec = &sessRec{max: -1}
		b.sess[id] = rec
	}
	b.conns[c] = struct{}{}
	b.mu.Unlock()
	rec.mu.Lock()
	rec.upConns++
	rec.open++
	rec.mu.Unlock()
	defer func() {
		rec.mu.Lock()
		rec.open--
		rec.mu.Unlock()
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		_ = c.Close()
		b.open.Add(-1)
	}()
	b.readLoop(c, id, rec)
}

// readLoop records and echoes every message of one upstream connection.
// Within one upstream connection tether sends a session's messages in
// order without gaps, so their numbers must be consecutive; the first one
// may repeat earlier numbers (re-sent after a loss) but never skip one.
func (b *backend) readLoop(c *websocket.Conn, id string, rec *sessRec) {
	last := int64(-1)
	first := true
	for {
		op, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		m, err := parseMsg(p)
		if err != nil {
			b.viol.add("backend: session %s: %v", id, err)
			continue
		}
		if m.conn != id {
			b.viol.add("backend: message of session %s arrived on session %s's upstream", m.conn, id)
			continue
		}
		if (op == websocket.BinaryMessage) != m.binary {
			b.viol.add("backend: session %s message %d: opcode %d, sent as binary=%v", id, m.seq, op, m.binary)
		}
		b.frames.Add(1)
		rec.mu.Lock()
		rec.frames++
		switch {
		case m.seq > rec.max+1:
			b.viol.add("backend: session %s: message %d arrived after %d: messages %d..%d skipped", id, m.seq, rec.max, rec.max+1, m.seq-1)
		case !first && m.seq != last+1:
			b.viol.add("backend: session %s: message %d followed %d on one upstream connection", id, m.seq, last)
		}
		if m.seq > rec.max {
			b.distinct.Add(m.seq - rec.max)
			rec.max = m.seq
		}
		rec.mu.Unlock()
		first, last = false, m.seq
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteMessage(op, p); err != nil {
			return
		}
		b.echoes.Add(1)
	}
}

// received returns the highest message number received for session id
// (-1: none) and how many upstream connections it had.
func (b *backend) received(id string) (max int64, upConns int) {
	b.mu.Lock()
	rec := b.sess[id]
	b.mu.Unlock()
	if rec == nil {
		return -1, 0
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.max, rec.upConns
}

func (b *backend) sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sess)
}

func (b *backend) close() {
	_ = b.srv.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// A message is "m <conn> <seq> <t|b> <n>|" followed by n copies of one
// letter that depends on seq, so that the receiver can check its session,
// number, opcode and content.
type msg struct {
	conn   string
	seq    int64
	binary bool
}

func fill(seq int64) byte { return 'a' + byte(seq%26) }

func makeMsg(conn string, seq int64, binary bool, pad int) []byte {
	k := byte('t')
	if binary {
		k = 'b'
	}
	p := fmt.Appendf(nil, "m %s %d %c %d|", conn, seq, k, pad)
	return append(p, bytes.Repeat([]byte{fill(seq)}, pad)...)
}

func parseMsg(p []byte) (msg, error) {
	var m msg
	head, body, ok := bytes.Cut(p, []byte("|"))
	f := bytes.Fields(head)
	if !ok || len(f) != 5 || string(f[0]) != "m" {
		return m, fmt.Errorf("malformed message %.40q", p)
	}
	m.conn = string(f[1])
	seq, err1 := strconv.ParseInt(string(f[2]), 10, 64)
	n, err2 := strconv.Atoi(string(f[4]))
	if err1 != nil || err2 != nil || seq < 0 || (string(f[3]) != "t" && string(f[3]) != "b") {
		return m, fmt.Errorf("malformed header %.60q", head)
	}
	m.seq, m.binary = seq, string(f[3]) == "b"
	if len(body) != n || bytes.Count(body, []byte{fill(seq)}) != n {
		return m, fmt.Errorf("message %s/%d: body of %d bytes corrupted (want %d x %q)", m.conn, seq, len(body), n, fill(seq))
	}
	return m, nil
}
