package roomhub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"palaver.dev/services/kafkabus"
)

// Record is one record of a room topic, as read back.
type Record struct {
	Partition int
	Offset    int64
	Time      time.Time
	Value     []byte
}

// Bounds are a partition's first retained offset and its end (the offset
// the next record will get).
type Bounds struct {
	First, End int64
}

// Reader follows one partition; kafka-go's *kafka.Reader is one.
type Reader interface {
	ReadMessage(ctx context.Context) (kafka.Message, error)
	Close() error
}

// Source is where the hub reads room topics: tails follow partitions with
// a Reader; recoveries read bounded ranges; the watchdog and recoveries ask
// for offsets. KafkaSource is the real one; tests inject fakes.
type Source interface {
	// OpenTail returns a reader of topic/partition from offset on.
	OpenTail(topic string, partition int, offset int64) (Reader, error)
	// Offsets returns the bounds of the given partitions of many topics in
	// one round trip.
	Offsets(ctx context.Context, partitions map[string][]int) (map[string]map[int]Bounds, error)
	// ReadRange calls fn for every record of topic/partition with an offset
	// in [from, to), in offset order.
	ReadRange(ctx context.Context, topic string, partition int, from, to int64, fn func(Record) error) error
	// TopicIDs returns the ids of topics in one round trip: Kafka gives a
	// topic a new one each time it is created, so a topic deleted and
	// created again under the same name, or one of a wiped broker, has
	// another. A topic that does not exist is absent from the answer.
	TopicIDs(ctx context.Context, topics ...string) (map[string][16]byte, error)
	// OffsetsSince returns, for each partition, the offset of the first
	// record stamped at or after t, or the partition's end when none is.
	OffsetsSince(ctx context.Context, topic string, partitions []int, t time.Time) (map[int]int64, error)
}

// KafkaSource reads through a kafkabus.Cluster, and asks for topic ids
// with Meta (kafka-go does not expose them).
type KafkaSource struct {
	Cluster *kafkabus.Cluster
	Meta    *kgo.Client
}

// tailWait bounds a tail's idle fetch: the broker holds it up to 4 s
// (answering as soon as a record arrives) and the reader waits 1 s more
// before it gives up on the connection. A gateway tailing a thousand quiet
// rooms then sends the broker 250 idle fetches a second, not 2,700, and a
// broker slow to answer them is not met with a thousand reconnections.
const tailWait = 5 * time.Second

// OpenTail implements Source with a kafkabus partition reader. A tail's
// reader is closed in the background (tail.run), so its long idle fetch
// delays nobody.
func (s KafkaSource) OpenTail(topic string, partition int, offset int64) (Reader, error) {
	r, err := s.Cluster.PartitionReader(topic, partition, offset, kafkabus.WithMaxWait(tailWait))
	if err != nil {
		return nil, err
	}
	return kafkaTail{r}, nil
}

// kafkaTail tells how many records its reader fetched and the tail has not
// read yet (a fetch response's records reach ReadMessage one by one).
type kafkaTail struct{ *kafka.Reader }

func (r kafkaTail) ReadAhead() int { return int(r.Stats().QueueLength) }

// Offsets implements Source with one ListOffsets request.
func (s KafkaSource) Offsets(ctx context.Context, partitions map[string][]int) (map[string]map[int]Bounds, error) {
	req := &kafka.ListOffsetsRequest{Topics: make(map[string][]kafka.OffsetRequest, len(partitions))}
	for topic, ps := range partitions {
		for _, p := range ps {
			req.Topics[topic] = append(req.Topics[topic], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
		}
	}
	res, err := s.Cluster.Admin().ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("roomhub: list offsets: %w", err)
	}
	out := make(map[string]map[int]Bounds, len(partitions))
	for topic, ps := range partitions {
		got := make(map[int]Bounds, len(ps))
		for _, po := range res.Topics[topic] {
			if po.Error != nil {
				return nil, fmt.Errorf("roomhub: offsets of %s/%d: %w", topic, po.Partition, po.Error)
			}
			got[po.Partition] = Bounds{First: po.FirstOffset, End: po.LastOffset}
		}
		for _, p := range ps {
			if _, ok := got[p]; !ok {
				return nil, fmt.Errorf("roomhub: offsets of %s/%d: missing from the answer", topic, p)
			}
		}
		out[topic] = got
	}
	return out, nil
}

