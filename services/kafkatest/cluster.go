// Package kafkatest runs the real Apache Kafka broker for Palaver's integration tests and
// for `make kafka-up`.
//
// Palaver's promises (an acked message survives the loss of a broker, a room's topic keeps
// total order) are promises about Kafka itself, so tests run against the broker that
// production runs under Strimzi rather than an emulation: the jars come from Maven Central
// (hack/kafka/pom.xml, cached in <repo>/.cache/kafka/<Version>/libs) and run on the
// machine's Java 17+ in KRaft mode, one or three nodes on free loopback ports.
//
// The core type, Cluster, does not depend on package testing so that a command can use it;
// the helpers in testing.go (Shared, Main, NewCluster, CreateTopic) wrap it for tests.
package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
)

// Version is the Apache Kafka release the harness runs: Strimzi 1.2's default, so that
// tests see the broker production sees. hack/kafka/pom.xml pins the same version.
const Version = "4.3.1"

// AuthorizerLog is the file in a node's directory (see Cluster.Dir) where a cluster
// started with Options.SCRAM logs its authorizer's decisions: a line per action allowed
// ("Principal = User:u is Allowed operation = ... based on rule MatchingAcl(...)") or
// denied.
const AuthorizerLog = "authorizer.log"

// DefaultStartTimeout is Options.StartTimeout when it is zero.
const DefaultStartTimeout = 3 * time.Minute

