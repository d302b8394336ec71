package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// buildTether builds the module's main package (tether itself) into dir.
func buildTether(ctx context.Context, dir string, race bool) (string, error) {
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gocmd); err != nil {
		gocmd = "go"
	}
	bin := filepath.Join(dir, "tether")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/tether-proxy/tether")
	cmd := exec.CommandContext(ctx, gocmd, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build tether: %w\n%s", err, out.String())
	}
	return bin, nil
}

// tetherProc is tether running as a child process, so that its RSS and
// goroutines are its own.
type tetherProc struct {
	cmd     *exec.Cmd
	addr    string // client listener, host:port
	admin   string // http://host:port
	logPath string
	log     *os.File
	exited  chan struct{}
	waitErr error
	hc      *http.Client
}

// freePort returns a loopback address that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startTether starts bin with env (plus the listen and admin addresses it
// picks) and waits until /healthz answers and the listener accepts.
func startTether(ctx context.Context, bin, logPath string, env []string) (*tetherProc, error) {
	var lastErr error
	for try := 0; try < 3; try++ {
		t, err := startTetherOnce(ctx, bin, logPath, env)
		if err == nil {
			return t, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startTetherOnce(ctx context.Context, bin, logPath string, env []string) (*tetherProc, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"TETHER_LISTEN_ADDR=" + addr,
		"TETHER_ADMIN_ADDR=" + admin,
	}, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start tether: %w", err)
	}
	t := &tetherProc{
		cmd: cmd, addr: addr, admin: "http://" + admin, logPath: logPath, log: logf,
		exited: make(chan struct{}),
		hc:     &http.Client{Timeout: 10 * time.Second},
	}
	go func() {
		t.waitErr = cmd.Wait()
		close(t.exited)
	}()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := t.ready(); err == nil {
			return t, nil
		} else if time.Now().After(deadline) {
			t.kill()
			return nil, fmt.Errorf("tether did not become ready: %w (log: %s)", err, tail(logPath))
		}
		select {
		case <-t.exited:
			return nil, fmt.Errorf("tether exited at start: %v (log: %s)", t.waitErr, tail(logPath))
		case <-ctx.Done():
			t.kill()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

func (t *tetherProc) ready() error {
	resp, err := t.hc.Get(t.admin + "/healthz")
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s", resp.Status)
	}
	c, err := net.DialTimeout("tcp", t.addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// metrics scrapes /metrics into a map keyed by the series as written
// ("name" or "name{labels}").
func (t *tetherProc) metrics() (map[string]float64, error) {
	resp, err := t.hc.Get(t.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (map[string]float64, error) {
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// rss reads VmRSS from /proc/<pid>/status, in bytes.
func (t *tetherProc) rss() (int64, error) {
	return vmRSS(t.cmd.Process.Pid)
}

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseInt(f[0], 10, 64)
				return n << 10, err
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// stop sends SIGTERM and waits up to timeout for the exit; it returns the
// exit code (-1 if killed).
func (t *tetherProc) stop(timeout time.Duration) (int, error) {
	defer t.log.Close()
	if err := t.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, err
	}
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case <-t.exited:
	case <-tm.C:
		t.kill()
		return -1, fmt.Errorf("tether did not exit within %v of SIGTERM", timeout)
	}
	if t.waitErr != nil {
		var ee *exec.ExitError
		if errors.As(t.waitErr, &ee) {
			return ee.ExitCode(), nil
		}
		return -1, t.waitErr
	}
	return 0, nil
}

func (t *tetherProc) kill() {
	_ = t.cmd.Process.Kill()
	<-t.exited
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// scanLog counts the lines of tether's log that no run may contain:
// panics (also those a session recovers from and logs as "session
// panic"), data races (a -race build), fatal errors.
func scanLog(path string) (bad int, first []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "panic:") || strings.Contains(line, "WARNING: DATA RACE") ||
			strings.HasPrefix(line, "fatal error:") || strings.Contains(line, "session panic") {
			bad++
			if len(first) < 5 {
				first = append(first, line)
			}
		}
	}
	return bad, first, sc.Err()
}
