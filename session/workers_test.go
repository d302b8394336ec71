package session

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"
)

// jobLeg is a leg whose read loop is f.
func jobLeg(f func()) *leg { return &leg{resume: f} }

func (p *workers) counts() (idle, started int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle), p.started
}

// runAtOnce runs n jobs on p that wait for each other, each on a new
// worker, and returns once they are all done (their workers idle) with
// the leg of a job that now returns at once. Inside a synctest bubble.
func runAtOnce(t *testing.T, p *workers, n int) *leg {
	t.Helper()
	release := make(chan struct{})
	blocking := jobLeg(func() { <-release })
	for range n {
		p.run(job{l: blocking})
	}
	synctest.Wait()
	if idle, started := p.counts(); started != n || idle != 0 {
		t.Fatalf("%d blocked jobs: %d started, %d idle; want %d and 0", n, started, idle, n)
	}
	close(release)
	synctest.Wait()
	return blocking
}

// One job after another runs on one goroutine.
func TestWorkersReuseOneGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p workers
		p.begin()
		ran := make(chan struct{})
		l := jobLeg(func() { ran <- struct{}{} })
		for range 10 {
			p.run(job{l: l})
			<-ran
			synctest.Wait() // the worker is idle again
		}
		if idle, started := p.counts(); started != 1 || idle != 1 {
			t.Fatalf("10 jobs in turn: %d goroutines started, %d idle; want 1 and 1", started, idle)
		}
		p.end() // the last session: the idle worker ends (else the bubble would not)
	})
}

// Jobs at the same time get a worker each; once they are done, as many
// later jobs start no goroutine. The workers no job needed for a whole
// trimEvery end; the ones in use stay.
func TestWorkersConcurrentAndTrim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p workers
		p.begin()
		blocking := runAtOnce(t, &p, 3)
		for range 3 {
			p.run(job{l: blocking}) // release is closed: returns at once
			synctest.Wait()
		}
		if idle, started := p.counts(); started != 3 || idle != 3 {
			t.Fatalf("3 more jobs: %d started, %d idle; want 3 and 3", started, idle)
		}
		// One worker is used through the next periods; the other two
		// idle through the first whole period and end at its trim.
		deadline := time.Now().Add(3 * trimEvery)
		for time.Now().Before(deadline) {
			p.run(job{l: blocking})
			synctest.Wait()
			time.Sleep(trimEvery / 10)
		}
		if idle, started := p.counts(); started != 3 || idle != 1 {
			t.Fatalf("after 3 periods with one job at a time: %d started, %d idle; want 3 and 1", started, idle)
		}
		// Nothing more: the last one ends within two periods.
		time.Sleep(2 * trimEvery)
		synctest.Wait()
		if idle, _ := p.counts(); idle != 0 {
			t.Fatalf("%d workers idle two periods after the last job, want 0", idle)
		}
		p.run(job{l: blocking}) // a new one, as the first
		synctest.Wait()
		if _, started := p.counts(); started != 4 {
			t.Fatalf("a job after the trims: %d started in all, want 4", started)
		}
		p.end()
	})
}

// goid is the calling goroutine's id (from its stack trace's header).
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	b = b[:bytes.IndexByte(b, ' ')]
	n, _ := strconv.ParseUint(string(b), 10, 64)
	return n
}

// A parked leg that wakes runs its read loop on a goroutine that ran one
// before (a worker's), not on a new one whose stack the first message
// grows in several copies (README "Architecture").
func TestWokenLegsReuseGoroutines(t *testing.T) {
	var mu sync.Mutex
	goroutines := map[uint64]bool{}
	r := newParkRigWith(t, hbCfg(hbOff, hbOff), func(e *Env) {
		e.test.read = func(*leg, int, error) {
			id := goid()
			mu.Lock()
			goroutines[id] = true
			mu.Unlock()
		}
	})
	c, u := r.s.client, r.up()
	const wakes = 20
	for range wakes {
		r.waitParked(c, u)
		r.exchange()
	}
	r.waitParked(c, u)
	mu.Lock()
	n := len(goroutines)
	mu.Unlock()
	// Two legs, each woken 20 times: two workers (a few more when a wake
	// comes before the last loop's worker is back in the list, or a
	// trim ends one between wakes).
	t.Logf("%d goroutines ran the read loops", n)
	if n > 8 {
		t.Errorf("the read loops of %d wakes of each leg ran on %d goroutines, want at most 8", wakes, n)
	}
}

