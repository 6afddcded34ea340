package gateway

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/historyapi"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/protocol"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("gateway: invalid configuration")

// Config tunes the gateway. Zero fields take the defaults (see
// DefaultConfig).
type Config struct {
	// AllowedOrigins are the browser origins allowed besides the gateway's
	// own host, as path.Match patterns of hosts (*.example.com) or of
	// scheme://host (see checkOrigin). "*" allows any origin and is refused
	// unless Dev.
	AllowedOrigins []string
	// Dev marks dev mode (--auth=dev): it allows the "*" origin.
	Dev bool

	Limits protocol.Limits // announced in welcome

	QueueSize    int           // frames queued per connection; past it the room buffers RingSize more, then cuts it as a slow consumer (256)
	RingSize     int           // latest messages kept per room for recovery (1024)
	MaxInFlight  int           // sends of one connection waiting for Kafka at once (32)
	MaxRooms     int           // rooms one connection may join (100)
	HelloTimeout time.Duration // the first frame must be hello within this (10 s)
	PingInterval time.Duration // WebSocket pings; no pong within one more interval closes (30 s)
	WriteTimeout time.Duration // a socket that takes no frames for this long is a slow consumer (10 s)

	SendTimeout  time.Duration // a send not acknowledged by Kafka in this answers unavailable (10 s)
	DedupWindow  time.Duration // retried sends are recognised for this long (10 min)
	DedupEntries int           // at most this many sends remembered (200 000)
	TailLinger   time.Duration // a room's tail outlives its last local member by this (10 s)
	StallCheck   time.Duration // period of the stalled-tail watchdog (10 s)
	FlushHold    time.Duration // a busy room holds its connections' writes this long for more messages (1 ms; negative: never)
	DrainTimeout time.Duration // bound on the graceful shutdown (8 s)

	// ReadBufferBytes is the buffer a connection reads its client's frames
	// through (512 B: most client frames fit), taken from a pool while a
	// message is being read, so an idle connection holds none; frames are
	// written from pooled buffers too.
	ReadBufferBytes int
	// SocketSendBuffer is each connection's kernel send buffer (SO_SNDBUF,
	// 64 KiB). Linux would otherwise grow it up to tcp_wmem's maximum
	// (4 MiB by default) for a client that stops reading: kernel memory
	// per connection, and a slow consumer noticed megabytes late. Negative
	// leaves the kernel's autotuning.
	SocketSendBuffer int

	// HistoryURLs are the history service's replicas, one comma-separated
	// entry per shard, each the '|'-separated base URLs of the shard's
	// replicas (historyapi.ParseURLs). Empty: scroll-back is read from
	// Kafka and search answers unavailable.
	HistoryURLs    string
	HistoryTimeout time.Duration // one history replica's answer must come within this, else the next one or Kafka (5 s)

	Presence PresenceConfig // presence events and frames (presence.go)

	env envflag.Vars // remembers malformed environment values for Validate
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Limits: protocol.Limits{
			MaxTextBytes:   message.MaxTextBytes,
			MaxFrameBytes:  16 << 10,
			SendsPerSecond: 10,
			SendBurst:      20,
		},
		QueueSize:        256,
		RingSize:         roomhub.DefaultRingSize,
		MaxInFlight:      32,
		MaxRooms:         100,
		HelloTimeout:     10 * time.Second,
		PingInterval:     30 * time.Second,
		WriteTimeout:     10 * time.Second,
		SendTimeout:      10 * time.Second,
		DedupWindow:      roomhub.DefaultDedupWindow, // history applies the same window
		DedupEntries:     200_000,
		TailLinger:       roomhub.DefaultLinger,
		StallCheck:       roomhub.DefaultStallCheck,
		FlushHold:        roomhub.DefaultFlushHold,
		DrainTimeout:     8 * time.Second,
		ReadBufferBytes:  512,
		SocketSendBuffer: 64 << 10,
		HistoryTimeout:   5 * time.Second,
		Presence:         DefaultPresenceConfig(),
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.Limits.MaxTextBytes, d.Limits.MaxTextBytes)
	set(&c.Limits.MaxFrameBytes, d.Limits.MaxFrameBytes)
	if c.Limits.SendsPerSecond <= 0 {
		c.Limits.SendsPerSecond = d.Limits.SendsPerSecond
	}
	set(&c.Limits.SendBurst, d.Limits.SendBurst)
	set(&c.QueueSize, d.QueueSize)
	set(&c.RingSize, d.RingSize)
	set(&c.MaxInFlight, d.MaxInFlight)
	set(&c.MaxRooms, d.MaxRooms)
	set(&c.DedupEntries, d.DedupEntries)
	set(&c.ReadBufferBytes, d.ReadBufferBytes)
	if c.SocketSendBuffer == 0 {
		c.SocketSendBuffer = d.SocketSendBuffer
	}
	setD(&c.HelloTimeout, d.HelloTimeout)
	setD(&c.PingInterval, d.PingInterval)
	setD(&c.WriteTimeout, d.WriteTimeout)
	setD(&c.SendTimeout, d.SendTimeout)
	setD(&c.DedupWindow, d.DedupWindow)
	setD(&c.TailLinger, d.TailLinger)
	setD(&c.StallCheck, d.StallCheck)
	if c.FlushHold == 0 {
		c.FlushHold = d.FlushHold
	}
	setD(&c.DrainTimeout, d.DrainTimeout)
	setD(&c.HistoryTimeout, d.HistoryTimeout)
	return c
}

