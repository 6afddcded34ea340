package history

import (
	"testing"

	"palaver.dev/services/internal/testio"
)

// TestMetricsAreDocumented: every metric of the history service, with its
// labels, is in docs/history.md, and its table lists no metric the service
// lacks.
func TestMetricsAreDocumented(t *testing.T) {
	var reg testio.Registerer
	NewMetrics(&reg)
	testio.MetricsAreDocumented(t, &reg, "palaver_history_", "../../../docs/history.md")
}
