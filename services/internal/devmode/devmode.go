// Package devmode runs Palaver in one process on an embedded broker: what
// `make dev` starts, so anyone can try Palaver without Kafka or Kubernetes:
// the gateway, the history service and room provisioning.
package devmode

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/devbroker"
	"palaver.dev/services/internal/gateway"
	"palaver.dev/services/internal/history"
	"palaver.dev/services/internal/ops"
	"palaver.dev/services/internal/presence"
	"palaver.dev/services/internal/runner"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

// Config is dev mode's configuration.
type Config struct {
	KafkaPort int    // embedded broker port on 127.0.0.1
	OpsAddr   string // metrics and probes
	Listen    string // the gateway: web UI, WebSocket and HTTP API (default DefaultListen)
	DataDir   string // broker data, and history's store in its history/; empty keeps them in memory (history: in a temporary directory)
	RoomsDir  string // ChatRoom manifests to provision (k8s/samples)
}

// DefaultListen is where dev mode serves the gateway unless told otherwise:
// loopback only, since anyone who reaches it can log in as anyone.
const DefaultListen = "127.0.0.1:8080"

// ScratchRoom is the room dev mode provisions for load tests (`palaver load
// --room loadtest`), so that they do not flood the rooms people chat in.
const ScratchRoom = "loadtest"

// scratchRoom is ScratchRoom's spec: messages kept for an hour.
var scratchRoom = room.Spec{
	Name:        ScratchRoom,
	DisplayName: "Load test",
	Description: "Scratch room for palaver load; not for chatting. Messages are kept for an hour.",
	Retention:   time.Hour,
}

// Flags and variables that move dev mode, named when something is in the
// way (cmd/palaver defines them).
const (
	listenFlag = "--listen (or $PALAVER_DEV_LISTEN)"
	opsFlag    = "--ops-addr (or $PALAVER_OPS_ADDR)"
	kafkaFlag  = "--kafka-port (or $PALAVER_DEV_KAFKA_PORT; 0 takes any free port)"
	dataFlag   = "--data-dir (or $PALAVER_DEV_DATA)"
)

