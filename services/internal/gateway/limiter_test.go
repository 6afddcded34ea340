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

// TestBucketCredit: a stall's worth at the rate is allowed beyond the
// burst right after it, and lapses if not spent.
func TestBucketCredit(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBucket(10, 20)
	for b.allow(now) {
	}
	now = now.Add(5 * time.Second)
	b.credit(now, 5*time.Second) // 50 owed, and the bucket refilled to 20
	n := 0
	for b.allow(now) {
		n++
	}
	if n != 70 {
		t.Fatalf("after a 5 s stall %d sends allowed at once, want 50 owed + the burst of 20", n)
	}

	b.credit(now, 5*time.Second)                         // 50 owed until now+5s
	b.credit(now.Add(time.Second), 100*time.Millisecond) // 1 more, the lapse unchanged
	now = now.Add(4 * time.Second)
	n = 0
	for b.allow(now) {
		n++
	}
	if n != 71 {
		t.Fatalf("a short wait after a long one: %d sends allowed, want 51 owed + the burst of 20", n)
	}

	b.credit(now, 2*time.Second) // 20 owed until now+2s
	now = now.Add(3 * time.Second)
	n = 0
	for b.allow(now) {
		n++
	}
	if n != 20 {
		t.Fatalf("a credit unspent past its lapse still allowed %d sends, want only the burst of 20", n)
	}
}
