package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-proxy/tether/internal/testkit"
)

// coreBin is the tether binary, built once by TestMain.
var coreBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	coreBin = filepath.Join(dir, "tether")
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gocmd); err != nil {
		gocmd = "go"
	}
	build := exec.Command(gocmd, "build", "-o", coreBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building tether:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// coreEnv is a clean environment (nothing of the test's own TETHER_*).
func coreEnv(kv ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, kv...)
}

// coreRun runs the binary to completion.
func coreRun(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(coreBin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("tether %v did not exit; stderr:\n%s", args, errb.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// coreProc is a running tether binary.
type coreProc struct {
	cmd   *exec.Cmd
	addr  string // client listener, from the "tether listening" log line
	mu    sync.Mutex
	lines []string // stderr
	exit  chan error
}

func (p *coreProc) stderr() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// coreStart starts tether with env (TETHER_LISTEN_ADDR defaults to a
// free loopback port, logs to JSON) and waits until it listens.
func coreStart(t *testing.T, env ...string) *coreProc {
	t.Helper()
	full := coreEnv("TETHER_LISTEN_ADDR=127.0.0.1:0", "TETHER_ADMIN_ADDR=", "TETHER_LOG_FORMAT=json")
	full = append(full, env...) // later entries win
	cmd := exec.Command(coreBin)
	cmd.Env = full
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &coreProc{cmd: cmd, exit: make(chan error, 1)}
	listening := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			if strings.Contains(line, "tether listening") {
				var m map[string]any
				addr := ""
				if json.Unmarshal([]byte(line), &m) == nil {
					addr, _ = m["addr"].(string)
				} else if i := strings.Index(line, "addr="); i >= 0 {
					addr = strings.Fields(line[i+len("addr="):])[0]
				}
				select {
				case listening <- addr:
				default:
				}
			}
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
		select {
		case <-p.exit:
		case <-time.After(10 * time.Second):
		}
	})
	select {
	case p.addr = <-listening:
	case err := <-p.exit:
		p.exit <- err
		t.Fatalf("tether exited before listening: %v\n%s", err, strings.Join(p.stderr(), "\n"))
	case <-time.After(15 * time.Second):
		t.Fatalf("tether did not listen:\n%s", strings.Join(p.stderr(), "\n"))
	}
	if p.addr == "" {
		t.Fatalf("no address in the listening line:\n%s", strings.Join(p.stderr(), "\n"))
	}
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *coreProc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case err := <-p.exit:
		p.exit <- err
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("tether did not exit within %v:\n%s", d, strings.Join(p.stderr(), "\n"))
	}
	return -1
}

// coreBackend is an echo backend that reports how each connection ended.
func coreBackend(t *testing.T) (url string, ends chan error) {
	t.Helper()
	ends = make(chan error, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				ends <- err
				return
			}
			_ = c.WriteMessage(mt, p)
		}
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http"), ends
}

// coreFreeAddr returns a loopback address nothing listens on (now).
func coreFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func coreDial(t *testing.T, addr string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial("ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "hi" {
		t.Fatalf("echo through the binary: %q, %v", p, err)
	}
	return c
}

func coreCloseCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// README "Two commands" and "Configuration": --help and -h list every variable
// with its default, need no variable, and exit 0.
func TestCoreHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := coreRun(t, coreEnv(), arg)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			lines := map[string]string{}
			for _, line := range strings.Split(out, "\n") {
				if k, rest, ok := strings.Cut(line, " "); ok && strings.HasPrefix(k, "TETHER_") {
					lines[k] = strings.TrimSpace(rest)
				}
			}
			for k, def := range coreSpecDefaults {
				rest, ok := lines[k]
				if !ok {
					t.Errorf("help does not list %s", k)
					continue
				}
				if def == "" {
					def = "(empty)"
				}
				if !strings.HasPrefix(rest, def+" ") {
					t.Errorf("help line of %s: %q, want the default %q first", k, rest, def)
				}
			}
		})
	}
}

