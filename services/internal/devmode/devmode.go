// Package devmode runs Palaver in one process on an embedded broker: what
// `make dev` starts, so anyone can try Palaver without Kafka or Kubernetes.
package devmode

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"palaver.dev/services/internal/devbroker"
	"palaver.dev/services/internal/kafkabus"
	"palaver.dev/services/internal/ops"
	"palaver.dev/services/internal/runner"
)

// Config is dev mode's configuration.
type Config struct {
	KafkaPort int    // embedded broker port on 127.0.0.1
	OpsAddr   string // metrics and probes
	DataDir   string // broker data; empty keeps it in memory
}

// Run starts everything, prints where it listens to out, and serves until
// ctx is done.
func Run(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) error {
	broker, err := devbroker.Start(devbroker.Options{Port: cfg.KafkaPort, DataDir: cfg.DataDir, Logger: log})
	if err != nil {
		return err
	}
	defer broker.Close()

	cluster, err := kafkabus.New(kafkabus.Config{Brokers: []string{broker.Addr()}, ClientID: "palaver-dev"})
	if err != nil {
		return err
	}
	defer cluster.Close()

	reg := ops.NewRegistry()
	health := ops.NewHandler(reg)
	health.AddReadiness("kafka", cluster.Ping)
	opsServer, err := runner.Listen(cfg.OpsAddr, &http.Server{Handler: health}, 5*time.Second)
	if err != nil {
		return fmt.Errorf("ops server: %w", err)
	}

	data := cfg.DataDir
	if data == "" {
		data = "(in memory)"
	}
	fmt.Fprintf(out, `Palaver dev mode
  Kafka (embedded):  %s   (any Kafka client, e.g. kcat -b %[1]s -L)
  data:              %s
  metrics:           http://%s/metrics
Press Ctrl-C to stop.
`, broker.Addr(), data, opsServer.Addr())

	return runner.Run(ctx, log, 10*time.Second,
		runner.Named{Name: "ops", Part: opsServer},
		runner.Named{Name: "kafka", Part: broker},
	)
}
