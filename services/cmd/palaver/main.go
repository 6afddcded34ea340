// Command palaver is Palaver's command-line tool. `palaver dev` runs the
// whole platform in one process on an embedded broker; `palaver chat` and
// `palaver rooms` are clients of a gateway, and `palaver load` measures one
// under load (docs/cli.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"palaver.dev/services/internal/chatcli"
	"palaver.dev/services/internal/devmode"
	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/loadgen"
	"palaver.dev/services/internal/ops"
	"palaver.dev/services/internal/runner"
)

const usage = `palaver: the Palaver chat platform's command-line tool

Usage:
  palaver dev [flags]      run Palaver in one process on an embedded Kafka-protocol broker
  palaver chat --room R    chat in a room: print its messages, send each line of stdin
  palaver rooms            list the rooms you may join
  palaver search --room R QUERY
                           search a room's messages (needs the history service)
  palaver who --room R     list who is online in a room
  palaver load --room R    load-test a gateway: members send and time every delivery
  palaver simulate         many people chatting in many rooms, with a live progress line
  palaver bench            the gateway's fixed benchmark scenarios, as JSON

chat, rooms, search, who, load, simulate and bench talk to the gateway at --url
(default $PALAVER_URL or http://127.0.0.1:8080, where 'make dev' serves it), as
--name NAME (dev login), with --token-file FILE, or with the token in
$PALAVER_TOKEN.

  echo "build passed" | palaver chat --room lobby --name ci

Run 'palaver <command> -h' for a command's flags; docs/cli.md has more.
`

func main() {
	ctx, stop := runner.SignalContext(context.Background())
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "palaver:", err)
		os.Exit(chatcli.ExitCode(err))
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
	case "chat":
		return chat(ctx, args[1:])
	case "rooms":
		return rooms(ctx, args[1:])
	case "search":
		return search(ctx, args[1:])
	case "load":
		return load(ctx, args[1:])
	case "who":
		return who(ctx, args[1:])
	case "simulate":
		return simulateCmd(ctx, args[1:])
	case "bench":
		return benchCmd(ctx, args[1:])
	default:
		fmt.Fprint(os.Stderr, usage)
		return &chatcli.UsageError{Msg: fmt.Sprintf("unknown command %q", args[0])}
	}
}

func dev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("palaver dev", flag.ContinueOnError)
	var cfg devmode.Config
	var logCfg ops.LogConfig
	var env envflag.Vars
	env.Int(fs, &cfg.KafkaPort, "kafka-port", "PALAVER_DEV_KAFKA_PORT", 9092, "port of the embedded Kafka-protocol broker on 127.0.0.1; 0 takes any free port")
	fs.StringVar(&cfg.Listen, "listen", envflag.String("PALAVER_DEV_LISTEN", devmode.DefaultListen), "address of the gateway: web UI, WebSocket and HTTP API; anyone who reaches it can log in as anyone ($PALAVER_DEV_LISTEN)")
	fs.StringVar(&cfg.OpsAddr, "ops-addr", envflag.String("PALAVER_OPS_ADDR", "127.0.0.1:9464"), "address of /metrics, /healthz and /readyz ($PALAVER_OPS_ADDR)")
	fs.StringVar(&cfg.DataDir, "data-dir", envflag.String("PALAVER_DEV_DATA", ".palaver-dev"), "where the embedded broker keeps its data; empty keeps it in memory ($PALAVER_DEV_DATA)")
	fs.StringVar(&cfg.RoomsDir, "rooms", envflag.String("PALAVER_DEV_ROOMS", "k8s/samples"), "directory of ChatRoom manifests to provision ($PALAVER_DEV_ROOMS)")
	logCfg.RegisterFlags(fs, ops.LogConfig{Format: "text", Level: "info"})
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := env.Err(); err != nil {
		return &chatcli.UsageError{Msg: err.Error()}
	}
	log, err := logCfg.NewLogger(os.Stderr)
	if err != nil {
		return &chatcli.UsageError{Msg: err.Error()}
	}
	return devmode.Run(ctx, cfg, log, os.Stdout)
}

