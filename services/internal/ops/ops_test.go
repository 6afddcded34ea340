package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestProbes(t *testing.T) {
	h := NewHandler(NewRegistry())
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	if code, _ := get(t, h, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz with no checks = %d", code)
	}

	kafkaUp := false
	h.AddReadiness("kafka", func(ctx context.Context) error {
		if !kafkaUp {
			return errors.New("no broker answered")
		}
		return nil
	})
	code, body := get(t, h, "/readyz")
	var got struct{ Failing map[string]string }
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusServiceUnavailable || got.Failing["kafka"] != "no broker answered" {
		t.Fatalf("/readyz = %d %s, want 503 naming kafka", code, body)
	}
	kafkaUp = true
	if code, _ := get(t, h, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after recovery = %d", code)
	}
}

func TestMetricsUseTheGivenRegistry(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "palaver_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	code, body := get(t, NewHandler(reg), "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "palaver_test_things_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics = %d:\n%s", code, body)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func TestLogger(t *testing.T) {
	var c LogConfig
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs, LogConfig{Format: "text", Level: "info"})
	if err := fs.Parse([]string{"--log-format=json", "--log-level=warn"}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log, err := c.NewLogger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), `"msg":"shown"`) {
		t.Fatalf("log output: %s", buf.String())
	}
	for _, bad := range []LogConfig{{Format: "xml", Level: "info"}, {Format: "json", Level: "loud"}} {
		if _, err := bad.NewLogger(&buf); err == nil {
			t.Errorf("%+v: want an error", bad)
		}
	}
}

// TestServiceOpenRefusesBadFlags: a bad log level or Kafka configuration
// is an error before anything connects.
func TestServiceOpenRefusesBadFlags(t *testing.T) {
	for name, args := range map[string][]string{
		"log level": {"--log-level=loud"},
		"brokers":   {"--kafka-bootstrap="},
	} {
		var s Service
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		s.RegisterFlags(fs, "test")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Open(io.Discard); err == nil {
			t.Errorf("%s: %v opened", name, args)
		}
	}
}
