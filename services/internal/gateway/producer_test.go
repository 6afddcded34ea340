package gateway

import (
	"testing"
	"time"

	"palaver.dev/services/internal/message"
)

// TestRetriedProduceIsAnsweredWithTheFirstCopy: when the producer retried a
// produce the broker had stored (a broker failover), Kafka answers with the
// offset of the second copy; the room's tail read the first, which members
// see, and the ack names it.
func TestRetriedProduceIsAnsweredWithTheFirstCopy(t *testing.T) {
	first := message.Stored{Envelope: message.Envelope{ID: "m1", Room: "lobby", SenderID: "ada"}, Partition: 0, Offset: 7,
		Time: time.Now().Add(-time.Second)}
	recent := func(room, sender, id string) (message.Stored, bool) {
		if room == first.Room && sender == first.SenderID && id == first.ID {
			return first, true
		}
		return message.Stored{}, false
	}
	p := &producer{dedup: newDedupCache(time.Minute, 100), recent: recent, m: NewMetrics(nil)}
	for _, c := range []struct {
		id   string
		at   int64 // the offset Kafka answered
		want int64 // the offset of the ack
	}{
		{"m1", 9, 7}, // retried: the first copy
		{"m2", 9, 9}, // the tail knows no other copy
	} {
		fl, _ := p.dedup.begin(sendKey{sender: "ada", room: "lobby", id: c.id}, time.Now())
		p.stored(fl, position{Partition: 0, Offset: c.at, Time: time.Now()})
		var got position
		fl.wait(func(pos position, err error) {
			if err != nil {
				t.Fatal(err)
			}
			got = pos
		})
		if got.Offset != c.want {
			t.Errorf("send %s stored at %d: ack names offset %d, want %d", c.id, c.at, got.Offset, c.want)
		}
	}
}
