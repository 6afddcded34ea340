package kafkatest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// brokerConfig returns the server.properties of node i. Every node is a combined
// broker+controller with a static quorum of all nodes, the smallest KRaft setup that still
// exercises replication and leader failover. The values trade durability nobody needs in
// a test for speed on a 2-core machine; extra (Options.Config) overrides any of them.
func brokerConfig(i int, nodes []*node, dataDir string, extra map[string]string) map[string]string {
	n := len(nodes)
	voters := make([]string, n)
	for j, nd := range nodes {
		voters[j] = fmt.Sprintf("%d@%s", j, nd.controllerAddr())
	}
	nd := nodes[i]
	rf := strconv.Itoa(min(3, n))
	minISR := strconv.Itoa(min(2, n))
	c := map[string]string{
		"process.roles":                    "broker,controller",
		"node.id":                          strconv.Itoa(i),
		"controller.quorum.voters":         strings.Join(voters, ","),
		"listeners":                        "PLAINTEXT://" + nd.addr() + ",CONTROLLER://" + nd.controllerAddr(),
		"advertised.listeners":             "PLAINTEXT://" + nd.addr(),
		"controller.listener.names":        "CONTROLLER",
		"inter.broker.listener.name":       "PLAINTEXT",
		"listener.security.protocol.map":   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"log.dirs":                         dataDir,
		"num.partitions":                   "1",
		"default.replication.factor":       "1",
		"auto.create.topics.enable":        "false",
		"group.initial.rebalance.delay.ms": "0",

		// Internal topics replicate like production's (RF 3, min ISR 2) when there are
		// enough nodes, and with few partitions: the first consumer group or transaction
		// creates them, and 50 partitions each would cost seconds per test binary.
		"offsets.topic.replication.factor":                 rf,
		"offsets.topic.num.partitions":                     "5",
		"transaction.state.log.replication.factor":         rf,
		"transaction.state.log.min.isr":                    minISR,
		"transaction.state.log.num.partitions":             "5",
		"share.coordinator.state.topic.replication.factor": rf,
		"share.coordinator.state.topic.min.isr":            minISR,
		"share.coordinator.state.topic.num.partitions":     "5",

		// Fewer threads and buffers than the defaults, sized for a laptop running several
		// brokers beside a compiler. The cleaner's 128 MiB dedupe buffer would take a
		// quarter of the heap for compacted topics holding a few records.
		"num.network.threads":               "2",
		"num.io.threads":                    "4",
		"background.threads":                "4",
		"num.recovery.threads.per.data.dir": "1",
		"num.replica.fetchers":              "1",
		"log.cleaner.threads":               "1",
		"log.cleaner.dedupe.buffer.size":    strconv.Itoa(16 << 20),
		"log.cleaner.backoff.ms":            "1000",
		"log.retention.check.interval.ms":   "10000",
		"log.initial.task.delay.ms":         "1000",

		// A killed broker is fenced (and its partitions get new leaders) after the session
		// timeout. The heartbeat interval is also the timeout of the broker's registration
		// and heartbeat requests, and half of it the controller's deadline for answering a
		// heartbeat: shorter than Kafka's 2 s, a CPU-starved machine (tests beside a build
		// on 2 cores) times them out over and over, and the nodes stay fenced for minutes.
		// Kafka's defaults, 2 s and 9 s, tolerate a few late beats per session.
		"broker.heartbeat.interval.ms": "2000",
		"broker.session.timeout.ms":    "9000",
		"replica.lag.time.max.ms":      "10000",
		"replica.fetch.wait.max.ms":    "100",
	}
	if nd.scramPort != 0 {
		scramConfig(c, nd)
	}
	maps.Copy(c, extra)
	return c
}

// scramListener names the listener of Options.SCRAM.
const scramListener = "SCRAM"

// scramConfig adds the SCRAM listener and the authorizer (Options.SCRAM) to c. Only
// that listener authenticates; what comes in on the others is User:ANONYMOUS, the
// super user, because the nodes talk to each other there and the harness probes them.
func scramConfig(c map[string]string, nd *node) {
	scram := scramListener + "://" + nd.scramAddr()
	c["listeners"] += "," + scram
	c["advertised.listeners"] += "," + scram
	c["listener.security.protocol.map"] += "," + scramListener + ":SASL_PLAINTEXT"
	l := "listener.name." + strings.ToLower(scramListener) + "."
	c[l+"sasl.enabled.mechanisms"] = "SCRAM-SHA-512"
	c[l+"scram-sha-512.sasl.jaas.config"] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
	c["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
	c["super.users"] = "User:ANONYMOUS"
	c["allow.everyone.if.no.acl.found"] = "false"
}

// writeProperties writes m as a Java properties file, keys sorted so that the files are
// easy to diff between runs.
func writeProperties(path string, m map[string]string) error {
	var b strings.Builder
	b.WriteString("# Written by palaver.dev/services/kafkatest; rewritten on every start.\n")
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s=%s\n", k, escapeProperty(m[k]))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// escapeProperty escapes the characters that java.util.Properties treats specially in
// a value, so that paths with backslashes or a leading space survive.
func escapeProperty(v string) string {
	r := strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	v = r.Replace(v)
	if strings.HasPrefix(v, " ") {
		v = `\` + v
	}
	return v
}

// log4j2Config sends the broker's log to server.log in the node's directory, the file that
// failures point at. The state-change and request loggers stay at their quieter defaults.
// With authorizerLog, every decision of the authorizer that Kafka audits (each allowed
// action with the ACL that allowed it, each denied one) goes to that file; otherwise the
// authorizer logs only its warnings, to server.log.
func log4j2Config(logFile, authorizerLog string) string {
	authorizer := "logger.authorizer.level = WARN\n"
	if authorizerLog != "" {
		authorizer = fmt.Sprintf(`logger.authorizer.level = DEBUG
logger.authorizer.additivity = false
logger.authorizer.appenderRef.authorizer.ref = AUTHORIZER

appender.authorizer.type = File
appender.authorizer.name = AUTHORIZER
appender.authorizer.fileName = %s
appender.authorizer.append = true
appender.authorizer.layout.type = PatternLayout
appender.authorizer.layout.pattern = %%m%%n
`, escapeProperty(authorizerLog))
	}
	return fmt.Sprintf(`# Written by palaver.dev/services/kafkatest.
status = warn
name = kafkatest

appender.file.type = File
appender.file.name = FILE
appender.file.fileName = %s
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%%d] %%p %%m (%%c)%%n

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE

logger.kafka.name = kafka
logger.kafka.level = INFO
logger.org.name = org.apache.kafka
logger.org.level = INFO
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
%s`, escapeProperty(logFile), authorizer)
}

// newClusterID returns a random KRaft cluster id: 16 random bytes in URL-safe base64
// without padding, the form kafka-storage random-uuid prints.
// An id starting with '-' would be read as an option by the storage tool,
// so those are drawn again.
func newClusterID() (string, error) {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("cluster id: %w", err)
		}
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id, nil
		}
	}
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a moment ago. All
// listeners stay open until every port is picked so that the kernel cannot hand out the
// same port twice; another process may still take one before the broker binds it, which
// Start detects and retries.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portFree reports whether port can be bound on 127.0.0.1 right now.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
