package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// Cluster hands out kafka-go clients that share one configuration and one
// connection-pooling transport.
type Cluster struct {
	cfg       Config
	transport *kafka.Transport
	dialer    *kafka.Dialer
}

// New checks cfg and prepares its TLS and SASL material. It does not dial:
// use Ping for a reachability check.
func New(cfg Config) (*Cluster, error) {
	transport, err := cfg.Transport()
	if err != nil {
		return nil, err
	}
	dialer, err := cfg.Dialer()
	if err != nil {
		return nil, err
	}
	return &Cluster{cfg: cfg, transport: transport, dialer: dialer}, nil
}

// Config returns the configuration the cluster was made from.
func (c *Cluster) Config() Config { return c.cfg }

// Dialer returns the dialer used for readers and raw connections.
func (c *Cluster) Dialer() *kafka.Dialer { return c.dialer }

// Writer returns a writer tuned for chat: every write waits for all in-sync
// replicas (kafka-go's default is no acks at all), and batches close after
// 1 ms instead of the default 1 s, which would add a second to every
// synchronous send. Records name their own topic, so one writer serves every
// room. The writer never creates topics: rooms are provisioned. Its
// WriteMessages fails at once for a topic its metadata does not know yet;
// Write waits out the metadata refresh instead.
//
// BatchSize is small because kafka-go allocates a whole batch's worth of
// Message structs (152 bytes each) for every batch it opens, even one that
// closes after 1 ms holding a single record, as chat traffic's batches do:
// at 500 that was 76 KB of garbage per produced message and a garbage
// collection every 150 ms in a gateway at 1,000 messages/s. 64 records a
// millisecond per partition is still 64,000 messages a second before a
// batch closes early (it is then sent at once, not refused).
func (c *Cluster) Writer() *kafka.Writer {
	return &kafka.Writer{
		Addr:                   kafka.TCP(c.cfg.Brokers...),
		Transport:              c.transport,
		Balancer:               &kafka.Murmur2Balancer{}, // same partition for a key as Java clients
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           time.Millisecond,
		BatchSize:              64,
		MaxAttempts:            5,
		WriteBackoffMin:        50 * time.Millisecond,
		WriteBackoffMax:        time.Second,
		ReadTimeout:            10 * time.Second,
		WriteTimeout:           10 * time.Second,
		AllowAutoTopicCreation: false,
	}
}

// PartitionReader returns a reader of one partition starting at offset
// (kafka.FirstOffset and kafka.LastOffset are accepted). MinBytes 1 makes
// the broker answer a fetch as soon as one record arrives; MaxWait bounds
// how long an idle fetch is held open (see WithMaxWait). Options adjust the
// configuration.
func (c *Cluster) PartitionReader(topic string, partition int, offset int64, opts ...ReaderOption) (*kafka.Reader, error) {
	cfg := kafka.ReaderConfig{
		Brokers:        c.cfg.Brokers,
		Topic:          topic,
		Partition:      partition,
		Dialer:         c.dialer,
		MinBytes:       1,
		MaxBytes:       4 << 20,
		MaxWait:        500 * time.Millisecond,
		ReadBackoffMin: 50 * time.Millisecond,
		ReadBackoffMax: time.Second,
		QueueCapacity:  256,
	}
	for _, o := range opts {
		o(&cfg)
	}
	r := kafka.NewReader(cfg)
	if err := r.SetOffset(offset); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("kafkabus: reader of %s/%d at offset %d: %w", topic, partition, offset, err)
	}
	return r, nil
}

// ReaderOption adjusts the configuration of a reader.
type ReaderOption func(*kafka.ReaderConfig)

// WithMaxWait sets a reader's MaxWait. kafka-go asks the broker to hold an
// idle fetch open for MaxWait less a margin of min(MaxWait/4, 1 s), and
// drops the connection when no answer came within MaxWait: a broker or a
// client paused for longer than the margin (a GC pause, a starved CPU)
// costs a reconnection (50 ms of backoff, a metadata request, a new
// connection, two offset requests) before the next record is read. The
// default 500 ms leaves 125 ms; 1.5 s leaves a second while the broker
// still answers an idle fetch every 500 ms. A longer MaxWait makes Close
// wait longer for the fetch in flight (up to MaxWait less the margin).
func WithMaxWait(d time.Duration) ReaderOption {
	return func(c *kafka.ReaderConfig) { c.MaxWait = d }
}

// GroupReader returns a consumer-group reader of topics. Offsets are
// committed explicitly by the caller (CommitInterval 0), after its own
// processing, so a crash replays rather than skips.
func (c *Cluster) GroupReader(group string, topics ...string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:               c.cfg.Brokers,
		GroupID:               group,
		GroupTopics:           topics,
		Dialer:                c.dialer,
		MinBytes:              1,
		MaxBytes:              4 << 20,
		MaxWait:               500 * time.Millisecond,
		StartOffset:           kafka.FirstOffset,
		HeartbeatInterval:     3 * time.Second,
		SessionTimeout:        30 * time.Second,
		RebalanceTimeout:      30 * time.Second,
		WatchPartitionChanges: true,
	})
}

// Admin returns a client for admin and metadata calls. kafka-go routes
// topic creation, partition growth, config changes and reassignments to the
// controller itself.
func (c *Cluster) Admin() *kafka.Client {
	return &kafka.Client{
		Addr:      kafka.TCP(c.cfg.Brokers...),
		Transport: c.transport,
		Timeout:   30 * time.Second,
	}
}

// Ping asks a broker for its API versions: cheap, and it proves the network
// path, TLS and SASL all work.
func (c *Cluster) Ping(ctx context.Context) error {
	var errs []error
	for _, b := range c.cfg.Brokers {
		_, err := c.Admin().ApiVersions(ctx, &kafka.ApiVersionsRequest{Addr: kafka.TCP(b)})
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", b, err))
	}
	return fmt.Errorf("kafkabus: no broker answered: %w", errors.Join(errs...))
}

// Close releases pooled connections.
func (c *Cluster) Close() { c.transport.CloseIdleConnections() }