// Errors returned by the harness. Each message says what to do about it, since the person
// reading it is usually running `make test` on a machine that lacks something.
var (
	ErrNoRepoRoot       = errors.New("kafkatest: no go.work in the working directory or above it (run from inside the Palaver repository)")
	ErrJavaNotFound     = errors.New("kafkatest: java not found: install Java 17 or newer (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
	ErrJavaTooOld       = errors.New("kafkatest: the Kafka 4 broker needs Java 17 or newer: install it or point JAVA_HOME at it")
	ErrMavenNotFound    = errors.New("kafkatest: mvn not found: install Maven 3 (e.g. apt-get install maven) to fetch the Kafka broker jars")
	ErrBrokerJarMissing = errors.New("kafkatest: Kafka broker jar missing")
	ErrNodeExited       = errors.New("kafkatest: broker process exited")
	ErrPortInUse        = errors.New("kafkatest: port already in use")
	ErrNotReady         = errors.New("kafkatest: cluster not ready before the deadline")
	ErrNoSuchNode       = errors.New("kafkatest: no such node")
	ErrNodeRunning      = errors.New("kafkatest: node is running")
	ErrStopped          = errors.New("kafkatest: cluster stopped")
)

// Options configures Start. The zero value starts one node in a fresh temporary directory.
type Options struct {
	// Nodes is the number of combined broker+controller nodes, 1 (the default) or 3 for
	// replication and failover tests; up to 5 are accepted. Node i has node.id i.
	Nodes int

	// Dir is the working directory holding one subdirectory per node (config, data, logs).
	// It is created if missing; existing node directories are wiped. Empty means a new
	// directory under os.TempDir. Stop leaves it in place: the caller decides whether the
	// logs are worth keeping.
	Dir string

	// Ports fixes the client (PLAINTEXT) port of node i when Ports[i] is non-zero; other
	// ports are picked free on 127.0.0.1. A fixed port that is taken fails Start with
	// ErrPortInUse instead of moving elsewhere.
	Ports []int

	// Config adds or overrides broker properties on every node (e.g.
	// "log.retention.check.interval.ms").
	Config map[string]string

	// SCRAM adds a listener with SASL SCRAM-SHA-512 authentication on every node
	// (Cluster.SCRAMBootstrap; plaintext, no TLS) and turns on Kafka's authorizer
	// (StandardAuthorizer), for tests of credentials and ACLs: a user on that
	// listener may do what ACLs allow it and nothing else. The PLAINTEXT and
	// controller listeners, which the harness and the nodes themselves use, stay
	// unauthenticated and act as a super user (User:ANONYMOUS), so that a client of
	// Bootstrap creates the users' credentials (AlterUserScramCredentials) and their
	// ACLs (CreateAcls). Each node logs the authorizer's decisions, the ACL behind
	// every allowed action included, to AuthorizerLog in its directory.
	SCRAM bool

	// JVMArgs are appended to the harness's JVM flags; a later -Xmx wins.
	JVMArgs []string

	// LongLived tunes the JVM for a broker that serves for hours (kafkalocal, benchmarks)
	// rather than for one test binary: the full JIT (C2) and ZGC. C2 costs CPU for the
	// first minute and then allocates far less than C1 code (escape analysis); ZGC's
	// pauses stay under a millisecond where G1's young pauses took 12 to 25 ms on the
	// 2-core machine docs/BENCHMARKS.md describes, and each one delayed every message in
	// flight.
	LongLived bool

	// Logger receives the harness's progress (fetching jars, nodes starting and stopping),
	// not the broker log, which goes to files in each node's directory. Nil discards.
	Logger *slog.Logger

	// StartTimeout bounds Start and StartNode once the jars are present: formatting,
	// launching and waiting until every node serves metadata. Default 3 min, generous
	// because tests often start brokers while other packages compile and test: on a
	// loaded 2-core machine three JVMs take a minute before they log anything. A node
	// whose process exits fails the start at once.
	StartTimeout time.Duration

	// StopTimeout bounds the graceful shutdown after SIGTERM, before SIGKILL. Default 15 s.
	StopTimeout time.Duration

	// Hosts gives node i the address Hosts[i] for its client and controller listeners
	// (bound, advertised and in the quorum's voters) when it is non-empty; the others
	// listen on 127.0.0.1. For tests that put each node on a network of its own, such as
	// a network namespace per node (see Wrap), and cut one off from the others. Ports
	// are still picked free on 127.0.0.1 in the caller's network: in a network of its
	// own a node finds them free as well.
	Hosts []string

	// Wrap, when set, returns the command line that starts node i's broker process in
	// place of argv (the JVM's), e.g. `ip netns exec <name>` followed by argv to run
	// it in a network namespace. The wrapper must exec argv in its own process (as ip
	// netns exec does) so that stopping and killing the node reach the JVM.
	Wrap func(node int, argv []string) []string

	// Detach lets the broker processes outlive this process (a new session and no
	// parent-death signal), for `make kafka-up`. Without it, the processes are killed with
	// this process on Linux, so a test binary that crashes leaves no JVM behind.
	Detach bool
}

// Cluster is a running set of Kafka nodes. Its methods are safe for concurrent use.
type Cluster struct {
	opts      Options
	dir       string
	java      string
	libs      string
	clusterID string
	log       *slog.Logger

	// cdsArgs maps the class-data archive (see ensureCDS); recordArchive, when set, makes
	// the broker write one instead.
	cdsArgs       []string
	recordArchive string

	mu      sync.Mutex
	nodes   []*node
	stopped bool
}

type node struct {
	id             int
	dir            string
	host           string // the listeners' address from Options.Hosts; empty is 127.0.0.1
	port           int
	controllerPort int
	scramPort      int // the SCRAM listener's, 0 without Options.SCRAM
	fixedPort      bool

	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // the process's exit status, valid after done is closed
}

func (n *node) addr() string { return net.JoinHostPort(n.hostname(), strconv.Itoa(n.port)) }

func (n *node) controllerAddr() string {
	return net.JoinHostPort(n.hostname(), strconv.Itoa(n.controllerPort))
}

func (n *node) scramAddr() string { return net.JoinHostPort(n.hostname(), strconv.Itoa(n.scramPort)) }

func (n *node) hostname() string {
	if n.host == "" {
		return "127.0.0.1"
	}
	return n.host
}

// authorizerLog is the file of the node's authorizer decisions (Options.SCRAM), or empty.
func (n *node) authorizerLog() string {
	if n.scramPort == 0 {
		return ""
	}
	return filepath.Join(n.dir, AuthorizerLog)
}

func (n *node) running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Start fetches the broker jars if needed, then formats and starts a cluster and waits
// until every node serves metadata listing all brokers and a controller. ctx bounds the
// whole start, jar fetch included; Options.StartTimeout bounds the part after the fetch.
// On failure no process is left running and the error carries the tail of the broker logs.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	if opts.Nodes < 1 || opts.Nodes > 5 {
		return nil, fmt.Errorf("kafkatest: %d nodes requested: want 1 to 5", opts.Nodes)
	}
	if len(opts.Ports) > opts.Nodes {
		return nil, fmt.Errorf("kafkatest: %d ports for %d nodes", len(opts.Ports), opts.Nodes)
	}
	if len(opts.Hosts) > opts.Nodes {
		return nil, fmt.Errorf("kafkatest: %d hosts for %d nodes", len(opts.Hosts), opts.Nodes)
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 15 * time.Second
	}
	// A fixed port that is taken fails now rather than after the jar fetch.
	for i, p := range opts.Ports {
		if p != 0 && !portFree(p) {
			return nil, fmt.Errorf("%w: 127.0.0.1:%d (fixed for node %d)", ErrPortInUse, p, i)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	java, javaVersion, err := findJava(ctx)
	if err != nil {
		return nil, err
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	libs, err := ensureJars(ctx, root, log)
	if err != nil {
		return nil, err
	}

	dir := opts.Dir
	if dir == "" {
		dir, err = os.MkdirTemp("", "palaver-kafka-")
		if err != nil {
			return nil, fmt.Errorf("kafkatest: create work dir: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kafkatest: create work dir: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("kafkatest: work dir: %w", err)
	}

	c := &Cluster{
		opts: opts, dir: dir, java: java, libs: libs, log: log,
		cdsArgs: ensureCDS(ctx, java, javaVersion, libs, log),
	}

	// Free ports are only free until somebody else binds them; with packages testing in
	// parallel that happens. A node that fails to bind is retried on new ports.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		err = c.start(ctx)
		if err == nil {
			return c, nil
		}
		c.killAll()
		if !errors.Is(err, ErrPortInUse) || attempt == attempts || c.allPortsFixed() {
			return nil, err
		}
		log.Warn("kafkatest: port taken while starting, retrying on new ports", "attempt", attempt, "err", err)
	}
}

func (c *Cluster) allPortsFixed() bool {
	for i := range c.opts.Nodes {
		if i >= len(c.opts.Ports) || c.opts.Ports[i] == 0 {
			return false
		}
	}
	return true
}

// start runs one attempt of Start: ports, config, format, launch, wait.
func (c *Cluster) start(ctx context.Context) error {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()

	n := c.opts.Nodes
	perNode := 2
	if c.opts.SCRAM {
		perNode = 3
	}
	ports, err := freePorts(perNode * n)
	if err != nil {
		return fmt.Errorf("kafkatest: %w", err)
	}
	nodes := make([]*node, n)
	for i := range n {
		nd := &node{
			id:             i,
			dir:            filepath.Join(c.dir, fmt.Sprintf("node-%d", i)),
			port:           ports[perNode*i],
			controllerPort: ports[perNode*i+1],
		}
		if c.opts.SCRAM {
			nd.scramPort = ports[perNode*i+2]
		}
		if i < len(c.opts.Hosts) {
			nd.host = c.opts.Hosts[i]
		}
		if i < len(c.opts.Ports) && c.opts.Ports[i] != 0 {
			nd.port, nd.fixedPort = c.opts.Ports[i], true
			if !portFree(nd.port) {
				return fmt.Errorf("%w: 127.0.0.1:%d (fixed for node %d)", ErrPortInUse, nd.port, i)
			}
		}
		nodes[i] = nd
	}
	c.clusterID, err = newClusterID()
	if err != nil {
		return fmt.Errorf("kafkatest: %w", err)
	}

	for i, nd := range nodes {
		if err := os.RemoveAll(nd.dir); err != nil {
			return fmt.Errorf("kafkatest: clean node %d dir: %w", i, err)
		}
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			return fmt.Errorf("kafkatest: create node %d dir: %w", i, err)
		}
		props := brokerConfig(i, nodes, filepath.Join(nd.dir, "data"), c.opts.Config)
		if err := writeProperties(filepath.Join(nd.dir, "server.properties"), props); err != nil {
			return fmt.Errorf("kafkatest: node %d: %w", i, err)
		}
		if err := os.WriteFile(filepath.Join(nd.dir, "log4j2.properties"),
			[]byte(log4j2Config(filepath.Join(nd.dir, "server.log"), nd.authorizerLog())), 0o644); err != nil {
			return fmt.Errorf("kafkatest: node %d: write log4j2 config: %w", i, err)
		}
	}

	// Formatting starts one JVM per node; on a small machine running them side by side
	// saves about a second per node.
	formatBegan := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Go(func() { errs[i] = c.format(ctx, nd) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.log.Debug("kafkatest: storage formatted", "took", time.Since(formatBegan).Round(time.Millisecond))

	c.mu.Lock()
	c.nodes = nodes
	c.stopped = false
	c.mu.Unlock()
	for _, nd := range nodes {
		if err := c.launch(nd); err != nil {
			return err
		}
	}
	c.log.Info("kafkatest: nodes launched, waiting for them to serve", "nodes", n, "dir", c.dir)
	if err := c.waitReady(ctx, nodes); err != nil {
		return err
	}
	c.log.Info("kafkatest: cluster ready", "version", Version, "bootstrap", c.Bootstrap(),
		"took", time.Since(began).Round(time.Millisecond))
	return nil
}

// storageToolClass is the main class behind bin/kafka-storage.sh in Kafka 4.x.
const storageToolClass = "kafka.tools.StorageTool"

// brokerClass is the main class behind bin/kafka-server-start.sh.
const brokerClass = "kafka.Kafka"

// format writes the node's meta.properties and bootstrap metadata. The quorum is static
// (controller.quorum.voters), so the plain format command applies: --standalone and
// --initial-controllers are for dynamic quorums and refuse a voters list.
func (c *Cluster) format(ctx context.Context, nd *node) error {
	args := append(c.jvmArgs(nd, "format"),
		"-cp", c.classpath(), storageToolClass, "format",
		"-t", c.clusterID, "-c", filepath.Join(nd.dir, "server.properties"))
	cmd := exec.CommandContext(ctx, c.java, args...)
	cmd.Dir = nd.dir
	cmd.SysProcAttr = sysProcAttr(false)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kafkatest: format node %d storage: %w\n%s", nd.id, err, tail(string(out), 30))
	}
	return nil
}

func (c *Cluster) classpath() string { return filepath.Join(c.libs, "*") }

// jvmArgs returns the JVM flags for a node's process. The heap is small and, unless
// Options.LongLived, the JIT stops at C1: test brokers live for seconds to minutes and
// handle little traffic, so start-up time and CPU left to the tests matter more than
// peak throughput.
func (c *Cluster) jvmArgs(nd *node, role string) []string {
	args := []string{"-Xms64m", "-Xmx512m"}
	if c.opts.LongLived {
		args = append(args, "-XX:+UseZGC")
	} else {
		args = append(args, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:TieredStopAtLevel=1")
	}
	args = append(args,
		"-XX:+ExitOnOutOfMemoryError",
		"-XX:-UsePerfData",
		"-Djava.awt.headless=true",
		"-Dkafka.logs.dir="+nd.dir,
	)
	args = append(args, c.cdsArgs...)
	if role == "broker" && c.recordArchive != "" {
		args = append(args, "-XX:ArchiveClassesAtExit="+c.recordArchive)
	}
	if role == "broker" {
		args = append(args, "-Dlog4j2.configurationFile="+filepath.Join(nd.dir, "log4j2.properties"))
	} else {
		// The storage tool prints what matters on stdout; keep log4j from warning that
		// it has no configuration.
		args = append(args, "-Dlog4j2.level=WARN", "-Dlog4j2.StatusLogger.level=OFF")
	}
	return append(args, c.opts.JVMArgs...)
}

// launch starts the node's broker process with its stdout and stderr in console.log
// (JVM errors before logging starts land there; the broker log is server.log).
func (c *Cluster) launch(nd *node) error {
	console, err := os.OpenFile(filepath.Join(nd.dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("kafkatest: node %d console log: %w", nd.id, err)
	}
	defer console.Close() // the child has its own descriptor once started

	argv := append([]string{c.java}, c.jvmArgs(nd, "broker")...)
	argv = append(argv, "-cp", c.classpath(), brokerClass, filepath.Join(nd.dir, "server.properties"))
	if c.opts.Wrap != nil {
		argv = c.opts.Wrap(nd.id, argv)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = nd.dir
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.SysProcAttr = sysProcAttr(c.opts.Detach)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("kafkatest: start node %d: %w", nd.id, err)
	}
	done := make(chan struct{})
	c.mu.Lock()
	nd.cmd, nd.done, nd.err = cmd, done, nil
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		nd.err = err
		c.mu.Unlock()
		close(done)
	}()
	c.log.Debug("kafkatest: node launched", "node", nd.id, "pid", cmd.Process.Pid, "addr", nd.addr())
	return nil
}

// waitReady polls until each of the given nodes answers a metadata request that lists
// all of them as brokers and names a controller: a broker appears in metadata only once
// the controller has unfenced it, so this is the point where clients can use it. A node
// whose process exits fails the wait at once with its log. At the deadline the error
// says what each node answered last and how long the wait took.
func (c *Cluster) waitReady(ctx context.Context, want []*node) error {
	began := time.Now()
	ids := make([]int, len(want))
	for i, nd := range want {
		ids[i] = nd.id
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var probes []string // the last round's failures
	for {
		for _, nd := range want {
			select {
			case <-nd.done:
				return c.exitError(nd)
			default:
			}
		}
		errs := make([]error, len(want))
		var wg sync.WaitGroup
		for i, nd := range want {
			wg.Go(func() { errs[i] = probe(ctx, nd.addr(), ids) })
		}
		wg.Wait()
		var failed []string
		for i, nd := range want {
			if errs[i] != nil {
				failed = append(failed, fmt.Sprintf("node %d (%s): %v", nd.id, nd.addr(), errs[i]))
			}
		}
		if len(failed) == 0 {
			return nil
		}
		if ctx.Err() == nil || probes == nil {
			probes = failed // a round cut short by the deadline says less than the one before
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w after %s waiting for %d nodes to serve (last probes: %s)\n%s",
				ErrNotReady, ctx.Err(), time.Since(began).Round(time.Second), len(want),
				strings.Join(probes, "; "), c.logTails(want, 20))
		case <-tick.C:
		}
	}
}

// probe asks the broker at addr for metadata and checks that it lists every broker in ids
// and a controller.
func probe(ctx context.Context, addr string, ids []int) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := (&kafka.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	brokers, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	for _, id := range ids {
		if !slices.ContainsFunc(brokers, func(b kafka.Broker) bool { return b.ID == id }) {
			return fmt.Errorf("broker %d not yet in metadata (%d brokers)", id, len(brokers))
		}
	}
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	if ctrl.ID < 0 {
		return errors.New("no controller yet")
	}
	return nil
}

// exitError describes a node whose process has exited, with the tail of its logs.
func (c *Cluster) exitError(nd *node) error {
	c.mu.Lock()
	status := nd.err
	c.mu.Unlock()
	logs := c.logTails([]*node{nd}, 40)
	if status == nil {
		status = errors.New("exit status 0")
	}
	err := fmt.Errorf("%w: node %d (%s): %w", ErrNodeExited, nd.id, nd.addr(), status)
	if strings.Contains(logs, "Address already in use") {
		err = fmt.Errorf("%w: %w", ErrPortInUse, err)
	}
	return fmt.Errorf("%w\n%s", err, logs)
}

// Bootstrap returns the client addresses of all nodes, comma-separated, for a client's
// bootstrap.servers (stopped nodes included: clients skip them).
func (c *Cluster) Bootstrap() string { return strings.Join(c.Brokers(), ",") }

// Brokers returns the client address (127.0.0.1:port, or Options.Hosts[i]:port) of each
// node; index i is node.id i.
func (c *Cluster) Brokers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	addrs := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		addrs[i] = nd.addr()
	}
	return addrs
}

// SCRAMBootstrap returns the addresses of every node's SCRAM listener (see
// Options.SCRAM), comma-separated; empty without it.
func (c *Cluster) SCRAMBootstrap() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var addrs []string
	for _, nd := range c.nodes {
		if nd.scramPort != 0 {
			addrs = append(addrs, nd.scramAddr())
		}
	}
	return strings.Join(addrs, ",")
}

// Dir returns the cluster's working directory: node-<i>/ holds each node's
// server.properties, data/, server.log (the broker log) and console.log (stdout/stderr).
func (c *Cluster) Dir() string { return c.dir }

// Pids returns the process id of each running node, 0 for a stopped one. With
// Options.Detach each is also the id of the node's process group.
func (c *Cluster) Pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := make([]int, len(c.nodes))
	for i, nd := range c.nodes {
		if nd.running() {
			pids[i] = nd.cmd.Process.Pid
		}
	}
	return pids
}

