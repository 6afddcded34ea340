package presence

import (
	"testing"

	"palaver.dev/services/internal/testio"
)

// TestMetricsAreDocumented: every metric of the presence service, with its
// labels, is in docs/presence.md, and its table lists no other.
func TestMetricsAreDocumented(t *testing.T) {
	var reg testio.Registerer
	NewMetrics(&reg)
	testio.MetricsAreDocumented(t, &reg, "palaver_presence_", "../../../docs/presence.md")
}
