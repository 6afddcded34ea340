package gateway

import (
	"testing"

	"palaver.dev/services/doccheck"
)

// TestMetricsAreDocumented: every metric of the gateway, with its labels,
// is in docs/gateway.md (the presence ones in docs/presence.md), and the
// tables there list no metric the gateway lacks.
func TestMetricsAreDocumented(t *testing.T) {
	var reg doccheck.Registerer
	NewMetrics(&reg)
	doccheck.MetricsAreDocumented(t, &reg, "palaver_gateway_", "../../../docs/gateway.md", "../../../docs/presence.md")
}
