package history

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestQueryKindsExistBeforeTheFirstQuery: a dashboard's rate() over a
// series born with its first observation never sees that observation.
func TestQueryKindsExistBeforeTheFirstQuery(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	if n := testutil.CollectAndCount(reg, "palaver_history_query_duration_seconds"); n != len(queryKinds) {
		t.Fatalf("%d query latency series before any query, want one per kind (%d)", n, len(queryKinds))
	}
}
