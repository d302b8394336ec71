//go:build linux

package netpoll

import (
	"errors"
	"os"
	"syscall"
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
	err := syscall.EpollCtl(e.epfd, op, fd, &ev)
	switch {
	case errors.Is(err, syscall.ENOENT) && op == syscall.EPOLL_CTL_MOD:
		err = syscall.EpollCtl(e.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
	case errors.Is(err, syscall.EEXIST) && op == syscall.EPOLL_CTL_ADD:
		err = syscall.EpollCtl(e.epfd, syscall.EPOLL_CTL_MOD, fd, &ev)
	}
	return err
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
// registered, then closes the instance and returns.
func (e *epoll) wait() {
	var events [128]syscall.EpollEvent
	var drain [64]byte
	for {
		var n int
		var werr error
		err := e.rc.Read(func(fd uintptr) bool {
			n, werr = syscall.EpollWait(int(fd), events[:], 0)
			if errors.Is(werr, syscall.EINTR) {
				n, werr = 0, nil
			}
			return n > 0 || werr != nil // false: wait until readable
		})
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
		for i := 0; i < n; i++ {
			id := getID(&events[i])
			if id == wakeID {
				for {
					if k, _ := syscall.Read(e.rd, drain[:]); k <= 0 {
						break
					}
				}
				if e.p.idle(e) {
					e.close()
					return
				}
				continue
			}
			e.p.ready(id)
		}
	}
}
