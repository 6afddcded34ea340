package controller

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1alpha1 "palaver.dev/operator/api/v1alpha1"
	"palaver.dev/services/room"
)

// scaleRooms is how many ChatRooms TestScale creates;
// PALAVER_OPERATOR_SCALE_ROOMS overrides it.
const scaleRooms = 1000

// TestScale creates a thousand ChatRooms at once and measures how long it
// takes until every one is Ready: from the first create request to the
// API server until the last Ready status, with leader election on, against
// the real single-node broker. The figure goes to docs/BENCHMARKS.md.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("creates a thousand topics")
	}
	n := scaleRooms
	if s := os.Getenv("PALAVER_OPERATOR_SCALE_ROOMS"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(t, err)
	}
	ns := newNamespace(t)
	// A resync as in production: the view re-reads every topic once per
	// period, and this test should not measure that.
	conc := 0
	if s := os.Getenv("PALAVER_OPERATOR_SCALE_CONCURRENCY"); s != "" {
		conc, _ = strconv.Atoi(s)
	}
	op := startOperator(t, operatorOptions{resync: 30 * time.Second, leaderElection: true, concurrency: conc}, ns)
	prefix := uniqueRoom("s")
	t.Cleanup(func() {
		// The topics outlive the test's envtest objects: delete them from
		// the shared broker directly.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var all []string
		for i := range n {
			all = append(all, room.DefaultTopic(ns, fmt.Sprintf("%s-%d", prefix, i)))
		}
		for chunk := range slices.Chunk(all, 500) {
			if err := op.prov.DeleteTopics(ctx, chunk...); err != nil {
				t.Logf("delete the test's topics: %v", err)
			}
		}
	})

	start := time.Now()
	var (
		wg      sync.WaitGroup
		next    atomic.Int64
		errOnce sync.Once
		failed  error
	)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				cr := newRoom(ns, fmt.Sprintf("%s-%d", prefix, i), chatv1alpha1.ChatRoomSpec{})
				if err := k8sClient.Create(context.Background(), cr); err != nil {
					errOnce.Do(func() { failed = err })
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, failed)
	created := time.Since(start)

	var ready int
	eventually(t, 10*time.Minute, func() string {
		var list chatv1alpha1.ChatRoomList
		if err := k8sClient.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
			return err.Error()
		}
		ready = 0
		for _, cr := range list.Items {
			if meta.IsStatusConditionTrue(cr.Status.Conditions, chatv1alpha1.ConditionReady) {
				ready++
			}
		}
		if ready < n {
			return fmt.Sprintf("%d of %d rooms Ready", ready, n)
		}
		return ""
	})
	took := time.Since(start)

	creates, createBatches := histogram(t, op, "palaver_operator_kafka_batch_topics", "create")
	t.Logf("%d ChatRooms Ready in %s (all created in the API server after %s); %d topics created in %d CreateTopics requests",
		n, took.Round(10*time.Millisecond), created.Round(10*time.Millisecond), creates, createBatches)
	for _, o := range []string{"describe", "create", "refresh"} {
		topics, batches := histogram(t, op, "palaver_operator_kafka_batch_topics", o)
		secs, _ := histogramF(t, op, "palaver_operator_kafka_request_duration_seconds", o)
		if batches > 0 {
			t.Logf("%s: %d requests, %.1f topics and %.0f ms each on average", o, batches, float64(topics)/float64(batches), 1000*secs/float64(batches))
		}
	}
	require.Equal(t, n, creates, "every topic created once")
	// How many topics a request carries depends on timing; that it ever
	// carries more than one does not.
	require.Less(t, createBatches, n, "creates were not batched")
}

// histogram returns the sum and count of a histogram's series with op.
func histogram(t *testing.T, op *testOperator, name, opLabel string) (sum, count int) {
	t.Helper()
	s, c := histogramF(t, op, name, opLabel)
	return int(s), c
}

func histogramF(t *testing.T, op *testOperator, name, opLabel string) (sum float64, count int) {
	t.Helper()
	families, err := op.registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelValue(m, "op") == opLabel {
				return m.GetHistogram().GetSampleSum(), int(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0, 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
