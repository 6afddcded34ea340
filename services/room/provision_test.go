package room

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"palaver.dev/services/internal/devbroker"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// brokers runs a test against the real Apache Kafka broker and against the
// embedded dev broker, since dev mode provisions through the same code.
func brokers(t *testing.T, test func(t *testing.T, bootstrap string)) {
	t.Run("kafka", func(t *testing.T) {
		bootstrap := kafkatest.Shared(t)
		t.Logf("real Apache Kafka broker at %s", bootstrap)
		test(t, bootstrap)
	})
	t.Run("devbroker", func(t *testing.T) {
		b, err := devbroker.Start(devbroker.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		test(t, b.Addr())
	})
}

func newProvisioner(t *testing.T, bootstrap string) (*Provisioner, *kafkabus.Cluster) {
	t.Helper()
	cfg := kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "room-test"}
	client, err := cfg.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	cl, err := kafkabus.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return NewProvisioner(client), cl
}

// uniqueName keeps tests that share a broker out of each other's topics.
func uniqueName(t *testing.T) string {
	return fmt.Sprintf("t%d", time.Now().UnixNano()%1e12)
}

func TestEnsureCreatesGrowsAndRepairs(t *testing.T) {
	brokers(t, func(t *testing.T, bootstrap string) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		p, _ := newProvisioner(t, bootstrap)
		spec := Spec{Name: uniqueName(t), Retention: time.Hour}.WithDefaults(1)

		if err := p.Ensure(ctx, spec); err != nil {
			t.Fatal(err)
		}
		st := observe(ctx, t, p, spec.Topic)
		if st.Partitions != 1 || st.ReplicationFactor != 1 || st.ID == "" {
			t.Fatalf("created topic: %+v", st)
		}
		if d := Drift(spec, st); len(d) != 0 {
			t.Fatalf("fresh topic drifts: %+v", d)
		}

		// Idempotent, then growth.
		if err := p.Ensure(ctx, spec); err != nil {
			t.Fatalf("second Ensure: %v", err)
		}
		spec.Partitions = 3
		if err := p.Ensure(ctx, spec); err != nil {
			t.Fatal(err)
		}
		// Brokers learn of new partitions from the controller a moment later.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			st := observe(ctx, t, p, spec.Topic)
			if st.Partitions == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("partitions = %d after growth, want 3", st.Partitions)
			}
		}

		// A config changed behind our back is drift, and Ensure repairs it.
		if err := p.ApplyConfigs(ctx, spec.Topic, []ConfigDrift{{Key: "retention.ms", Want: "1000"}}); err != nil {
			t.Fatal(err)
		}
		// Brokers apply config changes asynchronously.
		var d []ConfigDrift
		for deadline := time.Now().Add(30 * time.Second); len(d) == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			d = Drift(spec, observe(ctx, t, p, spec.Topic))
		}
		if len(d) != 1 || d[0].Key != "retention.ms" || d[0].Have != "1000" || d[0].Want != "3600000" {
			t.Fatalf("drift = %+v, want retention.ms 1000 -> 3600000", d)
		}
		if err := p.Ensure(ctx, spec); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Second); len(d) != 0; time.Sleep(100 * time.Millisecond) {
			if d = Drift(spec, observe(ctx, t, p, spec.Topic)); len(d) != 0 && time.Now().After(deadline) {
				t.Fatalf("drift after Ensure: %+v", d)
			}
		}

		// Partitions never shrink.
		spec.Partitions = 2
		if err := p.Ensure(ctx, spec); !errors.Is(err, ErrPartitionDecrease) {
			t.Fatalf("Ensure with fewer partitions = %v, want ErrPartitionDecrease", err)
		}
	})
}

func TestObserveSeesARecreatedTopic(t *testing.T) {
	brokers(t, func(t *testing.T, bootstrap string) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		p, _ := newProvisioner(t, bootstrap)
		spec := Spec{Name: uniqueName(t)}.WithDefaults(1)
		ids, errs, err := p.Create(ctx, spec)
		if err != nil || errs[spec.Topic] != nil {
			t.Fatalf("create: %v %v", err, errs)
		}
		first := observe(ctx, t, p, spec.Topic)
		if first.ID != ids[spec.Topic] {
			t.Fatalf("observed id %s, created id %s", first.ID, ids[spec.Topic])
		}
		if _, errs, _ := p.Create(ctx, spec); !errors.Is(errs[spec.Topic], ErrTopicExists) {
			t.Fatalf("second create: %v, want ErrTopicExists", errs[spec.Topic])
		}
		if err := p.DeleteTopics(ctx, spec.Topic); err != nil {
			t.Fatal(err)
		}
		var again map[string]error
		for deadline := time.Now().Add(30 * time.Second); ; {
			// Deletion is asynchronous on a real broker.
			_, again, err = p.Create(ctx, spec)
			if err == nil && again[spec.Topic] == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil || again[spec.Topic] != nil {
			t.Fatalf("recreate: %v %v", err, again)
		}
		second, err := p.awaitVisible(ctx, []string{spec.Topic})
		if err != nil {
			t.Fatal(err)
		}
		if second[spec.Topic].ID == first.ID {
			t.Fatalf("recreated topic kept id %s", first.ID)
		}
	})
}

