package session

import (
	"math/bits"
	"sync"
)

// Pooled payload buffers for held client messages: size
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

// A pooled buffer travels with its box, the *[]byte the pool stores, so
// that putting it back allocates nothing (boxing a slice header would).
// A nil box means the buffer is not pooled.

// getBuf returns a copy of p in a pooled buffer, and its box.
func getBuf(p []byte) ([]byte, *[]byte) {
	b, box := takeBuf(len(p))
	copy(b, p)
	return b, box
}

// putBuf returns a buffer from getBuf or takeBuf to its pool.
func putBuf(box *[]byte, b []byte) {
	if box == nil {
		return
	}
	c := class(cap(b))
	if c >= len(bufPools) || cap(b) != 1<<(c+minClassBits) {
		return
	}
	*box = b[:0]
	bufPools[c].Put(box)
}

// takeBuf returns a buffer of length n, pooled when n fits a size class,
// and its box.
func takeBuf(n int) ([]byte, *[]byte) {
	c := class(n)
	if c >= len(bufPools) {
		return make([]byte, n), nil
	}
	if bp, ok := bufPools[c].Get().(*[]byte); ok {
		b := (*bp)[:n]
		*bp = nil
		return b, bp
	}
	return make([]byte, n, 1<<(c+minClassBits)), new([]byte)
}
