package topics

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// result is one call's answer.
type result[R any] struct {
	val R
	err error
}

// call is one caller's request, waiting for its batch.
type call[T, R any] struct {
	key  string
	item T
	done chan result[R] // buffered: a caller that gave up is not waited for
}

// flushFunc serves one batch: items by key (a key seen twice in a batch is
// sent once and both callers get its answer). It returns an answer per key,
// or an error that fails the whole batch (Kafka unreachable). A key missing
// from the answers gets errNoAnswer.
type flushFunc[T, R any] func(ctx context.Context, items map[string]T) (map[string]result[R], error)

// batcher coalesces concurrent calls into batches, so that a thousand
// reconciles make a handful of Kafka requests instead of a thousand. The
// first call opens a batch, which collects calls for window (or until max
// of them); the batch then goes to the first free of inflight flushes. While
// every flush is busy the open batch keeps collecting, so batches grow with
// the load, and an idle system answers within window plus one request.
type batcher[T, R any] struct {
	op       string
	window   time.Duration
	max      int
	inflight int
	timeout  time.Duration
	flush    flushFunc[T, R]
	metrics  *Metrics
	in       chan call[T, R]
}

func newBatcher[T, R any](op string, o Options, flush flushFunc[T, R]) *batcher[T, R] {
	return &batcher[T, R]{
		op: op, window: o.Window, max: o.MaxBatch, inflight: o.InFlight, timeout: o.Timeout, flush: flush, metrics: o.Metrics,
		in: make(chan call[T, R], o.MaxBatch),
	}
}

// do queues item under key and waits for its batch's answer.
func (b *batcher[T, R]) do(ctx context.Context, key string, item T) (R, error) {
	var zero R
	c := call[T, R]{key: key, item: item, done: make(chan result[R], 1)}
	select {
	case b.in <- c:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case r := <-c.done:
		return r.val, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// run serves batches until ctx is done; calls still queued then fail.
func (b *batcher[T, R]) run(ctx context.Context) {
	work := make(chan []call[T, R])
	var wg sync.WaitGroup
	for range b.inflight {
		wg.Go(func() {
			for batch := range work {
				b.serve(ctx, batch)
			}
		})
	}
	defer wg.Wait()
	defer close(work)

	var (
		open   []call[T, R]
		window <-chan time.Time // open batch still collecting
		due    bool             // open batch may go
	)
	for {
		in, out := b.in, chan []call[T, R](nil)
		if len(open) >= b.max {
			in, due = nil, true
		}
		if due {
			out = work
		}
		select {
		case <-ctx.Done():
			for _, c := range open {
				c.done <- result[R]{err: ctx.Err()}
			}
			b.drain(ctx.Err())
			return
		case c := <-in:
			open = append(open, c)
			if len(open) == 1 {
				window = time.After(b.window)
			}
		case <-window:
			window, due = nil, true
		case out <- open:
			open, window, due = nil, nil, false
		}
	}
}

// serve flushes one batch and answers its calls.
func (b *batcher[T, R]) serve(ctx context.Context, calls []call[T, R]) {
	items := make(map[string]T, len(calls))
	for _, c := range calls {
		if _, ok := items[c.key]; !ok {
			items[c.key] = c.item
		}
	}
	fctx, cancel := context.WithTimeout(ctx, b.timeout)
	began := time.Now()
	answers, err := b.flush(fctx, items)
	cancel()
	b.metrics.observe(b.op, len(items), time.Since(began), err)
	for _, c := range calls {
		r, ok := answers[c.key]
		switch {
		case err != nil:
			r = result[R]{err: err}
		case !ok:
			r = result[R]{err: fmt.Errorf("topics: %s %q: %w", b.op, c.key, errNoAnswer)}
		}
		c.done <- r
	}
}

func (b *batcher[T, R]) drain(err error) {
	for {
		select {
		case c := <-b.in:
			c.done <- result[R]{err: err}
		default:
			return
		}
	}
}
