// Command palaver is Palaver's command-line tool. `palaver dev` runs the
// whole platform in one process on an embedded broker.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"palaver.dev/services/internal/devmode"
	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/ops"
	"palaver.dev/services/internal/runner"
)

const usage = `palaver: the Palaver chat platform's command-line tool

Usage:
  palaver dev [flags]    run Palaver in one process on an embedded Kafka-protocol broker

Run 'palaver <command> -h' for a command's flags.
`

func main() {
	ctx, stop := runner.SignalContext(context.Background())
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "palaver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, usage)
		return nil
	}
	switch args[0] {
	case "dev":
		return dev(ctx, args[1:])
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func dev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("palaver dev", flag.ContinueOnError)
	var cfg devmode.Config
	var logCfg ops.LogConfig
	fs.IntVar(&cfg.KafkaPort, "kafka-port", 9092, "port of the embedded Kafka-protocol broker on 127.0.0.1")
	fs.StringVar(&cfg.OpsAddr, "ops-addr", envflag.String("PALAVER_OPS_ADDR", "127.0.0.1:9464"), "address of /metrics, /healthz and /readyz ($PALAVER_OPS_ADDR)")
	fs.StringVar(&cfg.DataDir, "data-dir", envflag.String("PALAVER_DEV_DATA", ".palaver-dev"), "where the embedded broker keeps its data; empty keeps it in memory ($PALAVER_DEV_DATA)")
	fs.StringVar(&cfg.RoomsDir, "rooms", envflag.String("PALAVER_DEV_ROOMS", "k8s/samples"), "directory of ChatRoom manifests to provision ($PALAVER_DEV_ROOMS)")
	logCfg.RegisterFlags(fs, ops.LogConfig{Format: "text", Level: "info"})
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := logCfg.NewLogger(os.Stderr)
	if err != nil {
		return err
	}
	return devmode.Run(ctx, cfg, log, os.Stdout)
}
