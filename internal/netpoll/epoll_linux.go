//go:build linux

package netpoll

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

const supported = true

// epoll is one epoll instance with a pipe whose read end wakes its
// goroutine. The goroutine does not block in epoll_wait: the epoll fd is
// itself registered with Go's network poller (an epoll fd is readable
// when it has events), and the goroutine waits there like any socket
// reader. A thread blocked in a raw epoll_wait would hold its P until
// sysmon took it back, up to 10 ms later, stalling a GOMAXPROCS=1
// process each time the poller went back to waiting.
type epoll struct {
	p      *Poller
	epfd   int
	f      *os.File // owns epfd
	rc     syscall.RawConn
	wr, rd int // wake pipe
}

// pollSeen, set by tests, is told how many events each poll returned.
var pollSeen atomic.Pointer[func(n int)]

// wakeID is the epoll data of the wake pipe; Handle ids start at 1.
const wakeID = 0

func start(p *Poller) (impl, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	e := &epoll{p: p, epfd: epfd, rd: fds[0], wr: fds[1]}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	setID(&ev, wakeID)
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, e.rd, &ev); err != nil {
		e.close()
		return nil, err
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		e.close()
		return nil, err
	}
	e.f = os.NewFile(uintptr(epfd), "netpoll")
	rc, err := e.f.SyscallConn()
	if err != nil {
		e.close()
		return nil, err
	}
	e.rc = rc
	go e.wait()
	return e, nil
}

func setID(ev *syscall.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func getID(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

const armEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

func (e *epoll) arm(fd int, id uint64, added bool) error {
	ev := syscall.EpollEvent{Events: armEvents}
	setID(&ev, id)
	op := syscall.EPOLL_CTL_ADD
	if added {
		op = syscall.EPOLL_CTL_MOD
	}
	err := epollCtl(e.epfd, op, fd, &ev)
	switch {
	case errors.Is(err, syscall.ENOENT) && op == syscall.EPOLL_CTL_MOD:
		err = epollCtl(e.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
	case errors.Is(err, syscall.EEXIST) && op == syscall.EPOLL_CTL_ADD:
		err = epollCtl(e.epfd, syscall.EPOLL_CTL_MOD, fd, &ev)
	}
	return err
}

// epollCtl and epollPoll call the kernel with syscall.RawSyscall6, not
// through syscall.EpollCtl and syscall.EpollWait, which tell the Go
// scheduler about each call: the first such call after the process's
// only P went idle woke the runtime's monitor thread (sysmon), which went
// back to sleep microseconds later, a futex wake, a nanosleep and two
// context switches at every park and wake of a leg. Neither call blocks:
// epoll_ctl never does, and epollPoll does not wait (timeout 0).
func epollCtl(epfd, op, fd int, ev *syscall.EpollEvent) error {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// epollPoll returns the events ready now, without waiting.
func epollPoll(epfd int, events []syscall.EpollEvent) (int, error) {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		switch e {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, e
	}
}

func (e *epoll) wake() {
	_, _ = syscall.Write(e.wr, []byte{0})
}

func (e *epoll) close() {
	if e.f != nil {
		e.f.Close()
	} else {
		syscall.Close(e.epfd)
	}
	syscall.Close(e.rd)
	syscall.Close(e.wr)
}

// wait is the poller goroutine: it reports readiness until no Handle is
// registered, then closes the instance and returns. Each wake reads the
// ready events once: a poll that returned fewer than it could take has
// emptied the ready list, so it waits for readiness again inside the same
// RawConn.Read call, as the legs' reads do (Go's poller reports every
// event after the wake; a new RawConn.Read would forget one that came
// before it and poll once more into nothing).
func (e *epoll) wait() {
	var events [128]syscall.EpollEvent
	var drain [64]byte
	var werr error
	exit := false
	poll := func(fd uintptr) bool {
		for {
			n, err := epollPoll(int(fd), events[:])
			if f := pollSeen.Load(); f != nil {
				(*f)(n)
			}
			if err != nil {
				werr = err
				return true
			}
			for i := range n {
				id := getID(&events[i])
				if id != wakeID {
					e.p.ready(id)
					continue
				}
				for {
					if k, _ := syscall.Read(e.rd, drain[:]); k <= 0 {
						break
					}
				}
				if e.p.idle(e) {
					exit = true // closed outside: Close waits for this Read
					return true
				}
			}
			if n < len(events) {
				return false // emptied: wait for readiness
			}
		}
	}
	for {
		err := e.rc.Read(poll)
		if exit {
			e.close()
			return
		}
		if err == nil {
			err = werr
		}
		if err != nil {
			// Not expected (the instance is closed only here): drop the
			// instance and wake every waiter; their next Arm starts a
			// new one.
			e.p.fail(e)
			e.close()
			return
		}
	}
}