// Running reports whether node i's process is alive.
func (c *Cluster) Running(i int) bool {
	nd, err := c.node(i)
	if err != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return nd.running()
}

func (c *Cluster) node(i int) (*node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		return nil, fmt.Errorf("%w: %d (cluster has %d)", ErrNoSuchNode, i, len(c.nodes))
	}
	return c.nodes[i], nil
}

// KillNode kills node i with SIGKILL, like a crashed machine, and waits for it to exit.
// Its data directory stays for StartNode.
func (c *Cluster) KillNode(i int) error {
	nd, err := c.node(i)
	if err != nil {
		return err
	}
	return c.stopNodes([]*node{nd}, 0)
}

// StopNode shuts node i down gracefully (SIGTERM, which makes the broker hand off its
// leaderships), killing it if that takes longer than Options.StopTimeout.
func (c *Cluster) StopNode(i int) error {
	nd, err := c.node(i)
	if err != nil {
		return err
	}
	return c.stopNodes([]*node{nd}, c.opts.StopTimeout)
}

// StartNode restarts a stopped or killed node on its old ports and data directory and
// waits until every running node lists it again. ctx bounds the wait, as does
// Options.StartTimeout.
func (c *Cluster) StartNode(ctx context.Context, i int) error {
	nd, err := c.node(i)
	if err != nil {
		return err
	}
	c.mu.Lock()
	stopped, running := c.stopped, nd.running()
	c.mu.Unlock()
	if stopped {
		return ErrStopped
	}
	if running {
		return fmt.Errorf("%w: %d", ErrNodeRunning, i)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	if err := c.launch(nd); err != nil {
		return err
	}
	var up []*node
	c.mu.Lock()
	for _, n := range c.nodes {
		if n.running() {
			up = append(up, n)
		}
	}
	c.mu.Unlock()
	if err := c.waitReady(ctx, up); err != nil {
		return fmt.Errorf("kafkatest: restart node %d: %w", i, err)
	}
	return nil
}

// Stop shuts every node down (SIGTERM, then SIGKILL after Options.StopTimeout) and waits
// for the processes to exit. It keeps Dir; calling it again does nothing.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	c.stopped = true
	nodes := slices.Clone(c.nodes)
	c.mu.Unlock()
	return c.stopNodes(nodes, c.opts.StopTimeout)
}

