package simulate

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

func TestScratchRoomsComeAndGo(t *testing.T) {
	cfg := kafkabus.Config{Brokers: strings.Split(kafkatest.Shared(t), ","), ClientID: "scratch-test"}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := NewScratch(ctx, cfg, "test", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Names) != 2 || !strings.HasPrefix(s.Names[0], "test-") {
		t.Fatalf("names %v", s.Names)
	}
	cluster, err := kafkabus.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	reg := room.NewRegistry(cluster, nil)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = reg.Run(rctx) }()
	waitRegistry(t, reg, func() bool {
		_, err1 := reg.Get(s.Names[0])
		_, err2 := reg.Get(s.Names[1])
		return err1 == nil && err2 == nil
	})
	if err := s.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	waitRegistry(t, reg, func() bool {
		_, err := reg.Get(s.Names[0])
		return errors.Is(err, room.ErrNotFound)
	})
	// Kafka deletes topics asynchronously.
	waitRegistry(t, reg, func() bool {
		st, err := s.prov.Observe(ctx, s.topics...)
		return err == nil && !st[s.topics[0]].Exists && !st[s.topics[1]].Exists
	})
}

func waitRegistry(t *testing.T, reg *room.Registry, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("the change never showed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
