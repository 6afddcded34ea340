// Package drills holds Palaver's failure drills: tests that run real
// gateway processes (built from services/cmd/gateway) on a real 3-node
// Kafka cluster (kafkatest), put people chatting through them with
// loadgen, break something on purpose (a broker killed, a gateway killed,
// a client that stops reading or floods) and check from the outside that
// every acknowledged message reached every member once and in order.
//
// The package has no code outside its tests.
package drills