// killAll kills every node at once; used to clean up after a failed start.
func (c *Cluster) killAll() {
	c.mu.Lock()
	nodes := slices.Clone(c.nodes)
	c.mu.Unlock()
	_ = c.stopNodes(nodes, 0)
}

// stopNodes sends SIGTERM to the nodes' process groups (SIGKILL at once when grace is 0),
// waits up to grace for them to exit, then kills what is left. Signalling the group rather
// than the pid leaves nothing behind should the JVM have started children.
func (c *Cluster) stopNodes(nodes []*node, grace time.Duration) error {
	var live []*node
	for _, nd := range nodes {
		c.mu.Lock()
		running := nd.running()
		c.mu.Unlock()
		if running {
			live = append(live, nd)
		}
	}
	sig := syscall.SIGTERM
	if grace == 0 {
		sig = syscall.SIGKILL
	}
	for _, nd := range live {
		c.log.Debug("kafkatest: stopping node", "node", nd.id, "signal", sig)
		signalGroup(nd.cmd.Process.Pid, sig)
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	var errs []error
	for _, nd := range live {
		select {
		case <-nd.done:
			continue
		case <-deadline.C:
			deadline.Reset(0) // the rest get no more grace either
		}
		if grace > 0 {
			c.log.Warn("kafkatest: node did not stop in time, killing it", "node", nd.id, "grace", grace)
		}
		signalGroup(nd.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-nd.done:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("kafkatest: node %d (pid %d) still running after SIGKILL", nd.id, nd.cmd.Process.Pid))
		}
	}
	// SIGKILL'd nodes in live have not necessarily been reaped yet.
	for _, nd := range live {
		select {
		case <-nd.done:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("kafkatest: node %d (pid %d) did not exit", nd.id, nd.cmd.Process.Pid))
		}
	}
	return errors.Join(errs...)
}

// signalGroup signals the process group led by pid, falling back to the process alone.
func signalGroup(pid int, sig syscall.Signal) {
	if err := syscall.Kill(-pid, sig); err != nil {
		_ = syscall.Kill(pid, sig)
	}
}

// LogTail returns the last lines of every node's broker log and console output, headed by
// their paths: what a failed test should print.
func (c *Cluster) LogTail(lines int) string {
	c.mu.Lock()
	nodes := slices.Clone(c.nodes)
	c.mu.Unlock()
	return c.logTails(nodes, lines)
}

func (c *Cluster) logTails(nodes []*node, lines int) string {
	var b strings.Builder
	for _, nd := range nodes {
		for _, name := range []string{"server.log", "console.log"} {
			p := filepath.Join(nd.dir, name)
			t := tailFile(p, lines)
			if strings.TrimSpace(t) == "" {
				continue
			}
			fmt.Fprintf(&b, "--- node %d: last lines of %s ---\n%s\n", nd.id, p, t)
		}
	}
	return b.String()
}
