package session

import (
	"os"
	"syscall"
	"unsafe"

	"github.com/tether-proxy/tether/internal/rawtcp"
)

// Socket reads and writes on a leg's hot path go straight to the kernel
// with syscall.RawSyscall, not through syscall.Read and net.Conn.Write,
// which tell the Go scheduler about every system call (entersyscall).
// The socket is non-blocking, so no such call blocks: a full or empty
// socket answers EAGAIN, and the wait for readiness is Go's poller's, in
// RawConn.Read or RawConn.Write, under the connection's deadlines. What
// telling the scheduler cost: the first system call after the process's
// only P went idle woke the runtime's sysmon thread, which then slept
// again a few microseconds later, at every message of a session that
// sends a few a second: a futex wake, a nanosleep and two context
// switches per message (README "Performance").

// readSocket is a leg's raw socket read: one read system call (again on
// EINTR), told to the test hook.
func (l *leg) readSocket(fd uintptr, p []byte) (int, error) {
	for {
		n, err := rawtcp.Read(fd, p)
		if err == syscall.EINTR {
			continue
		}
		if t := l.s.env.test; t != nil && t.read != nil {
			t.read(l, n, err)
		}
		return n, err
	}
}

// sysWritev writes b[0] then b[1] with one write (writev when both have
// bytes) and returns how many it wrote.
func sysWritev(fd uintptr, b *[2][]byte) (int, error) {
	var iov [2]syscall.Iovec
	n := 0
	for _, p := range b {
		if len(p) > 0 {
			iov[n].Base = &p[0]
			iov[n].SetLen(len(p))
			n++
		}
	}
	var r uintptr
	var e syscall.Errno
	if n == 1 {
		r, _, e = syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(iov[0].Base)), uintptr(iov[0].Len))
	} else {
		r, _, e = syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	}
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// rawWrite is the callback of a leg's raw socket write (wfn): it writes
// bufArr, consuming it as the kernel takes it, and reports false to wait
// until the socket can take more. A failure is left in werr.
func (l *leg) rawWrite(fd uintptr) bool {
	b := &l.bufArr
	for len(b[0])+len(b[1]) > 0 {
		n, err := sysWritev(fd, b)
		if t := l.s.env.test; t != nil && t.write != nil {
			t.write(l, n, err)
		}
		switch err {
		case nil:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			l.werr = os.NewSyscallError("write", err)
			return true
		}
		if k := min(n, len(b[0])); k > 0 {
			b[0], n = b[0][k:], n-k
		}
		b[1] = b[1][n:]
	}
	return true
}

// writeBufs writes bufArr (a frame's header and payload, or pending
// frames) to the connection, raw when it is a socket, and clears it.
func (l *leg) writeBufs() error {
	var err error
	if l.raw != nil {
		if err = l.raw.Write(l.wfn); err == nil {
			err = l.werr
		}
	} else {
		// net.Buffers writes each slice, an empty one too, and an
		// empty write on a pipe waits for the peer's next read.
		l.bufs = l.bufArr[:]
		if len(l.bufArr[1]) == 0 {
			l.bufs = l.bufArr[:1]
		}
		_, err = l.bufs.WriteTo(l.conn)
		l.bufs = nil
	}
	l.bufArr = [2][]byte{}
	return err
}
