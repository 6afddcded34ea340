package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// EnvBootstrap names the environment variable that points Shared at a cluster that is
// already running (`make kafka-up` prints the export line), so that iterating on one
// package's tests does not start a broker per run.
const EnvBootstrap = "PALAVER_KAFKA_BOOTSTRAP"

// setupTimeout bounds a helper's start of a cluster including the first jar fetch, which
// may wait behind another test binary's fetch.
const setupTimeout = 5 * time.Minute

var shared struct {
	once      sync.Once
	mu        sync.Mutex
	cluster   *Cluster
	bootstrap string
	took      time.Duration
	err       error
	logged    bool
}

// Shared returns the bootstrap servers of a single-node cluster shared by every test in the
// test binary, starting it on first use. If PALAVER_KAFKA_BOOTSTRAP is set, it returns that
// instead and starts nothing. The package's TestMain must call Main, which stops the
// cluster when the tests are done (without it the broker dies with the test binary on Linux
// but its directory stays behind). Tests sharing the cluster should use topic names of
// their own (e.g. derived from t.Name()).
//
// In -short mode (`make test-short`, unit tests only) it skips the test unless
// PALAVER_KAFKA_BOOTSTRAP names a running cluster.
func Shared(t testing.TB) string {
	t.Helper()
	bs := os.Getenv(EnvBootstrap)
	if bs == "" && testing.Short() {
		t.Skipf("needs a Kafka broker: skipped in -short mode (set %s to use a running one)", EnvBootstrap)
	}
	if bs != "" {
		shared.mu.Lock()
		first := !shared.logged
		shared.logged = true
		shared.mu.Unlock()
		if first {
			t.Logf("kafkatest: using the Kafka cluster at %s=%s", EnvBootstrap, bs)
		}
		return bs
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		began := time.Now()
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
		c, err := Start(ctx, Options{Nodes: 1, Logger: log})
		shared.mu.Lock()
		defer shared.mu.Unlock()
		if err != nil {
			shared.err = err
			return
		}
		shared.cluster, shared.bootstrap, shared.took = c, c.Bootstrap(), time.Since(began)
	})
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.err != nil {
		t.Fatalf("kafkatest: start the shared Kafka broker: %v", shared.err)
	}
	if !shared.logged {
		shared.logged = true
		t.Logf("kafkatest: started real Apache Kafka %s broker at %s in %s (logs in %s)",
			Version, shared.bootstrap, shared.took.Round(time.Millisecond), shared.cluster.Dir())
	}
	return shared.bootstrap
}