// README "Configuration": a missing or bad variable: one stderr line naming
// it, exit 2, before listening.
func TestCoreConfigErrorsExit2(t *testing.T) {
	t.Parallel()
	cases := append([]struct {
		name  string
		env   []string
		names string
	}{{"no upstream", nil, "TETHER_UPSTREAM_URL"}}, coreBadConfigs...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := coreEnv("TETHER_LISTEN_ADDR=127.0.0.1:0", "TETHER_ADMIN_ADDR=")
			if tc.name != "no upstream" {
				env = append(env, "TETHER_UPSTREAM_URL=ws://127.0.0.1:1")
			}
			code, out, errOut := coreRun(t, append(env, tc.env...))
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.names) {
				t.Errorf("stderr %q: want one line naming %s", errOut, tc.names)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}

// README "Two commands": tether healthcheck exits 0 against a running tether
// and non-zero when nothing listens.
func TestCoreHealthcheck(t *testing.T) {
	t.Parallel()
	up, _ := coreBackend(t)
	admin := coreFreeAddr(t)
	coreStart(t, "TETHER_UPSTREAM_URL="+up, "TETHER_ADMIN_ADDR="+admin)
	if code, _, errOut := coreRun(t, coreEnv("TETHER_ADMIN_ADDR="+admin), "healthcheck"); code != 0 {
		t.Errorf("healthcheck against a running tether: exit %d, %s", code, errOut)
	}
	if code, _, _ := coreRun(t, coreEnv("TETHER_ADMIN_ADDR="+coreFreeAddr(t)), "healthcheck"); code == 0 {
		t.Error("healthcheck with nothing listening: exit 0")
	}
}

// coreListeningSockets counts the TCP sockets in LISTEN state that pid
// holds (Linux /proc).
func coreListeningSockets(t *testing.T, pid int) int {
	t.Helper()
	listen := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) > 9 && fs[3] == "0A" {
				listen[fs[9]] = true
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	inode := regexp.MustCompile(`^socket:\[(\d+)\]$`)
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		if m := inode.FindStringSubmatch(target); m != nil && listen[m[1]] {
			n++
		}
	}
	return n
}

// README "Configuration": TETHER_ADMIN_ADDR set but empty disables the admin
// listener.
func TestCoreAdminDisabled(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("counts listening sockets through /proc")
	}
	up, _ := coreBackend(t)
	off := coreStart(t, "TETHER_UPSTREAM_URL="+up, "TETHER_ADMIN_ADDR=")
	on := coreStart(t, "TETHER_UPSTREAM_URL="+up, "TETHER_ADMIN_ADDR=127.0.0.1:0")
	if n := coreListeningSockets(t, off.cmd.Process.Pid); n != 1 {
		t.Errorf("with TETHER_ADMIN_ADDR empty tether listens on %d sockets, want 1", n)
	}
	if n := coreListeningSockets(t, on.cmd.Process.Pid); n != 2 {
		t.Errorf("with an admin address tether listens on %d sockets, want 2", n)
	}
}

// README "Metrics and logs": TETHER_LOG_FORMAT=json gives JSON lines; session
// lines carry the session id. Text logs carry session= and no colour off a
// terminal.
func TestCoreLogs(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			up, ends := coreBackend(t)
			p := coreStart(t, "TETHER_UPSTREAM_URL="+up, "TETHER_LOG_FORMAT="+format, "TETHER_LOG_LEVEL=debug")
			c := coreDial(t, p.addr)
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(time.Second))
			if _, _, err := c.ReadMessage(); coreCloseCode(err) != 4001 {
				t.Fatalf("close: %v", err)
			}
			select {
			case <-ends:
			case <-time.After(5 * time.Second):
				t.Fatal("the backend saw no close")
			}
			// Wait for the "session closed" line.
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(strings.Join(p.stderr(), "\n"), "session closed") {
				if time.Now().After(deadline) {
					t.Fatalf("no session closed line:\n%s", strings.Join(p.stderr(), "\n"))
				}
				time.Sleep(20 * time.Millisecond)
			}
			hex16 := regexp.MustCompile(`^[0-9a-f]{16}$`)
			sessionLines := 0
			for _, line := range p.stderr() {
				if strings.Contains(line, "\x1b[") {
					t.Errorf("colour escape in a log line off a terminal: %q", line)
				}
				isSession := strings.Contains(line, "session open") || strings.Contains(line, "session closed")
				if format == "text" {
					if isSession {
						sessionLines++
						if !regexp.MustCompile(`session=[0-9a-f]{16}\b`).MatchString(line) {
							t.Errorf("session line without session=: %q", line)
						}
					}
					continue
				}
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Errorf("not a JSON line: %q", line)
					continue
				}
				if _, ok := m["time"]; !ok || m["level"] == nil || m["msg"] == nil {
					t.Errorf("JSON line without time, level or msg: %q", line)
				}
				if isSession {
					sessionLines++
					if id, _ := m["session"].(string); !hex16.MatchString(id) {
						t.Errorf("session line without a session id: %q", line)
					}
				}
			}
			if sessionLines < 2 {
				t.Errorf("%d session open/closed lines, want 2", sessionLines)
			}
		})
	}
}

