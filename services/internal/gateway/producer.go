package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/message"
)

// errSendTimeout: Kafka did not acknowledge a send in time; it may still
// be stored, so the client retries with the same id.
var errSendTimeout = errors.New("gateway: Kafka did not acknowledge in time")

// producer stores sends in room topics through one shared kafka-go Writer.
//
// The writer runs asynchronously (Async) with a Completion callback: a send
// costs no goroutine, waits for nobody but Kafka, and is batched (1 ms)
// with every other send of the process for its partition. kafka-go's
// synchronous WriteMessages does not return the stored offset; Completion
// does, per message, and WriterData carries each message's flight to it.
// Records are stamped here (Message.Time), because kafka-go's readers
// report a record's create time even on LogAppendTime topics: stamping
// makes the ack's time, the message frames' time and the record agree.
type producer struct {
	w       *kafka.Writer
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

// newProducer configures w (from kafkabus.Cluster.Writer) for asynchronous
// writes with completions.
func newProducer(w *kafka.Writer, dedup *dedupCache, recent func(room, sender, id string) (message.Stored, bool), timeout time.Duration, m *Metrics) *producer {
	p := &producer{w: w, dedup: dedup, recent: recent, timeout: timeout, m: m}
	w.Async = true
	w.Completion = p.complete
	return p
}

// submit stores env in topic and calls done exactly once: with the stored
// position (duplicate when an earlier send with the same sender and id
// was stored), or with an error. It does not block on Kafka; done runs on a
// writer goroutine or a timer and must not block.
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
	msg := kafka.Message{
		Topic:      topic,
		Key:        []byte(env.SenderID),
		Value:      value,
		Time:       now.UTC().Truncate(time.Millisecond),
		WriterData: fl,
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	err = p.w.WriteMessages(ctx, msg)
	if err != nil && metadataLag(err) {
		// A room provisioned a moment ago: the writer's metadata (refreshed
		// every second) does not know its topic yet. Retry off the
		// connection's reader.
		go func() {
			defer cancel()
			p.retry(ctx, fl, msg)
		}()
		return
	}
	cancel()
	if err != nil {
		fl.finish(position{}, fmt.Errorf("produce to %s: %w", topic, err))
	}
}

// metadataLag reports errors that mean "the writer's metadata is behind".
func metadataLag(err error) bool {
	return errors.Is(err, kafka.UnknownTopicOrPartition) || errors.Is(err, kafka.LeaderNotAvailable)
}

func (p *producer) retry(ctx context.Context, fl *flight, msg kafka.Message) {
	// The writer's metadata refresh (every second at most) runs on its own;
	// asking the cache again is cheap, so ask often.
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fl.finish(position{}, fmt.Errorf("produce to %s: %w", msg.Topic, ctx.Err()))
			return
		case <-t.C:
		}
		err := p.w.WriteMessages(ctx, msg)
		if err == nil {
			return
		}
		if !metadataLag(err) {
			fl.finish(position{}, fmt.Errorf("produce to %s: %w", msg.Topic, err))
			return
		}
	}
}

// complete is the writer's Completion: the batch's messages carry their
// stored partition and offset.
func (p *producer) complete(msgs []kafka.Message, err error) {
	now := time.Now()
	for _, m := range msgs {
		fl, ok := m.WriterData.(*flight)
		if !ok {
			continue
		}
		if err != nil {
			fl.finish(position{}, fmt.Errorf("produce to %s: %w", m.Topic, err))
			continue
		}
		p.m.ProduceLatency.Observe(now.Sub(fl.started).Seconds())
		pos := position{Partition: m.Partition, Offset: m.Offset, Time: m.Time.UTC()}
		if first, ok := p.recent(fl.key.room, fl.key.sender, fl.key.id); ok && first.Partition == pos.Partition && first.Offset < pos.Offset {
			// The writer retried a produce the broker had stored (a broker
			// failover): members see the first copy, read by the room's
			// tail already; the answer names it.
			pos = position{Partition: first.Partition, Offset: first.Offset, Time: first.Time.UTC()}
		}
		fl.finish(pos, nil)
	}
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

// close flushes the writer: every message written gets its completion.
func (p *producer) close() error {
	return p.w.Close()
}
