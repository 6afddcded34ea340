package kafkatest

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestClusterIDNeverLooksLikeAnOption(t *testing.T) {
	// One id in 64 would start with '-' if drawn naively, and the storage
	// tool would take it for an option.
	for range 2000 {
		id, err := newClusterID()
		if err != nil {
			t.Fatal(err)
		}
		if id[0] == '-' || len(id) != 22 {
			t.Fatalf("cluster id %q", id)
		}
	}
}

func TestJVMArgsPickOneCollector(t *testing.T) {
	for _, long := range []bool{false, true} {
		c := &Cluster{opts: Options{LongLived: long, JVMArgs: []string{"-Xmx1g"}}}
		args := strings.Join(c.jvmArgs(&node{dir: "/n"}, "broker"), " ")
		collectors := len(regexp.MustCompile(`-XX:\+Use\w*GC\b`).FindAllString(args, -1))
		zgc, c1 := strings.Contains(args, "-XX:+UseZGC"), strings.Contains(args, "TieredStopAtLevel=1")
		if collectors != 1 || zgc != long || c1 == long || !strings.HasSuffix(args, "-Xmx1g") {
			t.Errorf("LongLived=%v: %s", long, args)
		}
	}
}

// TestBrokerConfigToleratesASlowController: the heartbeat interval is also
// the timeout of a broker's registration and heartbeat requests, and half of
// it the controller's deadline for answering a heartbeat. Below Kafka's 2 s,
// a loaded 2-core machine times them out over and over and a 3-node cluster
// stays fenced past the start deadline.
func TestBrokerConfigToleratesASlowController(t *testing.T) {
	nodes := []*node{{port: 1, controllerPort: 2}, {port: 3, controllerPort: 4}, {port: 5, controllerPort: 6}}
	c := brokerConfig(0, nodes, "/data", nil)
	interval, _ := strconv.Atoi(c["broker.heartbeat.interval.ms"])
	session, _ := strconv.Atoi(c["broker.session.timeout.ms"])
	if interval < 2000 || session < 4*interval {
		t.Fatalf("broker.heartbeat.interval.ms=%d, broker.session.timeout.ms=%d: want at least 2000 and 4 intervals",
			interval, session)
	}
}

// TestWaitReadyNamesEveryNodesLastProbe: nodes that accept connections but
// never answer fail the wait at the deadline with what each of them
// answered last, and how long the wait took.
func TestWaitReadyNamesEveryNodesLastProbe(t *testing.T) {
	var want []*node
	for i := range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() { // accepts and stays silent, like a broker starved of CPU
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { conn.Close() })
			}
		}()
		want = append(want, &node{id: i, dir: t.TempDir(), port: ln.Addr().(*net.TCPAddr).Port, done: make(chan struct{})})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err := (&Cluster{}).waitReady(ctx, want)
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("waitReady = %v, want ErrNotReady", err)
	}
	for _, nd := range want {
		if !regexp.MustCompile(`node ` + strconv.Itoa(nd.id) + ` \(` + regexp.QuoteMeta(nd.addr()) + `\): [^;]*i/o timeout`).MatchString(err.Error()) {
			t.Errorf("the error does not say what node %d answered:\n%v", nd.id, err)
		}
	}
	if !regexp.MustCompile(`after \d+s waiting for 2 nodes`).MatchString(err.Error()) {
		t.Errorf("the error does not say how long it waited:\n%v", err)
	}
}

// TestBrokerConfigListensOnTheNodesHost: a node given a host of its own
// binds, advertises and votes on it, and the others stay on loopback.
func TestBrokerConfigListensOnTheNodesHost(t *testing.T) {
	nodes := []*node{{host: "10.0.0.10", port: 1, controllerPort: 2}, {port: 3, controllerPort: 4}}
	c := brokerConfig(0, nodes, "/data", nil)
	want := map[string]string{
		"listeners":                "PLAINTEXT://10.0.0.10:1,CONTROLLER://10.0.0.10:2",
		"advertised.listeners":     "PLAINTEXT://10.0.0.10:1",
		"controller.quorum.voters": "0@10.0.0.10:2,1@127.0.0.1:4",
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("%s=%q, want %q", k, c[k], v)
		}
	}
	if c := brokerConfig(1, nodes, "/data", nil); c["listeners"] != "PLAINTEXT://127.0.0.1:3,CONTROLLER://127.0.0.1:4" {
		t.Errorf("node without a host: listeners=%q", c["listeners"])
	}
}

// TestBrokerConfigSCRAM: with Options.SCRAM a node gets a SASL listener for
// SCRAM-SHA-512 next to its PLAINTEXT one, and the authorizer, under which
// the unauthenticated listeners (the harness's and the nodes' own) are the
// super user; without it, neither.
func TestBrokerConfigSCRAM(t *testing.T) {
	plain := brokerConfig(0, []*node{{port: 1, controllerPort: 2}}, "/data", nil)
	if _, ok := plain["authorizer.class.name"]; ok || strings.Contains(plain["listeners"], scramListener) {
		t.Fatalf("without SCRAM: %v", plain)
	}
	c := brokerConfig(0, []*node{{port: 1, controllerPort: 2, scramPort: 3}}, "/data", nil)
	for k, want := range map[string]string{
		"listeners":                                   "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2,SCRAM://127.0.0.1:3",
		"advertised.listeners":                        "PLAINTEXT://127.0.0.1:1,SCRAM://127.0.0.1:3",
		"listener.security.protocol.map":              "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SCRAM:SASL_PLAINTEXT",
		"inter.broker.listener.name":                  "PLAINTEXT",
		"listener.name.scram.sasl.enabled.mechanisms": "SCRAM-SHA-512",
		"authorizer.class.name":                       "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"super.users":                                 "User:ANONYMOUS",
		"allow.everyone.if.no.acl.found":              "false",
	} {
		if c[k] != want {
			t.Errorf("%s = %q, want %q", k, c[k], want)
		}
	}
	if c := brokerConfig(0, []*node{{host: "10.0.0.10", port: 1, controllerPort: 2, scramPort: 3}}, "/data", nil); !strings.HasSuffix(c["advertised.listeners"], ",SCRAM://10.0.0.10:3") {
		t.Errorf("a node with a host of its own: advertised.listeners=%q", c["advertised.listeners"])
	}
	if l := log4j2Config("/n/server.log", "/n/"+AuthorizerLog); !strings.Contains(l, "logger.authorizer.level = DEBUG") ||
		!strings.Contains(l, "fileName = /n/"+AuthorizerLog) {
		t.Errorf("the authorizer's decisions are not logged:\n%s", l)
	}
	if l := log4j2Config("/n/server.log", ""); strings.Count(l, "fileName") != 1 || !strings.Contains(l, "logger.authorizer.level = WARN") {
		t.Errorf("without SCRAM:\n%s", l)
	}
}
