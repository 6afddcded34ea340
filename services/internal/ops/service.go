package ops

import (
	"flag"
	"io"
	"log/slog"
	"net/http"
	"time"

	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/runner"
	"palaver.dev/services/kafkabus"
)

// Service is what every service process shares: its Kafka client, its
// logging and the address of its ops endpoints, each a flag with an
// environment variable.
type Service struct {
	Kafka   kafkabus.Config
	Log     LogConfig
	OpsAddr string
}

// RegisterFlags binds the shared flags; clientID is the Kafka client id.
func (s *Service) RegisterFlags(fs *flag.FlagSet, clientID string) {
	s.Kafka.RegisterFlags(fs, kafkabus.Config{Brokers: []string{"127.0.0.1:9092"}, ClientID: clientID})
	s.Log.RegisterFlags(fs, LogConfig{Format: "json", Level: "info"})
	fs.StringVar(&s.OpsAddr, "ops-addr", envflag.String("PALAVER_OPS_ADDR", ":9090"), "address of /metrics, /healthz and /readyz ($PALAVER_OPS_ADDR)")
}

// Open makes the logger and, the Kafka configuration being valid, the
// Kafka client (the caller closes it).
func (s *Service) Open(stderr io.Writer) (*slog.Logger, *kafkabus.Cluster, error) {
	log, err := s.Log.NewLogger(stderr)
	if err != nil {
		return nil, nil, err
	}
	if err := s.Kafka.Validate(); err != nil {
		return nil, nil, err
	}
	cluster, err := kafkabus.New(s.Kafka)
	if err != nil {
		return nil, nil, err
	}
	return log, cluster, nil
}

// ListenOps listens on OpsAddr for h (NewHandler's /metrics, /healthz and
// /readyz).
func (s *Service) ListenOps(h http.Handler) (*runner.HTTPServer, error) {
	return runner.Listen(s.OpsAddr, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, 5*time.Second)
}
