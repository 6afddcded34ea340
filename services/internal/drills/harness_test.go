package drills

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/loadgen"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/testio"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

// The drills share one 3-node cluster and one gateway binary, made on
// first use and removed when the tests end.
var (
	envOnce sync.Once
	env     *drillEnv
	envErr  error
	roomSeq atomic.Int64

	binOnce sync.Once
	binDir  string // holds the gateway binary and the secret
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		if err := env.kafka.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		if code != 0 {
			fmt.Fprintf(os.Stderr, "drills: failed; broker logs kept in %s\n", env.kafka.Dir())
		} else {
			_ = os.RemoveAll(env.dir)
		}
	}
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// secret signs the drills' tokens; the gateways read it from a file.
const secret = "palaver-drills-secret-0123456789abcdef0123"

type drillEnv struct {
	dir     string // the cluster's
	gateway string // the gateway binary
	secret  string // file holding the secret
	kafka   *kafkatest.Cluster
	bus     *kafkabus.Cluster
	prov    *room.Provisioner
	writer  *kafka.Writer
}

func setup(t *testing.T) *drillEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("runs gateway processes on a 3-node Kafka cluster: skipped in -short mode")
	}
	envOnce.Do(func() {
		gw, sec, err := binaries()
		if err != nil {
			envErr = err
			return
		}
		env, envErr = start(gw, sec, kafkatest.Options{})
	})
	if envErr != nil {
		t.Fatalf("drill environment: %v", envErr)
	}
	return env
}

// binaries builds the gateway and writes the secret's file, once.
func binaries() (gateway, secretFile string, err error) {
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "palaver-drills-bin-"); binErr != nil {
			return
		}
		if binErr = os.WriteFile(filepath.Join(binDir, "secret"), []byte(secret), 0o600); binErr != nil {
			return
		}
		gobin, err := exec.LookPath("go")
		if err != nil {
			binErr = fmt.Errorf("the drills build the gateway: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, gobin, "build", "-o", filepath.Join(binDir, "gateway"), "palaver.dev/services/cmd/gateway")
		if out, err := build.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("build the gateway: %w\n%s", err, out)
		}
	})
	return filepath.Join(binDir, "gateway"), filepath.Join(binDir, "secret"), binErr
}

// start starts a 3-node cluster with opts (Nodes, Dir and Logger are
// set here) and the registry of rooms.
func start(gatewayBin, secretFile string, opts kafkatest.Options) (*drillEnv, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "palaver-drills-")
	if err != nil {
		return nil, err
	}
	e := &drillEnv{dir: dir, gateway: gatewayBin, secret: secretFile}
	opts.Nodes, opts.Dir = 3, filepath.Join(dir, "kafka")
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e.kafka, err = kafkatest.Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	e.bus, err = kafkabus.New(kafkabus.Config{Brokers: e.kafka.Brokers(), ClientID: "drills"})
	if err != nil {
		return nil, err
	}
	admin, err := e.bus.AdminClient()
	if err != nil {
		return nil, err
	}
	e.prov = room.NewProvisioner(admin)
	if err := e.prov.EnsureRegistry(ctx, 3); err != nil {
		return nil, err
	}
	e.writer = e.bus.Writer()
	return e, nil
}

// newRooms provisions n rooms as the operator would on a real cluster
// (RF 3, min.insync.replicas 2), each with its topic's name.
func (e *drillEnv) newRooms(t *testing.T, n int) (names, topics []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var specs []room.Spec
	var infos []room.Info
	for range n {
		name := fmt.Sprintf("drill%d-%d", time.Now().UnixNano()%1e6, roomSeq.Add(1))
		s := room.Spec{Name: name, Partitions: 1, Retention: time.Hour}.WithDefaults(3)
		specs, infos = append(specs, s), append(infos, s.Info())
		names, topics = append(names, name), append(topics, s.Topic)
	}
	if err := e.prov.Ensure(ctx, specs...); err != nil {
		t.Fatal(err)
	}
	if err := room.Publish(ctx, e.writer, infos...); err != nil {
		t.Fatal(err)
	}
	return names, topics
}

// leader returns the node leading partition 0 of topic.
func (e *drillEnv) leader(t *testing.T, topic string) int {
	t.Helper()
	md, err := e.bus.Admin().Metadata(t.Context(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Topics) != 1 || len(md.Topics[0].Partitions) == 0 {
		t.Fatalf("no metadata for %s", topic)
	}
	return md.Topics[0].Partitions[0].Leader.ID
}

// token signs a token for user, valid for an hour.
func token(user string) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "name": user, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
}

