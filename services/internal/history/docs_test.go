package history

import (
	"testing"

	"palaver.dev/services/doccheck"
)

// TestMetricsAreDocumented: every metric of the history service, with its
// labels, is in docs/history.md, and its table lists no metric the service
// lacks.
func TestMetricsAreDocumented(t *testing.T) {
	var reg doccheck.Registerer
	NewMetrics(&reg)
	doccheck.MetricsAreDocumented(t, &reg, "palaver_history_", "../../../docs/history.md")
}
