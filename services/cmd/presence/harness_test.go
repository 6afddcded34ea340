package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/presence"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

// The tests run the real commands, built once: presence replicas and
// gateways as child processes, against the real Kafka broker, with short
// timeouts.
const (
	gatewayTimeout = 3 * time.Second
	heartbeat      = 500 * time.Millisecond
	typingTTL      = time.Second
	sessionTimeout = 6 * time.Second // the broker's group.min.session.timeout.ms
)

var testSecret = "palaver-presence-tests-secret-0123456789abcdef"

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	// Rebuilt by every run (the build cache makes it cheap), in one place
	// so runs leave nothing behind.
	binDir = filepath.Join(os.TempDir(), "palaver-presence-test-bin")
	kafkatest.Main(m)
}

// binaries builds the gateway and presence commands (without the race
// detector: they are the system under test, not the test).
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "palaver.dev/services/cmd/gateway", "palaver.dev/services/cmd/presence")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// env is one test's world: its own presence topics and group on the
// shared broker, and a room of its own.
type env struct {
	t         *testing.T
	bootstrap string
	cluster   *kafkabus.Cluster
	room      string
	events    string
	state     string
	group     string
	secret    string
}

var seq atomic.Int64

func newEnv(t *testing.T) *env {
	t.Helper()
	bootstrap := kafkatest.Shared(t)
	binaries(t)
	cluster, err := kafkabus.New(kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "presence-test"})
	if err != nil {
		t.Fatal(err)
	}
	n := seq.Add(1)
	suffix := fmt.Sprintf("%d-%d", time.Now().UnixNano()%1e9, n)
	e := &env{t: t, bootstrap: bootstrap, cluster: cluster, room: "pres-" + suffix,
		events: "test.presence.events." + suffix, state: "test.presence.state." + suffix, group: "test-presence-" + suffix}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(testSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	e.secret = secret
	e.provision(e.room)
	return e
}

func (e *env) provision(name string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := e.cluster.AdminClient()
	if err != nil {
		e.t.Fatal(err)
	}
	defer admin.Close()
	prov := room.NewProvisioner(admin)
	if err := prov.EnsureRegistry(ctx, 1); err != nil {
		e.t.Fatal(err)
	}
	spec := room.Spec{Name: name, Namespace: "default"}.WithDefaults(1)
	if err := prov.Ensure(ctx, spec); err != nil {
		e.t.Fatal(err)
	}
	w := e.cluster.Writer()
	defer w.Close()
	if err := room.Publish(ctx, w, spec.Info()); err != nil {
		e.t.Fatal(err)
	}
}

// proc is a child process of a command.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string // gateway: the API's address
	ops  string
	done chan struct{}
	mu   sync.Mutex
	logs []string
}

