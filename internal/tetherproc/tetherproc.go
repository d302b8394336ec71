// Package tetherproc runs tether as a child process for the tools that
// measure it from outside (cmd/tethersoak, cmd/tetherchurn; bench reads
// /proc through it): build it from this module, start it on free loopback
// ports, scrape its /metrics, read its CPU and RSS from /proc, stop it and
// scan its log.
package tetherproc

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

// Build builds the module's main package (tether itself) into dir.
func Build(ctx context.Context, dir string, race bool) (string, error) {
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

// Proc is tether running as a child process, so that its RSS and
// goroutines are its own.
type Proc struct {
	Cmd     *exec.Cmd
	Addr    string // client listener, host:port
	Admin   string // http://host:port
	LogPath string
	log     *os.File
	exited  chan struct{}
	waitErr error
	hc      *http.Client
}

// FreePort returns a loopback address that was free a moment ago.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Start starts bin with env (plus the listen and admin addresses it
// picks) and waits until /healthz answers and the listener accepts.
func Start(ctx context.Context, bin, logPath string, env []string) (*Proc, error) {
	var lastErr error
	for try := 0; try < 3; try++ {
		t, err := startOnce(ctx, bin, logPath, env)
		if err == nil {
			return t, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startOnce(ctx context.Context, bin, logPath string, env []string) (*Proc, error) {
	addr, err := FreePort()
	if err != nil {
		return nil, err
	}
	admin, err := FreePort()
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
	t := &Proc{
		Cmd: cmd, Addr: addr, Admin: "http://" + admin, LogPath: logPath, log: logf,
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
			t.Kill()
			return nil, fmt.Errorf("tether did not become ready: %w (log: %s)", err, Tail(logPath))
		}
		select {
		case <-t.exited:
			return nil, fmt.Errorf("tether exited at start: %v (log: %s)", t.waitErr, Tail(logPath))
		case <-ctx.Done():
			t.Kill()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

func (t *Proc) ready() error {
	resp, err := t.hc.Get(t.Admin + "/healthz")
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s", resp.Status)
	}
	c, err := net.DialTimeout("tcp", t.Addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// metrics scrapes /metrics into a map keyed by the series as written
// ("name" or "name{labels}").
func (t *Proc) Metrics() (map[string]float64, error) {
	resp, err := t.hc.Get(t.Admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	return ParseMetrics(resp.Body)
}

func ParseMetrics(r io.Reader) (map[string]float64, error) {
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
func (t *Proc) RSS() (int64, error) {
	return VmRSS(t.Cmd.Process.Pid)
}

// VmRSS returns VmRSS of pid (0: this process) from /proc/<pid>/status,
// in bytes.
func VmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(procPath(pid, "status"))
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

func procPath(pid int, file string) string {
	if pid == 0 {
		return "/proc/self/" + file
	}
	return fmt.Sprintf("/proc/%d/%s", pid, file)
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports.
const clockTicks = 100

// statFields returns the fields of /proc/<pid>/stat from field 3 (state)
// on: the command name (field 2) may contain spaces, so they count from
// after its closing parenthesis; field n is at index n-3.
func statFields(pid int) ([]string, error) {
	path := procPath(pid, "stat")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse %s: no ')'", path)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// CPUSeconds returns utime+stime of pid (0: this process) in seconds, from
// /proc/<pid>/stat; threads are included.
func CPUSeconds(pid int) (float64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse %s: %d fields", procPath(pid, "stat"), len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse %s: utime %q stime %q", procPath(pid, "stat"), f[11], f[12])
	}
	return float64(u+s) / clockTicks, nil
}

// RealTime reports whether pid (0: this process) runs under a real-time
// scheduling policy (SCHED_FIFO or SCHED_RR, e.g. started with chrt -f):
// field 41 of /proc/<pid>/stat, the policy of its main thread.
func RealTime(pid int) (bool, error) {
	f, err := statFields(pid)
	if err != nil {
		return false, err
	}
	if len(f) < 39 {
		return false, fmt.Errorf("parse %s: %d fields", procPath(pid, "stat"), len(f))
	}
	policy, err := strconv.Atoi(f[38])
	if err != nil {
		return false, fmt.Errorf("parse %s: policy %q", procPath(pid, "stat"), f[38])
	}
	return policy == 1 || policy == 2, nil // SCHED_FIFO, SCHED_RR
}

// CPU returns tether's CPU seconds so far.
func (t *Proc) CPU() (float64, error) {
	return CPUSeconds(t.Cmd.Process.Pid)
}

// stop sends SIGTERM and waits up to timeout for the exit; it returns the
// exit code (-1 if killed).
func (t *Proc) Stop(timeout time.Duration) (int, error) {
	defer t.log.Close()
	if err := t.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, err
	}
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case <-t.exited:
	case <-tm.C:
		t.Kill()
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

func (t *Proc) Kill() {
	_ = t.Cmd.Process.Kill()
	<-t.exited
}

// tail returns the end of a log file, for error messages.
func Tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// ScanLog counts the lines of tether's log that no run may contain:
// panics (also those a session recovers from and logs as "session
// panic"), data races (a -race build), fatal errors.
func ScanLog(path string) (bad int, first []string, err error) {
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

// Metric series on tether's /metrics (README "Metrics and logs"), as
// Metrics keys them.
const (
	MSessionsTotal  = "tether_sessions_total"
	MSessionsActive = "tether_sessions_active"
	MC2U            = `tether_messages_total{direction="client_to_upstream"}`
	MU2C            = `tether_messages_total{direction="upstream_to_client"}`
	MResent         = "tether_resent_messages_total"
	MReconnectOK    = `tether_upstream_reconnects_total{result="success"}`
	MReconnectFail  = `tether_upstream_reconnects_total{result="failure"}`
	MBuffered       = "tether_buffered_messages"
	MOverflows      = "tether_buffer_overflows_total"
	MTimeoutClient  = `tether_heartbeat_timeouts_total{leg="client"}`
	MTimeoutUp      = `tether_heartbeat_timeouts_total{leg="upstream"}`
	MGoroutines     = "go_goroutines"
	MNextGC         = "go_memstats_next_gc_bytes"
	MLastGC         = "go_memstats_last_gc_time_seconds"
)
