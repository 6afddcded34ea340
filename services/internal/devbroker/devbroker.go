// Package devbroker runs an in-process Kafka-protocol broker for dev mode,
// so Palaver runs with one command and no JVM. It is for trying Palaver and
// for fast unit tests only: the real Apache Kafka broker (see kafkatest) is
// what proves the services work with Kafka.
//
// Differences from Apache Kafka that callers must respect: topics are never
// auto-created; LogAppendTime is not applied (record timestamps are the
// producer's: the gateway stamps each record when it sends it, a few
// milliseconds before a broker would append it); time retention of topics
// with cleanup.policy=delete is applied by Run every RetentionCheck, by
// record timestamp, record by record rather than by segment; compaction
// runs only on the broker's hourly cleaner timer.
package devbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultRetentionCheck is how often Run applies retention.
const DefaultRetentionCheck = time.Minute

// Options configures the broker.
type Options struct {
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// DataDir persists topics and offsets across restarts; empty keeps
	// everything in memory.
	DataDir string
	// RetentionCheck is how often Run drops records older than their
	// topic's retention.ms (DefaultRetentionCheck; negative: never).
	RetentionCheck time.Duration
	Logger         *slog.Logger
}

// Broker is a single-node, in-process Kafka-protocol broker listening on
// loopback only.
type Broker struct {
	cluster        *kfake.Cluster
	addr           string
	retentionCheck time.Duration
	log            *slog.Logger
}

// Start listens and starts serving.
func Start(opts Options) (*Broker, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kopts := []kfake.Opt{
		kfake.Ports(opts.Port),
		kfake.ClusterID("palaver-dev"),
		kfake.DefaultNumPartitions(1),
		kfake.WithLogger(logger{log}),
	}
	if opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(opts.DataDir))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("devbroker: start on 127.0.0.1:%d: %w", opts.Port, err)
	}
	every := opts.RetentionCheck
	if every == 0 {
		every = DefaultRetentionCheck
	}
	return &Broker{cluster: c, addr: c.ListenAddrs()[0], retentionCheck: every, log: log}, nil
}

// Addr is the host:port clients bootstrap from.
func (b *Broker) Addr() string { return b.addr }

// Run serves until ctx is done, applying retention every RetentionCheck,
// then closes the broker, flushing its data directory.
func (b *Broker) Run(ctx context.Context) error {
	defer b.Close()
	if b.retentionCheck < 0 {
		<-ctx.Done()
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr))
	if err != nil {
		return fmt.Errorf("devbroker: client for retention: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	t := time.NewTicker(b.retentionCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := applyRetention(ctx, adm, time.Now()); err != nil && ctx.Err() == nil {
				b.log.Warn("devbroker: applying retention", "err", err)
			}
		}
	}
}

// applyRetention deletes, in every topic whose cleanup.policy includes
// delete and whose retention.ms is not negative, the records stamped
// before now minus retention.ms.
func applyRetention(ctx context.Context, adm *kadm.Client, now time.Time) error {
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	cfgs, err := adm.DescribeTopicConfigs(ctx, topics.Names()...)
	if err != nil {
		return err
	}
	var errs []error
	for _, rc := range cfgs {
		if rc.Err != nil {
			continue // deleted meanwhile
		}
		policy, retention := "delete", int64(7*24*time.Hour/time.Millisecond)
		for _, c := range rc.Configs {
			switch {
			case c.Key == "cleanup.policy" && c.Value != nil:
				policy = *c.Value
			case c.Key == "retention.ms" && c.Value != nil:
				if n, err := strconv.ParseInt(*c.Value, 10, 64); err == nil {
					retention = n
				}
			}
		}
		if !strings.Contains(policy, "delete") || retention < 0 {
			continue
		}
		before, err := adm.ListOffsetsAfterMilli(ctx, now.UnixMilli()-retention, rc.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		offsets := kadm.Offsets{}
		before.Each(func(lo kadm.ListedOffset) {
			if lo.Err == nil && lo.Offset > 0 {
				offsets.AddOffset(lo.Topic, lo.Partition, lo.Offset, -1)
			}
		})
		if len(offsets) == 0 {
			continue
		}
		res, err := adm.DeleteRecords(ctx, offsets)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, res.Error())
	}
	return errors.Join(errs...)
}

// Close stops the broker. It is safe to call more than once.
func (b *Broker) Close() { b.cluster.Close() }

// logger forwards the broker's warnings and errors to slog; its info and
// debug output is per request and too chatty for a dev console.
type logger struct{ log *slog.Logger }

func (l logger) Logf(level kfake.LogLevel, format string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		l.log.Error("devbroker: " + fmt.Sprintf(format, args...))
	case kfake.LogLevelWarn:
		l.log.Warn("devbroker: " + fmt.Sprintf(format, args...))
	}
}
