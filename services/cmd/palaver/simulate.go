package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"palaver.dev/services/internal/bench"
	"palaver.dev/services/internal/chatcli"
	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/simulate"
	"palaver.dev/services/kafkabus"
)

func simulateCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("palaver simulate", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: palaver simulate [flags]

Plays a whole chat through the gateway's WebSocket API: --people simulated
people in the rooms (the first one hot, the others quiet), typing before
they send, answering each other, sending in bursts, moving between rooms,
--rate messages a second on average. Each person resumes with its cursors
when its connection is lost and retries its sends. Prints a progress line
every second and a summary at the end; stops after --duration or
--max-messages. Exits 1 if a message was read twice or out of order, or a
send was never acknowledged.

Without --rooms it makes --scratch-rooms rooms of its own through Kafka at
--kafka-bootstrap (dev mode's embedded broker by default) and removes them
at the end, so it never floods the rooms people chat in.

Flags:
`)
		fs.PrintDefaults()
	}
	o := chatcli.SimulateOptions{Sim: simulate.DefaultConfig(), Out: os.Stdout, Err: os.Stderr}
	o.Conn.RegisterFlags(fs)
	o.Kafka.RegisterFlags(fs, kafkabus.Config{Brokers: []string{"127.0.0.1:9092"}, ClientID: "palaver-simulate"})
	fs.Func("rooms", "comma-separated existing rooms to chat in, the hot one first (default: scratch rooms)", func(s string) error {
		o.Sim.Rooms = envflag.List(s)
		return nil
	})
	fs.IntVar(&o.ScratchRooms, "scratch-rooms", 20, "without --rooms, how many scratch rooms to make")
	fs.IntVar(&o.Sim.People, "people", o.Sim.People, "simulated people")
	fs.Float64Var(&o.Sim.Rate, "rate", o.Sim.Rate, "messages a second on average, everyone together")
	fs.DurationVar(&o.Sim.Duration, "duration", o.Sim.Duration, "how long to chat")
	fs.IntVar(&o.Sim.MaxMessages, "max-messages", o.Sim.MaxMessages, "stop after this many messages")
	fs.Float64Var(&o.Sim.Hot, "hot", o.Sim.Hot, "share of the messages sent to the hot room (the first)")
	fs.Float64Var(&o.Sim.Reply, "reply", o.Sim.Reply, "chance that someone answers a message")
	fs.Float64Var(&o.Sim.Burst, "burst", o.Sim.Burst, "chance that a sender goes on with a few quick messages")
	fs.Float64Var(&o.Sim.Churn, "churn", o.Sim.Churn, "people a second who leave a room for another (negative: none)")
	fs.BoolVar(&o.Sim.NoTyping, "no-typing", false, "send no typing notices")
	fs.Uint64Var(&o.Sim.Seed, "seed", 0, "seed of the simulation's choices (0: random)")
	fs.BoolVar(&o.JSON, "json", false, "print the summary as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := o.Kafka.Validate(); err != nil {
		return &chatcli.UsageError{Msg: err.Error()}
	}
	return chatcli.Simulate(ctx, o)
}

func benchCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("palaver bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: palaver bench [flags]

Runs the gateway's fixed benchmark scenarios through its WebSocket API, the
members in this process, and prints a JSON report per scenario:

  A  one room of --a-members members at --a-rate messages a second
  B  one room of --b-members members at the highest rate every member keeps
     up with (from --b-rate, doubled or halved, then bisected, up to
     --b-steps rates)
  C  --c-connections idle connections: the gateway's memory per connection
  D  --d-rooms rooms of --d-members members, --d-rate messages a second each

Each scenario runs in scratch rooms made through Kafka at --kafka-bootstrap
(dev mode's embedded broker by default) and removed at the end. With
--gateway-pid (a gateway on this machine), the reports add the gateway's CPU
per 1,000 deliveries and its resident memory per connection, read from
/proc. Exits 1 if a message was lost, repeated or reordered.

Flags:
`)
		fs.PrintDefaults()
	}
	o := chatcli.BenchOptions{Bench: bench.DefaultOptions(), Out: os.Stdout, Err: os.Stderr}
	o.Conn.RegisterFlags(fs)
	o.Kafka.RegisterFlags(fs, kafkabus.Config{Brokers: []string{"127.0.0.1:9092"}, ClientID: "palaver-bench"})
	scenarios := fs.String("scenarios", "A,B,C,D", "comma-separated scenarios to run, in order")
	b := &o.Bench
	fs.IntVar(&b.GatewayPID, "gateway-pid", 0, "process id of the gateway, to read its CPU and memory from /proc")
	fs.IntVar(&b.AMembers, "a-members", b.AMembers, "A: members of the room")
	fs.Float64Var(&b.ARate, "a-rate", b.ARate, "A: messages a second")
	fs.IntVar(&b.ACount, "a-count", b.ACount, "A: messages measured")
	fs.IntVar(&b.BMembers, "b-members", b.BMembers, "B: members of the room")
	fs.Float64Var(&b.BRate, "b-rate", b.BRate, "B: first rate tried, in messages a second")
	fs.IntVar(&b.BSteps, "b-steps", b.BSteps, "B: most rates tried (doubled or halved from --b-rate, then bisected)")
	fs.DurationVar(&b.BDuration, "b-duration", b.BDuration, "B: how long each rate is measured")
	fs.IntVar(&b.CConnections, "c-connections", b.CConnections, "C: idle connections")
	fs.IntVar(&b.DRooms, "d-rooms", b.DRooms, "D: rooms")
	fs.IntVar(&b.DMembers, "d-members", b.DMembers, "D: members of each room")
	fs.Float64Var(&b.DRate, "d-rate", b.DRate, "D: messages a second in each room")
	fs.DurationVar(&b.DDuration, "d-duration", b.DDuration, "D: how long to send")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := o.Kafka.Validate(); err != nil {
		return &chatcli.UsageError{Msg: err.Error()}
	}
	o.Scenarios = envflag.List(*scenarios)
	return chatcli.Bench(ctx, o)
}
