// Command presence is Palaver's presence service: a consumer group over the
// presence events the gateways write, turning connections into users per
// room, expiring the connections of gateways that went silent, and
// publishing each room's state to a compacted topic the gateways read.
// Operating notes are in docs/presence.md.
package main

import (
	"context"
	"flag"
	"io"
	"time"

	"palaver.dev/services/internal/ops"
	"palaver.dev/services/internal/presence"
	"palaver.dev/services/internal/runner"
	"palaver.dev/services/room"
)

func main() { runner.Main("presence", run) }

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("presence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		svcCfg ops.Service
		cfg    presence.Config
	)
	svcCfg.RegisterFlags(fs, "palaver-presence")
	cfg.RegisterFlags(fs, presence.DefaultConfig())
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, cluster, err := svcCfg.Open(stderr)
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
	opsServer, err := svcCfg.ListenOps(health)
	if err != nil {
		return err
	}
	log.Info("presence running", "ops", opsServer.Addr().String(), "kafka", svcCfg.Kafka, "group", cfg.Group,
		"events", cfg.EventsTopic, "state", cfg.StateTopic, "gateway_timeout", cfg.Timing.GatewayTimeout)
	return runner.Run(ctx, log, 15*time.Second,
		runner.Named{Name: "rooms", Part: rooms},
		runner.Named{Name: "presence", Part: svc},
		runner.Named{Name: "ops", Part: opsServer},
	)
}
