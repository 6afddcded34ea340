package kafkatest_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/kafkatest"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// uniqueTopic returns a topic name that does not clash with an earlier run when the tests
// use a long-lived cluster through PALAVER_KAFKA_BOOTSTRAP.
func uniqueTopic(base string) string {
	return base + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

func TestProduceConsumeInOrder(t *testing.T) {
	bootstrap := kafkatest.Shared(t)
	t.Logf("real Apache Kafka %s broker(s) at %s", kafkatest.Version, bootstrap)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	topic := uniqueTopic("kafkatest-order")
	kafkatest.CreateTopic(t, bootstrap, topic, 1, 1, nil)

	const n = 200
	w := &kafka.Writer{
		Addr:         kafka.TCP(strings.Split(bootstrap, ",")...),
		Topic:        topic,
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		Transport:    newTransport(t),
	}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte("room"), Value: fmt.Appendf(nil, "message %03d", i)}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   strings.Split(bootstrap, ","),
		Topic:     topic,
		Partition: 0,
		MaxWait:   100 * time.Millisecond,
	})
	defer r.Close()
	for i := range n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("consume message %d: %v", i, err)
		}
		want := fmt.Sprintf("message %03d", i)
		if m.Offset != int64(i) || string(m.Value) != want || string(m.Key) != "room" {
			t.Fatalf("record %d = offset %d key %q value %q, want offset %d key \"room\" value %q",
				i, m.Offset, m.Key, m.Value, i, want)
		}
	}
}

// TestConsumerGroup checks that the broker's internal offsets topic works with the
// harness's replication settings: every service that consumes in a group depends on it.
func TestConsumerGroup(t *testing.T) {
	bootstrap := kafkatest.Shared(t)
	t.Logf("real Apache Kafka %s broker(s) at %s", kafkatest.Version, bootstrap)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	topic := uniqueTopic("kafkatest-group")
	kafkatest.CreateTopic(t, bootstrap, topic, 1, 1, nil)
	w := &kafka.Writer{
		Addr:         kafka.TCP(strings.Split(bootstrap, ",")...),
		Topic:        topic,
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		Transport:    newTransport(t),
	}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("a")}, kafka.Message{Value: []byte("b")}); err != nil {
		t.Fatalf("produce: %v", err)
	}

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     strings.Split(bootstrap, ","),
		Topic:       topic,
		GroupID:     topic + "-group",
		StartOffset: kafka.FirstOffset,
		MaxWait:     100 * time.Millisecond,
	})
	defer r.Close()
	for _, want := range []string{"a", "b"} {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("consume in group: %v", err)
		}
		if string(m.Value) != want {
			t.Fatalf("got %q, want %q", m.Value, want)
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit offset: %v", err)
		}
	}
}