// Main runs the tests and then stops the cluster Shared started, if any. When a test
// failed it keeps the broker's directory and prints where it is with the end of its log;
// otherwise it deletes it. Call it from TestMain:
//
//	func TestMain(m *testing.M) { kafkatest.Main(m) }
//
// It exits the process with the tests' status, so deferred calls in TestMain do not run.
func Main(m *testing.M) {
	code := m.Run()
	if err := stopShared(code != 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func stopShared(failed bool) error {
	shared.mu.Lock()
	c := shared.cluster
	shared.cluster = nil
	shared.mu.Unlock()
	if c == nil {
		return nil
	}
	err := c.Stop()
	if failed || err != nil {
		fmt.Fprintf(os.Stderr, "kafkatest: tests failed; shared broker logs kept in %s\n%s", c.Dir(), c.LogTail(20))
		return err
	}
	if rmErr := os.RemoveAll(c.Dir()); rmErr != nil {
		return fmt.Errorf("kafkatest: remove broker dir: %w", rmErr)
	}
	return nil
}

// NewCluster starts a private cluster of 1 or 3 nodes for a test that stops or kills
// brokers, and stops it when the test ends. If the test failed, the cluster's directory is
// kept and its path logged with the end of each broker log; otherwise it is deleted.
// In -short mode it skips the test.
func NewCluster(t testing.TB, nodes int) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skipf("starts a %d-node Kafka cluster: skipped in -short mode", nodes)
	}
	dir, err := os.MkdirTemp("", "palaver-kafka-"+dirSafe(t.Name())+"-")
	if err != nil {
		t.Fatalf("kafkatest: create cluster dir: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := Start(ctx, Options{Nodes: nodes, Dir: dir, Logger: log})
	if err != nil {
		t.Fatalf("kafkatest: start %d-node Kafka cluster (dir %s kept): %v", nodes, dir, err)
	}
	t.Cleanup(func() {
		err := c.Stop()
		if err != nil {
			t.Errorf("kafkatest: stop cluster: %v", err)
		}
		if t.Failed() {
			t.Logf("kafkatest: broker logs kept in %s\n%s", dir, c.LogTail(30))
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("kafkatest: remove cluster dir: %v", err)
		}
	})
	return c
}

var unsafeDirChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// dirSafe turns a test name into something usable in a directory name.
func dirSafe(name string) string {
	s := unsafeDirChars.ReplaceAllString(name, "_")
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

// testWriter sends a slog text handler's lines to the test log, so that the harness's
// progress shows with the test that caused it.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// CreateTopic creates a topic on the cluster at bootstrap (comma-separated addresses) and
// waits until every listed broker knows a leader for each partition, so that the test can
// produce at once. configs are topic configs such as "min.insync.replicas".
//
// A kafka-go Writer on kafka.DefaultTransport serves metadata from a cache shared by the
// whole process (refreshed every few seconds), so it may still not know a topic created
// here: give writers in tests a Transport of their own.
func CreateTopic(t testing.TB, bootstrap, name string, partitions, rf int, configs map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := createTopic(ctx, bootstrap, name, partitions, rf, configs); err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
}

func createTopic(ctx context.Context, bootstrap, name string, partitions, rf int, configs map[string]string) error {
	addrs := strings.Split(bootstrap, ",")
	conn, err := dialAny(ctx, addrs)
	if err != nil {
		return fmt.Errorf("create topic %q: %w", name, err)
	}
	ctrl, err := conn.Controller()
	conn.Close()
	if err != nil {
		return fmt.Errorf("create topic %q: find controller: %w", name, err)
	}
	// Topic creation must go to the controller (kafka-go's Conn does not forward it).
	cc, err := dialAny(ctx, []string{net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port))})
	if err != nil {
		return fmt.Errorf("create topic %q: dial controller: %w", name, err)
	}
	defer cc.Close()
	entries := make([]kafka.ConfigEntry, 0, len(configs))
	for _, k := range slices.Sorted(maps.Keys(configs)) {
		entries = append(entries, kafka.ConfigEntry{ConfigName: k, ConfigValue: configs[k]})
	}
	if err := cc.CreateTopics(kafka.TopicConfig{
		Topic:             name,
		NumPartitions:     partitions,
		ReplicationFactor: rf,
		ConfigEntries:     entries,
	}); err != nil {
		return fmt.Errorf("create topic %q: %w", name, err)
	}

	// Metadata reaches the brokers asynchronously; wait until each reachable broker has a
	// leader for every partition.
	for _, addr := range addrs {
		if err := waitTopic(ctx, addr, name, partitions); err != nil {
			return fmt.Errorf("create topic %q: wait for leaders on %s: %w", name, addr, err)
		}
	}
	return nil
}

func waitTopic(ctx context.Context, addr, topic string, partitions int) error {
	var lastErr error
	for {
		conn, err := dialAny(ctx, []string{addr})
		if err != nil {
			if ctx.Err() != nil {
				return withLast(ctx.Err(), lastErr)
			}
			// A stopped node in the bootstrap list cannot be asked; clients skip it too.
			return nil
		}
		ps, err := conn.ReadPartitions(topic)
		conn.Close()
		switch {
		case err != nil:
			lastErr = err
		case len(ps) < partitions:
			lastErr = fmt.Errorf("%d of %d partitions known", len(ps), partitions)
		case slices.ContainsFunc(ps, func(p kafka.Partition) bool { return p.Leader.ID < 0 }):
			lastErr = errors.New("a partition has no leader yet")
		default:
			return nil
		}
		select {
		case <-ctx.Done():
			return withLast(ctx.Err(), lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func withLast(err, last error) error {
	if last == nil {
		return err
	}
	return fmt.Errorf("%w (last: %w)", err, last)
}

// dialAny connects to the first address that answers, with deadlines from ctx.
func dialAny(ctx context.Context, addrs []string) (*kafka.Conn, error) {
	var errs []error
	for _, addr := range addrs {
		addr = strings.TrimSpace(addr)
		if addr == "" {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(dctx, "tcp", addr)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("dial %s: %w", addr, err))
			continue
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		return conn, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if len(errs) == 0 {
		return nil, errors.New("no broker address given")
	}
	return nil, errors.Join(errs...)
}