func (e *env) start(name, bin string, args ...string) *proc {
	e.t.Helper()
	cmd := exec.Command(filepath.Join(binaries(e.t), bin), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(p.logs, line)
			p.mu.Unlock()
			var l struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
				Ops  string `json:"ops"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && (l.Msg == "gateway listening" || l.Msg == "presence running") {
				p.mu.Lock()
				p.addr, p.ops = l.Addr, l.Ops
				p.mu.Unlock()
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	e.t.Cleanup(func() {
		p.signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if e.t.Failed() {
			p.mu.Lock()
			e.t.Logf("%s logs:\n%s", p.name, strings.Join(p.logs, "\n"))
			p.mu.Unlock()
		}
	})
	select {
	case <-ready:
	case <-p.done:
		e.t.Fatalf("%s exited at start:\n%s", name, strings.Join(p.logs, "\n"))
	case <-time.After(60 * time.Second):
		e.t.Fatalf("%s did not start", name)
	}
	// Ready: a gateway has read the rooms, a replica made its topics and
	// joined its group.
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + p.ops + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not ready within 60 s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

// kill ends the process with SIGKILL and waits for it.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.signal(syscall.SIGKILL)
	<-p.done
}

func (e *env) presence(name string, extra ...string) *proc {
	e.t.Helper()
	args := append([]string{"--kafka-bootstrap", e.bootstrap, "--ops-addr", "127.0.0.1:0", "--log-level", "info",
		"--group", e.group, "--events-topic", e.events, "--state-topic", e.state,
		"--partitions", "3", "--replication-factor", "1",
		"--gateway-timeout", gatewayTimeout.String(), "--typing-ttl", typingTTL.String(),
		"--session-timeout", sessionTimeout.String()}, extra...)
	return e.start(name, "presence", args...)
}

func (e *env) gateway(id string) *proc {
	e.t.Helper()
	return e.start(id, "gateway", "--kafka-bootstrap", e.bootstrap, "--listen", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0",
		"--auth-hs256-secret-file", e.secret, "--gateway-id", id,
		"--presence-events-topic", e.events, "--presence-state-topic", e.state, "--presence-heartbeat", heartbeat.String(),
		"--presence-typing-interval", typingTTL.String())
}

func token(t *testing.T, sub string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "name": strings.ToUpper(sub[:1]) + sub[1:], "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// frame is any server frame, with the fields the tests look at.
type frame struct {
	Op        string `json:"op"`
	Ref       string `json:"ref"`
	Room      string `json:"room"`
	Code      string `json:"code"`
	Count     int    `json:"count"`
	Truncated bool   `json:"truncated"`
	Users     []pu   `json:"users"`
	Joined    []pu   `json:"joined"`
	Left      []pu   `json:"left"`
	Typing    *[]pu  `json:"typing"`
}

type pu struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// client is a WebSocket client that keeps a room's presence as the
// frames describe it, and every user it was ever told left.
type client struct {
	t    *testing.T
	name string
	ws   *websocket.Conn
	mu   sync.Mutex
	cond chan struct{} // closed and replaced at every frame
	seen []frame
	// the room's presence
	users  map[string]string
	count  int
	typing []string
	left   []string // every user reported leaving, in order
	closed bool
}

func dial(t *testing.T, gw *proc, user, roomName string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+gw.addr+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, name: user, ws: ws, cond: make(chan struct{}), users: map[string]string{}}
	t.Cleanup(func() { _ = ws.CloseNow() })
	go c.read()
	c.send(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}, "token": token(t, user)})
	c.await("welcome", func() bool { return c.has("welcome") })
	c.send(map[string]any{"op": "join", "ref": "j", "room": roomName})
	c.await("joined and a presence snapshot", func() bool { return c.has("joined") && c.has("presence") })
	return c
}

func (c *client) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	if err := c.ws.Write(context.Background(), websocket.MessageText, b); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

func (c *client) read() {
	for {
		_, b, err := c.ws.Read(context.Background())
		c.mu.Lock()
		if err != nil {
			c.closed = true
			close(c.cond)
			c.cond = make(chan struct{})
			c.mu.Unlock()
			return
		}
		var f frame
		_ = json.Unmarshal(b, &f)
		c.seen = append(c.seen, f)
		switch f.Op {
		case "presence":
			clear(c.users)
			for _, u := range f.Users {
				c.users[u.ID] = u.Name
			}
			c.count = f.Count
			c.typing = ids(*orEmpty(f.Typing))
		case "presence_diff":
			for _, u := range f.Joined {
				c.users[u.ID] = u.Name
			}
			for _, u := range f.Left {
				delete(c.users, u.ID)
				c.left = append(c.left, u.ID)
			}
			c.count = f.Count
			if f.Typing != nil {
				c.typing = ids(*f.Typing)
			}
		}
		close(c.cond)
		c.cond = make(chan struct{})
		c.mu.Unlock()
	}
}

func orEmpty(p *[]pu) *[]pu {
	if p == nil {
		return &[]pu{}
	}
	return p
}

func ids(us []pu) []string {
	out := make([]string, 0, len(us))
	for _, u := range us {
		out = append(out, u.ID)
	}
	slices.Sort(out)
	return out
}

func (c *client) has(op string) bool {
	return slices.ContainsFunc(c.seen, func(f frame) bool { return f.Op == op })
}

// await waits (generously) until cond holds; cond runs under the lock.
func (c *client) await(what string, cond func() bool) {
	c.t.Helper()
	if !c.within(30*time.Second, cond) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.t.Fatalf("%s: no %s within 30 s; users %v, typing %v, frames %+v", c.name, what, c.usersLocked(), c.typing, c.seen)
	}
}

// within reports whether cond held at some point within d.
func (c *client) within(d time.Duration, cond func() bool) bool {
	deadline := time.After(d)
	for {
		c.mu.Lock()
		ok, wake := cond(), c.cond
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-wake:
		case <-deadline:
			return false
		}
	}
}

func (c *client) usersLocked() []string {
	out := make([]string, 0, len(c.users))
	for id := range c.users {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// online waits until the client's view of the room is exactly want.
func (c *client) online(want ...string) {
	c.t.Helper()
	slices.Sort(want)
	c.await(fmt.Sprintf("presence %v", want), func() bool {
		return slices.Equal(c.usersLocked(), want) && c.count == len(want)
	})
}

func (c *client) leftCount(user string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, id := range c.left {
		if id == user {
			n++
		}
	}
	return n
}

func (c *client) close() { _ = c.ws.Close(websocket.StatusNormalClosure, "bye") }

// metric returns the sum of a metric's samples whose labels contain
// match, from a process's /metrics.
func metric(t *testing.T, p *proc, name, match string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.ops + "/metrics")
	if err != nil {
		t.Fatalf("%s metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		if match != "" && !strings.Contains(line, match) {
			continue
		}
		var v float64
		if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v); err == nil {
			sum += v
		}
	}
	return sum
}

// waitMetric polls a metric until ok accepts it.
func waitMetric(t *testing.T, p *proc, name, match string, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := metric(t, p, name, match)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s{%s} = %g, still not as expected after 30 s", p.name, name, match, v)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// getJSON calls the gateway's HTTP API as user.
func getJSON(t *testing.T, gw *proc, user, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+gw.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+token(t, user))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// writeEvents writes raw records to the events topic, keyed by room.
func (e *env) writeEvents(values ...[]byte) {
	e.t.Helper()
	w := e.cluster.Writer()
	w.Balancer = &presence.EventBalancer{}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Topic: e.events, Key: []byte(e.room), Value: v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The service creates the events topic; this process's cached metadata
	// may not know it yet, which kafkabus.Write waits out.
	if err := kafkabus.Write(ctx, w, msgs...); err != nil {
		e.t.Fatal(err)
	}
}
