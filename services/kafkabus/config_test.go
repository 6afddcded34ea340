package kafkabus

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

func parse(t *testing.T, args ...string) Config {
	t.Helper()
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs, Config{Brokers: []string{"127.0.0.1:9092"}, ClientID: "palaver-test"})
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFlagsEnvAndDefaults(t *testing.T) {
	// The defaults are what this test checks first: none of the shell's
	// Kafka settings (a developer's PALAVER_KAFKA_BOOTSTRAP, say) apply.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "PALAVER_KAFKA_") {
			t.Setenv(k, "") // restored after the test
			if err := os.Unsetenv(k); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := parse(t)
	if !slices.Equal(c.Brokers, []string{"127.0.0.1:9092"}) || c.ClientID != "palaver-test" {
		t.Fatalf("defaults not applied: %+v", c)
	}

	t.Setenv("PALAVER_KAFKA_BOOTSTRAP", "a:1, b:2")
	t.Setenv("PALAVER_KAFKA_TLS", "true")
	t.Setenv("PALAVER_KAFKA_SASL_MECHANISM", SCRAMSHA512)
	c = parse(t)
	if !slices.Equal(c.Brokers, []string{"a:1", "b:2"}) || !c.TLS || c.SASLMechanism != SCRAMSHA512 {
		t.Fatalf("environment not applied: %+v", c)
	}

	c = parse(t, "--kafka-bootstrap=c:3", "--kafka-client-id=x")
	if !slices.Equal(c.Brokers, []string{"c:3"}) || c.ClientID != "x" {
		t.Fatalf("flags do not win over environment: %+v", c)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"plain", Config{Brokers: []string{"127.0.0.1:9092"}}, true},
		{"no brokers", Config{}, false},
		{"no port", Config{Brokers: []string{"kafka"}}, false},
		{"cert without key", Config{Brokers: []string{"k:9093"}, TLS: true, TLSCertFile: "c.pem"}, false},
		{"scram without password", Config{Brokers: []string{"k:9093"}, SASLMechanism: SCRAMSHA512, SASLUsername: "u"}, false},
		{"unknown mechanism", Config{Brokers: []string{"k:9093"}, SASLMechanism: "PLAIN"}, false},
		{"scram", Config{Brokers: []string{"k:9093"}, SASLMechanism: SCRAMSHA512, SASLUsername: "u", SASLPasswordFile: "/p"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrConfig)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestSecurityReadsSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Config{Brokers: []string{"k:9093"}, SASLMechanism: SCRAMSHA512, SASLUsername: "palaver", SASLPasswordFile: pw}
	d, err := c.Dialer()
	if err != nil {
		t.Fatal(err)
	}
	if d.SASLMechanism == nil || d.SASLMechanism.Name() != SCRAMSHA512 {
		t.Fatalf("dialer SASL = %v", d.SASLMechanism)
	}

	c.SASLPasswordFile = filepath.Join(dir, "missing")
	if _, err := c.Transport(); err == nil || !strings.Contains(err.Error(), "SASL password") {
		t.Fatalf("missing password file: %v", err)
	}

	bad := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	c = Config{Brokers: []string{"k:9093"}, TLS: true, TLSCAFile: bad}
	if _, err := c.Transport(); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad CA file: %v", err)
	}
}

func TestLogValueHidesSecrets(t *testing.T) {
	var buf bytes.Buffer
	c := Config{Brokers: []string{"k:9093"}, SASLMechanism: SCRAMSHA512, SASLUsername: "palaver", SASLPasswordFile: "/var/run/secrets/kafka/password"}
	slog.New(slog.NewTextHandler(&buf, nil)).Info("kafka", "config", c)
	if strings.Contains(buf.String(), "password") {
		t.Fatalf("log line mentions the password: %s", buf.String())
	}
	if !strings.Contains(buf.String(), "config.bootstrap=k:9093") {
		t.Fatalf("log line lacks the bootstrap servers: %s", buf.String())
	}
}

func TestWriterIsDurableAndFast(t *testing.T) {
	cl, err := New(Config{Brokers: []string{"127.0.0.1:9092"}})
	if err != nil {
		t.Fatal(err)
	}
	w := cl.Writer()
	if w.RequiredAcks != kafka.RequireAll {
		t.Errorf("RequiredAcks = %v, want all: chat must not ack unreplicated messages", w.RequiredAcks)
	}
	if w.BatchTimeout > 5e6 {
		t.Errorf("BatchTimeout = %v: every synchronous send would wait that long", w.BatchTimeout)
	}
	if w.AllowAutoTopicCreation {
		t.Error("the writer must not create topics: rooms are provisioned")
	}
}
