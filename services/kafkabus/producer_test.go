package kafkabus_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/produce"

	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
)

// countingTransport counts the produce requests it carries, and fails
// those for which fail returns an error, before or after sending them.
type countingTransport struct {
	rt         kafka.RoundTripper
	produces   atomic.Int64
	partitions atomic.Int64 // partitions in all produce requests
	fail       func(n int64) (afterSend bool, err error)
}

func (c *countingTransport) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	p, ok := req.(*produce.Request)
	if !ok {
		return c.rt.RoundTrip(ctx, addr, req)
	}
	n := c.produces.Add(1)
	for _, t := range p.Topics {
		c.partitions.Add(int64(len(t.Partitions)))
	}
	if c.fail != nil {
		if after, err := c.fail(n); err != nil {
			if after {
				_, _ = c.rt.RoundTrip(ctx, addr, req)
			}
			return nil, err
		}
	}
	return c.rt.RoundTrip(ctx, addr, req)
}

// producerEnv is a cluster client with a producer on a counting transport.
type producerEnv struct {
	bootstrap string
	cl        *kafkabus.Cluster
	ct        *countingTransport
	p         *kafkabus.Producer
}

func newProducerEnv(t *testing.T, bootstrap string, pc kafkabus.ProducerConfig, fail func(int64) (bool, error)) *producerEnv {
	t.Helper()
	cfg := kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "kafkabus-test"}
	cl, err := kafkabus.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	tr, err := cfg.Transport()
	if err != nil {
		t.Fatal(err)
	}
	ct := &countingTransport{rt: tr, fail: fail}
	pc.Transport = ct
	p := cl.Producer(pc)
	t.Cleanup(func() { _ = p.Close() })
	return &producerEnv{bootstrap: bootstrap, cl: cl, ct: ct, p: p}
}

// sent is one record handed to the producer and its answer.
type sent struct {
	rec  kafkabus.Record
	at   kafkabus.Produced
	err  error
	done chan struct{}
}

func (e *producerEnv) produce(rec kafkabus.Record, deadline time.Duration) *sent {
	s := &sent{rec: rec, done: make(chan struct{})}
	e.p.Produce(rec, time.Now().Add(deadline), func(at kafkabus.Produced, err error) {
		s.at, s.err = at, err
		close(s.done)
	})
	return s
}

func wait(t *testing.T, ss []*sent) {
	t.Helper()
	for _, s := range ss {
		select {
		case <-s.done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("no answer for a record of %s", s.rec.Topic)
		}
	}
}

// readPartition reads every record of topic's partition up to its end.
func readPartition(t *testing.T, cl *kafkabus.Cluster, topic string, partition int) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Any broker that answers: a test may have killed some.
	var conn *kafka.Conn
	var err error
	for _, b := range cl.Config().Brokers {
		if conn, err = cl.Dialer().DialLeader(ctx, "tcp", b, topic, partition); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	end, err := conn.ReadLastOffset()
	_ = conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	if end == 0 {
		return nil
	}
	r, err := cl.PartitionReader(topic, partition, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var msgs []kafka.Message
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %s/%d: %v", topic, partition, err)
		}
		msgs = append(msgs, m)
		if m.Offset == end-1 {
			return msgs
		}
	}
}

