package memrelease

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The release comes once, Quiet after the last event of a burst that
// reached the threshold; events that keep coming postpone it; a burst
// below the threshold never triggers it; the count starts again after a
// release. synctest's clock makes the times exact.
func TestReleaseAfterQuietBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var released atomic.Int32
		r := New(100, 3*time.Second, func() { released.Add(1) })
		defer r.Stop()
		check := func(when string, want int32) {
			t.Helper()
			synctest.Wait()
			if n := released.Load(); n != want {
				t.Fatalf("%s: %d releases, want %d", when, n, want)
			}
		}

		for range 99 {
			r.Note()
		}
		time.Sleep(time.Minute)
		check("99 events and a quiet minute", 0)

		r.Note() // the 100th: armed
		time.Sleep(2 * time.Second)
		r.Note() // the burst goes on
		time.Sleep(2 * time.Second)
		check("2 s after the last event", 0)
		time.Sleep(time.Second)
		check("3 s after the last event", 1)

		time.Sleep(time.Minute)
		check("a minute later", 1)
		for range 99 {
			r.Note()
		}
		time.Sleep(time.Minute)
		check("99 more events after a release", 1)
		r.Note()
		time.Sleep(3 * time.Second)
		check("the next burst", 2)
	})
}

func TestNilReleaser(t *testing.T) {
	var r *Releaser
	r.Note()
	r.Stop()
}
