// Package devbroker runs an in-process Kafka-protocol broker for dev mode,
// so Palaver runs with one command and no JVM. It is for trying Palaver and
// for fast unit tests only: the real Apache Kafka broker (see kafkatest) is
// what proves the services work with Kafka.
//
// Differences from Apache Kafka that callers must respect: topics are never
// auto-created; LogAppendTime is not applied (record timestamps are the
// producer's); retention and compaction run only on the cleaner timer.
package devbroker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Options configures the broker.
type Options struct {
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// DataDir persists topics and offsets across restarts; empty keeps
	// everything in memory.
	DataDir string
	Logger  *slog.Logger
}

// Broker is a single-node, in-process Kafka-protocol broker listening on
// loopback only.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
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
	return &Broker{cluster: c, addr: c.ListenAddrs()[0]}, nil
}

// Addr is the host:port clients bootstrap from.
func (b *Broker) Addr() string { return b.addr }

// Run serves until ctx is done, then closes the broker, flushing its data
// directory.
func (b *Broker) Run(ctx context.Context) error {
	<-ctx.Done()
	b.Close()
	return nil
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
