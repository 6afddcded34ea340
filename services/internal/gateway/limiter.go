package gateway

import "time"

// bucket is a token bucket: rate tokens a second, holding at most burst.
// The zero value of its state starts full. Not safe for concurrent use:
// each connection's reader owns its buckets.
type bucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time

	owed      float64   // tokens credited for a stall, spent before the others
	owedUntil time.Time // when what is owed and unspent lapses
}

func newBucket(rate float64, burst int) bucket {
	return bucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// allow takes a token if there is one.
func (b *bucket) allow(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.owed >= 1 && now.Before(b.owedUntil) {
		b.owed--
		return true
	}
	b.owed = 0
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// credit gives back what a stall of d, ending at now, cost the client.
// While its reader waits (for Kafka, with the connection's sends in
// flight at their limit) the client's frames queue in the socket, and
// the reader then reads them at once: judged as they are read, a client
// that kept to the rate would look like a flood. d's worth at the rate is
// owed, beyond the burst; what is not spent soon after (within d again,
// at least a second) lapses, so a stall cannot be banked for a later
// flood.
func (b *bucket) credit(now time.Time, d time.Duration) {
	if d <= 0 {
		return
	}
	if !now.Before(b.owedUntil) {
		b.owed = 0
	}
	b.owed += d.Seconds() * b.rate
	if until := now.Add(max(d, time.Second)); until.After(b.owedUntil) {
		b.owedUntil = until // a short wait does not cut a long one's lapse short
	}
}
