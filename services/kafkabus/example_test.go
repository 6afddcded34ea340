package kafkabus_test

import (
	"flag"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

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

// A reader of one partition whose idle fetches the broker holds for 500 ms,
// and which waits a second more for the answer before it gives the
// connection up: pauses of the broker or of the process under a second
// cost no reconnection. It dials nothing until it reads.
func ExampleWithMaxWait() {
	cluster, err := kafkabus.New(kafkabus.Config{Brokers: []string{"127.0.0.1:9092"}})
	if err != nil {
		panic(err)
	}
	rd, err := cluster.PartitionReader("palaver.presence.state", 0, kafka.FirstOffset, kafkabus.WithMaxWait(1500*time.Millisecond))
	if err != nil {
		panic(err)
	}
	defer rd.Close()

	fmt.Println(rd.Config().MaxWait)
	// Output: 1.5s
}
