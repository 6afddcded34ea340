package presence

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"palaver.dev/services/internal/envflag"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("presence: invalid configuration")

// Config tunes the presence service. Zero fields take the defaults.
type Config struct {
	Group       string // consumer group of the replicas (palaver-presence)
	EventsTopic string // (palaver.presence.events)
	StateTopic  string // (palaver.presence.state)
	// Partitions and ReplicationFactor are used when the service creates
	// the topics at start (12 and 3); existing topics are kept as they are.
	Partitions        int
	ReplicationFactor int

	Timing Timing
	// PublishInterval is the least time between two publications of a
	// room's state (100 ms); the first change after a quiet spell is
	// published at once. LargeRoomInterval applies to rooms of LargeRoom
	// users or more (1 s, 1,000): gateways send their members at most a
	// frame a second of those.
	PublishInterval   time.Duration
	LargeRoomInterval time.Duration
	LargeRoom         int
	// CheckpointInterval is the least time between two checkpoints of a
	// partition (1 s).
	CheckpointInterval time.Duration
	// Tick is the period of the expiry check (100 ms).
	Tick time.Duration
	// SessionTimeout: a replica not heard from by the group coordinator
	// for this long loses its partitions to the others (10 s).
	SessionTimeout time.Duration

	env envflag.Vars
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Group: "palaver-presence", EventsTopic: EventsTopic, StateTopic: StateTopic,
		Partitions: 12, ReplicationFactor: 3, Timing: DefaultTiming(),
		PublishInterval: 100 * time.Millisecond, LargeRoomInterval: time.Second, LargeRoom: 1000,
		CheckpointInterval: time.Second, Tick: 100 * time.Millisecond, SessionTimeout: 10 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	str := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	num := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	dur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	str(&c.Group, d.Group)
	str(&c.EventsTopic, d.EventsTopic)
	str(&c.StateTopic, d.StateTopic)
	num(&c.Partitions, d.Partitions)
	num(&c.ReplicationFactor, d.ReplicationFactor)
	num(&c.LargeRoom, d.LargeRoom)
	dur(&c.Timing.GatewayTimeout, d.Timing.GatewayTimeout)
	dur(&c.Timing.TypingTTL, d.Timing.TypingTTL)
	dur(&c.Timing.TypingMinGap, d.Timing.TypingMinGap)
	dur(&c.PublishInterval, d.PublishInterval)
	dur(&c.LargeRoomInterval, d.LargeRoomInterval)
	dur(&c.CheckpointInterval, d.CheckpointInterval)
	dur(&c.Tick, d.Tick)
	dur(&c.SessionTimeout, d.SessionTimeout)
	return c
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	if err := c.env.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c = c.withDefaults()
	if c.EventsTopic == c.StateTopic {
		return fmt.Errorf("%w: the events and state topics must differ", ErrConfig)
	}
	if c.ReplicationFactor > 32767 {
		return fmt.Errorf("%w: replication factor %d", ErrConfig, c.ReplicationFactor)
	}
	if c.Tick > c.Timing.GatewayTimeout/4 {
		return fmt.Errorf("%w: the expiry check (%v) must run at least 4 times per gateway timeout (%v)", ErrConfig, c.Tick, c.Timing.GatewayTimeout)
	}
	return nil
}

// RegisterFlags binds the configuration to flags on fs, each defaulting to
// an environment variable (named in the flag's help) and then to def.
func (c *Config) RegisterFlags(fs *flag.FlagSet, def Config) {
	def = def.withDefaults()
	*c = def
	fs.StringVar(&c.Group, "group", envflag.String("PALAVER_PRESENCE_GROUP", def.Group), "Kafka consumer group of the presence replicas ($PALAVER_PRESENCE_GROUP)")
	fs.StringVar(&c.EventsTopic, "events-topic", envflag.String("PALAVER_PRESENCE_EVENTS_TOPIC", def.EventsTopic), "topic the gateways write connection events to ($PALAVER_PRESENCE_EVENTS_TOPIC)")
	fs.StringVar(&c.StateTopic, "state-topic", envflag.String("PALAVER_PRESENCE_STATE_TOPIC", def.StateTopic), "compacted topic of room states ($PALAVER_PRESENCE_STATE_TOPIC)")
	c.env.Int(fs, &c.Partitions, "partitions", "PALAVER_PRESENCE_PARTITIONS", def.Partitions, "partitions of both topics when this service creates them")
	c.env.Int(fs, &c.ReplicationFactor, "replication-factor", "PALAVER_PRESENCE_REPLICATION_FACTOR", def.ReplicationFactor, "replication factor of both topics when this service creates them")
	c.env.Duration(fs, &c.Timing.GatewayTimeout, "gateway-timeout", "PALAVER_PRESENCE_GATEWAY_TIMEOUT", def.Timing.GatewayTimeout, "the connections of a gateway silent for this long are expired")
	c.env.Duration(fs, &c.Timing.TypingTTL, "typing-ttl", "PALAVER_PRESENCE_TYPING_TTL", def.Timing.TypingTTL, "a typing indicator lasts this long after the user's last typing event")
	c.env.Duration(fs, &c.PublishInterval, "publish-interval", "PALAVER_PRESENCE_PUBLISH_INTERVAL", def.PublishInterval, "least time between two publications of a room's state")
	c.env.Duration(fs, &c.LargeRoomInterval, "large-room-interval", "PALAVER_PRESENCE_LARGE_ROOM_INTERVAL", def.LargeRoomInterval, "least time between two publications of a large room's state")
	c.env.Int(fs, &c.LargeRoom, "large-room", "PALAVER_PRESENCE_LARGE_ROOM", def.LargeRoom, "users from which a room is large")
	c.env.Duration(fs, &c.SessionTimeout, "session-timeout", "PALAVER_PRESENCE_SESSION_TIMEOUT", def.SessionTimeout, "a replica silent for this long loses its partitions to the others")
}
