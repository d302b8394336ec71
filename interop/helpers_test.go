package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-proxy/tether/internal/leakcheck"
	"github.com/tether-proxy/tether/internal/testkit"
	"github.com/tether-proxy/tether/proxy"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// pythonPath is where Debian's python3-websockets lands; a pyenv python3
// earlier on PATH would not have it.
const pythonPath = "/usr/bin/python3"

// missing skips t with why, or fails it under CI=true, where every peer
// must be present.
func missing(t *testing.T, why string) {
	t.Helper()
	testkit.Missing(t, why)
}

var (
	nodeCheck = sync.OnceValues(func() (string, string) {
		return nodeModuleCheck("node", "ws", "Node ws interop tests")
	})
	pythonCheck = sync.OnceValues(func() (string, string) {
		if _, err := os.Stat(pythonPath); err != nil {
			return "", pythonPath + " not found; install it with `apt-get install -y python3-websockets` to run the Python websockets interop tests"
		}
		out, err := exec.Command(pythonPath, "-c", "import websockets; print(websockets.__version__)").CombinedOutput()
		if err != nil {
			return "", pythonPath + " cannot import websockets; install it with `apt-get install -y python3-websockets` to run the Python websockets interop tests (" + strings.TrimSpace(string(out)) + ")"
		}
		return pythonPath, ""
	})
)

// nodeModuleCheck finds node and the npm module installed in dir (under
// interop), or says how to install them to run what.
func nodeModuleCheck(dir, module, what string) (string, string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "node not found on PATH; install it with `apt-get install -y nodejs` to run the " + what
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", module, "package.json")); err != nil {
		return "", "interop/" + dir + "/node_modules/" + module + " missing; run `(cd interop/" + dir + " && npm ci --no-audit --no-fund)` to run the " + what
	}
	return node, ""
}

// peerCommand returns the command line that runs lang's peer script
// ("node" or "python") with args, or skips t when that peer is missing.
func peerCommand(t *testing.T, lang string, args ...string) []string {
	t.Helper()
	switch lang {
	case "node":
		node, why := nodeCheck()
		if why != "" {
			missing(t, why)
		}
		return append([]string{node, filepath.Join("node", "peer.js")}, args...)
	case "python":
		py, why := pythonCheck()
		if why != "" {
			missing(t, why)
		}
		return append([]string{py, filepath.Join("python", "peer.py")}, args...)
	case "replaynode":
		node, why := replayNodeCheck()
		if why != "" {
			missing(t, why)
		}
		return append([]string{node, filepath.Join("replaynode", "peers.js")}, args...)
	}
	t.Fatalf("unknown peer %q", lang)
	return nil
}

// event is one line a peer script prints (see node/peer.js).
type event struct {
	Ev         string  `json:"ev"`
	Port       int     `json:"port"`
	Protocol   string  `json:"protocol"`
	Extensions string  `json:"extensions"`
	Offered    string  `json:"offered"`
	Type       string  `json:"type"`
	Size       int     `json:"size"`
	SHA256     string  `json:"sha256"`
	Text       *string `json:"text"`
	Code       int     `json:"code"`
	Reason     string  `json:"reason"`
	Messages   int     `json:"messages"`
	JSONPings  int     `json:"jsonpings"`
	Pings      int     `json:"pings"`
	Message    string  `json:"message"`
	Data       string  `json:"data"`
	// replaynode/peers.js
	Name      string `json:"name"`
	ID        string `json:"id"`
	Recovered *bool  `json:"recovered"`

	line string
}

// peer is a running peer script.
type peer struct {
	lang   string // "node" or "python"
	name   string
	stdin  io.WriteCloser
	events chan event // closed when stdout ends
	stderr *lockedBuffer
	proc   *os.Process
	done   chan struct{} // closed when the process has been waited for
}

type lockedBuffer = testkit.LockedBuffer

// startPeer runs lang's peer script with args and env added to its
// environment. Cleanup closes its stdin (it exits on EOF) and kills it if
// it has not exited within 5 s.
func startPeer(t *testing.T, name, lang string, env []string, args ...string) *peer {
	t.Helper()
	argv := peerCommand(t, lang, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	p := &peer{lang: lang, name: name, events: make(chan event, 256), stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s peer: %v", lang, err)
	}
	p.stdin, p.proc = stdin, cmd.Process
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = event{Ev: "error", Message: "unparsable line: " + err.Error()}
			}
			ev.line = sc.Text()
			p.events <- ev
		}
		close(p.events)
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.stdin.Close()
		// Nobody reads the events any more: a chatty peer would block
		// its reader on a full channel, and done would never come.
		go func() {
			for range p.events {
			}
		}()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.proc.Kill()
			<-p.done
		}
		if t.Failed() {
			if s := p.stderr.String(); s != "" {
				t.Logf("%s stderr:\n%s", p.name, s)
			}
		}
	})
	return p
}

// do sends one command line.
func (p *peer) do(t *testing.T, cmd map[string]any) {
	t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("%s: write command: %v\n%s", p.name, err, p.stderr.String())
	}
}

// expect returns the peer's next event, which must be of kind ev.
func (p *peer) expect(t *testing.T, ev string) event {
	t.Helper()
	select {
	case e, ok := <-p.events:
		if !ok {
			t.Fatalf("%s exited while the test waited for %q\nstderr:\n%s", p.name, ev, p.stderr.String())
		}
		if e.Ev != ev {
			t.Fatalf("%s: got %s, want a %q event", p.name, e.line, ev)
		}
		return e
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no %q event within 20 s\nstderr:\n%s", p.name, ev, p.stderr.String())
	}
	return event{}
}