// Run starts everything, prints where it listens to out, and serves until
// ctx is done.
func Run(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir != "" {
		unlock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	// Take the addresses first: one in use is said at once, naming the flag.
	listen := cfg.Listen
	if listen == "" {
		listen = DefaultListen
	}
	api, err := runner.Listen(listen, gateway.HTTPServer(nil), 5*time.Second)
	if err != nil {
		return fmt.Errorf("gateway: %w; serve it elsewhere with %s", err, listenFlag)
	}
	defer api.Listener.Close()
	opsServer, err := runner.Listen(cfg.OpsAddr, &http.Server{}, 5*time.Second)
	if err != nil {
		return fmt.Errorf("metrics and probes: %w; serve them elsewhere with %s", err, opsFlag)
	}
	defer opsServer.Listener.Close()

	broker, err := devbroker.Start(devbroker.Options{Port: cfg.KafkaPort, DataDir: cfg.DataDir, Logger: log})
	if err != nil {
		return fmt.Errorf("embedded Kafka broker: %w; use another port with %s", err, kafkaFlag)
	}
	defer broker.Close()

	cluster, err := kafkabus.New(kafkabus.Config{Brokers: []string{broker.Addr()}, ClientID: "palaver-dev"})
	if err != nil {
		return err
	}
	defer cluster.Close()

	specs, err := room.ProvisionManifestDir(ctx, cluster, cfg.RoomsDir, 1)
	if err != nil {
		return err
	}
	scratch, err := room.Provision(ctx, cluster, 1, scratchRoom)
	if err != nil {
		return err
	}
	specs = append(specs, scratch...)

	rooms := room.NewRegistry(cluster, log)
	reg := ops.NewRegistry()

	// History, in process, on a loopback port only the gateway uses.
	histCfg := history.DefaultConfig()
	histCfg.Dir = filepath.Join(cfg.DataDir, "history")
	if cfg.DataDir == "" {
		tmp, err := os.MkdirTemp("", "palaver-dev-history-")
		if err != nil {
			return fmt.Errorf("history: %w", err)
		}
		defer os.RemoveAll(tmp)
		histCfg.Dir = tmp
	}
	hist, err := history.New(histCfg, history.Deps{Cluster: cluster, Rooms: rooms, Metrics: history.NewMetrics(reg), Logger: log})
	if err != nil {
		return err
	}
	defer hist.Close()
	histAPI, err := runner.Listen("127.0.0.1:0", &http.Server{Handler: hist.Handler()}, 5*time.Second)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	defer histAPI.Listener.Close()

	// The gateway, with dev login: anyone may log in under any name.
	issuer, err := auth.NewDevIssuer(auth.DefaultDevTokenTTL)
	if err != nil {
		return err
	}
	gwCfg := gateway.DefaultConfig()
	gwCfg.Dev = true
	gwCfg.HistoryURLs = "http://" + histAPI.Addr().String()
	gwCfg.Presence.Enabled = true

	// Presence, in the same process: its topics exist before the gateway
	// writes to them.
	presCfg := presence.DefaultConfig()
	presCfg.Partitions, presCfg.ReplicationFactor = 4, 1
	admin, err := cluster.AdminClient()
	if err != nil {
		return err
	}
	_, err = presence.EnsureTopics(ctx, admin, presCfg)
	admin.Close()
	if err != nil {
		return err
	}
	pres, err := presence.New(presCfg, cluster, rooms, presence.NewMetrics(reg), log)
	if err != nil {
		return err
	}
	gw, err := gateway.New(gwCfg, gateway.Deps{
		Cluster: cluster, Rooms: rooms, Verifier: issuer.Verifier(), DevLogin: issuer.LoginHandler(),
		Metrics: gateway.NewMetrics(reg), Logger: log,
	})
	if err != nil {
		return err
	}
	api.Server.Handler = gw.Handler()

	health := ops.NewHandler(reg)
	health.AddReadiness("kafka", cluster.Ping)
	health.AddReadiness("rooms", rooms.CheckReady)
	health.AddReadiness("history", hist.CheckReady)
	opsServer.Server.Handler = health

	data := cfg.DataDir
	if data == "" {
		data = "(in memory)"
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	log.Warn("dev mode: anyone who reaches the gateway can log in as anyone (POST /v1/dev/login); keep it on loopback", "gateway", api.Addr().String())
	// The banner says "ready": print it once the gateway knows the rooms
	// and history has caught up with them.
	banner := runner.Func(func(ctx context.Context) error {
		for _, ready := range []<-chan struct{}{rooms.Ready(), hist.Ready()} {
			select {
			case <-ready:
			case <-ctx.Done():
				return nil
			}
		}
		fmt.Fprintf(out, `Palaver dev mode
  gateway:           http://%s   (web UI; WebSocket /v1/ws; dev login POST /v1/dev/login)
  Kafka (embedded):  %s   (any Kafka client, e.g. kcat -b %[2]s -L)
  rooms:             %s   (from %s; %s for palaver load)
  history:           http://%s   (search, scroll-back; internal, through the gateway)
  data:              %s
  metrics:           http://%s/metrics
Press Ctrl-C to stop.
`, api.Addr(), broker.Addr(), strings.Join(names, ", "), cfg.RoomsDir, ScratchRoom, histAPI.Addr(), data, opsServer.Addr())
		<-ctx.Done()
		return nil
	})

	// The broker outlives the gateway, whose shutdown flushes the sends in
	// flight to it, history, which commits what it fetched, and presence,
	// which publishes its pending states and checkpoints.
	gwDone, histDone, presDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	return runner.Run(ctx, log, 15*time.Second,
		runner.Named{Name: "ops", Part: opsServer},
		runner.Named{Name: "rooms", Part: rooms},
		runner.Named{Name: "presence", Part: runner.Func(func(ctx context.Context) error {
			defer close(presDone)
			return pres.Run(ctx)
		})},
		runner.Named{Name: "gateway", Part: runner.Func(func(ctx context.Context) error {
			defer close(gwDone)
			return gw.Run(ctx)
		})},
		runner.Named{Name: "http", Part: api},
		runner.Named{Name: "history", Part: runner.Func(func(ctx context.Context) error {
			defer close(histDone)
			return hist.Run(ctx)
		})},
		runner.Named{Name: "history-http", Part: histAPI},
		runner.Named{Name: "banner", Part: banner},
		runner.Named{Name: "kafka", Part: runner.Func(func(ctx context.Context) error {
			<-ctx.Done()
			<-gwDone
			<-histDone
			<-presDone
			return broker.Run(ctx)
		})},
	)
}
