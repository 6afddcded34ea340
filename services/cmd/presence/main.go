// Command presence is Palaver's presence service: a consumer group over the
// presence events the gateways write, turning connections into users per
// room, expiring the connections of gateways that went silent, and
// publishing each room's state to a compacted topic the gateways read.
// Operating notes are in docs/presence.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/ops"
	"palaver.dev/services/internal/presence"
	"palaver.dev/services/internal/runner"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

func main() {
	ctx, stop := runner.SignalContext(context.Background())
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "presence:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("presence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kafkaCfg kafkabus.Config
		logCfg   ops.LogConfig
		cfg      presence.Config
	)
	kafkaCfg.RegisterFlags(fs, kafkabus.Config{Brokers: []string{"127.0.0.1:9092"}, ClientID: "palaver-presence"})
	logCfg.RegisterFlags(fs, ops.LogConfig{Format: "json", Level: "info"})
	cfg.RegisterFlags(fs, presence.DefaultConfig())
	opsAddr := fs.String("ops-addr", envflag.String("PALAVER_OPS_ADDR", ":9090"), "address of /metrics, /healthz and /readyz ($PALAVER_OPS_ADDR)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := logCfg.NewLogger(stderr)
	if err != nil {
		return err
	}
	if err := kafkaCfg.Validate(); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cluster, err := kafkabus.New(kafkaCfg)
	if err != nil {
		return err
	}
	defer cluster.Close()
	reg := ops.NewRegistry()
	rooms := room.NewRegistry(cluster, log)
	svc, err := presence.New(cfg, cluster, rooms, presence.NewMetrics(reg), log)
	if err != nil {
		return err
	}
	health := ops.NewHandler(reg)
	health.AddReadiness("rooms", rooms.CheckReady)
	health.AddReadiness("kafka", cluster.Ping)
	health.AddReadiness("group", svc.CheckReady)
	opsServer, err := runner.Listen(*opsAddr, &http.Server{Handler: health, ReadHeaderTimeout: 10 * time.Second}, 5*time.Second)
	if err != nil {
		return err
	}
	log.Info("presence running", "ops", opsServer.Addr().String(), "kafka", kafkaCfg, "group", cfg.Group,
		"events", cfg.EventsTopic, "state", cfg.StateTopic, "gateway_timeout", cfg.Timing.GatewayTimeout)
	return runner.Run(ctx, log, 15*time.Second,
		runner.Named{Name: "rooms", Part: rooms},
		runner.Named{Name: "presence", Part: svc},
		runner.Named{Name: "ops", Part: opsServer},
	)
}
