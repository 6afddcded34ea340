package kafkabus_test

import (
	"flag"
	"fmt"

	"palaver.dev/services/kafkabus"
)

// Every service reads its Kafka settings the same way: flags, falling back
// to PALAVER_KAFKA_* environment variables, falling back to defaults.
func ExampleConfig_RegisterFlags() {
	var cfg kafkabus.Config
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	cfg.RegisterFlags(fs, kafkabus.Config{Brokers: []string{"127.0.0.1:9092"}, ClientID: "palaver-gateway"})
	_ = fs.Parse([]string{"--kafka-bootstrap=kafka-0:9093,kafka-1:9093", "--kafka-tls"})

	fmt.Println(cfg.Brokers, cfg.TLS, cfg.Validate())
	// Output: [kafka-0:9093 kafka-1:9093] true <nil>
}
