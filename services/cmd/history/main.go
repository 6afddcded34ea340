// Command history is Palaver's history service: it keeps a store of the
// rooms of its shard, fed from their topics, and answers scroll-back,
// jump-to-date and search queries for the gateway. Operating notes are in
// docs/history.md.
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
	"palaver.dev/services/internal/history"
	"palaver.dev/services/internal/ops"
	"palaver.dev/services/internal/runner"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

func main() {
	ctx, stop := runner.SignalContext(context.Background())
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "history:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kafkaCfg kafkabus.Config
		logCfg   ops.LogConfig
		hCfg     history.Config
	)
	kafkaCfg.RegisterFlags(fs, kafkabus.Config{Brokers: []string{"127.0.0.1:9092"}, ClientID: "palaver-history"})
	logCfg.RegisterFlags(fs, ops.LogConfig{Format: "json", Level: "info"})
	hCfg.RegisterFlags(fs, history.DefaultConfig())
	listen := fs.String("listen", envflag.String("PALAVER_LISTEN", ":8081"), "address of the history API, for the gateways ($PALAVER_LISTEN)")
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
	if err := hCfg.Resolve(); err != nil {
		return err
	}
	cluster, err := kafkabus.New(kafkaCfg)
	if err != nil {
		return err
	}
	defer cluster.Close()

	reg := ops.NewRegistry()
	rooms := room.NewRegistry(cluster, log)
	svc, err := history.New(hCfg, history.Deps{Cluster: cluster, Rooms: rooms, Metrics: history.NewMetrics(reg), Logger: log})
	if err != nil {
		return err
	}
	defer svc.Close()
	health := ops.NewHandler(reg)
	health.AddReadiness("rooms", rooms.CheckReady)
	health.AddReadiness("kafka", cluster.Ping)
	health.AddReadiness("history", svc.CheckReady)
	api, err := runner.Listen(*listen, &http.Server{Handler: svc.Handler(), ReadTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}, 5*time.Second)
	if err != nil {
		return err
	}
	opsServer, err := runner.Listen(*opsAddr, &http.Server{Handler: health}, 5*time.Second)
	if err != nil {
		return err
	}
	log.Info("history listening", "addr", api.Addr().String(), "ops", opsServer.Addr().String(),
		"kafka", kafkaCfg, "data_dir", hCfg.Dir, "shard", hCfg.Shard, "shards", hCfg.Shards)
	return runner.Run(ctx, log, 15*time.Second,
		runner.Named{Name: "rooms", Part: rooms},
		runner.Named{Name: "history", Part: svc},
		runner.Named{Name: "http", Part: api},
		runner.Named{Name: "ops", Part: opsServer},
	)
}
