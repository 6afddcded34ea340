package devbroker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/kafkabus"
)

// TestServesKafkaGo proves the calls Palaver makes through kafka-go work
// against the embedded broker, and that a restart on the same data
// directory keeps what was written.
func TestServesKafkaGo(t *testing.T) {
	dir := t.TempDir()
	b, err := Start(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kafkabus.New(kafkabus.Config{Brokers: []string{b.Addr()}, ClientID: "devbroker-test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	if err := cl.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := cl.Admin().CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: "room.lobby", NumPartitions: 1, ReplicationFactor: 1},
	}})
	if err != nil || res.Errors["room.lobby"] != nil {
		t.Fatalf("create topic: %v %v", err, res)
	}

	w := cl.Writer()
	const n = 20
	for i := range n {
		if err := w.WriteMessages(ctx, kafka.Message{Topic: "room.lobby", Key: []byte("u1"), Value: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	readAll(ctx, t, cl, n)

	b.Close()
	b, err = Start(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cl, err = kafkabus.New(kafkabus.Config{Brokers: []string{b.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	readAll(ctx, t, cl, n)
}

func readAll(ctx context.Context, t *testing.T, cl *kafkabus.Cluster, n int) {
	t.Helper()
	r, err := cl.PartitionReader("room.lobby", 0, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if want := fmt.Sprintf("m%d", i); string(m.Value) != want || m.Offset != int64(i) {
			t.Fatalf("read %q at offset %d, want %q at %d", m.Value, m.Offset, want, i)
		}
	}
}

// TestRunAppliesRetention: Run drops the records of a delete-policy topic
// older than its retention.ms, and leaves compacted topics alone.
func TestRunAppliesRetention(t *testing.T) {
	b, err := Start(Options{RetentionCheck: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	cl, err := kafkabus.New(kafkabus.Config{Brokers: []string{b.Addr()}, ClientID: "devbroker-test"})
	if err != nil {
		t.Fatal(err)
	}
	minute, compact := "60000", "compact"
	res, err := cl.Admin().CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: "room.lobby", NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: minute}}},
		{Topic: "registry", NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: compact}}},
	}})
	if err != nil || res.Errors["room.lobby"] != nil || res.Errors["registry"] != nil {
		t.Fatalf("create topics: %v %v", err, res)
	}
	w := cl.Writer()
	defer w.Close()
	old := time.Now().Add(-30 * 24 * time.Hour)
	for _, topic := range []string{"room.lobby", "registry"} {
		for i := range 3 {
			if err := w.WriteMessages(ctx, kafka.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: []byte("old"), Time: old}); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte("new"), Value: []byte("new")}); err != nil {
			t.Fatal(err)
		}
	}
	first := func(topic string) int64 {
		r, err := cl.Admin().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.FirstOffsetOf(0)}}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Topics[topic][0].FirstOffset
	}
	for first("room.lobby") != 3 {
		if ctx.Err() != nil {
			t.Fatalf("records older than retention.ms are still there: first offset %d", first("room.lobby"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f := first("registry"); f != 0 {
		t.Fatalf("a compacted topic lost records to time retention: first offset %d", f)
	}
}
