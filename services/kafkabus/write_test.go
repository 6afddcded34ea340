package kafkabus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"

	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// TestWriteWaitsForANewTopic writes to a topic another client creates a
// moment later: the writer's metadata, fetched before the topic existed,
// first says UNKNOWN_TOPIC_OR_PARTITION, and Write must wait for the next
// refresh rather than fail.
func TestWriteWaitsForANewTopic(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cfg := kafkabus.Config{Brokers: strings.Split(kafkatest.Shared(t), ","), ClientID: "kafkabus-test"}
	cl, err := kafkabus.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil { // loads the transport's metadata
		t.Fatal(err)
	}
	admin, err := cfg.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	w := cl.Writer()
	defer w.Close()
	topic := fmt.Sprintf("write-%d", time.Now().UnixNano())
	msg := kafka.Message{Topic: topic, Key: []byte("k"), Value: []byte("v")}

	if err := w.WriteMessages(ctx, msg); !kafkabus.MetadataLag(err) {
		t.Fatalf("write before the topic exists = %v, want metadata lag", err)
	}
	// Write starts before the topic is created: its first attempt meets
	// the missing topic (creating one takes a round trip to the controller).
	written := make(chan error, 1)
	go func() { written <- kafkabus.Write(ctx, w, msg) }()
	res, err := kadm.NewClient(admin).CreateTopic(ctx, 1, 1, nil, topic)
	if err == nil {
		err = res.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := <-written; err != nil {
		t.Fatalf("write to a topic created during the write: %v", err)
	}

	began := time.Now()
	err = kafkabus.Write(ctx, w, kafka.Message{Topic: topic + "-never", Value: []byte("v")})
	if !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("write to a missing topic = %v, want UnknownTopicOrPartition", err)
	}
	if took := time.Since(began); took > 30*time.Second {
		t.Fatalf("write to a missing topic gave up after %v", took)
	}
}
