package gateway

import (
	"container/list"
	"sync"
	"time"
)

// sendKey identifies a send for deduplication: a client's message id is
// unique per sender; the room is part of the key so that an id reused in
// another room is not mistaken for a retry.
type sendKey struct {
	sender, room, id string
}

// position is where Kafka stored a message.
type position struct {
	Partition int
	Offset    int64
	Time      time.Time
}

// flight is one send's way to Kafka. Retries of the same send while it is
// in flight wait for it (single flight); once stored, its position answers
// retries until the dedup window ends.
type flight struct {
	key     sendKey
	started time.Time

	mu      sync.Mutex
	done    bool
	pos     position
	err     error
	waiters []func(position, error)
}

// wait calls fn with the outcome, now if known, else when it is.
func (f *flight) wait(fn func(position, error)) {
	f.mu.Lock()
	if !f.done {
		f.waiters = append(f.waiters, fn)
		f.mu.Unlock()
		return
	}
	pos, err := f.pos, f.err
	f.mu.Unlock()
	fn(pos, err)
}

// finish records the outcome and calls the waiters; only the first call
// counts.
func (f *flight) finish(pos position, err error) {
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	f.done, f.pos, f.err = true, pos, err
	ws := f.waiters
	f.waiters = nil
	f.mu.Unlock()
	for _, fn := range ws {
		fn(pos, err)
	}
}

// dedupCache maps sends to their flights for a window, bounded in size:
// entries leave in insertion order, when older than the window or when the
// cache is over its size.
type dedupCache struct {
	window time.Duration
	max    int

	mu      sync.Mutex
	entries map[sendKey]*list.Element
	order   *list.List // of *dedupEntry, newest at the front
}

type dedupEntry struct {
	key sendKey
	fl  *flight
}

func newDedupCache(window time.Duration, max int) *dedupCache {
	return &dedupCache{window: window, max: max, entries: map[sendKey]*list.Element{}, order: list.New()}
}

// begin returns the flight of key and whether it is new: the caller then
// owns sending it.
func (c *dedupCache) begin(key sendKey, now time.Time) (*flight, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.order.Back(); e != nil; e = c.order.Back() {
		en := e.Value.(*dedupEntry)
		if c.order.Len() <= c.max && now.Sub(en.fl.started) < c.window {
			break
		}
		c.order.Remove(e)
		delete(c.entries, en.key)
	}
	if e, ok := c.entries[key]; ok {
		return e.Value.(*dedupEntry).fl, false
	}
	fl := &flight{key: key, started: now}
	c.entries[key] = c.order.PushFront(&dedupEntry{key: key, fl: fl})
	return fl, true
}

// forget drops key if it still maps to fl: a failed send must not answer
// its retries.
func (c *dedupCache) forget(key sendKey, fl *flight) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok && e.Value.(*dedupEntry).fl == fl {
		c.order.Remove(e)
		delete(c.entries, key)
	}
}

func (c *dedupCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