// send makes the peer send gen(typ, size, seed) in fragments frames.
func (p *peer) send(t *testing.T, typ string, size, seed, fragments int) {
	t.Helper()
	p.do(t, map[string]any{"op": "send", "type": typ, "size": size, "seed": seed, "fragments": fragments})
}

func (p *peer) close(t *testing.T, code int, reason string) {
	t.Helper()
	p.do(t, map[string]any{"op": "close", "code": code, "reason": reason})
}

func (p *peer) stats(t *testing.T) event {
	t.Helper()
	p.do(t, map[string]any{"op": "stats"})
	return p.expect(t, "stats")
}

// unit is repeated in generated text; it has 2-, 3- and 4-byte UTF-8.
var unit = []byte("tether ✓ interop 世界 🌍 ")

// gen is the peer scripts' payload generator (node/peer.js gen).
func gen(typ string, size, seed int) []byte {
	out := make([]byte, 0, size)
	if typ == "binary" {
		for i := range size {
			out = append(out, byte(i*131+seed*7+(i>>8)))
		}
		return out
	}
	head := []byte("#" + strconv.Itoa(seed) + "|")
	if size < len(head) {
		return bytes.Repeat([]byte("."), size)
	}
	out = append(out, head...)
	for len(out)+len(unit) <= size {
		out = append(out, unit...)
	}
	return append(out, bytes.Repeat([]byte("."), size-len(out))...)
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// tether is proxy.Server on 127.0.0.1 behind a listener that counts the
// bytes of its client connections.
type tether struct {
	URL  string
	reg  *prometheus.Registry
	wire *wire
}

func startTether(t *testing.T, upstream string, mod func(*proxy.Config)) *tether {
	t.Helper()
	cfg, err := proxy.DefaultConfig(upstream)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ListenAddr = "127.0.0.1:0"
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("TETHER_TEST_LOG") == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	srv, err := proxy.New(cfg, proxy.Options{Registry: reg, Logger: log, CloseWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{Listener: ln}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(w)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	scheme := "ws://"
	if cfg.TLSCertFile != "" {
		scheme = "wss://"
	}
	return &tether{URL: scheme + ln.Addr().String(), reg: reg, wire: w}
}

// wire counts the bytes tether reads from and writes to its client
// connections, and keeps the head of each HTTP request it reads and
// response it writes.
type wire struct {
	net.Listener
	read, written atomic.Int64

	mu                  sync.Mutex
	requests, responses []string
}

func (w *wire) Accept() (net.Conn, error) {
	c, err := w.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &wireConn{Conn: c, w: w}, nil
}

// lastRequest is the head of the last HTTP request tether read.
func (w *wire) lastRequest() string { return w.last(&w.requests) }

// lastResponse is the head of the last HTTP response tether wrote.
func (w *wire) lastResponse() string { return w.last(&w.responses) }

func (w *wire) last(heads *[]string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(*heads) == 0 {
		return ""
	}
	return (*heads)[len(*heads)-1]
}

type wireConn struct {
	net.Conn
	w   *wire
	in  head
	out head
}

// head collects a connection's bytes in one direction up to the blank
// line that ends the HTTP head.
type head struct {
	b    []byte
	done bool
}

func (h *head) add(w *wire, heads *[]string, p []byte) {
	if h.done {
		return
	}
	h.b = append(h.b, p...)
	if i := bytes.Index(h.b, []byte("\r\n\r\n")); i >= 0 {
		w.mu.Lock()
		*heads = append(*heads, string(h.b[:i]))
		w.mu.Unlock()
		h.b, h.done = nil, true
	}
}

// Read and Write are each called by one goroutine at a time (net/http,
// then tether's reader and its write lock), so in and out need no lock.
func (c *wireConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.read.Add(int64(n))
	c.in.add(c.w, &c.w.requests, p[:n])
	return n, err
}

// CloseWrite keeps the half-close of the connection underneath, which
// tether uses to end a connection after its Close without a reset.
func (c *wireConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Write keeps the head before it writes: the peer may act on the bytes
// (a browser's onopen, the test's look at the head) before the write
// returns here.
func (c *wireConn) Write(p []byte) (int, error) {
	c.out.add(c.w, &c.w.responses, p)
	n, err := c.Conn.Write(p)
	c.w.written.Add(int64(n))
	return n, err
}

// header returns the value of a header in an HTTP response head.
func header(head, name string) string {
	for _, l := range strings.Split(head, "\r\n")[1:] {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// metric returns a counter or gauge, or a histogram's sample count, of
// the series whose labels include every "name=value" given (0 if none).
func metric(t *testing.T, tt *tether, name string, labels ...string) float64 {
	t.Helper()
	return testkit.Metric(t, tt.reg, name, labels...)
}

// waitMetric waits until metric(name, labels) >= want. tether reports
// these counters only through its registry, so the test polls it.
func waitMetric(t *testing.T, tt *tether, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := metric(t, tt, name, labels...)
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v after 10 s, want >= %v", name, labels, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func describe(e event) string {
	return fmt.Sprintf("%s %d bytes sha256 %.12s", e.Type, e.Size, e.SHA256)
}
