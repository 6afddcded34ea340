// Package kafkabus configures Palaver's Kafka clients: connection settings
// from flags and environment (bootstrap servers, client id, TLS, SASL
// SCRAM-SHA-512) and constructors for kafka-go writers, readers and admin
// clients tuned for chat latency and durability.
package kafkabus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/scram"

	"palaver.dev/services/internal/envflag"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("kafkabus: invalid configuration")

// SCRAMSHA512 is the only SASL mechanism supported; it is what Strimzi's
// KafkaUser with `authentication: scram-sha-512` provisions.
const SCRAMSHA512 = "SCRAM-SHA-512"

// Config holds how to reach Kafka. Secrets are read from files so they come
// from mounted Kubernetes Secrets, never from flags visible in process lists.
type Config struct {
	Brokers  []string
	ClientID string

	TLS           bool
	TLSCAFile     string // PEM bundle to trust; system roots when empty
	TLSCertFile   string // client certificate for mutual TLS (optional)
	TLSKeyFile    string
	TLSServerName string

	SASLMechanism    string // "" or SCRAM-SHA-512
	SASLUsername     string
	SASLPasswordFile string
}

// RegisterFlags binds the configuration to flags on fs, each defaulting to
// an environment variable (named in the flag's help) and then to def.
func (c *Config) RegisterFlags(fs *flag.FlagSet, def Config) {
	brokers := envflag.String("PALAVER_KAFKA_BOOTSTRAP", strings.Join(def.Brokers, ","))
	c.Brokers = envflag.List(brokers)
	fs.Func("kafka-bootstrap", "comma-separated Kafka bootstrap servers host:port ($PALAVER_KAFKA_BOOTSTRAP) (default "+brokers+")", func(s string) error {
		c.Brokers = envflag.List(s)
		return nil
	})
	fs.StringVar(&c.ClientID, "kafka-client-id", envflag.String("PALAVER_KAFKA_CLIENT_ID", def.ClientID), "Kafka client id, shown in broker logs and quotas ($PALAVER_KAFKA_CLIENT_ID)")
	fs.BoolVar(&c.TLS, "kafka-tls", envflag.Bool("PALAVER_KAFKA_TLS", def.TLS), "connect to Kafka over TLS ($PALAVER_KAFKA_TLS=true)")
	fs.StringVar(&c.TLSCAFile, "kafka-tls-ca", envflag.String("PALAVER_KAFKA_TLS_CA", def.TLSCAFile), "PEM file of CA certificates to trust for Kafka ($PALAVER_KAFKA_TLS_CA)")
	fs.StringVar(&c.TLSCertFile, "kafka-tls-cert", envflag.String("PALAVER_KAFKA_TLS_CERT", def.TLSCertFile), "PEM client certificate for mutual TLS ($PALAVER_KAFKA_TLS_CERT)")
	fs.StringVar(&c.TLSKeyFile, "kafka-tls-key", envflag.String("PALAVER_KAFKA_TLS_KEY", def.TLSKeyFile), "PEM client key for mutual TLS ($PALAVER_KAFKA_TLS_KEY)")
	fs.StringVar(&c.TLSServerName, "kafka-tls-server-name", envflag.String("PALAVER_KAFKA_TLS_SERVER_NAME", def.TLSServerName), "expected broker certificate name, if not the host dialled ($PALAVER_KAFKA_TLS_SERVER_NAME)")
	fs.StringVar(&c.SASLMechanism, "kafka-sasl-mechanism", envflag.String("PALAVER_KAFKA_SASL_MECHANISM", def.SASLMechanism), "SASL mechanism: empty or "+SCRAMSHA512+" ($PALAVER_KAFKA_SASL_MECHANISM)")
	fs.StringVar(&c.SASLUsername, "kafka-sasl-username", envflag.String("PALAVER_KAFKA_SASL_USERNAME", def.SASLUsername), "SASL user name ($PALAVER_KAFKA_SASL_USERNAME)")
	fs.StringVar(&c.SASLPasswordFile, "kafka-sasl-password-file", envflag.String("PALAVER_KAFKA_SASL_PASSWORD_FILE", def.SASLPasswordFile), "file holding the SASL password ($PALAVER_KAFKA_SASL_PASSWORD_FILE)")
}

