package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/testio"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	kafkatest.Main(m)
}

// kafkaEnv is the real broker with the room registry, shared by the tests
// of this binary.
type kafkaEnv struct {
	bootstrap string
	cluster   *kafkabus.Cluster
	rooms     *room.Registry
	prov      *room.Provisioner
	admin     *kadm.Client
	writer    *kafka.Writer
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
	cluster, err := kafkabus.New(kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "history-test"})
	if err != nil {
		return nil, err
	}
	client, err := cluster.AdminClient()
	if err != nil {
		return nil, err
	}
	prov := room.NewProvisioner(client)
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
	w := cluster.Writer()
	w.BatchSize = 1000
	return &kafkaEnv{bootstrap: bootstrap, cluster: cluster, rooms: rooms, prov: prov, admin: kadm.NewClient(client), writer: w}, nil
}

// newRoom provisions a room named prefix-N, as the operator would.
func (e *kafkaEnv) newRoom(t testing.TB, prefix string, partitions int32) room.Info {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("%s-%d", prefix, roomSeq.Add(1))
	spec := room.Spec{Name: name, Partitions: partitions, Retention: time.Hour}.WithDefaults(1)
	if err := e.prov.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := room.Publish(ctx, e.writer, spec.Info()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "room "+name+" in the registry", func() bool {
		_, err := e.rooms.Get(name)
		return err == nil
	})
	return spec.Info()
}

// prefix names a test's rooms: t1234-lobby.
func prefix(t testing.TB) string {
	return fmt.Sprintf("t%d", time.Now().UnixNano()%1e8)
}

// produce writes n messages to a room: text(i) from sender u-(i%senders),
// keyed by sender.
func (e *kafkaEnv) produce(t testing.TB, in room.Info, from, n, senders int, text func(i int) string) {
	t.Helper()
	msgs := make([]kafka.Message, 0, n)
	for i := from; i < from+n; i++ {
		sender := fmt.Sprintf("u-%d", i%senders)
		b, err := message.Encode(&message.Envelope{V: 1, ID: fmt.Sprintf("c-%d", i), Room: in.Name, SenderID: sender,
			SenderName: "User " + sender, Text: text(i)})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Topic: in.Topic, Key: []byte(sender), Value: b})
	}
	e.write(t, msgs...)
}

func (e *kafkaEnv) write(t testing.TB, msgs ...kafka.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for len(msgs) > 0 {
		n := min(len(msgs), 5000)
		// A topic just created may not be in the writer's metadata yet.
		err := e.writer.WriteMessages(ctx, msgs[:n]...)
		if errors.Is(err, kafka.UnknownTopicOrPartition) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs = msgs[n:]
	}
}

// ends is the position at the end of every partition of a room.
func (e *kafkaEnv) ends(t testing.TB, in room.Info) cursor.Cursor {
	t.Helper()
	var c cursor.Cursor
	for p := range int(in.Partitions) {
		res, err := e.cluster.Admin().ListOffsets(t.Context(), &kafka.ListOffsetsRequest{
			Topics: map[string][]kafka.OffsetRequest{in.Topic: {kafka.LastOffsetOf(p)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Advance(p, res.Topics[in.Topic][0].LastOffset-1)
	}
	return c
}

// topicMessages reads a room's topic independently of the service: every
// valid envelope with its position, in (partition, offset) order.
func (e *kafkaEnv) topicMessages(t testing.TB, in room.Info) []string {
	t.Helper()
	var out []string
	end := e.ends(t, in)
	for p := range int(in.Partitions) {
		last, _ := end.Next(p)
		if last == 0 {
			continue
		}
		rd, err := e.cluster.PartitionReader(in.Topic, p, kafka.FirstOffset)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		for {
			m, err := rd.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("read %s/%d: %v", in.Topic, p, err)
			}
			if env, err := message.Decode(m.Value); err == nil && env.Room == in.Name {
				out = append(out, fmt.Sprintf("%d/%d %s", p, m.Offset, env.ID))
			}
			if m.Offset+1 >= last {
				break
			}
		}
		cancel()
		_ = rd.Close()
	}
	return out
}

// prefixRooms is the registry seen through a filter: only rooms whose names
// start with a test's prefix, so tests sharing the broker do not ingest each
// other's rooms.
type prefixRooms struct {
	*room.Registry
	prefix string
}

func (r prefixRooms) List() ([]room.Info, error) {
	all, err := r.Registry.List()
	var out []room.Info
	for _, in := range all {
		if strings.HasPrefix(in.Name, r.prefix) {
			out = append(out, in)
		}
	}
	return out, err
}

type runningService struct {
	*Service
	reg  *prometheus.Registry
	m    *Metrics
	stop func()
}

// startService runs a service on dir over the rooms named prefix-*; adjust
// changes its configuration, tune each of its stores before it runs.
func startService(t testing.TB, e *kafkaEnv, dir, prefix string, adjust func(*Config), tune ...func(*Store)) *runningService {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.RefreshInterval = 200 * time.Millisecond
	if adjust != nil {
		adjust(&cfg)
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	log := slog.New(slog.NewTextHandler(testio.Log(t), &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := New(cfg, Deps{Cluster: e.cluster, Rooms: prefixRooms{e.rooms, prefix}, Metrics: m, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tune {
		for _, st := range s.stores {
			f(st)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("history Run: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &runningService{Service: s, reg: reg, m: m, stop: stop}
}

// waitFor polls cond until it holds, failing the test after three minutes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitCaughtUp waits until the service fetched every partition of in once
// and committed up to end in each.
func waitCaughtUp(t testing.TB, s *Service, in room.Info, end cursor.Cursor) {
	t.Helper()
	waitFor(t, "history to catch up with "+in.Name, func() bool {
		v, _, err := s.view(in.Name)
		if err != nil || v.parts < int(in.Partitions) || len(v.end) < v.parts {
			return false
		}
		for p := range v.parts {
			if n, _ := end.Next(p); v.committed[p] < n {
				return false
			}
		}
		return true
	})
}

// allBackward pages a room from its end to its start, and returns
// "p/offset id" of every message, oldest first.
func allBackward(t testing.TB, s *Service, name string, limit int) []string {
	t.Helper()
	var pages [][]string
	var before cursor.Cursor
	for i := 0; ; i++ {
		if i > 100000 {
			t.Fatal("paging never ends")
		}
		page, err := s.Messages(t.Context(), name, PageRequest{Before: before, Limit: limit})
		if err != nil {
			t.Fatalf("page before %v: %v", before, err)
		}
		var ids []string
		for _, m := range page.Messages {
			ids = append(ids, fmt.Sprintf("%d/%d %s", m.Partition, m.Offset, m.ID))
		}
		pages = append(pages, ids)
		if page.Before == "" {
			break
		}
		if before, err = cursor.Parse(page.Before); err != nil {
			t.Fatal(err)
		}
	}
	var out []string
	for i := len(pages) - 1; i >= 0; i-- {
		out = append(out, pages[i]...)
	}
	return out
}
