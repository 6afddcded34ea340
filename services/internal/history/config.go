package history

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"palaver.dev/services/internal/envflag"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("history: invalid configuration")

// Config tunes a history replica. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	Dir    string // the store's directory (a persistent volume)
	Shards int    // how many shards the rooms are spread over (1)
	// Shard is the shard this replica serves, in [0, Shards).
	Shard int
	// Stores is how many database files the shard's rooms are spread over,
	// each with a writer of its own, so that several cores write (2).
	Stores int

	BatchSize       int           // most records committed in one transaction (16000)
	BatchLinger     time.Duration // a batch takes what arrives this long after its first record (5 ms)
	FetchBytes      int           // most bytes one fetch of one partition returns (1 MiB)
	ReadyLag        int           // ready once no partition is more records behind than this (1000)
	MaxWait         time.Duration // longest a read-your-writes query waits for ingest (2 s)
	RefreshInterval time.Duration // period of the check of deleted topics and of the store size (10 s)
	ProgressLog     time.Duration // period of the rebuild progress lines (5 s)

	// rowByRow rebuilds an empty store with every index kept up to date
	// row by row, rather than built once its rows are in (benchmarks).
	rowByRow bool

	env   envflag.Vars
	shard string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Dir: "data", Shards: 1, Stores: 2, BatchSize: 16000, BatchLinger: 5 * time.Millisecond, FetchBytes: 1 << 20, ReadyLag: 1000,
		MaxWait: 2 * time.Second, RefreshInterval: 10 * time.Second, ProgressLog: 5 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Dir == "" {
		c.Dir = d.Dir
	}
	if c.Shards <= 0 {
		c.Shards = d.Shards
	}
	if c.Stores <= 0 {
		c.Stores = d.Stores
	}
	if c.BatchSize <= 0 {
		c.BatchSize = d.BatchSize
	}
	if c.BatchLinger <= 0 {
		c.BatchLinger = d.BatchLinger
	}
	if c.FetchBytes <= 0 {
		c.FetchBytes = d.FetchBytes
	}
	if c.ReadyLag <= 0 {
		c.ReadyLag = d.ReadyLag
	}
	if c.MaxWait <= 0 {
		c.MaxWait = d.MaxWait
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = d.RefreshInterval
	}
	if c.ProgressLog <= 0 {
		c.ProgressLog = d.ProgressLog
	}
	return c
}

// RegisterFlags binds the configuration to flags on fs, each defaulting to
// an environment variable (named in the flag's help) and then to def.
func (c *Config) RegisterFlags(fs *flag.FlagSet, def Config) {
	def = def.withDefaults()
	*c = def
	fs.StringVar(&c.Dir, "data-dir", envflag.String("PALAVER_HISTORY_DATA_DIR", def.Dir), "directory of the store, on a persistent volume ($PALAVER_HISTORY_DATA_DIR)")
	c.env.Int(fs, &c.Shards, "shards", "PALAVER_HISTORY_SHARDS", def.Shards, "number of shards the rooms are spread over (the gateway's --history-urls lists as many)")
	c.shard = envflag.String("PALAVER_HISTORY_SHARD", strconv.Itoa(def.Shard))
	fs.StringVar(&c.shard, "shard", c.shard, "shard this replica serves, 0 to shards-1, or \"ordinal\": the number ending the host name (a StatefulSet pod's ordinal) modulo shards ($PALAVER_HISTORY_SHARD)")
	c.env.Int(fs, &c.Stores, "stores", "PALAVER_HISTORY_STORES", def.Stores, "database files the shard's rooms are spread over, each with its own writer")
	c.env.Int(fs, &c.BatchSize, "batch-size", "PALAVER_HISTORY_BATCH_SIZE", def.BatchSize, "most records written in one transaction")
	c.env.Duration(fs, &c.BatchLinger, "batch-linger", "PALAVER_HISTORY_BATCH_LINGER", def.BatchLinger, "a batch takes the records that arrive this long after its first one")
	c.env.Int(fs, &c.FetchBytes, "fetch-bytes", "PALAVER_HISTORY_FETCH_BYTES", def.FetchBytes, "most bytes one fetch of one partition returns")
	c.env.Int(fs, &c.ReadyLag, "ready-lag", "PALAVER_HISTORY_READY_LAG", def.ReadyLag, "ready once no partition is more than this many records behind")
	c.env.Duration(fs, &c.MaxWait, "max-wait", "PALAVER_HISTORY_MAX_WAIT", def.MaxWait, "longest a query carrying a seen position waits for ingest to pass it")
	c.env.Duration(fs, &c.RefreshInterval, "refresh-interval", "PALAVER_HISTORY_REFRESH_INTERVAL", def.RefreshInterval, "period of the checks for deleted topics and of the store size")
}

// Resolve reads the --shard value ("ordinal" takes the number ending the
// host name, modulo the shard count) and checks the configuration.
func (c *Config) Resolve() error {
	if err := c.env.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	*c = c.withDefaults()
	if c.shard != "" {
		shard, err := parseShard(c.shard, c.Shards)
		if err != nil {
			return err
		}
		c.Shard = shard
	}
	if c.Shard < 0 || c.Shard >= c.Shards {
		return fmt.Errorf("%w: shard %d is not in [0, %d)", ErrConfig, c.Shard, c.Shards)
	}
	return nil
}

func parseShard(s string, shards int) (int, error) {
	if s != "ordinal" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("%w: shard %q: want a number or \"ordinal\"", ErrConfig, s)
		}
		return n, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return 0, fmt.Errorf("%w: shard from the host name: %w", ErrConfig, err)
	}
	return ordinalShard(host, shards)
}

// ordinalShard maps a StatefulSet pod name (history-4) to its shard: the
// ordinal modulo the shard count, so pods k, k+shards, k+2*shards... are
// replicas of shard k.
func ordinalShard(host string, shards int) (int, error) {
	i := strings.LastIndexByte(host, '-')
	n, err := strconv.Atoi(host[i+1:])
	if i < 0 || err != nil || n < 0 {
		return 0, fmt.Errorf("%w: host name %q does not end in -<ordinal>", ErrConfig, host)
	}
	return n % shards, nil
}
