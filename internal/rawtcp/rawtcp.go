// Package rawtcp gives a TCP connection reads and writes whose system
// calls go straight to the kernel, without telling the Go scheduler
// (README "Performance", socket system calls the scheduler does not see),
// for a layer that reads and writes through net.Conn: crypto/tls on the
// client leg of a TLS listener. A leg read raw does the same itself
// (session's rawio.go); a leg behind TLS reads and writes through the
// tls.Conn, which through a plain *net.TCPConn told the scheduler of
// every system call: the runtime's sysmon thread then woke for nearly
// every message, 20 % of tether's CPU samples at 5,000 msg/s over 1,000
// TLS sessions (BENCHMARKS.md, thirteenth sitting).
//
// The socket is non-blocking, so no call blocks: an empty or full socket
// answers EAGAIN, and the wait is the Go poller's (syscall.RawConn), under
// the connection's deadlines.
package rawtcp

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Read reads fd once with a raw system call.
func Read(fd uintptr, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// write writes p to fd once with a raw system call.
func write(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// Conn is a *net.TCPConn whose Read and Write make raw system calls. Its
// other methods are the TCPConn's. Reads must not run concurrently with
// each other, nor writes with each other (crypto/tls holds a lock for
// each); the state of the one in progress lives in Conn, so that neither
// allocates (a closure over it would escape to the heap per call).
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	rp      []byte // the read in progress
	rn      int
	rerr    error
	readFn  func(fd uintptr) bool
	wp      []byte // what the write in progress has left to write
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// New wraps c, or returns c itself when its descriptor is out of reach.
func New(c *net.TCPConn) net.Conn {
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	r := &Conn{TCPConn: c, rc: rc}
	r.readFn, r.writeFn = r.read, r.write
	return r
}

// Read reads once: what the socket holds, up to len(p), waiting in the
// poller until it holds something.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	c.rp = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case c.rerr != nil:
		return 0, c.opError("read", c.rerr)
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

func (c *Conn) read(fd uintptr) bool {
	for {
		n, err := Read(fd, c.rp)
		switch err {
		case nil:
			c.rn = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rerr = os.NewSyscallError("read", err)
		return true
	}
}

// Write writes all of p, waiting in the poller while the socket is full.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wp, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.writeFn)
	n := c.wn
	c.wp = nil
	if err == nil {
		err = c.werr
	}
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

func (c *Conn) write(fd uintptr) bool {
	for len(c.wp) > 0 {
		n, err := write(fd, c.wp)
		switch err {
		case nil:
			c.wn += n
			c.wp = c.wp[n:]
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.werr = os.NewSyscallError("write", err)
		return true
	}
	return true
}

// opError wraps err as net.Conn's methods do.
func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Listener accepts TCP connections as Conns.
type Listener struct{ net.Listener }

// Accept returns the next connection, a Conn when it is TCP.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		return New(tc), nil
	}
	return c, err
}