// TestBatchedCalls checks the batched calls the operator makes, with
// per-topic results: a bad topic does not fail the others.
func TestBatchedCalls(t *testing.T) {
	brokers(t, func(t *testing.T, bootstrap string) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		p, _ := newProvisioner(t, bootstrap)
		a := Spec{Name: uniqueName(t) + "a", MaxMessageBytes: 2000}.WithDefaults(1)
		b := Spec{Name: uniqueName(t) + "b"}.WithDefaults(1)
		if err := p.Ensure(ctx, a, b); err != nil {
			t.Fatal(err)
		}

		d, err := p.Describe(ctx, a.Topic, b.Topic, "missing."+a.Topic)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Brokers) != 1 || !d.Topics[a.Topic].Exists || !d.Topics[b.Topic].Exists || d.Topics["missing."+a.Topic].Exists || len(d.Errs) != 0 {
			t.Fatalf("Describe = %+v", d)
		}
		if got := d.Topics[a.Topic].Configs["max.message.bytes"]; got != "2000" {
			t.Fatalf("max.message.bytes = %q, want 2000", got)
		}
		if d, err := p.Describe(ctx); err != nil || len(d.Brokers) != 1 || len(d.Topics) != 0 {
			t.Fatalf("Describe() = %+v, %v; want the brokers and no topic", d, err)
		}

		errs, err := p.SetPartitions(ctx, map[string]int32{a.Topic: 2, b.Topic: 3, "missing." + a.Topic: 2})
		if err != nil {
			t.Fatal(err)
		}
		if errs[a.Topic] != nil || errs[b.Topic] != nil || errs["missing."+a.Topic] == nil {
			t.Fatalf("SetPartitions errors = %v", errs)
		}

		// Dropping maxMessageBytes from the spec removes the override.
		a.MaxMessageBytes = 0
		var drift []ConfigDrift
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if drift = Drift(a, observe(ctx, t, p, a.Topic)); len(drift) == 1 {
				break
			}
		}
		if len(drift) != 1 || drift[0].Key != "max.message.bytes" || !drift[0].Remove {
			t.Fatalf("drift = %+v, want the max.message.bytes override removed", drift)
		}
		if errs, err := p.Configure(ctx, map[string][]ConfigDrift{a.Topic: drift}); err != nil || errs[a.Topic] != nil {
			t.Fatalf("Configure = %v, %v", errs, err)
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			st := observe(ctx, t, p, a.Topic)
			if len(Drift(a, st)) == 0 && st.Partitions == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after Configure and SetPartitions: %+v, drift %+v", st, Drift(a, st))
			}
		}

		if errs, err := p.Delete(ctx, a.Topic, b.Topic, "missing."+a.Topic); err != nil || errs[a.Topic] != nil || errs[b.Topic] != nil || errs["missing."+a.Topic] != nil {
			t.Fatalf("Delete = %v, %v", errs, err)
		}
	})
}

func TestRegistryFollowsPublishAndTombstone(t *testing.T) {
	brokers(t, func(t *testing.T, bootstrap string) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		p, cl := newProvisioner(t, bootstrap)
		if err := p.EnsureRegistry(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if err := p.EnsureRegistry(ctx, 1); err != nil {
			t.Fatalf("EnsureRegistry is not idempotent: %v", err)
		}
		w := cl.Writer()
		defer w.Close()
		a := Spec{Name: uniqueName(t) + "a", DisplayName: "A"}.WithDefaults(1)
		b := Spec{Name: uniqueName(t) + "b"}.WithDefaults(1)
		if err := Publish(ctx, w, a.Info(), b.Info()); err != nil {
			t.Fatal(err)
		}

		reg := NewRegistry(cl, nil)
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- reg.Run(runCtx) }()
		defer func() { stop(); <-done }()

		select {
		case <-reg.Ready():
		case <-ctx.Done():
			t.Fatal("registry never became ready")
		}
		if in, err := reg.Get(a.Name); err != nil || in.DisplayName != "A" || in.Topic != a.Topic {
			t.Fatalf("Get(%q) = %+v, %v", a.Name, in, err)
		}

		changed := reg.Changed()
		if err := Tombstone(ctx, w, b.Name); err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := reg.Get(b.Name); errors.Is(err, ErrNotFound) {
				break
			}
			select {
			case <-changed:
				changed = reg.Changed()
			case <-ctx.Done():
				t.Fatal("tombstone never reached the registry")
			}
		}
	})
}

// TestCreateReturnsWritable checks that a topic Create or EnsureRegistry
// just made can take a write at once from a client that has never seen it.
func TestCreateReturnsWritable(t *testing.T) {
	brokers(t, func(t *testing.T, bootstrap string) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		p, _ := newProvisioner(t, bootstrap)
		if err := p.EnsureRegistry(ctx, 1); err != nil {
			t.Fatal(err)
		}
		assertWritable(ctx, t, p, bootstrap, RegistryTopic, false)
		for i := range 3 {
			s := Spec{Name: fmt.Sprintf("%sw%d", uniqueName(t), i)}.WithDefaults(1)
			_, errs, err := p.Create(ctx, s)
			if err == nil {
				err = errs[s.Topic]
			}
			if err != nil {
				t.Fatal(err)
			}
			assertWritable(ctx, t, p, bootstrap, s.Topic, true)
		}
	})
}

// assertWritable asks every broker about topic once, with no wait, and
// (with write) then writes to it through a new writer, whose first metadata
// is fetched now. The registry is left alone: other tests read it.
func assertWritable(ctx context.Context, t *testing.T, p *Provisioner, bootstrap, topic string, write bool) {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	if pending, err := p.notWritable(ctx, req, []string{topic}); err != nil || pending != "" {
		t.Fatalf("right after creation: %s %v", pending, err)
	}
	if !write {
		return
	}
	cl, err := kafkabus.New(kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "room-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	w := cl.Writer()
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatalf("write to %s right after creation: %v", topic, err)
	}
}

func observe(ctx context.Context, t *testing.T, p *Provisioner, topic string) TopicState {
	t.Helper()
	states, err := p.Observe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return states[topic]
}
