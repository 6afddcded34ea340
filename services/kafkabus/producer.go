package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	meta "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/segmentio/kafka-go/protocol/produce"
)

// ErrProducerClosed answers a record handed to a closed Producer.
var ErrProducerClosed = errors.New("kafkabus: producer closed")

// ProducerConfig tunes a Producer. Zero fields take the defaults named.
type ProducerConfig struct {
	// Linger is how long a record waits for others before the requests
	// holding it are sent (1 ms).
	Linger time.Duration
	// MaxRecords records waiting send at once, without waiting out Linger
	// (1,000).
	MaxRecords int
	// MaxPartitionBytes bounds the keys and values of one partition's
	// batch in one request (512 KiB, half of Kafka's default
	// message.max.bytes); the rest goes in the partition's next request.
	MaxPartitionBytes int
	// MaxInFlight bounds the produce requests in flight to one broker (16).
	// Each holds a connection of the transport's pool, and a broker works
	// on one request of a connection at a time: more than its request
	// handler threads (num.io.threads, 8 by default) lets it work on
	// several at once. With 4, a gateway serving 1,000 rooms of 10 at one
	// message a second each waited hundreds of milliseconds for a slot.
	MaxInFlight int
	// RequestTimeout bounds one produce request, replication included
	// (10 s).
	RequestTimeout time.Duration
	// Transport carries the requests (the cluster's transport); tests wrap
	// it to watch them.
	Transport kafka.RoundTripper
}

func (c ProducerConfig) withDefaults() ProducerConfig {
	if c.Linger <= 0 {
		c.Linger = time.Millisecond
	}
	if c.MaxRecords <= 0 {
		c.MaxRecords = 1000
	}
	if c.MaxPartitionBytes <= 0 {
		c.MaxPartitionBytes = 512 << 10
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 16
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	return c
}

// Record is one record to produce.
type Record struct {
	Topic string
	Key   []byte // partitions the record, as Java clients and kafka.Murmur2Balancer do
	Value []byte
	Time  time.Time // stored as the record's create time
}

// Produced is where a record is stored.
type Produced struct {
	Partition int
	Offset    int64
	Time      time.Time // the record's Time
}

// Producer produces records with acks=all, batching every partition's
// pending records bound for a broker into one Produce request. kafka-go's
// Writer sends one request per partition, each holding a connection of the
// transport's pool until the broker answers; with many busy partitions
// (one per room) that is thousands of connections and round trips.
//
// One goroutine gathers records for up to Linger (or MaxRecords), assigns
// each its partition (murmur2 of the key over the topic's partitions, as
// a kafka.Writer with a Murmur2Balancer does), groups the partitions by
// leader from the transport's cached metadata, and sends one request per
// broker, at most MaxInFlight per broker at once. A partition has at most
// one batch in flight: its next batch waits for the answer, so a retried
// batch cannot be overtaken and a partition's records are stored in the
// order they were produced. Retriable failures (no leader or a new leader,
// a topic the metadata does not know yet, not enough replicas, a request
// that failed or timed out) put the batch back at the head of its
// partition's queue, tried again after a backoff while the transport's
// metadata refreshes, until the records' deadline. A batch that failed in
// flight may have been stored nonetheless: its retry can store a second
// copy (no idempotent producer), which the caller tells apart by its own
// ids.
type Producer struct {
	cfg     ProducerConfig
	addr    net.Addr
	in      chan *pendingRecord
	results chan *produceResult
	stopped chan struct{}

	mu     sync.RWMutex // closed, and sends on in
	closed bool
}

// Producer returns a producer on the cluster's transport; Close it when
// done.
func (c *Cluster) Producer(cfg ProducerConfig) *Producer {
	cfg = cfg.withDefaults()
	if cfg.Transport == nil {
		cfg.Transport = c.transport
	}
	p := &Producer{
		cfg:     cfg,
		addr:    kafka.TCP(c.cfg.Brokers...),
		in:      make(chan *pendingRecord, 1024),
		results: make(chan *produceResult),
		stopped: make(chan struct{}),
	}
	go p.run()
	return p
}

// Produce hands rec to the producer and returns at once. done is called
// exactly once, from the producer's goroutine (so it must not block): with
// where rec is stored, or with why it is not (the last retriable error
// once deadline passed with rec unsent, or a non-retriable one). A record
// whose request is in flight at its deadline gets the request's outcome.
func (p *Producer) Produce(rec Record, deadline time.Time, done func(Produced, error)) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		done(Produced{}, ErrProducerClosed)
		return
	}
	p.in <- &pendingRecord{rec: rec, deadline: deadline, done: done, size: len(rec.Key) + len(rec.Value)}
}

