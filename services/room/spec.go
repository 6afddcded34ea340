// Package room is the one implementation of room provisioning: what a room
// is (Spec), the Kafka topic and configuration it gets, the compacted
// registry that tells every service which rooms exist, and the reading of
// ChatRoom manifests. The ChatRoom operator and dev mode both use it.
package room

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"palaver.dev/services/internal/message"
)

// Defaults applied by Spec.WithDefaults.
const (
	DefaultPartitions = 1
	DefaultRetention  = 7 * 24 * time.Hour
	// TopicPrefix starts every derived room topic name.
	TopicPrefix = "palaver.room."
	// RegistryTopic is the compacted topic of room metadata, keyed by room.
	RegistryTopic = "palaver.rooms"
)

// ErrInvalidSpec is wrapped by every validation error.
var ErrInvalidSpec = errors.New("room: invalid spec")

// RetentionUnlimited is how a ChatRoom manifest asks for a topic that
// never deletes by age (retention.time: unlimited).
const RetentionUnlimited = "unlimited"

// ParseRetention reads a ChatRoom's retention.time: a Go duration such as
// "168h", or "unlimited", returned as -1 (Spec's unlimited). The empty
// string is 0, the default.
func ParseRetention(s string) (time.Duration, error) {
	switch s {
	case "":
		return 0, nil
	case RetentionUnlimited:
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%w: retention time %q: want a duration such as 168h, or %s", ErrInvalidSpec, s, RetentionUnlimited)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%w: retention time %q: want a positive duration, or %s", ErrInvalidSpec, s, RetentionUnlimited)
	}
	return d, nil
}

// Spec is what a room asks of Kafka. The zero value of an optional field
// means "use the default"; call WithDefaults before Validate.
type Spec struct {
	Name      string // room name: the registry key and what users join
	Namespace string // Kubernetes namespace of the ChatRoom ("default" in dev mode)

	Topic             string // derived from namespace and name when empty
	Partitions        int32
	ReplicationFactor int16
	MinInSyncReplicas int16 // default: 2 when RF >= 3, else 1
	Retention         time.Duration
	RetentionBytes    int64 // 0: unlimited
	MaxMessageBytes   int32 // 0: broker default

	DisplayName string
	Description string
}

// DefaultTopic is the topic name of a room without an explicit one.
func DefaultTopic(namespace, name string) string {
	return TopicPrefix + namespace + "." + name
}

// WithDefaults fills unset fields; rf is the replication factor of rooms
// that do not set one (3 on a real cluster, 1 in dev mode).
func (s Spec) WithDefaults(rf int16) Spec {
	if s.Namespace == "" {
		s.Namespace = "default"
	}
	if s.Topic == "" {
		s.Topic = DefaultTopic(s.Namespace, s.Name)
	}
	if s.Partitions == 0 {
		s.Partitions = DefaultPartitions
	}
	if s.ReplicationFactor == 0 {
		s.ReplicationFactor = rf
	}
	if s.MinInSyncReplicas == 0 {
		s.MinInSyncReplicas = 1
		if s.ReplicationFactor >= 3 {
			s.MinInSyncReplicas = 2
		}
	}
	if s.Retention == 0 {
		s.Retention = DefaultRetention
	}
	return s
}

// Validate checks a defaulted spec.
func (s Spec) Validate() error {
	if err := message.ValidateRoom(s.Name); err != nil {
		return fmt.Errorf("%w: name: %w", ErrInvalidSpec, err)
	}
	if err := validTopic(s.Topic); err != nil {
		return err
	}
	switch {
	case s.Partitions < 1:
		return fmt.Errorf("%w: partitions %d, want at least 1", ErrInvalidSpec, s.Partitions)
	case s.ReplicationFactor < 1:
		return fmt.Errorf("%w: replication factor %d, want at least 1", ErrInvalidSpec, s.ReplicationFactor)
	case s.MinInSyncReplicas < 1 || s.MinInSyncReplicas > s.ReplicationFactor:
		return fmt.Errorf("%w: minInSyncReplicas %d must be between 1 and the replication factor %d", ErrInvalidSpec, s.MinInSyncReplicas, s.ReplicationFactor)
	case s.Retention < time.Minute && s.Retention >= 0:
		return fmt.Errorf("%w: retention %v, want at least 1m (or negative for unlimited)", ErrInvalidSpec, s.Retention)
	case s.RetentionBytes < 0:
		return fmt.Errorf("%w: retention bytes %d", ErrInvalidSpec, s.RetentionBytes)
	case s.MaxMessageBytes < 0:
		return fmt.Errorf("%w: max message bytes %d", ErrInvalidSpec, s.MaxMessageBytes)
	case len(s.DisplayName) > 128 || len(s.Description) > 1024:
		return fmt.Errorf("%w: display name or description too long", ErrInvalidSpec)
	}
	return nil
}

func validTopic(t string) error {
	if t == "" || t == "." || t == ".." || len(t) > 249 {
		return fmt.Errorf("%w: topic name %q", ErrInvalidSpec, t)
	}
	for _, c := range t {
		legal := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !legal {
			return fmt.Errorf("%w: topic name %q has %q", ErrInvalidSpec, t, c)
		}
	}
	return nil
}

// TopicConfigs is the topic configuration a room's topic must have.
//
// The broker stamps every record (LogAppendTime), so message times come
// from one clock. Retention deletes whole closed segments only, so a quiet
// room's active segment would outlive its retention by up to the broker's
// segment.ms (7 days); rolling segments at a tenth of the retention (1 min
// to 1 day) keeps messages at most about 10% past their retention.
func (s Spec) TopicConfigs() map[string]string {
	c := map[string]string{
		"cleanup.policy":         "delete",
		"message.timestamp.type": "LogAppendTime",
		"min.insync.replicas":    strconv.Itoa(int(s.MinInSyncReplicas)),
		"retention.bytes":        "-1",
	}
	if s.Retention < 0 {
		c["retention.ms"] = "-1"
	} else {
		c["retention.ms"] = strconv.FormatInt(s.Retention.Milliseconds(), 10)
		c["segment.ms"] = strconv.FormatInt(min(max(s.Retention/10, time.Minute), 24*time.Hour).Milliseconds(), 10)
	}
	if s.RetentionBytes > 0 {
		c["retention.bytes"] = strconv.FormatInt(s.RetentionBytes, 10)
	}
	if s.MaxMessageBytes > 0 {
		c["max.message.bytes"] = strconv.Itoa(int(s.MaxMessageBytes))
	}
	return c
}
