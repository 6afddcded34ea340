package drills

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/kafkatest"
)

// The partition drill runs in namespaces of its own: the test binary
// starts itself again under unshare(1) in a new user, network and mount
// namespace (no privilege needed), where it may build networks. These
// variables tell the second run where it is and what the first one built.
const (
	envInNamespaces = "PALAVER_DRILL_NAMESPACES"
	envGateway      = "PALAVER_DRILL_GATEWAY"
	envSecret       = "PALAVER_DRILL_SECRET"
)

// The drill's networks: a bridge in the test's namespace, and one network
// namespace per node joined to it by a veth pair (node i is
// nodeAddr(i) on the bridge's subnet); a second veth pair per node, its
// client link, lets the test's clients reach a gateway running beside the
// node while the node is cut off from the bridge.
const (
	bridge     = "drills0"
	bridgeAddr = "10.77.0.1/24"
)

func nodeNS(i int) string         { return "kafka" + strconv.Itoa(i) }
func nodeAddr(i int) string       { return "10.77.0." + strconv.Itoa(10+i) }
func bridgePort(i int) string     { return "k" + strconv.Itoa(i) } // the node's veth end on the bridge
func clientLink(i int) string     { return "c" + strconv.Itoa(i) } // the client link's end in the test's namespace
func clientHostAddr(i int) string { return "10.78." + strconv.Itoa(i) + ".1" }
func clientNodeAddr(i int) string { return "10.78." + strconv.Itoa(i) + ".2" }

