package web_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/kafkatest"
)

// e2eTimeout bounds the whole browser run.
const e2eTimeout = 5 * time.Minute

// browserPrereqs returns node and the e2e directory, or stops the test:
// skipped in -short mode, failed otherwise, naming how to install.
func browserPrereqs(t *testing.T) (node, dir string) {
	t.Helper()
	dir = filepath.Join(repoRoot(t), "e2e")
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (Node.js 20 or newer)")
	} else if v, err := exec.Command(node, "--version").Output(); err != nil || !nodeAtLeast20(string(v)) {
		missing = append(missing, fmt.Sprintf("Node.js 20 or newer (found %s)", strings.TrimSpace(string(v))))
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

// nodeAtLeast20 reports whether `node --version` says v20 or later, which
// playwright-core needs.
func nodeAtLeast20(version string) bool {
	m := regexp.MustCompile(`^v(\d+)\.`).FindStringSubmatch(strings.TrimSpace(version))
	if m == nil {
		return false
	}
	major, err := strconv.Atoi(m[1])
	return err == nil && major >= 20
}

// TestBrowser runs e2e/ (node --test, playwright-core, Chromium) against the
// gateway wired as in dev mode (dev login, the sample rooms) on the real
// Kafka broker.
func TestBrowser(t *testing.T) {
	node, dir := browserPrereqs(t)
	bootstrap := kafkatest.Shared(t)
	url := startGateway(t, bootstrap, gatewayOptions{}).URL
	control := roomControl(t, bootstrap)

	ctx, cancel := context.WithTimeout(t.Context(), e2eTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", dir)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PALAVER_E2E_URL="+url, "PALAVER_E2E_CONTROL="+control, "NO_COLOR=1", "FORCE_COLOR=0")
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