// Validate reports missing or contradictory settings.
func (c *Config) Validate() error {
	if len(c.Brokers) == 0 {
		return fmt.Errorf("%w: no bootstrap servers (set --kafka-bootstrap or PALAVER_KAFKA_BOOTSTRAP)", ErrConfig)
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("%w: bootstrap server %q: %w", ErrConfig, b, err)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return fmt.Errorf("%w: --kafka-tls-cert and --kafka-tls-key go together", ErrConfig)
	}
	switch c.SASLMechanism {
	case "":
	case SCRAMSHA512:
		if c.SASLUsername == "" || c.SASLPasswordFile == "" {
			return fmt.Errorf("%w: %s needs a user name and a password file", ErrConfig, SCRAMSHA512)
		}
	default:
		return fmt.Errorf("%w: SASL mechanism %q (supported: %s)", ErrConfig, c.SASLMechanism, SCRAMSHA512)
	}
	return nil
}

// LogValue keeps secrets out of logs: it shows where they come from, not
// what they are.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("bootstrap", strings.Join(c.Brokers, ",")),
		slog.String("client_id", c.ClientID),
		slog.Bool("tls", c.TLS),
		slog.String("sasl", c.SASLMechanism),
		slog.String("sasl_user", c.SASLUsername),
	)
}

// secrets is the key material and password read from their files.
type secrets struct {
	tls      *tls.Config
	password string
}

// security builds the TLS config and reads the SASL password, from files.
func (c *Config) security() (secrets, error) {
	var sec secrets
	if err := c.Validate(); err != nil {
		return sec, err
	}
	if c.TLS {
		sec.tls = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return sec, fmt.Errorf("kafkabus: read Kafka CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return sec, fmt.Errorf("%w: no certificate in %s", ErrConfig, c.TLSCAFile)
			}
			sec.tls.RootCAs = pool
		}
		if c.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
			if err != nil {
				return sec, fmt.Errorf("kafkabus: load Kafka client certificate: %w", err)
			}
			sec.tls.Certificates = []tls.Certificate{cert}
		}
	}
	if c.SASLMechanism == SCRAMSHA512 {
		pw, err := os.ReadFile(c.SASLPasswordFile)
		if err != nil {
			return sec, fmt.Errorf("kafkabus: read SASL password: %w", err)
		}
		sec.password = strings.TrimRight(string(pw), "\r\n")
	}
	return sec, nil
}

// kafkaGoSecurity is the TLS config and kafka-go SASL mechanism (or nil).
func (c *Config) kafkaGoSecurity() (*tls.Config, sasl.Mechanism, error) {
	sec, err := c.security()
	if err != nil || c.SASLMechanism != SCRAMSHA512 {
		return sec.tls, nil, err
	}
	mech, err := scram.Mechanism(scram.SHA512, c.SASLUsername, sec.password)
	if err != nil {
		return nil, nil, fmt.Errorf("kafkabus: SCRAM mechanism: %w", err)
	}
	return sec.tls, mech, nil
}

// Dialer returns a dialer for the kafka-go Conn and Reader APIs.
func (c *Config) Dialer() (*kafka.Dialer, error) {
	tlsConfig, mech, err := c.kafkaGoSecurity()
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{
		ClientID:      c.ClientID,
		Timeout:       10 * time.Second,
		DualStack:     true,
		KeepAlive:     30 * time.Second,
		TLS:           tlsConfig,
		SASLMechanism: mech,
	}, nil
}

// Transport returns a transport for the kafka-go Writer and Client APIs.
// Create one per process and share it: it pools connections. Its metadata
// is refreshed every second (kafka-go's default is 6 s) so that after a
// leader moves, or a room's topic is created, writes find the partition
// within a second instead of six (Write waits for that refresh).
func (c *Config) Transport() (*kafka.Transport, error) {
	tlsConfig, mech, err := c.kafkaGoSecurity()
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{
		ClientID:    c.ClientID,
		DialTimeout: 10 * time.Second,
		IdleTimeout: 5 * time.Minute,
		MetadataTTL: metadataTTL,
		TLS:         tlsConfig,
		SASL:        mech,
	}, nil
}
