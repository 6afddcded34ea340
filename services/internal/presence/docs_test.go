package presence

import (
	"testing"

	"palaver.dev/services/doccheck"
)

// TestMetricsAreDocumented: every metric of the presence service, with its
// labels, is in docs/presence.md, and its table lists no other.
func TestMetricsAreDocumented(t *testing.T) {
	var reg doccheck.Registerer
	NewMetrics(&reg)
	doccheck.MetricsAreDocumented(t, &reg, "palaver_presence_", "../../../docs/presence.md")
}
