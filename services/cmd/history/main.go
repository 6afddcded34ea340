// Command history is Palaver's history service: it keeps a store of the
// rooms of its shard, fed from their topics, and answers scroll-back,
// jump-to-date and search queries for the gateway. Operating notes are in
// docs/history.md.
package main

import (
	"context"
	"flag"
	"io"
	"net/http"
	"time"

	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/history"
	"palaver.dev/services/internal/ops"
	"palaver.dev/services/internal/runner"
	"palaver.dev/services/room"
)

func main() { runner.Main("history", run) }

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		svcCfg ops.Service
		hCfg   history.Config
	)
	svcCfg.RegisterFlags(fs, "palaver-history")
	hCfg.RegisterFlags(fs, history.DefaultConfig())
	listen := fs.String("listen", envflag.String("PALAVER_LISTEN", ":8081"), "address of the history API, for the gateways ($PALAVER_LISTEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := hCfg.Resolve(); err != nil {
		return err
	}
	log, cluster, err := svcCfg.Open(stderr)
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
	opsServer, err := svcCfg.ListenOps(health)
	if err != nil {
		return err
	}
	log.Info("history listening", "addr", api.Addr().String(), "ops", opsServer.Addr().String(),
		"kafka", svcCfg.Kafka, "data_dir", hCfg.Dir, "shard", hCfg.Shard, "shards", hCfg.Shards)
	return runner.Run(ctx, log, 15*time.Second,
		runner.Named{Name: "rooms", Part: rooms},
		runner.Named{Name: "history", Part: svc},
		runner.Named{Name: "http", Part: api},
		runner.Named{Name: "ops", Part: opsServer},
	)
}
