package session

import (
	"math/bits"
	"sync"
)

// Pooled payload buffers for held client messages (STYLE §2.8): size
// classes of powers of two from 256 B to 1 MiB. A message held in the
// queue owns its buffer until it is acknowledged or re-sent without
// retention; only then does the buffer go back, exactly once. Buffers of
// a session that ends are left to the garbage collector, because a re-send
// may still be writing one.
const (
	minClassBits = 8  // 256 B
	maxClassBits = 20 // 1 MiB
)

var bufPools [maxClassBits - minClassBits + 1]sync.Pool

func class(n int) int {
	if n <= 1<<minClassBits {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassBits
}

// getBuf returns a copy of p in a pooled buffer.
func getBuf(p []byte) []byte {
	c := class(len(p))
	if c >= len(bufPools) {
		return append([]byte(nil), p...)
	}
	if bp, ok := bufPools[c].Get().(*[]byte); ok {
		return append((*bp)[:0], p...)
	}
	b := make([]byte, len(p), 1<<(c+minClassBits))
	copy(b, p)
	return b
}

// putBuf returns a buffer from getBuf to its pool.
func putBuf(b []byte) {
	c := class(cap(b))
	if c >= len(bufPools) || cap(b) != 1<<(c+minClassBits) {
		return
	}
	bufPools[c].Put(&b)
}