// TestProducerOneRequestForManyPartitions: records for 80 partitions of 20
// topics, handed over within one linger, go to the broker in one or two
// produce requests; every record is answered with the partition and offset
// it is stored at, keeps its time, lands in the partition a kafka.Writer
// with a Murmur2Balancer picks for its key, and a key's records are stored
// in the order they were produced.
func TestProducerOneRequestForManyPartitions(t *testing.T) {
	bootstrap := kafkatest.Shared(t)
	const topics, partitions, keys, perKey = 20, 4, 16, 3
	prefix := fmt.Sprintf("producer-many-%d", time.Now().UnixNano())
	for i := range topics {
		kafkatest.CreateTopic(t, bootstrap, fmt.Sprintf("%s-%d", prefix, i), partitions, 1, nil)
	}
	e := newProducerEnv(t, bootstrap, kafkabus.ProducerConfig{Linger: 500 * time.Millisecond, MaxRecords: 10000}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.cl.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	base := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	var ss []*sent
	for n := range perKey {
		for i := range topics {
			for k := range keys {
				rec := kafkabus.Record{
					Topic: fmt.Sprintf("%s-%d", prefix, i),
					Key:   []byte(fmt.Sprintf("sender-%d", k)),
					Value: []byte(fmt.Sprintf("%d/%d/%d", i, k, n)),
					Time:  base.Add(time.Duration(len(ss)) * time.Millisecond),
				}
				ss = append(ss, e.produce(rec, time.Minute))
			}
		}
	}
	wait(t, ss)
	touched := map[string]bool{}
	for _, s := range ss {
		if s.err != nil {
			t.Fatalf("%s: %v", s.rec.Value, s.err)
		}
		touched[fmt.Sprintf("%s/%d", s.rec.Topic, s.at.Partition)] = true
		if !s.at.Time.Equal(s.rec.Time) {
			t.Errorf("%s answered with time %v, want %v", s.rec.Value, s.at.Time, s.rec.Time)
		}
	}
	if got := e.ct.produces.Load(); got > 2 || e.ct.partitions.Load() != int64(len(touched)) {
		t.Errorf("%d produce requests holding %d partition batches for %d partitions, want at most 2 requests, one batch a partition",
			got, e.ct.partitions.Load(), len(touched))
	}
	if len(touched) < topics*partitions*3/4 {
		t.Errorf("only %d partitions written, want most of %d", len(touched), topics*partitions)
	}

	// The partition of each key, as the kafka.Writer the gateway used picks it.
	w := e.cl.Writer()
	defer w.Close()
	want := map[string]int{} // topic/key -> partition
	for i := range topics {
		topic := fmt.Sprintf("%s-%d", prefix, i)
		var msgs []kafka.Message
		for k := range keys {
			msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte(fmt.Sprintf("sender-%d", k)), Value: []byte("writer")})
		}
		if err := kafkabus.Write(ctx, w, msgs...); err != nil {
			t.Fatal(err)
		}
		for p := range partitions {
			for _, m := range readPartition(t, e.cl, topic, p) {
				if string(m.Value) == "writer" {
					want[topic+"/"+string(m.Key)] = p
				}
			}
		}
	}

	stored := map[string]kafka.Message{} // topic/partition/offset -> record
	for i := range topics {
		topic := fmt.Sprintf("%s-%d", prefix, i)
		for p := range partitions {
			for _, m := range readPartition(t, e.cl, topic, p) {
				stored[fmt.Sprintf("%s/%d/%d", topic, p, m.Offset)] = m
			}
		}
	}
	last := map[string]int64{} // topic/key -> offset of its latest record
	for _, s := range ss {
		tk := s.rec.Topic + "/" + string(s.rec.Key)
		if p, ok := want[tk]; !ok || p != s.at.Partition {
			t.Fatalf("%s stored in partition %d, the Writer puts key %s in %d", s.rec.Value, s.at.Partition, s.rec.Key, p)
		}
		m, ok := stored[fmt.Sprintf("%s/%d/%d", s.rec.Topic, s.at.Partition, s.at.Offset)]
		if !ok || string(m.Value) != string(s.rec.Value) || !m.Time.Equal(s.rec.Time) {
			t.Fatalf("%s answered at %d/%d, which holds %q at %v", s.rec.Value, s.at.Partition, s.at.Offset, m.Value, m.Time)
		}
		if prev, ok := last[tk]; ok && s.at.Offset <= prev {
			t.Fatalf("%s stored at %d, before the key's previous record (%d)", s.rec.Value, s.at.Offset, prev)
		}
		last[tk] = s.at.Offset
	}
}

// TestProducerKeepsOrderThroughRetries: produce requests fail, some after
// the broker stored their records (the answer lost), while records of the
// same keys keep coming: every record is stored, answered with where its
// last copy is, and the first copies of a key's records are in the order
// they were produced.
func TestProducerKeepsOrderThroughRetries(t *testing.T) {
	bootstrap := kafkatest.Shared(t)
	topic := fmt.Sprintf("producer-retries-%d", time.Now().UnixNano())
	kafkatest.CreateTopic(t, bootstrap, topic, 3, 1, nil)
	errInjected := errors.New("injected: connection reset")
	fail := func(n int64) (bool, error) {
		switch n % 3 {
		case 1:
			return false, errInjected
		case 2:
			return n%6 == 2, errInjected // every other failure after the broker stored the batch
		}
		return false, nil
	}
	e := newProducerEnv(t, bootstrap, kafkabus.ProducerConfig{}, fail)
	const keys, perKey = 6, 40
	var ss []*sent
	for n := range perKey {
		for k := range keys {
			rec := kafkabus.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", k)), Value: []byte(fmt.Sprintf("k%d/%03d", k, n)), Time: time.Now()}
			ss = append(ss, e.produce(rec, time.Minute))
		}
		if n%8 == 0 {
			wait(t, ss) // spread over several requests
		}
	}
	wait(t, ss)
	if e.ct.produces.Load() < 6 {
		t.Fatalf("only %d produce requests: the failures were not exercised", e.ct.produces.Load())
	}
	for _, s := range ss {
		if s.err != nil {
			t.Fatalf("%s: %v", s.rec.Value, s.err)
		}
	}
	dups := 0
	for p := range 3 {
		msgs := readPartition(t, e.cl, topic, p)
		seen := map[string]bool{}
		last := map[string]string{}
		at := map[string]int64{}
		for _, m := range msgs {
			v := string(m.Value)
			if seen[v] {
				dups++
				at[v] = m.Offset
				continue
			}
			seen[v] = true
			at[v] = m.Offset
			if prev := last[string(m.Key)]; prev != "" && prev > v {
				t.Fatalf("partition %d: %s stored after %s", p, v, prev)
			}
			last[string(m.Key)] = v
		}
		for _, s := range ss {
			if s.at.Partition == p {
				if off, ok := at[string(s.rec.Value)]; !ok || off != s.at.Offset {
					t.Fatalf("%s answered at offset %d; its last copy is at %d (stored: %v)", s.rec.Value, s.at.Offset, off, ok)
				}
			}
		}
	}
	t.Logf("%d produce requests, %d second copies", e.ct.produces.Load(), dups)
}

