package gateway

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"palaver.dev/services/internal/message"
	"palaver.dev/services/kafkabus"
)

// errSendTimeout: Kafka did not acknowledge a send in time; it may still
// be stored, so the client retries with the same id.
var errSendTimeout = errors.New("gateway: Kafka did not acknowledge in time")

// producer stores sends in room topics through one kafkabus.Producer for
// the process: a send costs no goroutine, waits for nobody but Kafka, and
// goes with every other partition's pending sends bound for the same
// broker in one Produce request (acks=all), its partition the murmur2 of
// the sender id as before. The producer answers each send with its stored
// partition and offset. Records are stamped here (Record.Time), because
// kafka-go's readers report a record's create time even on LogAppendTime
// topics: stamping makes the ack's time, the message frames' time and the
// record agree.
type producer struct {
	kp      *kafkabus.Producer
	dedup   *dedupCache
	recent  func(room, sender, id string) (message.Stored, bool)
	timeout time.Duration
	m       *Metrics
}

// sendResult is a send's answer: where it is stored, or why it is not.
type sendResult struct {
	pos       position
	duplicate bool
	err       error
}

// newProducer answers sends through kp.
func newProducer(kp *kafkabus.Producer, dedup *dedupCache, recent func(room, sender, id string) (message.Stored, bool), timeout time.Duration, m *Metrics) *producer {
	return &producer{kp: kp, dedup: dedup, recent: recent, timeout: timeout, m: m}
}

// submit stores env in topic and calls done exactly once: with the stored
// position (duplicate when an earlier send with the same sender and id
// was stored), or with an error. It does not block on Kafka; done runs on the
// producer's goroutine or a timer and must not block.
func (p *producer) submit(topic string, env *message.Envelope, done func(sendResult)) {
	done = p.deadline(done)
	now := time.Now()
	key := sendKey{sender: env.SenderID, room: env.Room, id: env.ID}
	fl, first := p.dedup.begin(key, now)
	if !first {
		fl.wait(func(pos position, err error) {
			if err == nil {
				p.m.DedupHits.Inc()
			}
			done(sendResult{pos: pos, duplicate: err == nil, err: err})
		})
		return
	}
	if m, ok := p.recent(env.Room, env.SenderID, env.ID); ok {
		// Stored already, through this gateway or another replica.
		fl.finish(position{Partition: m.Partition, Offset: m.Offset, Time: m.Time}, nil)
		p.m.DedupHits.Inc()
		done(sendResult{pos: position{Partition: m.Partition, Offset: m.Offset, Time: m.Time}, duplicate: true})
		return
	}
	value, err := message.Encode(env)
	if err != nil {
		p.dedup.forget(key, fl)
		fl.finish(position{}, err)
		done(sendResult{err: err})
		return
	}
	fl.wait(func(pos position, err error) {
		if err != nil {
			p.dedup.forget(key, fl)
		} else {
			p.m.MessagesReceived.WithLabelValues(env.Room).Inc()
		}
		done(sendResult{pos: pos, err: err})
	})
	rec := kafkabus.Record{Topic: topic, Key: []byte(env.SenderID), Value: value, Time: now.UTC().Truncate(time.Millisecond)}
	p.kp.Produce(rec, now.Add(p.timeout), func(st kafkabus.Produced, err error) {
		if err != nil {
			fl.finish(position{}, fmt.Errorf("produce to %s: %w", topic, err))
			return
		}
		p.stored(fl, position{Partition: st.Partition, Offset: st.Offset, Time: st.Time.UTC()})
	})
}

// stored answers fl with where Kafka stored its record.
func (p *producer) stored(fl *flight, pos position) {
	p.m.ProduceLatency.Observe(time.Since(fl.started).Seconds())
	if first, ok := p.recent(fl.key.room, fl.key.sender, fl.key.id); ok && first.Partition == pos.Partition && first.Offset < pos.Offset {
		// The producer retried a produce the broker had stored (a broker
		// failover): members see the first copy, read by the room's tail
		// already; the answer names it.
		pos = position{Partition: first.Partition, Offset: first.Offset, Time: first.Time.UTC()}
	}
	fl.finish(pos, nil)
}

// deadline answers unavailable if Kafka has not answered within the send
// timeout; a later outcome still lands in the dedup cache for retries.
func (p *producer) deadline(done func(sendResult)) func(sendResult) {
	var once sync.Once
	t := time.AfterFunc(p.timeout, func() {
		once.Do(func() { done(sendResult{err: errSendTimeout}) })
	})
	return func(r sendResult) {
		t.Stop()
		once.Do(func() { done(r) })
	}
}

// close flushes the producer: every send submitted gets its answer.
func (p *producer) close() error {
	return p.kp.Close()
}
