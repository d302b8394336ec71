package main

import (
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// FloorResult is the syscall floor of one heartbeat round trip on this
// machine: the CPU one small write and one small read cost on a loopback
// TCP connection (a proxy writes each ping and reads each pong with one
// syscall at least; loopback also charges the sender for the receiver's
// TCP processing, as it does a proxy's pings).
type FloorResult struct {
	N            int     `json:"n"`
	WriteNs      float64 `json:"write_ns"`       // CPU per 6-byte write
	ReadNs       float64 `json:"read_ns"`        // CPU per 6-byte read of data already there
	RoundTripNs  float64 `json:"round_trip_ns"`  // write + read
	WallPerPairs float64 `json:"wall_ns_per_op"` // wall time per write+read, for comparison
}

// floor measures n writes and n reads of 6 bytes (the size of a ping
// frame with a 4-byte payload) on one loopback TCP connection, timing
// each half by the process's CPU (user + system) over all n.
func floor(n int) (*FloorResult, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	defer a.Close()
	b, ok := <-accepted
	if !ok {
		return nil, fmt.Errorf("accept failed")
	}
	defer b.Close()
	ping := []byte{0x89, 0x04, 1, 2, 3, 4}
	buf := make([]byte, 64)
	// Write-only and read-only phases, so that each is timed alone; the
	// reads find the bytes of many writes waiting, so each read takes
	// exactly one write's bytes (a 6-byte buffer).
	const batch = 1000
	var wCPU, rCPU time.Duration
	start := time.Now()
	for done := 0; done < n; done += batch {
		c0 := cpuNow()
		for range batch {
			if _, err := a.Write(ping); err != nil {
				return nil, err
			}
		}
		c1 := cpuNow()
		for range batch {
			if _, err := io.ReadFull(b, buf[:len(ping)]); err != nil {
				return nil, err
			}
		}
		c2 := cpuNow()
		wCPU += c1 - c0
		rCPU += c2 - c1
	}
	wall := time.Since(start)
	n = (n + batch - 1) / batch * batch
	r := &FloorResult{N: n, WriteNs: float64(wCPU) / float64(n), ReadNs: float64(rCPU) / float64(n),
		WallPerPairs: float64(wall) / float64(n)}
	r.RoundTripNs = r.WriteNs + r.ReadNs
	return r, nil
}

// cpuNow is this process's CPU time, user and system.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
