// Command kafkalocal runs a real Apache Kafka cluster in the background for development:
// the command behind `make kafka-up` and `make kafka-down`.
//
//	go run ./kafkatest/kafkalocal up [-nodes 1|3]
//	go run ./kafkatest/kafkalocal down
//	go run ./kafkatest/kafkalocal status
//
// The brokers run detached in <repo>/.cache/kafka/local and survive this command; `up`
// prints the export line that points the tests at them (PALAVER_KAFKA_BOOTSTRAP), so that
// repeated test runs skip the broker start. Every `up` after a `down` starts a fresh,
// empty cluster. Node i listens on 127.0.0.1:19092+i.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/kafkatest"
)

// basePort is node 0's client port: fixed, so that configs and muscle memory can rely on
// it, and off Kafka's 9092 so that it does not collide with a Kafka run by other means.
const basePort = 19092

const usage = `usage: kafkalocal up [-nodes 1|3] [-v] | down | status

  up      start a detached Kafka ` + kafkatest.Version + ` cluster (KRaft) on 127.0.0.1:19092..., or
          print its address if it is already running
  down    stop it (SIGTERM, then SIGKILL)
  status  print its address if it is running; exit 1 if not
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafkalocal:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command")
	}
	root, err := kafkatest.RepoRoot()
	if err != nil {
		return err
	}
	st := state{dir: filepath.Join(root, ".cache", "kafka", "local")}

	switch args[0] {
	case "up":
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		nodes := fs.Int("nodes", 1, "number of nodes: 1 or 3")
		verbose := fs.Bool("v", false, "log the harness's steps")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *nodes != 1 && *nodes != 3 {
			return fmt.Errorf("-nodes %d: want 1 or 3", *nodes)
		}
		return up(ctx, st, *nodes, *verbose)
	case "down":
		return down(st)
	case "status":
		bootstrap, ok := st.running()
		if !ok {
			return errors.New("not running (start it with `kafkalocal up`)")
		}
		printAddress(bootstrap)
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func up(ctx context.Context, st state, nodes int, verbose bool) error {
	if bootstrap, ok := st.running(); ok {
		printAddress(bootstrap)
		return nil
	}
	// A half-dead cluster (a node crashed, the machine slept) is replaced, not patched.
	if err := down(st); err != nil {
		return err
	}

	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	ports := make([]int, nodes)
	for i := range ports {
		ports[i] = basePort + i
	}
	began := time.Now()
	c, err := kafkatest.Start(ctx, kafkatest.Options{
		Nodes:  nodes,
		Dir:    st.dir,
		Ports:  ports,
		Detach: true,
		// It serves test runs and benchmarks for hours: full JIT and ZGC.
		LongLived: true,
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if errors.Is(err, kafkatest.ErrPortInUse) {
		return fmt.Errorf("%w\nkafkalocal needs 127.0.0.1:%s: stop what listens there (another Kafka?) and retry", err, portRange(nodes))
	}
	if err != nil {
		return err
	}
	if err := st.save(c.Pids(), c.Bootstrap()); err != nil {
		_ = c.Stop()
		return err
	}
	fmt.Fprintf(os.Stderr, "started in %s; logs in %s\n", time.Since(began).Round(time.Millisecond), st.dir)
	printAddress(c.Bootstrap())
	return nil
}

func portRange(nodes int) string {
	if nodes == 1 {
		return strconv.Itoa(basePort)
	}
	return fmt.Sprintf("%d-%d", basePort, basePort+nodes-1)
}

func printAddress(bootstrap string) {
	fmt.Printf("Kafka %s (KRaft) listening on %s\n", kafkatest.Version, bootstrap)
	fmt.Printf("export %s=%s\n", kafkatest.EnvBootstrap, bootstrap)
}

// down stops the nodes listed in the pid file: SIGTERM to each node's process group (the
// broker leads its own session), then SIGKILL to those still alive after the grace period.
func down(st state) error {
	pids := st.pids()
	var live []int
	for _, pid := range pids {
		if isBroker(pid) {
			live = append(live, pid)
			_ = syscall.Kill(-pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(live) > 0 && time.Now().Before(deadline) {
		live = alive(live)
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range live {
		fmt.Fprintf(os.Stderr, "node pid %d did not stop in 20s, killing it\n", pid)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(10 * time.Second); len(live) > 0 && time.Now().Before(deadline); {
		live = alive(live)
		time.Sleep(100 * time.Millisecond)
	}
	if len(live) > 0 {
		return fmt.Errorf("broker pids %v still running after SIGKILL", live)
	}
	if len(pids) > 0 {
		fmt.Fprintln(os.Stderr, "Kafka stopped")
	}
	return st.clear()
}

func alive(pids []int) []int {
	var out []int
	for _, pid := range pids {
		if isBroker(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// isBroker reports whether pid is a live Kafka broker, so that a stale pid file never
// makes `down` signal an unrelated process that reused the pid.
func isBroker(pid int) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		if procExists() {
			return false // gone
		}
		// No /proc (macOS): trust the pid file if the process exists.
		return syscall.Kill(pid, 0) == nil
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// A zombie still has a cmdline entry for a moment; it is already dead.
		if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
			return false
		}
	}
	return bytes.Contains(cmdline, []byte("kafka.Kafka"))
}

func procExists() bool {
	_, err := os.Stat("/proc/self")
	return err == nil
}

// state is the local cluster's bookkeeping in its directory: the node pids and the
// bootstrap address.
type state struct{ dir string }

func (s state) pidFile() string       { return filepath.Join(s.dir, "pids") }
func (s state) bootstrapFile() string { return filepath.Join(s.dir, "bootstrap") }

func (s state) save(pids []int, bootstrap string) error {
	var b strings.Builder
	for _, pid := range pids {
		fmt.Fprintln(&b, pid)
	}
	if err := os.WriteFile(s.pidFile(), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("save pids: %w", err)
	}
	if err := os.WriteFile(s.bootstrapFile(), []byte(bootstrap+"\n"), 0o644); err != nil {
		return fmt.Errorf("save bootstrap address: %w", err)
	}
	return nil
}

func (s state) clear() error {
	for _, p := range []string{s.pidFile(), s.bootstrapFile()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("clear state: %w", err)
		}
	}
	return nil
}

func (s state) pids() []int {
	b, err := os.ReadFile(s.pidFile())
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// running returns the bootstrap address if every recorded node is alive and answers.
func (s state) running() (string, bool) {
	pids := s.pids()
	if len(pids) == 0 || len(alive(pids)) != len(pids) {
		return "", false
	}
	b, err := os.ReadFile(s.bootstrapFile())
	if err != nil {
		return "", false
	}
	bootstrap := strings.TrimSpace(string(b))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", strings.Split(bootstrap, ",")[0])
	if err != nil {
		return "", false
	}
	conn.Close()
	return bootstrap, true
}