// A broker cut off from the other two while people chat, rather than
// killed: it keeps running and keeps its clients on its side, but no packet
// passes between it and the rest of the cluster (its link to the bridge is
// down: packets are dropped, nothing is refused). People on the majority's
// side keep chatting once the controller has fenced the broker and its
// leaderships have moved; people whose gateway runs beside the cut broker
// (it can reach that broker alone) get no acknowledgement while it is cut
// off, since with acks=all and min.insync.replicas 2 a leader needs a
// follower's fetch to commit and cannot shrink its ISR without the
// controller; once the link is back the broker truncates what it appended
// alone, catches up, and everyone reads every acknowledged message once, in
// order.
func TestBrokerCutOff(t *testing.T) {
	if os.Getenv(envInNamespaces) == "" {
		runInNamespaces(t)
		return
	}
	netSetup(t)
	e, err := start(os.Getenv(envGateway), os.Getenv(envSecret), kafkatest.Options{
		Hosts:  []string{nodeAddr(0), nodeAddr(1), nodeAddr(2)},
		Config: map[string]string{"replica.lag.time.max.ms": strconv.FormatInt(replicaLag.Milliseconds(), 10)},
		Wrap: func(i int, argv []string) []string {
			return append([]string{"ip", "netns", "exec", nodeNS(i)}, argv...)
		},
	})
	if err != nil {
		t.Fatalf("drill environment: %v", err)
	}
	t.Cleanup(func() {
		if err := e.kafka.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("broker logs kept in %s\n%s", e.kafka.Dir(), e.kafka.LogTail(30))
			return
		}
		_ = os.RemoveAll(e.dir)
	})

	rooms, topics := e.newRooms(t, 3)
	victim := e.leader(t, topics[0])
	var others []int
	for i := range 3 {
		if i != victim {
			others = append(others, i)
		}
	}
	// One gateway beside the majority, one beside the broker to be cut off
	// (in its namespace, its clients coming over the client link).
	gwA := e.startGateway(t)
	ns := []string{"ip", "netns", "exec", nodeNS(victim)}
	gwB := e.startGatewayIn(t, ns, "--listen="+clientNodeAddr(victim)+":0", "--ops-addr="+clientNodeAddr(victim)+":0")
	for _, g := range []*gateway{gwA, gwB} {
		g.knows(t, rooms)
	}
	sideA, sideB := []string{"pa0", "pa1", "pa2", "pa3"}, []string{"pb0", "pb1"}
	names := slices.Concat(sideA, sideB)
	c := newNamedCrowd(t, names, rooms, func(i int) []string {
		if i < len(sideA) {
			return []string{gwA.url}
		}
		return []string{gwB.url}
	})
	c.talk(200*time.Millisecond, 100) // 30 messages a second
	c.acks(30, time.Minute, "before the cut")
	waitFor(t, time.Minute, "acks on both sides before the cut", func() bool {
		return c.ackedBy(sideA, "") > 0 && c.ackedBy(sideB, "") > 0
	})

	t.Logf("cutting node %d (%s) off, leader of %s", victim, nodeAddr(victim), topics[0])
	bCut := c.ackedBy(sideB, "")
	cut := time.Now()
	ip(t, "link", "set", bridgePort(victim), "down")

	// The controller fences it after broker.session.timeout.ms (9 s) without
	// a heartbeat, plus a new quorum election first if it was the active
	// controller (controller.quorum.fetch.timeout.ms, 2 s, and up to
	// controller.quorum.election.timeout.ms, 1 s, more); then its
	// leaderships move to the other replicas in the ISR.
	waitFor(t, 2*time.Minute, fmt.Sprintf("node %d fenced", victim), func() bool {
		return e.fenced(others, topics, victim)
	})
	t.Logf("node %d fenced and out of every ISR %v after the cut", victim, time.Since(cut).Round(100*time.Millisecond))
	bFenced := c.ackedBy(sideB, "")

	// The room the cut broker led takes messages again on the majority's
	// side: the fence, then the writer's request in flight to the cut
	// broker timing out (10 s), a metadata refresh (1 s) and a retry, or the
	// client's retry of an unavailable answer, about 25 s in all.
	aLed := c.ackedBy(sideA, rooms[0])
	waitFor(t, 90*time.Second, "acks on the majority's side in the room the cut broker led", func() bool {
		return c.ackedBy(sideA, rooms[0]) >= aLed+10
	})
	t.Logf("majority side: 10 more acks in %s %v after the cut", rooms[0], time.Since(cut).Round(100*time.Millisecond))

	// The cut stays until the majority's side has chatted on and the cut
	// leader is well past replica.lag.time.max.ms (10 s) without a fetch
	// from its followers, the point where it asks the controller, which it
	// cannot reach, to drop them from the ISR: all that time the people
	// beside it keep sending.
	hold := 2 * replicaLag
	c.acks(60, 2*time.Minute, "with a broker cut off")
	waitFor(t, 2*time.Minute, fmt.Sprintf("the cut to last %v", hold), func() bool { return time.Since(cut) >= hold })

	// Nothing sent beside the cut broker may be acknowledged once it is
	// fenced: it holds no leadership the others know of, and what it
	// appended alone is not committed (acks before the fence are sends
	// answered before the cut, or committed by a follower before it).
	t.Logf("side B: %d acks between the cut and the fence, %d from the fence to the heal",
		bFenced-bCut, c.ackedBy(sideB, "")-bFenced)
	if got := c.ackedBy(sideB, ""); got != bFenced {
		t.Errorf("%d sends acknowledged beside the cut broker after it was fenced", got-bFenced)
	}
	t.Logf("held cut off %v; healing", time.Since(cut).Round(100*time.Millisecond))
	ip(t, "link", "set", bridgePort(victim), "up")
	heal := time.Now()
	waitFor(t, 3*time.Minute, fmt.Sprintf("node %d back in every ISR", victim), func() bool {
		return e.rejoined(others, topics, victim)
	})
	t.Logf("node %d back in every ISR %v after the heal", victim, time.Since(heal).Round(100*time.Millisecond))
	// It led topics[0] for the gateway beside it, appended that gateway's
	// sends alone, and drops them now: the case acks=all exists for.
	truncated := false
	for _, l := range e.truncations(victim, topics) {
		t.Logf("node %d: %s", victim, l)
		truncated = truncated || strings.Contains(l, topics[0]+"-0") && strings.Contains(l, "Truncating to offset")
	}
	if !truncated {
		t.Errorf("node %d truncated nothing of %s when it rejoined: it appended no send alone, and the drill did not "+
			"exercise a cut leader taking sends", victim, topics[0])
	}
	waitFor(t, 2*time.Minute, "acks beside the healed broker", func() bool {
		return c.ackedBy(sideB, "") >= bFenced+10
	})
	t.Logf("side B: 10 more acks %v after the heal", time.Since(heal).Round(100*time.Millisecond))
	c.acks(30, 2*time.Minute, "after the heal")

	v := c.settle(3*time.Minute, 0)
	check(t, v)
	t.Logf("errors answered on the way (retried): %v", v.Errors)
	t.Logf("connections closed on the way (resumed): %v", v.Closes)
	// People kept to their rate through the stall: what queued while
	// their readers waited for Kafka is not a flood.
	if v.Errors[protocol.CodeRateLimited] > 0 {
		t.Errorf("people chatting at their pace were answered rate_limited %d times", v.Errors[protocol.CodeRateLimited])
	}
	t.Logf("later copies stored by Kafka, shown to nobody: %d", e.storedCopies(t, topics))
}

// runInNamespaces runs TestBrokerCutOff again in a new user, network and
// mount namespace, its output logged here, and fails when it fails. It
// skips, saying why, only where unprivileged user namespaces or ip(8) are
// missing.
func runInNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gateway processes on a 3-node Kafka cluster: skipped in -short mode")
	}
	unshare := []string{"unshare", "--user", "--map-root-user", "--net", "--mount", "--"}
	probe := exec.Command(unshare[0], slices.Concat(unshare[1:], []string{"ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1"})...)
	if out, err := probe.CombinedOutput(); err != nil {
		t.Skipf("cutting a broker off needs unprivileged user and network namespaces and iproute2 "+
			"(unshare --user --map-root-user --net, ip link add): %v: %s", err, strings.TrimSpace(string(out)))
	}
	gw, sec, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	timeout := 15 * time.Minute
	if dl, ok := t.Deadline(); ok {
		timeout = time.Until(dl) - 30*time.Second
	}
	args := slices.Concat(unshare, []string{os.Args[0], "-test.run=^" + t.Name() + "$", "-test.v", "-test.count=1",
		"-test.timeout=" + timeout.String()})
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), envInNamespaces+"=1", envGateway+"="+gw, envSecret+"="+sec)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		t.Log(sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the drill in its namespaces failed: %v", err)
	}
}