// Many workers idle at once (a burst of sessions that went quiet
// together) end trimBatch at a time, trimBacklog apart, not all in one
// wake.
func TestWorkersTrimInBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p workers
		p.begin()
		const n = 3*trimBatch + 5
		runAtOnce(t, &p, n)
		if idle, started := p.counts(); started != n || idle != n {
			t.Fatalf("%d jobs at once, done: %d started, %d idle; want %d and %d", n, started, idle, n, n)
		}
		// The period began when the first of them went idle: the others
		// count from the next one.
		time.Sleep(trimEvery)
		synctest.Wait()
		if idle, _ := p.counts(); idle != n-1 {
			t.Fatalf("first trim: %d idle, want %d", idle, n-1)
		}
		time.Sleep(trimEvery)
		synctest.Wait()
		left := n - 1
		for i := 0; left > 0; i++ {
			idle, _ := p.counts()
			if want := max(left-trimBatch, 0); idle != want {
				t.Fatalf("trim %d: %d idle, want %d (at most %d ended at a time)", i, idle, want, trimBatch)
			}
			left = max(left-trimBatch, 0)
			time.Sleep(trimBacklog)
			synctest.Wait()
		}
		p.end()
	})
}

// A worker's stack holds the read loop's message path from its start
// (growStack): no message a leg relays grows it, not even the first one
// on a new worker, where a growth copies every frame of the deep path.
// The check runs in a child process whose goroutines start with the
// runtime's smallest stack (adaptivestackstart=0: otherwise the start
// follows the process's average, and a larger one would hide a missing
// growStack) and whose collector shrinks no stack (gcshrinkstackoff=1).
// A stack that grows moves: the read hook's frame is at another address
// at the next read of the same goroutine.
func TestWorkerStackHoldsMessagePath(t *testing.T) {
	if os.Getenv("TETHER_STACK_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWorkerStackHoldsMessagePath$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "TETHER_STACK_CHILD=1", "GODEBUG=adaptivestackstart=0,gcshrinkstackoff=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child process: %v\n%s", err, out)
		}
		t.Logf("child process:\n%s", out)
		return
	}
	// The running hook is called first in each run of a read loop, at
	// the same depth from the worker's loop: a stack that grew during a
	// run has the hook's frame at another address in the next run on
	// that goroutine.
	var mu sync.Mutex
	frames := map[uint64][]uintptr{} // by goroutine, run by run
	r := newParkRigWith(t, hbCfg(hbOff, hbOff), func(e *Env) {
		e.test.running = func(*leg) {
			var here byte
			at := uintptr(unsafe.Pointer(&here))
			id := goid()
			mu.Lock()
			frames[id] = append(frames[id], at)
			mu.Unlock()
		}
	})
	c, u := r.s.client, r.up()
	// Each exchange wakes both parked legs: a run relays a message, and
	// the next run of the same worker comes after it.
	for range 4 {
		r.waitParked(c, u)
		r.exchange()
	}
	r.waitParked(c, u)
	mu.Lock()
	defer mu.Unlock()
	again := 0 // goroutines that ran a read loop more than once
	for id, at := range frames {
		if len(at) > 1 {
			again++
		}
		for i := 1; i < len(at); i++ {
			if at[i] != at[0] {
				t.Errorf("goroutine %d: its stack moved between runs 1 and %d of a read loop (the hook's frame at %#x, then %#x): a message grew it", id, i+1, at[0], at[i])
				break
			}
		}
	}
	if again == 0 {
		t.Fatal("no goroutine ran a read loop twice: nothing compared")
	}
}