// TestProducerWaitsForANewTopic: a record for a topic created a moment
// later is stored once the transport's metadata knows it; a record for a
// topic that never comes fails at its deadline with
// UNKNOWN_TOPIC_OR_PARTITION.
func TestProducerWaitsForANewTopic(t *testing.T) {
	bootstrap := kafkatest.Shared(t)
	e := newProducerEnv(t, bootstrap, kafkabus.ProducerConfig{}, nil)
	topic := fmt.Sprintf("producer-new-%d", time.Now().UnixNano())
	s := e.produce(kafkabus.Record{Topic: topic, Key: []byte("k"), Value: []byte("v"), Time: time.Now()}, time.Minute)
	never := e.produce(kafkabus.Record{Topic: topic + "-never", Key: []byte("k"), Value: []byte("v"), Time: time.Now()}, 3*time.Second)
	kafkatest.CreateTopic(t, bootstrap, topic, 2, 1, nil)
	wait(t, []*sent{s, never})
	if s.err != nil {
		t.Fatalf("produce to a topic created meanwhile: %v", s.err)
	}
	if m := readPartition(t, e.cl, topic, s.at.Partition); len(m) != 1 || s.at.Offset != 0 || string(m[0].Value) != "v" {
		t.Fatalf("answered %+v; partition holds %d records", s.at, len(m))
	}
	if !errors.Is(never.err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("produce to a missing topic = %v, want UnknownTopicOrPartition", never.err)
	}
}

// TestProducerThroughALeaderChange: on 3 nodes (replication 3, min ISR
// 2), the leader of every partition is killed while records keep coming:
// every acknowledged record is stored where its answer says, in order
// per key, and records produced after the election are acknowledged.
func TestProducerThroughALeaderChange(t *testing.T) {
	c := kafkatest.NewCluster(t, 3)
	bootstrap := c.Bootstrap()
	topic := fmt.Sprintf("producer-leader-%d", time.Now().UnixNano())
	kafkatest.CreateTopic(t, bootstrap, topic, 1, 3, map[string]string{"min.insync.replicas": "2"})
	e := newProducerEnv(t, bootstrap, kafkabus.ProducerConfig{RequestTimeout: 5 * time.Second}, nil)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := e.cl.Dialer().DialLeader(ctx, "tcp", c.Brokers()[0], topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	leader := conn.Broker().ID
	_ = conn.Close()

	var mu sync.Mutex
	var ss []*sent
	stop := make(chan struct{})
	producing := make(chan struct{})
	go func() {
		defer close(producing)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			s := e.produce(kafkabus.Record{Topic: topic, Key: []byte("k"), Value: []byte(fmt.Sprintf("%06d", n)), Time: time.Now()}, 30*time.Second)
			mu.Lock()
			ss = append(ss, s)
			mu.Unlock()
		}
	}()
	acked := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range ss {
			select {
			case <-s.done:
				if s.err == nil {
					n++
				}
			default:
			}
		}
		return n
	}
	waitUntil(t, "records acknowledged before the kill", func() bool { return acked() >= 50 })
	node := leader // node i has node.id i
	if err := c.KillNode(node); err != nil {
		t.Fatal(err)
	}
	before := acked()
	waitUntil(t, "records acknowledged after the election", func() bool { return acked() >= before+100 })
	close(stop)
	<-producing
	mu.Lock()
	all := ss
	mu.Unlock()
	wait(t, all)

	msgs := readPartition(t, e.cl, topic, 0)
	byOffset := map[int64]string{}
	seen := map[string]bool{}
	last := ""
	for _, m := range msgs {
		v := string(m.Value)
		byOffset[m.Offset] = v
		if seen[v] {
			continue
		}
		seen[v] = true
		if v < last {
			t.Fatalf("%s stored after %s", v, last)
		}
		last = v
	}
	failed := 0
	for _, s := range all {
		if s.err != nil {
			failed++
			continue
		}
		if v := byOffset[s.at.Offset]; v != string(s.rec.Value) {
			t.Fatalf("%s acknowledged at offset %d, which holds %q", s.rec.Value, s.at.Offset, v)
		}
	}
	t.Logf("%d records, %d failed, %d stored (leader node %d killed)", len(all), failed, len(msgs), node)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
