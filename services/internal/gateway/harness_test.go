package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/internal/testio"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// testSecret signs the tests' HS256 tokens.
var testSecret = []byte("palaver-gateway-tests-secret-0123456789abcdef")

// kafkaEnv is the real broker with the room registry, shared by the tests
// of this binary.
type kafkaEnv struct {
	bootstrap string
	cluster   *kafkabus.Cluster
	rooms     *room.Registry
	prov      *room.Provisioner
	writer    *kafka.Writer
	verifier  auth.Verifier
}

var (
	envOnce sync.Once
	env     *kafkaEnv
	envErr  error
	roomSeq atomic.Int64
)

func sharedEnv(t testing.TB) *kafkaEnv {
	t.Helper()
	bootstrap := kafkatest.Shared(t)
	envOnce.Do(func() { env, envErr = startEnv(bootstrap) })
	if envErr != nil {
		t.Fatalf("test environment: %v", envErr)
	}
	return env
}

func startEnv(bootstrap string) (*kafkaEnv, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "gateway-test"}
	cluster, err := kafkabus.New(cfg)
	if err != nil {
		return nil, err
	}
	admin, err := cluster.AdminClient()
	if err != nil {
		return nil, err
	}
	prov := room.NewProvisioner(admin)
	if err := prov.EnsureRegistry(ctx, 1); err != nil {
		return nil, err
	}
	rooms := room.NewRegistry(cluster, nil)
	go rooms.Run(context.Background()) // for the life of the test binary
	select {
	case <-rooms.Ready():
	case <-ctx.Done():
		return nil, errors.New("room registry not ready")
	}
	v, err := auth.New(ctx, auth.Config{Mode: auth.ModeJWT, HS256Secret: string(testSecret), RoomsClaim: "rooms"}, nil)
	if err != nil {
		return nil, err
	}
	return &kafkaEnv{bootstrap: bootstrap, cluster: cluster, rooms: rooms, prov: prov, writer: cluster.Writer(), verifier: v}, nil
}

// newRoom provisions a room of its own for a test, as the operator would:
// topic through the provisioner, entry in the registry.
func (e *kafkaEnv) newRoom(t testing.TB, partitions int32) room.Info {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e9, roomSeq.Add(1))
	spec := room.Spec{Name: name, Partitions: partitions, Retention: time.Hour}.WithDefaults(1)
	if err := e.prov.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := room.Publish(ctx, e.writer, spec.Info()); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := e.rooms.Get(name); err == nil {
			return spec.Info()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("room %s never reached the registry", name)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// endOffset is the next offset of a room's partition.
func (e *kafkaEnv) endOffset(t testing.TB, topic string, p int) int64 {
	t.Helper()
	res, err := e.cluster.Admin().ListOffsets(t.Context(), &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(p)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	parts := res.Topics[topic]
	if len(parts) == 0 {
		t.Fatalf("no offsets for %s/%d", topic, p)
	}
	if parts[0].Error != nil {
		t.Fatal(parts[0].Error)
	}
	return parts[0].LastOffset
}

// token signs a test token; rooms nil allows every room.
func token(t testing.TB, sub string, rooms []string, ttl time.Duration) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "name": strings.ToUpper(sub[:1]) + sub[1:], "exp": time.Now().Add(ttl).Unix()}
	if rooms != nil {
		claims["rooms"] = rooms
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testServer is a gateway on an httptest server.
type testServer struct {
	*Server
	url     string
	reg     *prometheus.Registry
	metrics *Metrics
	stop    context.CancelFunc
	done    chan error
}

// startServer runs a gateway with the test defaults adjusted by adjust.
func startServer(t testing.TB, e *kafkaEnv, adjust func(*Config)) *testServer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.TailLinger = 200 * time.Millisecond
	if adjust != nil {
		adjust(&cfg)
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	log := slog.New(slog.NewTextHandler(testio.Log(t), &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := New(cfg, Deps{Cluster: e.cluster, Rooms: e.rooms, Verifier: e.verifier, Metrics: m, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, url: hs.URL, reg: reg, metrics: m, stop: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ts.done
		hs.Close()
	})
	return ts
}

// frame is any server frame, flattened.
type frame = protocol.ServerFrame

// client is a protocol test client.
type client struct {
	t      testing.TB
	ws     *websocket.Conn
	n      int
	inbox  []frame // message frames read while waiting for an answer
	frames chan readResult
	once   sync.Once
}

type readResult struct {
	f   frame
	raw []byte
	err error
}

type dialOpts struct {
	header    http.Header
	rcvBuffer int  // SO_RCVBUF of the client socket; 0 leaves the default
	noReader  bool // do not read until startReading (a stalled client)
}

func dial(t testing.TB, s *testServer, o dialOpts) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{HTTPHeader: o.header}
	if o.rcvBuffer > 0 {
		d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.rcvBuffer)
			})
			return errors.Join(err, serr)
		}}
		opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/v1/ws", opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ws.SetReadLimit(1 << 20)
	c := &client{t: t, ws: ws, frames: make(chan readResult, 4096)}
	t.Cleanup(func() { _ = ws.CloseNow() })
	if !o.noReader {
		c.startReading()
	}
	return c
}

