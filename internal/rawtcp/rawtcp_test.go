package rawtcp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/tether-proxy/tether/internal/leakcheck"
	"github.com/tether-proxy/tether/internal/testkit"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// pair is a loopback TCP pair: a wrapped, b plain.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	x, y := testkit.LoopbackPair(t)
	a, ok := New(x).(*Conn)
	if !ok {
		t.Fatal("New did not wrap a TCP connection")
	}
	return a, y
}

// Bytes go both ways, and the peer's close is io.EOF. The socket buffers
// are made small, so the write fills the socket and waits in the poller
// for the peer's reads (EAGAIN, then RawConn.Write's wait).
func TestReadWrite(t *testing.T) {
	a, b := pair(t)
	if err := a.SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	if err := b.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	done := make(chan []byte)
	go func() {
		got, _ := io.ReadAll(b)
		done <- got
	}()
	want := bytes.Repeat([]byte("tether "), 1<<14) // 112 KiB through 32 KiB of buffers
	if n, err := a.Write(want); err != nil || n != len(want) {
		t.Fatalf("Write: %d of %d, %v", n, len(want), err)
	}
	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatalf("peer read %d bytes, want %d", len(got), len(want))
	}

	if _, err := b.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	p := make([]byte, 64)
	n, err := a.Read(p)
	if err != nil || string(p[:n]) != "hello" {
		t.Fatalf("Read: %q, %v", p[:n], err)
	}
	if n, err := a.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed: %d, %v; want 0, io.EOF", n, err)
	}
}

// A read of an empty socket waits in the poller until its deadline, and
// ends with the timeout net.Conn gives; a closed Conn reads and writes
// net.ErrClosed.
func TestReadDeadlineAndClose(t *testing.T) {
	a, _ := pair(t)
	if err := a.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var p [8]byte
	_, err := a.Read(p[:])
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Read(p[:]); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
	}
	if _, err := a.Write(p[:]); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed connection: %v, want net.ErrClosed", err)
	}
}

// A read and a write allocate nothing.
func TestNoAllocations(t *testing.T) {
	a, b := pair(t)
	msg := []byte("ping")
	in := make([]byte, 16)
	out := make([]byte, 16)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(b, out[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(a, in[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round trip through a Conn, want 0", allocs)
	}
}
