// Package drills holds Palaver's failure drills: tests that run real
// gateway processes (built from services/cmd/gateway) on a real 3-node
// Kafka cluster (kafkatest), put people chatting through them with
// loadgen, break something on purpose and check from the outside that
// every acknowledged message reached every member once and in order:
//
//   - TestBrokerKilledUnderLoad: a broker killed with SIGKILL, then
//     restarted;
//   - TestBrokerCutOff: a broker cut off from the others rather than
//     killed, with a gateway and people on its side. The test binary runs
//     the drill again under unshare(1) in a user, network and mount
//     namespace of its own (no privilege needed), puts each broker in a
//     network namespace joined to a bridge by a veth pair, takes the cut
//     broker's link to the bridge down while people chat, and brings it
//     back once the controller has fenced it. It skips, saying why, only
//     where unprivileged user namespaces or ip(8) are missing;
//   - TestGatewayKilledUnderLoad: a gateway killed with SIGKILL, its
//     people resuming on another with their cursors;
//   - TestSlowConsumerAndFlooder: a member that stops reading and one that
//     floods, beside others chatting.
//
// The history and presence services are drilled in their own packages,
// where their processes run: TestSIGKILLMidBatchLosesAndDuplicatesNothing
// (services/internal/history) kills a history replica in the middle of
// ingesting and restarts it, then compares its store with the topic: every
// message once, none missing, the search index and committed positions in
// step; TestReplicaTakeover (services/cmd/presence) kills a presence
// replica, whose rooms another takes over without showing anyone offline,
// and TestGatewayKilledExpiresWithinTimeout and TestReconnectRace there
// check that a killed gateway's people are expired after the gateway
// timeout, not before and not much after, and nobody who moved to another
// gateway.
//
// The package has no code outside its tests.
package drills
