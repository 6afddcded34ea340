package deploy

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestChartAppliesToAPIServer has the API server accept every object the
// chart renders, for every value combination (kubectl apply
// --dry-run=server): schemas, CEL rules and the third-party CRDs included.
func TestChartAppliesToAPIServer(t *testing.T) {
	requireThirdPartyCRDs(t)
	// Namespaced objects need their namespace; dashboards may go to
	// "monitoring".
	ensureNamespace(t, "monitoring")
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			manifest, objs := render(t, newNamespace(t), vs.values)
			out := kubectl(t, []byte(manifest), "apply", "--dry-run=server", "-f", "-")
			for _, o := range objs {
				resource := strings.ToLower(o.GetKind())
				if g := o.GroupVersionKind().Group; g != "" {
					resource += "." + g
				}
				require.Contains(t, out, fmt.Sprintf("%s/%s ", resource, o.GetName()), "every object is accepted")
			}
		})
	}
}

// TestK8sManifestsApplyToAPIServer has the API server accept k8s/: the
// Strimzi Kafka cluster, node pool and users, the Kafka metrics
// configuration, the PodMonitors and the sample rooms.
func TestK8sManifestsApplyToAPIServer(t *testing.T) {
	requireThirdPartyCRDs(t)
	ns := newNamespace(t)
	for _, c := range []struct {
		dir  string
		want []string
	}{
		{"kafka", []string{
			"kafka.kafka.strimzi.io/palaver created (server dry run)",
			"kafkanodepool.kafka.strimzi.io/dual created (server dry run)",
			"kafkauser.kafka.strimzi.io/palaver-operator created (server dry run)",
			"kafkauser.kafka.strimzi.io/palaver-gateway created (server dry run)",
			"kafkauser.kafka.strimzi.io/palaver-history created (server dry run)",
			"kafkauser.kafka.strimzi.io/palaver-presence created (server dry run)",
			"configmap/palaver-kafka-metrics created (server dry run)",
		}},
		{"monitoring", []string{
			"podmonitor.monitoring.coreos.com/palaver-kafka created (server dry run)",
			"podmonitor.monitoring.coreos.com/strimzi-cluster-operator created (server dry run)",
		}},
		{"samples", []string{"chatroom.chat.palaver.dev/lobby created (server dry run)"}},
	} {
		t.Run(c.dir, func(t *testing.T) {
			dir := filepath.Join(repoRoot, "k8s", c.dir)
			// Helm values files are not Kubernetes objects.
			files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
			require.NoError(t, err)
			var args []string
			for _, f := range files {
				if !strings.HasSuffix(f, "-values.yaml") {
					args = append(args, "-f", f)
				}
			}
			out := kubectl(t, nil, append([]string{"apply", "--dry-run=server", "-n", ns}, args...)...)
			for _, w := range c.want {
				require.Contains(t, out, w)
			}
		})
	}
}
