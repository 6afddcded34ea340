package topics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBatcherCoalesces checks that concurrent calls are served by a few
// flushes, each caller getting its own answer, a key asked twice sent once.
func TestBatcherCoalesces(t *testing.T) {
	var flushes atomic.Int32
	var sizes sync.Map
	b := newBatcher("test", Options{Window: 20 * time.Millisecond, MaxBatch: 1000, InFlight: 1, Timeout: time.Second}.withDefaults(),
		func(_ context.Context, items map[string]int) (map[string]result[string], error) {
			sizes.Store(flushes.Add(1), len(items))
			out := map[string]result[string]{}
			for k, v := range items {
				if k == "bad" {
					out[k] = result[string]{err: errors.New("refused")}
					continue
				}
				out[k] = result[string]{val: fmt.Sprintf("%s=%d", k, v)}
			}
			return out, nil
		})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go b.run(ctx)

	const n = 200
	var wg sync.WaitGroup
	answers := make([]string, n)
	for i := range n {
		wg.Go(func() {
			key := fmt.Sprintf("k%d", i%(n/2)) // every key twice
			v, err := b.do(t.Context(), key, i%(n/2))
			if err != nil {
				t.Error(err)
			}
			answers[i] = v
		})
	}
	wg.Wait()
	for i, a := range answers {
		require.Equal(t, fmt.Sprintf("k%d=%d", i%(n/2), i%(n/2)), a)
	}
	require.Less(t, int(flushes.Load()), n/4, "calls were not batched")
	total := 0
	sizes.Range(func(_, v any) bool { total += v.(int); return true })
	require.LessOrEqual(t, total, n, "a key went out more than once per batch")

	_, err := b.do(t.Context(), "bad", 0)
	require.ErrorContains(t, err, "refused")
}

// TestBatcherFailsTheBatch checks that a failed request fails every call
// of its batch, and that a key without an answer gets an error.
func TestBatcherFailsTheBatch(t *testing.T) {
	fail := errors.New("unreachable")
	b := newBatcher("test", Options{Window: time.Millisecond, MaxBatch: 10, Timeout: time.Second}.withDefaults(),
		func(_ context.Context, items map[string]int) (map[string]result[int], error) {
			if _, ok := items["fail"]; ok {
				return nil, fail
			}
			return map[string]result[int]{}, nil
		})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go b.run(ctx)
	_, err := b.do(t.Context(), "fail", 1)
	require.ErrorIs(t, err, fail)
	_, err = b.do(t.Context(), "silent", 1)
	require.ErrorIs(t, err, errNoAnswer)
}

// TestBatcherStops checks that calls fail, not hang, once the batcher stops.
func TestBatcherStops(t *testing.T) {
	block := make(chan struct{})
	b := newBatcher("test", Options{Window: time.Millisecond, MaxBatch: 10, Timeout: time.Minute}.withDefaults(),
		func(ctx context.Context, items map[string]int) (map[string]result[int], error) {
			<-block
			return nil, ctx.Err()
		})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { b.run(ctx); close(done) }()
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { _, err := b.do(t.Context(), fmt.Sprint(i), i); errs <- err }()
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	close(block)
	<-done
	for range 3 {
		require.Error(t, <-errs)
	}
	// A caller that gives up does not wait for the batch.
	callCtx, callCancel := context.WithCancel(t.Context())
	callCancel()
	_, err := b.do(callCtx, "late", 0)
	require.ErrorIs(t, err, context.Canceled)
}
