package gateway

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// A flush worker writes the frames of the connections rooms flush, one
// connection after the other, each with one non-blocking write
// (conn.writeDirect). A busy room's flush so wakes a worker or two rather
// than a writer goroutine per member, and the room's tail does not wait
// for the writes. A worker that falls behind (a starved machine) finds
// more frames queued per connection when it gets to it, and writes them
// together, as the writers do. There are flushersPerProc workers per
// processor (GOMAXPROCS at the first flush), and a connection always goes
// to the same one.
type flusher struct {
	mu      sync.Mutex
	pending []*conn
	spare   []*conn
	idle    bool          // the worker waits for wake
	wake    chan struct{} // capacity 1
}

// flushersPerProc is the flush workers per processor: a worker whose
// thread the kernel preempts holds its connections' writes, and more
// workers leave the others to be run on the other processors meanwhile.
const flushersPerProc = 4

var (
	flushers     []*flusher
	flushersOnce sync.Once
	flusherNext  atomic.Uint32 // hands connections to workers in turn
)

// flusherOf returns flush worker n (modulo their number), starting the
// workers at the first call.
func flusherOf(n uint32) *flusher {
	flushersOnce.Do(func() {
		n := flushersPerProc * max(runtime.GOMAXPROCS(0), 1)
		flushers = make([]*flusher, n)
		for i := range flushers {
			f := &flusher{wake: make(chan struct{}, 1)}
			flushers[i] = f
			go f.run()
		}
	})
	return flushers[n%uint32(len(flushers))]
}

// add hands c to the worker; c.flushing is set, so c is in at most one
// worker's list.
func (f *flusher) add(c *conn) {
	f.mu.Lock()
	f.pending = append(f.pending, c)
	wake := f.idle
	f.idle = false
	f.mu.Unlock()
	if wake {
		f.wake <- struct{}{}
	}
}

func (f *flusher) run() {
	for {
		f.mu.Lock()
		for len(f.pending) == 0 {
			f.idle = true
			f.mu.Unlock()
			<-f.wake
			f.mu.Lock()
		}
		batch := f.pending
		f.pending = f.spare[:0]
		f.spare = nil
		f.mu.Unlock()
		for _, c := range batch {
			c.flushNow()
		}
		clear(batch)
		f.mu.Lock()
		if cap(batch) <= 1<<16 {
			f.spare = batch[:0]
		}
		f.mu.Unlock()
	}
}
