package gateway

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBucket(10, 20)
	for i := range 20 {
		if !b.allow(now) {
			t.Fatalf("send %d of the burst refused", i+1)
		}
	}
	if b.allow(now) {
		t.Fatal("send over the burst allowed")
	}
	now = now.Add(100 * time.Millisecond) // one token back at 10/s
	if !b.allow(now) || b.allow(now) {
		t.Fatal("refill is not 10 per second")
	}
	now = now.Add(time.Hour)
	n := 0
	for b.allow(now) {
		n++
	}
	if n != 20 {
		t.Fatalf("after a long pause %d sends allowed, want the burst of 20", n)
	}
}
