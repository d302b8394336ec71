package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ledger is what the backends reported, over all their incarnations.
type ledger struct {
	mu       sync.Mutex
	sess     []sessLedger
	accepts  []accept
	receipts int64 // message receipts, duplicates included
	dups     int64 // receipts of a message number already received
	nviol    int
	viol     []string // the first few
}

type sessLedger struct {
	got     []uint64 // bit n: message n received
	gen     int32    // incarnation of the session's latest upstream connection (-1: none)
	accepts int32    // upstream connections accepted
	dups    int32    // receipts of a number already received
}

type accept struct {
	at   int64 // Unix ns the upgrade request reached the backend
	gen  int32
	sess int32
}

func newLedger(sessions int) *ledger {
	l := &ledger{sess: make([]sessLedger, sessions)}
	for i := range l.sess {
		l.sess[i].gen = -1
	}
	return l
}

func (l *ledger) violation(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nviol++
	if len(l.viol) < 10 {
		l.viol = append(l.viol, fmt.Sprintf(format, args...))
	}
}

// line records one report line of incarnation gen (see backend.go).
func (l *ledger) line(gen int, p []byte) {
	kind, rest, _ := bytes.Cut(p, []byte(" "))
	a, b, _ := bytes.Cut(rest, []byte(" "))
	s, err1 := strconv.Atoi(string(a))
	n, err2 := strconv.ParseInt(string(b), 10, 64)
	switch {
	case string(kind) == "v":
		l.violation("backend incarnation %d: %s", gen, rest)
		return
	case err1 != nil || err2 != nil || s < 0 || s >= len(l.sess) || n < 0 || (string(kind) != "a" && string(kind) != "r"):
		l.violation("backend incarnation %d: bad report %q", gen, p)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	sl := &l.sess[s]
	if string(kind) == "a" {
		sl.gen = int32(gen)
		sl.accepts++
		l.accepts = append(l.accepts, accept{at: n, gen: int32(gen), sess: int32(s)})
		return
	}
	l.receipts++
	w := int(n / 64)
	if w >= len(sl.got) {
		sl.got = slices.Grow(sl.got, w+1-len(sl.got))[:w+1]
	}
	if sl.got[w]&(1<<(n%64)) != 0 {
		l.dups++
		sl.dups++
		return
	}
	sl.got[w] |= 1 << (n % 64)
}

// missing counts the message numbers in [from, to) of session s that no
// backend reported.
func (l *ledger) missing(s int, from, to int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	got := l.sess[s].got
	var m int64
	for n := from; n < to; n++ {
		w := int(n / 64)
		if w >= len(got) || got[w]&(1<<(n%64)) == 0 {
			m++
		}
	}
	return m
}

// upstreamGen returns the incarnation of session s's latest upstream
// connection and how many it had.
func (l *ledger) upstreamGen(s int) (gen, accepts int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sess[s].gen, l.sess[s].accepts
}

// sessionDups returns each session's duplicates so far.
func (l *ledger) sessionDups() []int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := make([]int32, len(l.sess))
	for i := range l.sess {
		d[i] = l.sess[i].dups
	}
	return d
}

// counts returns the receipts and duplicates so far.
func (l *ledger) counts() (receipts, dups int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.receipts, l.dups
}

// acceptsIn returns the accept times in [from, to) and how many distinct
// sessions they were for.
func (l *ledger) acceptsIn(from, to int64) (times []int64, sessions int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[int32]bool{}
	for _, a := range l.accepts {
		if a.at >= from && a.at < to {
			times = append(times, a.at)
			seen[a.sess] = true
		}
	}
	return times, len(seen)
}

// fleet runs the backend processes: this binary re-executed with
// backendEnv, one listen address each, restarted on the same address.
type fleet struct {
	self  string
	push  time.Duration
	dir   string // backend logs
	addrs []string
	l     *ledger

	mu    sync.Mutex
	procs []*bproc // current incarnation per backend (nil: down)
	names []string // incarnation number → "b2.1"
	incs  []int    // restarts per backend
}

type bproc struct {
	idx, gen int
	cmd      *exec.Cmd
	ready    chan struct{} // closed on the "L" line
	done     chan struct{} // closed when its reports are read and it exited
}

func newFleet(self string, addrs []string, push time.Duration, dir string, l *ledger) *fleet {
	return &fleet{self: self, push: push, dir: dir, addrs: addrs, l: l,
		procs: make([]*bproc, len(addrs)), incs: make([]int, len(addrs))}
}

// start starts backend idx and returns once it listens.
func (f *fleet) start(ctx context.Context, idx int) error {
	f.mu.Lock()
	gen := len(f.names)
	f.names = append(f.names, fmt.Sprintf("b%d.%d", idx+1, f.incs[idx]))
	f.incs[idx]++
	f.mu.Unlock()
	logf, err := os.Create(filepath.Join(f.dir, fmt.Sprintf("backend-%d.log", gen)))
	if err != nil {
		return err
	}
	cmd := exec.Command(f.self, "-addr", f.addrs[idx], "-gen", strconv.Itoa(gen), "-push", f.push.String())
	cmd.Env = append(os.Environ(), backendEnv+"=1")
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	p := &bproc{idx: idx, gen: gen, cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer logf.Close()
		f.read(p, out)
		_ = cmd.Wait()
	}()
	select {
	case <-p.ready:
	case <-p.done:
		return fmt.Errorf("backend %d exited at start (log %s)", idx+1, logf.Name())
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("backend %d did not listen within 10 s", idx+1)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-p.done
		return ctx.Err()
	}
	f.mu.Lock()
	f.procs[idx] = p
	f.mu.Unlock()
	return nil
}

// read hands every report line of p to the ledger, until EOF.
func (f *fleet) read(p *bproc, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if line := sc.Bytes(); len(line) == 1 && line[0] == 'L' {
			close(p.ready)
		} else {
			f.l.line(p.gen, line)
		}
	}
}

// stop signals backend idx (SIGKILL: a crash; SIGTERM: a graceful
// restart) and returns when it has exited and all its reports are read;
// it returns the incarnation that was stopped (-1: none was running).
func (f *fleet) stop(idx int, sig syscall.Signal) int {
	f.mu.Lock()
	p := f.procs[idx]
	f.procs[idx] = nil
	f.mu.Unlock()
	if p == nil {
		return -1
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.gen
}

// gen returns the running incarnation of backend idx (-1: down).
func (f *fleet) gen(idx int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.procs[idx]; p != nil {
		return p.gen
	}
	return -1
}

func (f *fleet) name(gen int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen < 0 || gen >= len(f.names) {
		return "none"
	}
	return f.names[gen]
}

func (f *fleet) pids() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ps []int
	for _, p := range f.procs {
		if p != nil {
			ps = append(ps, p.cmd.Process.Pid)
		}
	}
	return ps
}

func (f *fleet) close() {
	for i := range f.addrs {
		f.stop(i, syscall.SIGKILL)
	}
}