// README "Shutdown": SIGTERM or SIGINT drains: clients get 1012, upstreams
// 1001, and the process exits 0.
func TestCoreSignalDrain(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			up, ends := coreBackend(t)
			p := coreStart(t, "TETHER_UPSTREAM_URL="+up, "TETHER_SHUTDOWN_TIMEOUT=5s", "TETHER_SHUTDOWN_SPREAD=200ms")
			clients := []*websocket.Conn{coreDial(t, p.addr), coreDial(t, p.addr)}
			start := time.Now()
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			for i, c := range clients {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _, err := c.ReadMessage()
				if code := coreCloseCode(err); code != 1012 {
					t.Errorf("client %d: %v, want close 1012", i, err)
				}
			}
			for range clients {
				select {
				case err := <-ends:
					if code := coreCloseCode(err); code != 1001 {
						t.Errorf("upstream: %v, want close 1001", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("an upstream saw no close")
				}
			}
			if code := p.wait(t, 6*time.Second); code != 0 {
				t.Errorf("exit %d after %v, want 0:\n%s", code, sig, strings.Join(p.stderr(), "\n"))
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("exit after %v, TETHER_SHUTDOWN_TIMEOUT is 5s", took)
			}
		})
	}
}

// main wires the memory release after a burst (internal/memrelease): once
// burstSessions sessions have started or ended and none has for
// burstQuiet, the binary returns free memory to the OS and says so at
// debug level.
func TestCoreMemoryReleaseAfterBurst(t *testing.T) {
	t.Parallel()
	up, ends := coreBackend(t)
	p := coreStart(t, "TETHER_UPSTREAM_URL="+up, "TETHER_LOG_LEVEL=debug")
	const released = "returned memory to the OS after a burst of sessions"
	n := burstSessions/2 + 8 // each session starts and ends: two events
	for i := 0; i < n; i++ {
		c := coreDial(t, p.addr)
		c.Close()
		select { // the backend reports each upstream end; drain it
		case <-ends:
		case <-time.After(10 * time.Second):
			t.Fatalf("session %d: the upstream did not end", i)
		}
	}
	deadline := time.Now().Add(burstQuiet + 10*time.Second)
	for {
		for _, line := range p.stderr() {
			if strings.Contains(line, released) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line %v after %d sessions opened and closed", released, burstQuiet+10*time.Second, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The status page shows the whole configuration in force (the log
// variables too, which main owns), and neither it nor the start log
// shows the upstream URL's credentials or query values.
func TestCoreStatusShowsConfigWithoutSecrets(t *testing.T) {
	t.Parallel()
	up, _ := coreBackend(t)
	secret := strings.Replace(up, "ws://", "ws://alice:s3cret@", 1) + "/?token=t0ken"
	admin := coreFreeAddr(t)
	p := coreStart(t, "TETHER_UPSTREAM_URL="+secret, "TETHER_ADMIN_ADDR="+admin, "TETHER_LOG_LEVEL=debug")
	_, body := testkit.Request(t, "GET", "http://"+admin+"/status.json")
	var st struct {
		Config []struct{ Name, Value string } `json:"config"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	cfg := map[string]string{}
	for _, v := range st.Config {
		cfg[v.Name] = v.Value
	}
	host := strings.TrimPrefix(up, "ws://")
	want := map[string]string{
		"TETHER_LOG_LEVEL": "debug", "TETHER_LOG_FORMAT": "json", "TETHER_ADMIN_ADDR": admin,
		"TETHER_UPSTREAM_URL": "ws://redacted@" + host + "/?token=redacted",
	}
	for k, v := range want {
		if cfg[k] != v {
			t.Errorf("%s shown as %q, want %q", k, cfg[k], v)
		}
	}
	logs := strings.Join(p.stderr(), "\n")
	for _, s := range []string{"alice", "s3cret", "t0ken"} {
		if strings.Contains(string(body), s) || strings.Contains(logs, s) {
			t.Errorf("%q shown in /status.json or the logs", s)
		}
	}
	if !strings.Contains(logs, "redacted@"+host) {
		t.Errorf("the start log does not name the upstream:\n%s", logs)
	}
}