// netSetup builds the drill's networks in the namespaces the test runs in.
func netSetup(t *testing.T) {
	t.Helper()
	// ip netns keeps its names in /run/netns: a directory of this mount
	// namespace's own, so that the names meet nobody else's.
	if err := syscall.Mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=0755"); err != nil {
		if err := syscall.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
			t.Fatalf("mount a tmpfs for ip netns: %v", err)
		}
		if err := os.Mkdir("/run/netns", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The test's namespace joins the networks and forwards nothing between
	// them: a cut node cannot reach the others through its client link.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	ip(t, "link", "set", "lo", "up")
	ip(t, "link", "add", bridge, "type", "bridge")
	ip(t, "addr", "add", bridgeAddr, "dev", bridge)
	ip(t, "link", "set", bridge, "up")
	for i := range 3 {
		n := nodeNS(i)
		ip(t, "netns", "add", n)
		ip(t, "-n", n, "link", "set", "lo", "up")
		ip(t, "link", "add", bridgePort(i), "type", "veth", "peer", "name", "eth0", "netns", n)
		ip(t, "link", "set", bridgePort(i), "master", bridge, "up")
		ip(t, "-n", n, "addr", "add", nodeAddr(i)+"/24", "dev", "eth0")
		ip(t, "-n", n, "link", "set", "eth0", "up")
		ip(t, "link", "add", clientLink(i), "type", "veth", "peer", "name", "eth1", "netns", n)
		ip(t, "addr", "add", clientHostAddr(i)+"/30", "dev", clientLink(i))
		ip(t, "link", "set", clientLink(i), "up")
		ip(t, "-n", n, "addr", "add", clientNodeAddr(i)+"/30", "dev", "eth1")
		ip(t, "-n", n, "link", "set", "eth1", "up")
	}
}

// ip runs ip(8) with args and fails the test if it fails.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// brokerView is what one node says of the cluster: the brokers it lists
// (unfenced ones) and each partition of the topics.
type brokerView struct {
	brokers    []kafka.Broker
	partitions []kafka.Partition
}

// view asks node i for its view of topics, within a few seconds.
func (e *drillEnv) view(ctx context.Context, i int, topics []string) (brokerView, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", e.kafka.Brokers()[i])
	if err != nil {
		return brokerView{}, err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	var v brokerView
	if v.brokers, err = conn.Brokers(); err != nil {
		return v, err
	}
	v.partitions, err = conn.ReadPartitions(topics...)
	return v, err
}

// fenced reports whether every node of from no longer lists node gone, and
// no partition of topics has it as leader or in its ISR.
func (e *drillEnv) fenced(from []int, topics []string, gone int) bool {
	for _, i := range from {
		v, err := e.view(context.Background(), i, topics)
		if err != nil || len(v.partitions) < len(topics) || slices.ContainsFunc(v.brokers, func(b kafka.Broker) bool { return b.ID == gone }) {
			return false
		}
		for _, p := range v.partitions {
			if p.Leader.ID == gone || slices.ContainsFunc(p.Isr, func(b kafka.Broker) bool { return b.ID == gone }) {
				return false
			}
		}
	}
	return true
}

// rejoined reports whether node back is in the ISR of every partition of
// topics, as every node of from sees it.
func (e *drillEnv) rejoined(from []int, topics []string, back int) bool {
	for _, i := range from {
		v, err := e.view(context.Background(), i, topics)
		if err != nil || len(v.partitions) < len(topics) {
			return false
		}
		for _, p := range v.partitions {
			if !slices.ContainsFunc(p.Isr, func(b kafka.Broker) bool { return b.ID == back }) {
				return false
			}
		}
	}
	return true
}

// replicaLag is the brokers' replica.lag.time.max.ms (kafkatest's default,
// set here because the drill's hold depends on it).
const replicaLag = 10 * time.Second

// truncations returns the lines of node i's broker log where it truncated
// a partition of topics: "Truncating to offset N" (Kafka 4) where it held
// records past N, appended while cut off and never committed.
func (e *drillEnv) truncations(i int, topics []string) []string {
	b, err := os.ReadFile(filepath.Join(e.kafka.Dir(), fmt.Sprintf("node-%d", i), "server.log"))
	if err != nil {
		return []string{err.Error()}
	}
	var lines []string
	for l := range strings.Lines(string(b)) {
		if strings.Contains(l, "runcat") && slices.ContainsFunc(topics, func(tp string) bool { return strings.Contains(l, tp) }) {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

// ackedBy counts the acknowledged sends of the people named, in room (all
// rooms when room is empty). The ledger's ids carry the sender's name.
func (c *crowd) ackedBy(people []string, room string) int {
	n := 0
	for _, r := range c.rooms {
		if room != "" && r != room {
			continue
		}
		for id := range c.l.Acked(r) {
			if slices.ContainsFunc(people, func(p string) bool { return strings.Contains(id, "."+p+".") }) {
				n++
			}
		}
	}
	return n
}
