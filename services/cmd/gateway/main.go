// Command gateway is Palaver's WebSocket gateway: clients chat through it
// (docs/protocol.md), it stores their messages in the room topics and fans
// every room's messages out to its local members. Operating notes are in
// docs/gateway.md.
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

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/gateway"
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
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kafkaCfg kafkabus.Config
		logCfg   ops.LogConfig
		authCfg  auth.Config
		gwCfg    gateway.Config
	)
	kafkaCfg.RegisterFlags(fs, kafkabus.Config{Brokers: []string{"127.0.0.1:9092"}, ClientID: "palaver-gateway"})
	logCfg.RegisterFlags(fs, ops.LogConfig{Format: "json", Level: "info"})
	authCfg.RegisterFlags(fs, auth.Config{})
	gwDef := gateway.DefaultConfig()
	gwDef.Presence.Enabled = true
	gwCfg.RegisterFlags(fs, gwDef)
	listen := fs.String("listen", envflag.String("PALAVER_LISTEN", ":8080"), "address of the WebSocket endpoint, HTTP API and web UI ($PALAVER_LISTEN)")
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
	if err := authCfg.Validate(); err != nil {
		return err
	}

	var (
		verifier auth.Verifier
		devLogin http.Handler
	)
	if authCfg.Mode == auth.ModeDev {
		issuer, err := auth.NewDevIssuer(authCfg.DevTokenTTL)
		if err != nil {
			return err
		}
		verifier, devLogin = issuer.Verifier(), issuer.LoginHandler()
		gwCfg.Dev = true
		log.Warn("DEV AUTHENTICATION: anyone can log in as anyone at POST /v1/dev/login; never run --auth=dev where others can reach it")
	} else if verifier, err = auth.New(ctx, authCfg, log); err != nil {
		return err
	}
	if err := gwCfg.Validate(); err != nil {
		return err
	}

	cluster, err := kafkabus.New(kafkaCfg)
	if err != nil {
		return err
	}
	defer cluster.Close()
	reg := ops.NewRegistry()
	rooms := room.NewRegistry(cluster, log)
	gw, err := gateway.New(gwCfg, gateway.Deps{
		Cluster: cluster, Rooms: rooms, Verifier: verifier, DevLogin: devLogin,
		Metrics: gateway.NewMetrics(reg), Logger: log,
	})
	if err != nil {
		return err
	}
	health := ops.NewHandler(reg)
	health.AddReadiness("rooms", rooms.CheckReady)
	health.AddReadiness("kafka", cluster.Ping)

	api, err := runner.Listen(*listen, gateway.HTTPServer(gw.Handler()), 5*time.Second)
	if err != nil {
		return err
	}
	opsServer, err := runner.Listen(*opsAddr, &http.Server{Handler: health}, 5*time.Second)
	if err != nil {
		return err
	}
	log.Info("gateway listening", "addr", api.Addr().String(), "ops", opsServer.Addr().String(),
		"kafka", kafkaCfg, "auth", authCfg, "allowed_origins", gwCfg.AllowedOrigins)
	return runner.Run(ctx, log, gwCfg.DrainTimeout+2*time.Second,
		runner.Named{Name: "rooms", Part: rooms},
		runner.Named{Name: "gateway", Part: gw},
		runner.Named{Name: "http", Part: api},
		runner.Named{Name: "ops", Part: opsServer},
	)
}
