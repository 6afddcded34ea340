package kafkabus

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	franzscram "github.com/twmb/franz-go/pkg/sasl/scram"
)

// AdminClient returns a franz-go client with the same configuration, for
// admin calls through kadm.
// Room provisioning uses it instead of kafka-go's Client because kafka-go
// v0.4.51 does not expose topic IDs (Metadata v10+), which is how a topic
// deleted and recreated behind the operator's back is told apart from the
// one it made. Close it when done.
func (c *Config) AdminClient() (*kgo.Client, error) {
	sec, err := c.security()
	if err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.ClientID(c.ClientID)}
	if sec.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(sec.tls))
	}
	if c.SASLMechanism == SCRAMSHA512 {
		opts = append(opts, kgo.SASL(franzscram.Auth{User: c.SASLUsername, Pass: sec.password}.AsSha512Mechanism()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkabus: admin client: %w", err)
	}
	return cl, nil
}

// AdminClient returns a franz-go client for admin calls; see
// Config.AdminClient.
func (c *Cluster) AdminClient() (*kgo.Client, error) { return c.cfg.AdminClient() }