// Close stops taking records and returns once every record handed over
// has its answer (stored, failed, or past its deadline).
func (p *Producer) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.in)
	}
	p.mu.Unlock()
	<-p.stopped
	return nil
}

type pendingRecord struct {
	rec      Record
	deadline time.Time
	done     func(Produced, error)
	size     int
}

type topicPartition struct {
	topic     string
	partition int32
}

// partitionQueue is one partition's records not yet stored.
type partitionQueue struct {
	recs      []*pendingRecord
	busy      bool      // a batch of it is in flight
	notBefore time.Time // retry backoff
	attempts  int       // failed attempts in a row
	lastErr   error
}

type produceResult struct {
	broker  int32
	batches map[topicPartition][]*pendingRecord
	res     *produce.Response
	err     error
}

// producerState is run's state; only run's goroutine touches it.
type producerState struct {
	unassigned []*pendingRecord // topic not (yet) in the metadata
	unknownErr error
	retryAt    time.Time // when to look for unassigned records' topics again
	queues     map[topicPartition]*partitionQueue
	inFlight   map[int32]int // requests per broker
	requests   int           // requests in flight
	waiting    int           // records not yet in a request
	ids        []int         // see partitionIDs
}

const (
	retryBackoffMin = 20 * time.Millisecond
	retryBackoffMax = 500 * time.Millisecond
	// expireEvery bounds how late a queued record past its deadline is
	// answered.
	expireEvery = 50 * time.Millisecond
)

