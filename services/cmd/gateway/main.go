// Command gateway is Palaver's WebSocket gateway: clients chat through it
// (docs/protocol.md), it stores their messages in the room topics and fans
// every room's messages out to its local members. Operating notes are in
// docs/gateway.md.
package main

import (
	"context"
	"flag"
	"io"
	"net/http"
	"time"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/gateway"
	"palaver.dev/services/internal/ops"
	"palaver.dev/services/internal/runner"
	"palaver.dev/services/room"
)

func main() { runner.Main("gateway", run) }

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		svcCfg  ops.Service
		authCfg auth.Config
		gwCfg   gateway.Config
	)
	svcCfg.RegisterFlags(fs, "palaver-gateway")
	authCfg.RegisterFlags(fs, auth.Config{})
	gwDef := gateway.DefaultConfig()
	gwDef.Presence.Enabled = true
	gwCfg.RegisterFlags(fs, gwDef)
	listen := fs.String("listen", envflag.String("PALAVER_LISTEN", ":8080"), "address of the WebSocket endpoint, HTTP API and web UI ($PALAVER_LISTEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := authCfg.Validate(); err != nil {
		return err
	}
	log, cluster, err := svcCfg.Open(stderr)
	if err != nil {
		return err
	}
	defer cluster.Close()

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
	opsServer, err := svcCfg.ListenOps(health)
	if err != nil {
		return err
	}
	log.Info("gateway listening", "addr", api.Addr().String(), "ops", opsServer.Addr().String(),
		"kafka", svcCfg.Kafka, "auth", authCfg, "allowed_origins", gwCfg.AllowedOrigins)
	return runner.Run(ctx, log, gwCfg.DrainTimeout+2*time.Second,
		runner.Named{Name: "rooms", Part: rooms},
		runner.Named{Name: "gateway", Part: gw},
		runner.Named{Name: "http", Part: api},
		runner.Named{Name: "ops", Part: opsServer},
	)
}