// gateway is a gateway process.
type gateway struct {
	url, ops string
	cmd      *exec.Cmd
	done     chan struct{}
	log      *testio.SyncBuffer
}

// startGateway runs a gateway process with args added to the drills'
// defaults, and waits until it is ready.
func (e *drillEnv) startGateway(t *testing.T, args ...string) *gateway {
	t.Helper()
	return e.startGatewayIn(t, nil, args...)
}

// startGatewayIn is startGateway with the command run by wrap (such as
// `ip netns exec <name>`) when wrap is not empty.
func (e *drillEnv) startGatewayIn(t *testing.T, wrap []string, args ...string) *gateway {
	t.Helper()
	args = append([]string{
		"--kafka-bootstrap=" + strings.Join(e.kafka.Brokers(), ","),
		"--listen=127.0.0.1:0", "--ops-addr=127.0.0.1:0",
		"--auth-hs256-secret-file=" + e.secret, "--log-format=json", "--log-level=info",
		"--tail-linger=1m", "--stall-check=2s",
	}, args...)
	argv := append(append(slices.Clone(wrap), e.gateway), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gateway{cmd: cmd, done: make(chan struct{}), log: &testio.SyncBuffer{}}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = g.log.Write(append(line, '\n'))
			var l struct{ Msg, Addr, Ops string }
			if json.Unmarshal(line, &l) == nil && l.Msg == "gateway listening" {
				addrs <- [2]string{l.Addr, l.Ops}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { _ = cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("gateway %s log:\n%s", g.url, tail(g.log.String(), 40))
		}
	})
	select {
	case a := <-addrs:
		g.url, g.ops = "http://"+a[0], "http://"+a[1]
	case <-g.done:
		t.Fatalf("gateway exited at start:\n%s", g.log.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("gateway never said where it listens:\n%s", g.log.String())
	}
	waitFor(t, 2*time.Minute, "gateway "+g.url+" ready", func() bool {
		resp, err := http.Get(g.ops + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return g
}

// kill kills the gateway with SIGKILL, as a crashed pod.
func (g *gateway) kill() {
	_ = g.cmd.Process.Kill()
	<-g.done
}

// stop stops the gateway gracefully if it still runs.
func (g *gateway) stop() {
	select {
	case <-g.done:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(20 * time.Second):
		g.kill()
	}
}

// knows waits until the gateway lists rooms (it reads the registry on
// its own schedule).
func (g *gateway) knows(t *testing.T, rooms []string) {
	t.Helper()
	tok, err := token("drill-admin")
	if err != nil {
		t.Fatal(err)
	}
	api := chatclient.API{BaseURL: g.url, Token: tok}
	waitFor(t, time.Minute, "gateway "+g.url+" to know the rooms", func() bool {
		rs, err := api.Rooms(t.Context())
		if err != nil {
			return false
		}
		known := map[string]bool{}
		for _, r := range rs {
			known[r.Name] = true
		}
		for _, r := range rooms {
			if !known[r] {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		if t.Context().Err() != nil {
			t.Fatalf("test ended waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-lines):], "\n")
}

// crowd is people chatting in every one of a set of rooms.
type crowd struct {
	t      *testing.T
	l      *loadgen.Ledger
	rooms  []string
	people []*loadgen.Person
	stop   context.CancelFunc
	wg     sync.WaitGroup

	talkStop context.CancelFunc
	talkWG   sync.WaitGroup
}

// newCrowd connects n people, p0 to p<n-1>, person i to the gateways
// urls(i) in turn, each joined to every room, and waits until all are in.
func newCrowd(t *testing.T, n int, rooms []string, urls func(i int) []string) *crowd {
	t.Helper()
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("p%d", i)
	}
	return newNamedCrowd(t, names, rooms, urls)
}

// newNamedCrowd is newCrowd with the people's names (each starting with
// "p", which is how settle tells them from people a test adds).
func newNamedCrowd(t *testing.T, names, rooms []string, urls func(i int) []string) *crowd {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &crowd{t: t, l: loadgen.NewLedger(), rooms: rooms, stop: cancel}
	t.Cleanup(c.close)
	for i, name := range names {
		p := c.l.NewPerson(name, urls(i), func(context.Context) (string, error) { return token(name) }, nil)
		for _, r := range rooms {
			p.Join(r)
		}
		c.people = append(c.people, p)
		c.wg.Go(func() { p.Run(ctx, nil) })
	}
	waitFor(t, time.Minute, "everyone to join every room", func() bool {
		for _, p := range c.people {
			if len(p.Rooms()) != len(rooms) {
				return false
			}
		}
		return true
	})
	return c
}

// talk has every person send to the rooms in turn, one message every
// `every`, until quiet; each text is textBytes long.
func (c *crowd) talk(every time.Duration, textBytes int) {
	ctx, cancel := context.WithCancel(context.Background())
	c.talkStop = cancel
	text := strings.Repeat("x", textBytes)
	for i, p := range c.people {
		c.talkWG.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for k := i; ; k++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				p.Send(c.rooms[k%len(c.rooms)], text)
			}
		})
	}
}

// quiet stops the talking.
func (c *crowd) quiet() {
	if c.talkStop != nil {
		c.talkStop()
		c.talkWG.Wait()
	}
}

// acks waits until n more sends than now are acknowledged.
func (c *crowd) acks(n int64, within time.Duration, what string) {
	c.t.Helper()
	want := c.l.AckedN.Load() + n
	waitFor(c.t, within, fmt.Sprintf("%d more acks %s (at %d)", n, what, want-n), func() bool {
		return c.l.AckedN.Load() >= want
	})
}

// settle waits until every send is acknowledged and every person read
// every acknowledged message, then stops the people and checks the books.
func (c *crowd) settle(within time.Duration, extra int64) loadgen.Verdict {
	c.t.Helper()
	c.quiet()
	deadline := time.Now().Add(within)
	for {
		pending := 0
		for _, p := range c.people {
			pending += p.Pending()
		}
		want := c.l.AckedN.Load()*int64(len(c.people)) + extra
		if pending == 0 && c.l.Delivered.Load() >= want {
			break
		}
		if time.Now().After(deadline) {
			c.t.Errorf("after %v: %d sends unacknowledged, %d of %d deliveries", within, pending, c.l.Delivered.Load(), want)
			for _, p := range c.people {
				c.t.Log(p)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.close()
	return c.l.Verify(func(person, room string) bool { return strings.HasPrefix(person, "p") })
}

func (c *crowd) close() {
	c.quiet()
	c.stop()
	c.wg.Wait()
}

// check fails the test on any broken promise: a message lost, repeated,
// reordered, or read without having been acknowledged.
func check(t *testing.T, v loadgen.Verdict) {
	t.Helper()
	b, _ := json.Marshal(v)
	t.Logf("verdict: %s", b)
	if p := v.Problems(); len(p) > 0 {
		t.Errorf("promises broken: %s", strings.Join(p, "; "))
	}
	if v.Unacked > 0 {
		t.Errorf("%d messages read that no ack ever reported", v.Unacked)
	}
	if v.Acked == 0 || v.Deliveries < v.Expected {
		t.Errorf("%d acknowledged, %d of %d expected deliveries", v.Acked, v.Deliveries, v.Expected)
	}
}

// storedCopies reads the topics from their first offsets and counts the
// later copies Kafka holds: records of a (sender, client message id) stored
// before in the same topic. Readers served by the gateway show each once.
func (e *drillEnv) storedCopies(t *testing.T, topics []string) int {
	t.Helper()
	src := roomhub.KafkaSource{Cluster: e.bus}
	md, err := e.bus.Admin().Metadata(t.Context(), &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	req := map[string][]int{}
	for _, tp := range md.Topics {
		for _, p := range tp.Partitions {
			req[tp.Name] = append(req[tp.Name], p.ID)
		}
	}
	bounds, err := src.Offsets(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	copies := 0
	for topic, ps := range req {
		seen := map[[2]string]bool{}
		for _, p := range ps {
			b := bounds[topic][p]
			err := src.ReadRange(t.Context(), topic, p, b.First, b.End, func(rec roomhub.Record) error {
				env, err := message.Decode(rec.Value)
				if err != nil {
					return err
				}
				k := [2]string{env.SenderID, env.ID}
				if seen[k] {
					copies++
				}
				seen[k] = true
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return copies
}