func (p *Producer) run() {
	defer close(p.stopped)
	s := &producerState{queues: map[topicPartition]*partitionQueue{}, inFlight: map[int32]int{}}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	in := p.in
	// due is when to flush next; zero while there is nothing to send
	// until a record or an answer comes.
	var due, armed time.Time
	for {
		if in == nil && s.waiting == 0 && s.requests == 0 {
			return
		}
		if !due.IsZero() && !due.Equal(armed) {
			resetTimer(timer, time.Until(due))
			armed = due
		}
		select {
		case r, ok := <-in:
			if !ok {
				in = nil
				due = time.Now()
				break
			}
			s.waiting++
			s.unassigned = append(s.unassigned, r)
			if linger := time.Now().Add(p.cfg.Linger); due.IsZero() || linger.Before(due) {
				due = linger // not later than a Linger from now
			}
			if s.waiting >= p.cfg.MaxRecords {
				due = time.Now()
			}
		case res := <-p.results:
			p.answer(s, res)
			// The freed partitions' records waited a round trip already.
			due = time.Now()
		case <-timer.C:
			armed = time.Time{}
		}
		now := time.Now()
		if due.IsZero() || now.Before(due) {
			continue
		}
		wake := p.flush(s, now)
		due = time.Time{}
		if s.waiting > 0 {
			due = now.Add(wake)
		}
	}
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// flush answers records past their deadline, assigns partitions, and
// sends every partition that may send; it returns when to look again.
func (p *Producer) flush(s *producerState, now time.Time) time.Duration {
	p.expire(s, now)
	topics := map[string]struct{}{}
	if len(s.unassigned) > 0 && !now.Before(s.retryAt) {
		for _, r := range s.unassigned {
			topics[r.rec.Topic] = struct{}{}
		}
	}
	for tp, q := range s.queues {
		if len(q.recs) > 0 && !q.busy && !now.Before(q.notBefore) {
			topics[tp.topic] = struct{}{}
		}
	}
	wake := time.Hour
	if len(topics) > 0 {
		md, err := p.metadata(topics)
		if err != nil {
			s.unknownErr = err
			s.retryAt = now.Add(retryBackoffMin)
			for _, q := range s.queues {
				q.lastErr = err
			}
			return retryBackoffMin
		}
		p.assign(s, md, now)
		p.send(s, md, now)
	}
	if s.waiting > 0 {
		wake = expireEvery
		if len(s.unassigned) > 0 {
			wake = min(wake, max(s.retryAt.Sub(now), time.Millisecond))
		}
		for _, q := range s.queues {
			if len(q.recs) > 0 && !q.busy {
				wake = min(wake, max(q.notBefore.Sub(now), time.Millisecond))
			}
		}
	}
	return wake
}

// expire answers records past their deadline that are in no request.
func (p *Producer) expire(s *producerState, now time.Time) {
	keep := s.unassigned[:0]
	for _, r := range s.unassigned {
		if now.After(r.deadline) {
			s.waiting--
			err := s.unknownErr
			if err == nil {
				err = kafka.UnknownTopicOrPartition
			}
			r.done(Produced{}, fmt.Errorf("kafkabus: produce to %s: %w", r.rec.Topic, err))
			continue
		}
		keep = append(keep, r)
	}
	clear(s.unassigned[len(keep):])
	s.unassigned = keep
	for tp, q := range s.queues {
		keep := q.recs[:0]
		for _, r := range q.recs {
			if now.After(r.deadline) {
				s.waiting--
				err := q.lastErr
				if err == nil {
					err = context.DeadlineExceeded
				}
				r.done(Produced{}, fmt.Errorf("kafkabus: produce to %s/%d: %w", tp.topic, tp.partition, err))
				continue
			}
			keep = append(keep, r)
		}
		clear(q.recs[len(keep):])
		q.recs = keep
		if len(q.recs) == 0 && !q.busy {
			delete(s.queues, tp)
		}
	}
}

// metadata returns the transport's cached metadata of topics (kafka-go's
// transport answers metadata requests from its cache, refreshed every
// metadataTTL).
func (p *Producer) metadata(topics map[string]struct{}) (*meta.Response, error) {
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	// Served from the cache, but the first call waits for the transport's
	// first metadata; the loop does not wait long (it retries).
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := p.cfg.Transport.RoundTrip(ctx, p.addr, &meta.Request{TopicNames: names})
	if err != nil {
		return nil, fmt.Errorf("kafkabus: metadata: %w", err)
	}
	md, ok := res.(*meta.Response)
	if !ok {
		return nil, fmt.Errorf("kafkabus: metadata: unexpected response %T", res)
	}
	return md, nil
}

// assign gives every unassigned record of a topic the metadata knows its
// partition, as a kafka.Writer with a Murmur2Balancer would: murmur2 of
// the key over partitions 0..n-1.
func (p *Producer) assign(s *producerState, md *meta.Response, now time.Time) {
	if len(s.unassigned) == 0 || now.Before(s.retryAt) {
		return
	}
	counts := make(map[string]int, len(md.Topics))
	for _, t := range md.Topics {
		if t.ErrorCode == 0 && len(t.Partitions) > 0 {
			counts[t.Name] = len(t.Partitions)
		}
	}
	var balancer kafka.Murmur2Balancer
	keep := s.unassigned[:0]
	for _, r := range s.unassigned {
		n, ok := counts[r.rec.Topic]
		if !ok {
			keep = append(keep, r)
			continue
		}
		part := balancer.Balance(kafka.Message{Key: r.rec.Key}, s.partitionIDs(n)...)
		tp := topicPartition{topic: r.rec.Topic, partition: int32(part)}
		q := s.queues[tp]
		if q == nil {
			q = &partitionQueue{}
			s.queues[tp] = q
		}
		q.recs = append(q.recs, r)
	}
	clear(s.unassigned[len(keep):])
	s.unassigned = keep
	if len(keep) > 0 {
		s.unknownErr = kafka.UnknownTopicOrPartition
		s.retryAt = now.Add(retryBackoffMin)
	}
}

// partitionIDs returns 0..n-1, the partition list a kafka.Writer hands its
// balancer (kept: Balance does not modify it).
func (s *producerState) partitionIDs(n int) []int {
	if len(s.ids) < n {
		s.ids = make([]int, max(n, 2*len(s.ids)))
		for i := range s.ids {
			s.ids[i] = i
		}
	}
	return s.ids[:n]
}

// send puts every partition that may send into one request per leader.
func (p *Producer) send(s *producerState, md *meta.Response, now time.Time) {
	leaders := map[topicPartition]int32{}
	for _, t := range md.Topics {
		for _, part := range t.Partitions {
			leaders[topicPartition{topic: t.Name, partition: part.PartitionIndex}] = part.LeaderID
		}
	}
	type request struct {
		req     *produce.Request
		topics  map[string]int // index in req.Topics
		batches map[topicPartition][]*pendingRecord
	}
	reqs := map[int32]*request{}
	for tp, q := range s.queues {
		if len(q.recs) == 0 || q.busy || now.Before(q.notBefore) {
			continue
		}
		leader, ok := leaders[tp]
		if !ok || leader < 0 {
			q.lastErr = kafka.LeaderNotAvailable
			q.notBefore = now.Add(retryBackoffMin)
			continue
		}
		if s.inFlight[leader] >= p.cfg.MaxInFlight {
			continue // sent when an answer frees one
		}
		r := reqs[leader]
		if r == nil {
			r = &request{
				req:     &produce.Request{Acks: int16(kafka.RequireAll), Timeout: int32(p.cfg.RequestTimeout / time.Millisecond)},
				topics:  map[string]int{},
				batches: map[topicPartition][]*pendingRecord{},
			}
			reqs[leader] = r
		}
		n, size := 0, 0
		for n < len(q.recs) && (n == 0 || size+q.recs[n].size <= p.cfg.MaxPartitionBytes) {
			size += q.recs[n].size
			n++
		}
		batch := q.recs[:n:n]
		q.recs = q.recs[n:]
		q.busy = true
		s.waiting -= n
		records := make([]protocol.Record, n)
		for i, pr := range batch {
			records[i] = protocol.Record{Offset: int64(i), Time: pr.rec.Time, Key: bytesOrNil(pr.rec.Key), Value: bytesOrNil(pr.rec.Value)}
		}
		ti, ok := r.topics[tp.topic]
		if !ok {
			ti = len(r.req.Topics)
			r.topics[tp.topic] = ti
			r.req.Topics = append(r.req.Topics, produce.RequestTopic{Topic: tp.topic})
		}
		r.req.Topics[ti].Partitions = append(r.req.Topics[ti].Partitions, produce.RequestPartition{
			Partition: tp.partition,
			RecordSet: protocol.RecordSet{Version: 2, Records: protocol.NewRecordReader(records...)},
		})
		r.batches[tp] = batch
	}
	for leader, r := range reqs {
		s.inFlight[leader]++
		s.requests++
		go p.roundTrip(leader, r.req, r.batches)
	}
}

func bytesOrNil(b []byte) protocol.Bytes {
	if b == nil {
		return nil
	}
	return protocol.NewBytes(b)
}

func (p *Producer) roundTrip(broker int32, req *produce.Request, batches map[topicPartition][]*pendingRecord) {
	// The broker answers within req.Timeout; the margin covers the network.
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.RequestTimeout+2*time.Second)
	res, err := p.cfg.Transport.RoundTrip(ctx, p.addr, req)
	cancel()
	r := &produceResult{broker: broker, batches: batches, err: err}
	if err == nil {
		var ok bool
		if r.res, ok = res.(*produce.Response); !ok {
			r.err = fmt.Errorf("unexpected response %T", res)
		}
	}
	p.results <- r
}