// startReading reads frames in the background: a read with a deadline
// would close the connection (coder/websocket closes on any read error).
func (c *client) startReading() {
	c.once.Do(func() {
		go func() {
			for {
				_, b, err := c.ws.Read(context.Background())
				if err != nil {
					c.frames <- readResult{err: err}
					close(c.frames)
					return
				}
				var f frame
				if jerr := json.Unmarshal(b, &f); jerr != nil {
					err = fmt.Errorf("server frame is not JSON: %q", b)
				}
				c.frames <- readResult{f: f, raw: b, err: err}
			}
		}()
	})
}

// connect dials, says hello with tok and expects welcome.
func connect(t testing.TB, s *testServer, tok string) *client {
	t.Helper()
	c := dial(t, s, dialOpts{})
	c.hello(tok)
	return c
}

func (c *client) write(v any) {
	c.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) ref() string {
	c.n++
	return fmt.Sprintf("r%d", c.n)
}

// read returns the next frame, or the close error.
func (c *client) read() (frame, error) {
	select {
	case r, ok := <-c.frames:
		if !ok {
			return frame{}, errors.New("connection already ended")
		}
		return r.f, r.err
	case <-time.After(20 * time.Second):
		return frame{}, errors.New("no frame within 20 s")
	}
}

// next returns the next frame that is not presence.
func (c *client) next() frame {
	c.t.Helper()
	for {
		f, err := c.read()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if f.Op != "presence" {
			return f
		}
	}
}

// expect reads the next frame and checks its op (and ref when given).
func (c *client) expect(op, ref string) frame {
	c.t.Helper()
	f := c.next()
	if f.Op != op || ref != "" && f.Ref != ref {
		c.t.Fatalf("got %+v, want op %q ref %q", f, op, ref)
	}
	return f
}

// expectError reads an error frame with code.
func (c *client) expectError(code, ref string) frame {
	c.t.Helper()
	f := c.expect("error", ref)
	if f.Code != code {
		c.t.Fatalf("error %q (%s), want %q", f.Code, f.Message, code)
	}
	return f
}

// expectClose reads until the connection closes and checks the code.
func (c *client) expectClose(code websocket.StatusCode) {
	c.t.Helper()
	for {
		_, err := c.read()
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != code {
			c.t.Fatalf("connection ended with %v (status %d), want close code %d", err, got, code)
		}
		return
	}
}

func (c *client) hello(tok string) frame {
	c.t.Helper()
	ref := c.ref()
	c.write(map[string]any{"op": "hello", "ref": ref, "versions": []int{1}, "token": tok})
	return c.expect("welcome", ref)
}

func (c *client) join(room string, extra map[string]any) frame {
	c.t.Helper()
	ref := c.ref()
	f := map[string]any{"op": "join", "ref": ref, "room": room}
	for k, v := range extra {
		f[k] = v
	}
	c.write(f)
	return c.expect("joined", ref)
}

// send sends a message and returns its ack, skipping message frames.
func (c *client) send(room, id, text string) frame {
	c.t.Helper()
	ref := c.ref()
	c.write(map[string]any{"op": "send", "ref": ref, "room": room, "id": id, "text": text})
	for {
		f := c.next()
		if f.Op == "message" {
			c.inbox = append(c.inbox, f)
			continue
		}
		if f.Op != "ack" || f.Ref != ref {
			c.t.Fatalf("got %+v, want ack %s", f, ref)
		}
		return f
	}
}

// messages reads n message frames (skipping acks).
func (c *client) messages(n int) []frame {
	c.t.Helper()
	k := min(n, len(c.inbox))
	out := c.inbox[:k:k]
	c.inbox = c.inbox[k:]
	for len(out) < n {
		f := c.next()
		switch f.Op {
		case "message":
			out = append(out, f)
		case "ack":
		default:
			c.t.Fatalf("got %+v while waiting for messages", f)
		}
	}
	return out
}

// quiet checks that no frame arrives for a moment.
func (c *client) quiet() {
	c.t.Helper()
	select {
	case r := <-c.frames:
		c.t.Fatalf("unexpected frame %s (%v)", r.raw, r.err)
	case <-time.After(300 * time.Millisecond):
	}
}

// produceDirect writes envelopes to a room's topic as another replica
// would, bypassing the gateway.
func (e *kafkaEnv) produceDirect(t testing.TB, info room.Info, sender string, n int, textBytes int) {
	t.Helper()
	msgs := make([]kafka.Message, n)
	text := strings.Repeat("x", textBytes)
	for i := range msgs {
		b, err := json.Marshal(map[string]any{"v": 1, "id": fmt.Sprintf("d%d-%d", time.Now().UnixNano(), i), "room": info.Name,
			"sender_id": sender, "text": text})
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = kafka.Message{Topic: info.Topic, Key: []byte(sender), Value: b}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		err := e.writer.WriteMessages(ctx, msgs...)
		if err == nil {
			return
		}
		if !kafkabus.MetadataLag(err) || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // a new topic: the writer's metadata catches up within a second
	}
}
