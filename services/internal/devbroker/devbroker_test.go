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