func chat(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("palaver chat", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: palaver chat --room ROOM [flags]

Prints the room's messages (15:04:05 <Ada> hello) and sends each line of
stdin as a message; exits when stdin ends, every line was acknowledged and
the history asked for (--last, --from-beginning) was printed. Reconnects by
itself, without missing or repeating a message. /help, /who and /quit are
answered locally, never sent; at a terminal, a line editor keeps the line
being typed below the room.

Exit codes: 0 ok, 1 failure, 2 usage, 3 no such room, 4 unauthorized, 5 forbidden.

Flags:
`)
		fs.PrintDefaults()
	}
	o := chatcli.ChatOptions{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}
	o.Conn.RegisterFlags(fs)
	fs.StringVar(&o.Room, "room", "", "the room to chat in (required)")
	fs.IntVar(&o.Last, "last", 0, "first print the latest N messages (at most 500)")
	fs.BoolVar(&o.FromBeginning, "from-beginning", false, "first print the room's stored history")
	fs.BoolVar(&o.Verbose, "verbose", false, "report each ack (partition and offset) and every retry on stderr")
	fs.BoolVar(&o.Quiet, "quiet", false, "do not report others joining and leaving on stderr")
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.Room == "" {
		fs.Usage()
		return &chatcli.UsageError{Msg: "chat: --room is required"}
	}
	restore := chatcli.UseTerminal(&o, os.Stdin, os.Stdout, os.Stderr)
	defer restore()
	return chatcli.Chat(ctx, o)
}

func rooms(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("palaver rooms", flag.ContinueOnError)
	o := chatcli.RoomsOptions{Out: os.Stdout}
	o.Conn.RegisterFlags(fs)
	fs.BoolVar(&o.JSON, "json", false, "print JSON ({\"rooms\":[...]}) instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	return chatcli.Rooms(ctx, o)
}

func search(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("palaver search", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: palaver search --room ROOM [flags] QUERY...

Prints the room's messages that contain every word of the query, newest
first, like palaver chat prints messages, the matched words between
asterisks. A word ending in * matches as a prefix (deploy* finds deployed).

Flags:
`)
		fs.PrintDefaults()
	}
	o := chatcli.SearchOptions{Out: os.Stdout}
	o.Conn.RegisterFlags(fs)
	fs.StringVar(&o.Room, "room", "", "the room to search (required)")
	fs.StringVar(&o.Sender, "sender", "", "only this sender's messages (a user id)")
	fs.IntVar(&o.Limit, "limit", 20, "most results printed")
	fs.BoolVar(&o.JSON, "json", false, "print JSON ({\"results\":[...]}) instead of lines")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &chatcli.UsageError{Msg: err.Error()}
	}
	o.Query = strings.Join(fs.Args(), " ")
	return chatcli.Search(ctx, o)
}

func who(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("palaver who", flag.ContinueOnError)
	o := chatcli.WhoOptions{Out: os.Stdout}
	o.Conn.RegisterFlags(fs)
	fs.StringVar(&o.Room, "room", "", "the room (required)")
	fs.BoolVar(&o.JSON, "json", false, "print JSON ({\"count\":2,\"users\":[...],\"typing\":[...]}) instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.Room == "" {
		fs.Usage()
		return &chatcli.UsageError{Msg: "who: --room is required"}
	}
	return chatcli.Who(ctx, o)
}

func load(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("palaver load", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: palaver load --room ROOM [flags]

Joins --members connections to the room; --senders of them (all by default)
take turns sending --rate messages a second in total, first for --warmup,
then --count measured messages. Every member times every message from its
send to its arrival and checks it arrives exactly once. Prints the latency
percentiles; exits 1 if a message was lost, repeated or refused, or a member
was disconnected (other exit codes as for chat). With --name, member i logs
in as NAME-i (dev mode); with a token, every member is the token's user.

Each sender must stay within the gateway's sends_per_second (10 by default):
the defaults (100 members, 1,000 messages/s) are 10 each.

Flags:
`)
		fs.PrintDefaults()
	}
	o := chatcli.LoadOptions{Load: loadgen.DefaultConfig(), Out: os.Stdout, Err: os.Stderr}
	o.Conn.RegisterFlags(fs)
	fs.StringVar(&o.Load.Room, "room", "", "the room to load (required; it must exist)")
	fs.IntVar(&o.Load.Members, "members", o.Load.Members, "connections joined to the room")
	fs.IntVar(&o.Load.Senders, "senders", 0, "how many members send (0: all)")
	fs.Float64Var(&o.Load.Rate, "rate", o.Load.Rate, "messages a second, all senders together")
	fs.IntVar(&o.Load.Count, "count", o.Load.Count, "messages measured")
	fs.DurationVar(&o.Load.Warmup, "warmup", o.Load.Warmup, "send at the rate this long before measuring")
	fs.IntVar(&o.Load.TextBytes, "text-bytes", o.Load.TextBytes, "length of each message's text")
	fs.DurationVar(&o.Load.Drain, "drain", o.Load.Drain, "after the last send, wait at most this long for the last deliveries")
	fs.BoolVar(&o.JSON, "json", false, "print the result as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.Load.Room == "" {
		fs.Usage()
		return &chatcli.UsageError{Msg: "load: --room is required (dev mode has a room for load tests: --room " + devmode.ScratchRoom + ")"}
	}
	l := o.Load
	switch {
	case l.Members < 1:
		return &chatcli.UsageError{Msg: "--members must be at least 1"}
	case l.Senders < 0 || l.Senders > l.Members:
		return &chatcli.UsageError{Msg: fmt.Sprintf("--senders must be 0 (all) to --members (%d)", l.Members)}
	case l.Rate <= 0:
		return &chatcli.UsageError{Msg: "--rate must be above 0"}
	case l.Count < 1:
		return &chatcli.UsageError{Msg: "--count must be at least 1"}
	case l.Warmup < 0 || l.Drain < 0:
		return &chatcli.UsageError{Msg: "--warmup and --drain must not be negative"}
	case l.TextBytes < 1:
		return &chatcli.UsageError{Msg: "--text-bytes must be at least 1"}
	}
	return chatcli.Load(ctx, o)
}

// parse parses the flags of a command, which takes no arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &chatcli.UsageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return &chatcli.UsageError{Msg: fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}
