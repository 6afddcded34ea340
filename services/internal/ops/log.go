package ops

import (
	"flag"
	"fmt"
	"io"
	"log/slog"

	"palaver.dev/services/internal/envflag"
)

// LogConfig chooses the log format and level.
type LogConfig struct {
	Format string // "json" (clusters) or "text" (a terminal)
	Level  string // debug, info, warn, error
}

// RegisterFlags binds --log-format and --log-level, with environment
// fallbacks, defaulting to def.
func (c *LogConfig) RegisterFlags(fs *flag.FlagSet, def LogConfig) {
	fs.StringVar(&c.Format, "log-format", envflag.String("PALAVER_LOG_FORMAT", def.Format), "log format: json or text ($PALAVER_LOG_FORMAT)")
	fs.StringVar(&c.Level, "log-level", envflag.String("PALAVER_LOG_LEVEL", def.Level), "log level: debug, info, warn or error ($PALAVER_LOG_LEVEL)")
}

// NewLogger builds a logger writing to w.
func (c LogConfig) NewLogger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("ops: log level %q: want debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("ops: log format %q: want json or text", c.Format)
	}
}
