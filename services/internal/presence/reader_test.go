package presence

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
)

// TestReaderRidesOutPauses: a pause of the broker (a GC pause, a starved
// CPU) shorter than a second delays presence's readers by the pause only;
// they keep their connection instead of dropping it and reconnecting,
// which with kafka-go's default margin (125 ms) added a reconnection to
// every change that followed such a pause.
func TestReaderRidesOutPauses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kafka broker of its own, to pause it")
	}
	ctx := t.Context()
	c, err := kafkatest.Start(ctx, kafkatest.Options{Nodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	cluster, err := kafkabus.New(kafkabus.Config{Brokers: strings.Split(c.Bootstrap(), ","), ClientID: "presence-test"})
	if err != nil {
		t.Fatal(err)
	}
	const topic = "presence.pauses"
	if _, err := cluster.Admin().CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	w := cluster.Writer()
	defer w.Close()
	write := func() {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := kafkabus.Write(wctx, w, kafka.Message{Topic: topic, Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	write()
	rd, err := partitionReader(cluster, topic, 0, kafka.FirstOffset)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got := make(chan struct{}, 16)
	go func() {
		for {
			if _, err := rd.ReadMessage(ctx); err != nil {
				return
			}
			got <- struct{}{}
		}
	}()
	read := func() {
		t.Helper()
		select {
		case <-got:
		case <-time.After(30 * time.Second):
			t.Fatal("a record was not read within 30 s")
		}
	}
	read()
	pid := c.Pids()[0]
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) // never leave it stopped
	const pause = 400 * time.Millisecond
	for i := range 8 {
		// Pauses that begin at different points of the reader's fetch:
		// with the old margin, most overran the reader's deadline.
		time.Sleep(time.Duration(i) * 60 * time.Millisecond)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(pause)
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		write()
		read()
	}
	// With kafka-go's default margin about half of these pauses overran the
	// fetch's deadline, each costing a reconnection. One is tolerated: on
	// a machine busy with other tests the resumed broker can itself take
	// longer than the margin to answer.
	if st := rd.Stats(); st.Dials > 2 || st.Errors != 0 {
		t.Errorf("the reader dialled %d times with %d errors over 8 pauses of %v; want at most one reconnection and no error", st.Dials, st.Errors, pause)
	}
}
