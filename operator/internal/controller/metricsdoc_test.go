package controller

import (
	"testing"

	"palaver.dev/operator/internal/topics"
	"palaver.dev/services/doccheck"
)

// TestMetricsDocumented holds docs/operator.md's table of metrics to the
// metrics the operator registers (the reconciler's and the Kafka view's):
// the same names, each with the same labels.
func TestMetricsDocumented(t *testing.T) {
	var reg doccheck.Registerer
	NewMetrics(&reg)
	topics.NewMetrics(&reg)
	doccheck.MetricsAreDocumented(t, &reg, "", "../../../docs/operator.md")
}
