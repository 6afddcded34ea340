package web_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/gateway"
	"palaver.dev/services/internal/runner"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// e2eTimeout bounds the whole browser run.
const e2eTimeout = 5 * time.Minute

// repoRoot is the repository's top directory, from this file's place in it.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
}

// browserPrereqs returns node and the e2e directory, or stops the test:
// skipped in -short mode, failed otherwise, naming how to install.
func browserPrereqs(t *testing.T) (node, dir string) {
	t.Helper()
	dir = filepath.Join(repoRoot(t), "e2e")
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (Node.js 20 or newer)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "e2e/node_modules (npm ci in e2e/)")
	}
	chromium := os.Getenv("PALAVER_E2E_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, fmt.Sprintf("Chromium at %s (Debian: apt-get install chromium)", chromium))
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("the browser test needs %s: run `make e2e-deps`", strings.Join(missing, ", "))
		if testing.Short() {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
	return node, dir
}

// TestBrowser runs e2e/ (node --test, playwright-core, Chromium) against the
// gateway wired as in dev mode (dev login, the sample rooms) on the real
// Kafka broker.
func TestBrowser(t *testing.T) {
	node, dir := browserPrereqs(t)
	url := startGateway(t, kafkatest.Shared(t))

	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-concurrency=1", "--test-reporter=spec", dir)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PALAVER_E2E_URL="+url, "NO_COLOR=1", "FORCE_COLOR=0")
	// Interrupt rather than kill, so playwright closes Chromium on the way out.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 15 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	began := time.Now()
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || ctx.Err() != nil {
			t.Fatalf("browser tests failed (%v after %s; screenshots in e2e/test-results/):\n%s", err, time.Since(began).Round(time.Millisecond), out.String())
		}
		t.Fatalf("run %s: %v\n%s", node, err, out.String())
	}
	var summary []string
	for _, m := range regexp.MustCompile(`(?m)^\s*\S*\s*((?:tests|pass|fail|skipped) \d+)$`).FindAllStringSubmatch(out.String(), -1) {
		summary = append(summary, m[1])
	}
	t.Logf("browser tests passed in %s: %s", time.Since(began).Round(time.Millisecond), strings.Join(summary, ", "))
	if testing.Verbose() {
		t.Log(out.String())
	}
}

// startGateway provisions the sample rooms on the broker at bootstrap and
// serves a dev-mode gateway (dev login, any origin) on loopback until the
// test ends. It returns the gateway's base URL.
func startGateway(t *testing.T, bootstrap string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))

	cluster, err := kafkabus.New(kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "palaver-e2e"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Close() })
	if err := provisionSamples(ctx, cluster, filepath.Join(repoRoot(t), "k8s", "samples")); err != nil {
		t.Fatalf("provision the sample rooms: %v", err)
	}
	rooms := room.NewRegistry(cluster, log)
	issuer, err := auth.NewDevIssuer(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.Dev = true
	cfg.AllowedOrigins = []string{"*"}
	gw, err := gateway.New(cfg, gateway.Deps{
		Cluster: cluster, Rooms: rooms, Verifier: issuer.Verifier(), DevLogin: issuer.LoginHandler(), Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	api, err := runner.Listen("127.0.0.1:0", gateway.HTTPServer(gw.Handler()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runner.Run(runCtx, log, 15*time.Second,
			runner.Named{Name: "rooms", Part: rooms},
			runner.Named{Name: "gateway", Part: gw},
			runner.Named{Name: "http", Part: api})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("gateway stopped with %v", err)
		}
	})
	select {
	case <-rooms.Ready():
	case err := <-done:
		t.Fatalf("gateway stopped before the room registry was read: %v", err)
	case <-ctx.Done():
		t.Fatal("the room registry was not readable within 2 minutes")
	}
	return "http://" + api.Addr().String()
}

// provisionSamples gives the sample ChatRooms their topics and registry
// entries on one broker, as dev mode does.
func provisionSamples(ctx context.Context, cluster *kafkabus.Cluster, dir string) error {
	specs, err := room.ReadManifestDir(dir)
	if err != nil {
		return err
	}
	infos := make([]room.Info, len(specs))
	for i := range specs {
		specs[i] = specs[i].WithDefaults(1)
		specs[i].ReplicationFactor, specs[i].MinInSyncReplicas = 1, 1
		if err := specs[i].Validate(); err != nil {
			return fmt.Errorf("room %q: %w", specs[i].Name, err)
		}
		infos[i] = specs[i].Info()
	}
	client, err := cluster.AdminClient()
	if err != nil {
		return err
	}
	defer client.Close()
	p := room.NewProvisioner(client)
	if err := p.EnsureRegistry(ctx, 1); err != nil {
		return err
	}
	if err := p.Ensure(ctx, specs...); err != nil {
		return err
	}
	w := cluster.Writer()
	defer w.Close()
	return room.Publish(ctx, w, infos...)
}

// testLog sends the gateway's log to the test's.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
