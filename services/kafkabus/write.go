package kafkabus

import (
	"context"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
)

// metadataTTL is how often a Cluster's transport refreshes its metadata
// (kafka-go's default is 6 s).
const metadataTTL = time.Second

// MetadataLag reports whether a writer refused messages because its cached
// metadata does not know their topic or a leader for it yet: a topic
// created a moment ago, possibly by another process. kafka-go answers
// that from its cache before sending anything, without the retries
// MaxAttempts gives a failed produce request, so the messages can be
// written again as they are. A WriteErrors (some batches were sent) is
// never metadata lag.
func MetadataLag(err error) bool {
	return errors.Is(err, kafka.UnknownTopicOrPartition) || errors.Is(err, kafka.LeaderNotAvailable)
}

// Write writes msgs with w and, while the writer's metadata lags behind a
// new topic (MetadataLag), writes them again every 20 ms for up to three
// metadata refreshes (3 s) or until ctx ends. A topic that does not exist
// at all fails after those 3 s with UnknownTopicOrPartition.
func Write(ctx context.Context, w *kafka.Writer, msgs ...kafka.Message) error {
	err := w.WriteMessages(ctx, msgs...)
	if !MetadataLag(err) {
		return err
	}
	deadline := time.NewTimer(3 * metadataTTL)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return err
		case <-deadline.C:
			return err
		case <-tick.C:
		}
		if err = w.WriteMessages(ctx, msgs...); !MetadataLag(err) {
			return err
		}
	}
}