// Validate reports settings that cannot work or are unsafe.
func (c Config) Validate() error {
	if err := c.env.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c = c.withDefaults()
	if slices.Contains(c.AllowedOrigins, "*") && !c.Dev {
		return fmt.Errorf("%w: --allowed-origins=* lets any web page use your users' sessions; list the origins (only dev mode accepts *)", ErrConfig)
	}
	if err := c.Presence.validate(); err != nil {
		return err
	}
	if c.Limits.MaxTextBytes > message.MaxTextBytes {
		return fmt.Errorf("%w: max text bytes %d over the envelope's limit %d", ErrConfig, c.Limits.MaxTextBytes, message.MaxTextBytes)
	}
	if c.Limits.MaxFrameBytes < c.Limits.MaxTextBytes+1024 {
		return fmt.Errorf("%w: max frame bytes %d leaves no room for a send of %d bytes of text", ErrConfig, c.Limits.MaxFrameBytes, c.Limits.MaxTextBytes)
	}
	if _, err := historyapi.ParseURLs(c.HistoryURLs); err != nil {
		return fmt.Errorf("%w: --history-urls: %w", ErrConfig, err)
	}
	if c.ReadBufferBytes < 256 {
		return fmt.Errorf("%w: the read buffer must be at least 256 bytes", ErrConfig)
	}
	return nil
}

// RegisterFlags binds the configuration to flags on fs, each defaulting to
// an environment variable (named in the flag's help) and then to def.
func (c *Config) RegisterFlags(fs *flag.FlagSet, def Config) {
	def = def.withDefaults()
	*c = def
	origins := envflag.String("PALAVER_ALLOWED_ORIGINS", strings.Join(def.AllowedOrigins, ","))
	c.AllowedOrigins = envflag.List(origins)
	fs.Func("allowed-origins", "comma-separated browser origins allowed besides the gateway's own host, as host patterns (chat.example.com, *.example.com) or scheme://host ($PALAVER_ALLOWED_ORIGINS)", func(s string) error {
		c.AllowedOrigins = envflag.List(s)
		return nil
	})
	c.env.Int(fs, &c.Limits.MaxTextBytes, "max-text-bytes", "PALAVER_MAX_TEXT_BYTES", def.Limits.MaxTextBytes, "longest message text in bytes")
	c.env.Int(fs, &c.Limits.MaxFrameBytes, "max-frame-bytes", "PALAVER_MAX_FRAME_BYTES", def.Limits.MaxFrameBytes, "largest client frame in bytes; larger ones close the connection with 1009")
	c.env.Float(fs, &c.Limits.SendsPerSecond, "sends-per-second", "PALAVER_SENDS_PER_SECOND", def.Limits.SendsPerSecond, "sends per second allowed to one connection (and to one user over HTTP)")
	c.env.Int(fs, &c.Limits.SendBurst, "send-burst", "PALAVER_SEND_BURST", def.Limits.SendBurst, "sends allowed in a burst above the rate")
	c.env.Int(fs, &c.QueueSize, "queue-size", "PALAVER_QUEUE_SIZE", def.QueueSize, "frames queued per connection; past it the room buffers up to --ring-size more messages for it, and past those it is closed as a slow consumer (4408)")
	c.env.Int(fs, &c.SocketSendBuffer, "socket-send-buffer", "PALAVER_SOCKET_SEND_BUFFER", def.SocketSendBuffer, "kernel send buffer per connection in bytes (SO_SNDBUF); negative keeps the kernel's autotuning")
	c.env.Int(fs, &c.RingSize, "ring-size", "PALAVER_RING_SIZE", def.RingSize, "latest messages kept per tailed room to serve reconnects")
	c.env.Duration(fs, &c.TailLinger, "tail-linger", "PALAVER_TAIL_LINGER", def.TailLinger, "how long a room's tail outlives its last local member")
	c.env.Duration(fs, &c.FlushHold, "flush-hold", "PALAVER_FLUSH_HOLD", def.FlushHold, "how long a busy room (flushed under twice this ago) holds its connections' writes for more messages; negative: never")
	c.env.Duration(fs, &c.StallCheck, "stall-check", "PALAVER_STALL_CHECK", def.StallCheck, "period of the check that replaces room tails that stopped progressing")
	c.env.Duration(fs, &c.DedupWindow, "dedup-window", "PALAVER_DEDUP_WINDOW", def.DedupWindow, "how long a retried send (same sender and id) is recognised")
	c.env.Int(fs, &c.DedupEntries, "dedup-entries", "PALAVER_DEDUP_ENTRIES", def.DedupEntries, "most sends remembered for deduplication, per room tailed and for the sends in flight")
	c.env.Duration(fs, &c.SendTimeout, "send-timeout", "PALAVER_SEND_TIMEOUT", def.SendTimeout, "a send Kafka has not acknowledged within this is answered unavailable")
	fs.StringVar(&c.HistoryURLs, "history-urls", envflag.String("PALAVER_HISTORY_URLS", def.HistoryURLs), "history service replicas: one comma-separated entry per shard, in shard order, each the |-separated base URLs of its replicas; empty reads scroll-back from Kafka ($PALAVER_HISTORY_URLS)")
	c.env.Duration(fs, &c.HistoryTimeout, "history-timeout", "PALAVER_HISTORY_TIMEOUT", def.HistoryTimeout, "a history replica that has not answered in this is skipped (the next one, then Kafka)")
	c.Presence.registerFlags(fs, &c.env, def.Presence)
	c.env.Duration(fs, &c.DrainTimeout, "drain-timeout", "PALAVER_DRAIN_TIMEOUT", def.DrainTimeout, "bound on the graceful shutdown (acks of in-flight sends, then 1001 to every connection)")
}
