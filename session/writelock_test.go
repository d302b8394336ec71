package session

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The write lock excludes: many goroutines taking it, with and without
// contention, never overlap (the race detector watches the counter too).
func TestWriteLockExclusive(t *testing.T) {
	t.Parallel()
	var w writeLock
	var held, total int
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 5000 {
				if (g+i)%3 == 0 {
					if !w.tryLock() {
						continue
					}
				} else {
					w.lock()
				}
				held++
				if held != 1 {
					t.Errorf("%d holders", held)
				}
				total++
				held--
				w.release()
			}
		})
	}
	wg.Wait()
	if total == 0 || w.n.Load() != 0 {
		t.Fatalf("total %d, count left %d", total, w.n.Load())
	}
}

// A goroutine waiting for the write lock blocks durably under synctest, so
// a test whose writer stalls keeps its fake clock (a sync.Mutex would not).
func TestWriteLockWaitIsDurable(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var w writeLock
		w.lock()
		got := make(chan time.Time)
		go func() {
			w.lock()
			got <- time.Now()
			w.release()
		}()
		synctest.Wait() // returns only if the waiter is durably blocked
		start := time.Now()
		time.Sleep(time.Second)
		w.release()
		if at := <-got; at.Sub(start) != time.Second {
			t.Fatalf("waiter got the lock after %v, want 1s", at.Sub(start))
		}
	})
}