// TestAckedMessagesSurviveLeaderKill is Palaver's durability promise checked on the real
// broker: with RF 3 and min.insync.replicas=2, every message acknowledged with acks=all
// survives a SIGKILL of the partition leader in the middle of the stream.
func TestAckedMessagesSurviveLeaderKill(t *testing.T) {
	began := time.Now()
	c := kafkatest.NewCluster(t, 3)
	bootstrap := c.Bootstrap()
	t.Logf("real Apache Kafka %s brokers at %s (3 nodes started in %s)",
		kafkatest.Version, bootstrap, time.Since(began).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	const topic = "failover"
	kafkatest.CreateTopic(t, bootstrap, topic, 1, 3, map[string]string{"min.insync.replicas": "2"})
	leader := partitionLeader(ctx, t, bootstrap, topic)
	t.Logf("partition leader is node %d (%s)", leader, c.Brokers()[leader])

	w := &kafka.Writer{
		Addr:         kafka.TCP(c.Brokers()...),
		Topic:        topic,
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		MaxAttempts:  3,
		WriteTimeout: 5 * time.Second,
		// A short metadata TTL makes the writer find the new leader soon after the
		// controller elects it, instead of after the default 6 s.
		Transport: &kafka.Transport{MetadataTTL: time.Second, DialTimeout: 2 * time.Second},
	}
	defer w.Close()

	const (
		total     = 2000
		batch     = 10
		killAfter = total / 2
		maxWrites = total/batch + 1000 // bound on write calls, retries included
	)
	produceDeadline := time.Now().Add(90 * time.Second)
	acked := make([]bool, total)
	var (
		nAcked, writes, failed int
		killedAt, recoveredAt  time.Time
		firstErrs              []string
	)
	value := func(i int) []byte { return fmt.Appendf(nil, "m%05d", i) }

	killed := make(chan error, 1)
	pending := []int{}
	next := 0
	for nAcked < total {
		if writes >= maxWrites || time.Now().After(produceDeadline) {
			t.Fatalf("producing stalled: %d of %d acknowledged after %d writes (%d failed); first errors: %v",
				nAcked, total, writes, failed, firstErrs)
		}
		if killedAt.IsZero() && nAcked >= killAfter {
			// Kill from another goroutine so that the SIGKILL lands while writes are in
			// flight, not between two of them.
			go func() { killed <- c.KillNode(leader) }()
			killedAt = time.Now()
			t.Logf("killing partition leader node %d with SIGKILL after %d acknowledged messages", leader, nAcked)
		}
		for len(pending) < batch && next < total {
			pending = append(pending, next)
			next++
		}
		msgs := make([]kafka.Message, len(pending))
		for j, i := range pending {
			msgs[j] = kafka.Message{Value: value(i)}
		}
		writes++
		err := w.WriteMessages(ctx, msgs...)
		var still []int
		if err != nil {
			failed++
			if len(firstErrs) < 3 {
				msg := err.Error()
				firstErrs = append(firstErrs, msg[:min(len(msg), 160)])
			}
			var werrs kafka.WriteErrors
			if !errors.As(err, &werrs) || len(werrs) != len(pending) {
				werrs = nil
			}
			for j, i := range pending {
				if werrs != nil && werrs[j] == nil {
					acked[i] = true
					nAcked++
					continue
				}
				still = append(still, i)
			}
			select {
			case <-ctx.Done():
				t.Fatalf("producing: %v", ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		} else {
			for _, i := range pending {
				acked[i] = true
				nAcked++
			}
			if !killedAt.IsZero() && recoveredAt.IsZero() {
				recoveredAt = time.Now()
			}
		}
		pending = still
	}
	if killedAt.IsZero() {
		t.Fatal("the leader was never killed")
	}
	if err := <-killed; err != nil {
		t.Fatalf("kill leader: %v", err)
	}
	t.Logf("produced %d acknowledged messages in %d writes; writes resumed %s after the kill; %d writes failed, first errors: %q",
		nAcked, writes, recoveredAt.Sub(killedAt).Round(time.Millisecond), failed, firstErrs)

	// Bring the killed node back: it must rejoin as a follower without losing anything.
	restartBegan := time.Now()
	if err := c.StartNode(ctx, leader); err != nil {
		t.Fatalf("restart node %d: %v", leader, err)
	}
	t.Logf("restarted node %d in %s", leader, time.Since(restartBegan).Round(time.Millisecond))

	last := lastOffset(ctx, t, bootstrap, topic)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   c.Brokers(),
		Topic:     topic,
		Partition: 0,
		MaxWait:   100 * time.Millisecond,
	})
	defer r.Close()
	seen := make([]int, total)
	var dups, unacked, outOfOrder int
	highest := -1
	for off := int64(0); off < last; {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("consume at offset %d of %d: %v", off, last, err)
		}
		off = m.Offset + 1
		var i int
		if _, err := fmt.Sscanf(string(m.Value), "m%05d", &i); err != nil || i < 0 || i >= total {
			t.Fatalf("unexpected record at offset %d: %q", m.Offset, m.Value)
		}
		seen[i]++
		switch {
		case seen[i] > 1:
			dups++
		case !acked[i]:
			unacked++
		}
		if seen[i] == 1 {
			if i < highest {
				outOfOrder++
			}
			highest = max(highest, i)
		}
	}
	var missing []int
	for i := range total {
		if acked[i] && seen[i] == 0 {
			missing = append(missing, i)
		}
	}
	t.Logf("consumed %d records: %d duplicates from retries, %d written but never acknowledged, %d first seen out of order",
		last, dups, unacked, outOfOrder)
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged messages missing after the leader was killed, first: %v",
			len(missing), missing[:min(20, len(missing))])
	}

	// The graceful path too: SIGTERM a node, then bring it back.
	other := (leader + 1) % 3
	stopBegan := time.Now()
	if err := c.StopNode(other); err != nil {
		t.Fatalf("stop node %d: %v", other, err)
	}
	if c.Running(other) {
		t.Fatalf("node %d still running after StopNode", other)
	}
	if err := c.StartNode(ctx, other); err != nil {
		t.Fatalf("restart node %d: %v", other, err)
	}
	t.Logf("stopped and restarted node %d in %s", other, time.Since(stopBegan).Round(time.Millisecond))
}

// newTransport returns a Transport of the test's own. kafka.DefaultTransport caches
// metadata for up to 6 s across all writers of the process, so a writer for a topic that a
// previous test's writer did not know yet would fail with Unknown Topic Or Partition.
func newTransport(t *testing.T) *kafka.Transport {
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func partitionLeader(ctx context.Context, t *testing.T, bootstrap, topic string) int {
	t.Helper()
	conn, err := kafka.DialContext(ctx, "tcp", strings.Split(bootstrap, ",")[0])
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	ps, err := conn.ReadPartitions(topic)
	if err != nil || len(ps) == 0 {
		t.Fatalf("read partitions of %s: %v", topic, err)
	}
	return ps[0].Leader.ID
}

// lastOffset returns the partition's high watermark: every acknowledged (acks=all) record
// lies below it.
func lastOffset(ctx context.Context, t *testing.T, bootstrap, topic string) int64 {
	t.Helper()
	var lastErr error
	for _, addr := range strings.Split(bootstrap, ",") {
		conn, err := kafka.DialLeader(ctx, "tcp", addr, topic, 0)
		if err != nil {
			lastErr = err
			continue
		}
		defer conn.Close()
		off, err := conn.ReadLastOffset()
		if err != nil {
			t.Fatalf("read last offset: %v", err)
		}
		return off
	}
	t.Fatalf("dial partition leader: %v", lastErr)
	return 0
}