// TopicIDs implements Source with one Metadata request (version 10 or
// later).
func (s KafkaSource) TopicIDs(ctx context.Context, topics ...string) (map[string][16]byte, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = make([]kmsg.MetadataRequestTopic, 0, len(topics)) // non-nil: not every topic
	for _, topic := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
	}
	res, err := req.RequestWith(ctx, s.Meta)
	if err != nil {
		return nil, fmt.Errorf("roomhub: metadata of %d topics: %w", len(topics), err)
	}
	out := make(map[string][16]byte, len(topics))
	for _, t := range res.Topics {
		if t.Topic == nil {
			continue
		}
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case errors.Is(err, kerr.UnknownTopicOrPartition):
		case err != nil:
			return nil, fmt.Errorf("roomhub: metadata of %s: %w", *t.Topic, err)
		default:
			out[*t.Topic] = t.TopicID
		}
	}
	return out, nil
}

// OffsetsSince implements Source with a ListOffsets request by timestamp,
// and one for the ends of the partitions with no record that recent.
func (s KafkaSource) OffsetsSince(ctx context.Context, topic string, partitions []int, t time.Time) (map[int]int64, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range partitions {
		req.Topics[topic] = append(req.Topics[topic], kafka.TimeOffsetOf(p, t))
	}
	res, err := s.Cluster.Admin().ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("roomhub: list offsets of %s at %s: %w", topic, t.Format(time.RFC3339), err)
	}
	out := make(map[int]int64, len(partitions))
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("roomhub: offsets of %s/%d at %s: %w", topic, po.Partition, t.Format(time.RFC3339), po.Error)
		}
		// kafka-go files a found offset under Offsets; none found (offset
		// and timestamp -1) leaves Offsets empty.
		for off := range po.Offsets {
			if cur, ok := out[po.Partition]; off >= 0 && (!ok || off < cur) {
				out[po.Partition] = off
			}
		}
	}
	var none []int
	for _, p := range partitions {
		if _, ok := out[p]; !ok {
			none = append(none, p)
		}
	}
	if len(none) > 0 {
		ends, err := s.Offsets(ctx, map[string][]int{topic: none})
		if err != nil {
			return nil, err
		}
		for _, p := range none {
			out[p] = ends[topic][p].End
		}
	}
	return out, nil
}

// ReadRange implements Source with plain fetch requests: a bounded read
// needs no background reader (a kafka-go Reader costs three goroutines, a
// connection and about 45 KB), and stops exactly at to.
func (s KafkaSource) ReadRange(ctx context.Context, topic string, partition int, from, to int64, fn func(Record) error) error {
	client := s.Cluster.Admin()
	for off := from; off < to; {
		res, err := client.Fetch(ctx, &kafka.FetchRequest{
			Topic: topic, Partition: partition, Offset: off,
			MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 500 * time.Millisecond,
		})
		if err == nil {
			err = res.Error
		}
		if err != nil {
			return fmt.Errorf("roomhub: fetch %s/%d at %d: %w", topic, partition, off, err)
		}
		progressed := false
		for {
			rec, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("roomhub: read %s/%d at %d: %w", topic, partition, off, err)
			}
			if rec.Offset < off {
				continue // batches may start before the offset asked for
			}
			if rec.Offset >= to {
				return nil
			}
			value, err := readAll(rec.Value)
			if err != nil {
				return fmt.Errorf("roomhub: read %s/%d at %d: %w", topic, partition, rec.Offset, err)
			}
			if err := fn(Record{Partition: partition, Offset: rec.Offset, Time: rec.Time, Value: value}); err != nil {
				return err
			}
			off = rec.Offset + 1
			progressed = true
		}
		if !progressed {
			if res.HighWatermark <= off {
				return nil // nothing more to read: the range ends past the log
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// readAll copies a record value, which is only valid until the next record.
func readAll(b interface {
	io.Reader
	Len() int
}) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	out := make([]byte, b.Len())
	_, err := io.ReadFull(b, out)
	return out, err
}