// answer hands a request's outcome to its records, or queues them again.
func (p *Producer) answer(s *producerState, r *produceResult) {
	now := time.Now()
	s.inFlight[r.broker]--
	s.requests--
	type answer struct {
		code int16
		msg  string
		base int64
	}
	answers := map[topicPartition]answer{}
	if r.res != nil {
		for _, t := range r.res.Topics {
			for _, part := range t.Partitions {
				answers[topicPartition{topic: t.Topic, partition: part.Partition}] = answer{code: part.ErrorCode, msg: part.ErrorMessage, base: part.BaseOffset}
			}
		}
	}
	for tp, batch := range r.batches {
		q := s.queues[tp]
		if q == nil { // cannot happen: a busy queue is never deleted
			q = &partitionQueue{}
			s.queues[tp] = q
		}
		q.busy = false
		err := r.err
		a, ok := answers[tp]
		switch {
		case err != nil:
		case !ok:
			err = fmt.Errorf("no answer for partition %d", tp.partition)
		case a.code != 0:
			err = kafka.Error(a.code)
			if a.msg != "" {
				err = fmt.Errorf("%w: %s", err, a.msg)
			}
		}
		if err == nil {
			q.attempts, q.lastErr = 0, nil
			for i, pr := range batch {
				pr.done(Produced{Partition: int(tp.partition), Offset: a.base + int64(i), Time: pr.rec.Time}, nil)
			}
		} else if retriable(err) {
			q.attempts++
			q.lastErr = err
			q.notBefore = now.Add(backoff(q.attempts))
			q.recs = append(batch[:len(batch):len(batch)], q.recs...)
			s.waiting += len(batch)
			continue
		} else {
			for _, pr := range batch {
				pr.done(Produced{}, fmt.Errorf("kafkabus: produce to %s/%d: %w", tp.topic, tp.partition, err))
			}
		}
		if len(q.recs) == 0 {
			delete(s.queues, tp)
		}
	}
}

// retriable: a partition error Kafka calls retriable, or a request that
// failed as a whole (a broker gone, a timeout, a leader the transport's
// metadata does not know yet).
func retriable(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	return true
}

func backoff(attempts int) time.Duration {
	d := retryBackoffMin << min(attempts-1, 8)
	return min(d, retryBackoffMax)
}
