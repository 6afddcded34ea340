package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// TestChartCRDIsTheOperators: the chart installs exactly the CRD that
// `make manifests` generates from the operator's types.
func TestChartCRDIsTheOperators(t *testing.T) {
	const name = "chat.palaver.dev_chatrooms.yaml"
	generated, err := os.ReadFile(filepath.Join(repoRoot, "operator", "config", "crd", "bases", name))
	require.NoError(t, err)
	inChart, err := os.ReadFile(filepath.Join(chartDir, "crds", name))
	require.NoError(t, err)
	require.True(t, bytes.Equal(generated, inChart),
		"charts/palaver/crds/%s differs from operator/config/crd/bases/%s: copy it (cp operator/config/crd/bases/%s charts/palaver/crds/)", name, name, name)
}

// TestChartRBACIsTheOperators: the chart grants the operator the rules
// generated from its +kubebuilder:rbac markers (config/rbac/role.yaml) and
// the leader election Role, no more and no less.
func TestChartRBACIsTheOperators(t *testing.T) {
	_, objs := render(t, "palaver", "")
	for _, c := range []struct{ kind, name, file string }{
		{"ClusterRole", "palaver-operator", "role.yaml"},
		{"Role", "palaver-operator-leader-election", "leader_election_role.yaml"},
	} {
		var want rbacv1.ClusterRole // Role and ClusterRole rules decode alike
		b, err := os.ReadFile(filepath.Join(repoRoot, "operator", "config", "rbac", c.file))
		require.NoError(t, err)
		require.NoError(t, yaml.Unmarshal(b, &want))
		o := find(objs, c.kind, c.name)
		require.NotNil(t, o, "%s %s", c.kind, c.name)
		var got rbacv1.ClusterRole
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &got))
		require.Equal(t, normalizeRules(want.Rules), normalizeRules(got.Rules), "%s %s against config/rbac/%s", c.kind, c.name, c.file)
	}
}

// normalizeRules sorts every list so that equal permissions compare equal.
func normalizeRules(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, l := range [][]string{r.APIGroups, r.Resources, r.Verbs} {
			slices.Sort(l)
		}
		out = append(out, fmt.Sprintf("%q %q %q", r.APIGroups, r.Resources, r.Verbs))
	}
	slices.Sort(out)
	return out
}

// TestChartLint runs helm lint --strict over every value combination.
func TestChartLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			out := helm(t, "lint", "--strict", chartDir, "--namespace", "palaver", "--values", valuesFile(t, vs.values))
			require.Contains(t, out, "1 chart(s) linted, 0 chart(s) failed")
		})
	}
}

// TestChartRefusesBadValues: values.schema.json and the templates refuse
// settings that cannot work or are unsafe, with a message saying why.
func TestChartRefusesBadValues(t *testing.T) {
	for _, c := range []struct{ name, values, want string }{
		{"unknown key", "gateway: {replica: 3}", "additional properties 'replica' not allowed"},
		{"wrong type", "gateway: {replicas: two}", "replicas"},
		{"bad auth mode", "gateway: {auth: {mode: open}}", "mode"},
		{"jwt without a key", "gateway: {auth: {hs256: {create: false}}}", "gateway.auth.mode=jwt needs a key"},
		{"any origin outside dev", `gateway: {allowedOrigins: ["*"]}`, `"*" only with gateway.auth.mode=dev`},
		{"bad SASL mechanism", "kafka: {sasl: {mechanism: PLAIN}}", "mechanism"},
		{"no history shard", "history: {shards: 0}", "shards"},
		{"history storage not a quantity", "history: {storage: {size: ten}}", "size"},
		{"no presence replica", "presence: {replicas: 0}", "replicas"},
		{"presence topics replicated zero times", "presence: {topics: {replicationFactor: 0}}", "replicationFactor"},
		// The KafkaUsers allow the chart's group and topic names only.
		{"presence group through env", "presence: {env: {PALAVER_PRESENCE_GROUP: other}}", "PALAVER_PRESENCE_GROUP"},
		{"presence topic through env", "presence: {env: {PALAVER_PRESENCE_STATE_TOPIC: other}}", "PALAVER_PRESENCE_STATE_TOPIC"},
		{"a short WebSocket timeout", `gateway: {httpRoute: {timeouts: {request: 30s}}}`, "request"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := tryHelm(t, "template", release, chartDir, "--values", valuesFile(t, c.values))
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
		})
	}
}

// TestChartTemplates checks what every value combination renders: hardened
// pods, probes on declared ports, the labels, and the toggles.
func TestChartTemplates(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			_, objs := render(t, "palaver", vs.values)
			values := map[string]any{}
			require.NoError(t, yaml.Unmarshal([]byte(vs.values), &values))
			for _, o := range objs {
				if o.GetKind() == "CustomResourceDefinition" {
					continue
				}
				labels := o.GetLabels()
				require.Equal(t, "palaver", labels["app.kubernetes.io/part-of"], "%s %s", o.GetKind(), o.GetName())
				require.NotEmpty(t, labels["app.kubernetes.io/component"], "%s %s", o.GetKind(), o.GetName())
			}
			deployments := kinds(objs, "Deployment")
			require.NotEmpty(t, deployments)
			for _, d := range deployments {
				checkPod(t, d)
			}
			for _, s := range kinds(objs, "StatefulSet") {
				checkPod(t, s)
			}
			enabled := func(path ...string) bool { return lookupBool(values, true, path...) }
			for _, c := range []struct {
				kind, name string
				on         bool
			}{
				{"Deployment", "palaver-gateway", enabled("gateway", "enabled")},
				{"Deployment", "palaver-operator", enabled("operator", "enabled")},
				{"HorizontalPodAutoscaler", "palaver-gateway", enabled("gateway", "enabled") && enabled("gateway", "autoscaling", "enabled")},
				{"PodDisruptionBudget", "palaver-gateway", enabled("gateway", "enabled") && enabled("gateway", "podDisruptionBudget", "enabled")},
				{"Ingress", "palaver-gateway", enabled("gateway", "enabled") && enabled("gateway", "ingress", "enabled")},
				{"HTTPRoute", "palaver-gateway", enabled("gateway", "enabled") && lookupBool(values, false, "gateway", "httpRoute", "enabled")},
				{"ServiceMonitor", "palaver-gateway", enabled("gateway", "enabled") && enabled("metrics", "serviceMonitor", "enabled")},
				{"ServiceMonitor", "palaver-operator", enabled("operator", "enabled") && enabled("metrics", "serviceMonitor", "enabled")},
				{"NetworkPolicy", "palaver-gateway", enabled("gateway", "enabled") && enabled("networkPolicy", "enabled")},
				{"NetworkPolicy", "palaver-operator", enabled("operator", "enabled") && enabled("networkPolicy", "enabled")},
				{"StatefulSet", "palaver-history", enabled("history", "enabled")},
				{"Service", "palaver-history", enabled("history", "enabled")},
				{"PodDisruptionBudget", "palaver-history", enabled("history", "enabled") && enabled("history", "podDisruptionBudget", "enabled")},
				{"ServiceMonitor", "palaver-history", enabled("history", "enabled") && enabled("metrics", "serviceMonitor", "enabled")},
				{"NetworkPolicy", "palaver-history", enabled("history", "enabled") && enabled("networkPolicy", "enabled")},
				{"Deployment", "palaver-presence", enabled("presence", "enabled")},
				{"Service", "palaver-presence", enabled("presence", "enabled")},
				{"PodDisruptionBudget", "palaver-presence", enabled("presence", "enabled") && enabled("presence", "podDisruptionBudget", "enabled")},
				{"ServiceMonitor", "palaver-presence", enabled("presence", "enabled") && enabled("metrics", "serviceMonitor", "enabled")},
				{"NetworkPolicy", "palaver-presence", enabled("presence", "enabled") && enabled("networkPolicy", "enabled")},
				{"ClusterRole", "palaver-operator", enabled("operator", "enabled")},
				{"Role", "palaver-operator-leader-election", enabled("operator", "enabled")},
				{"CustomResourceDefinition", "chatrooms.chat.palaver.dev", true},
				{"ConfigMap", "palaver-dashboard-palaver-throughput", enabled("metrics", "dashboards", "enabled")},
				{"ConfigMap", "palaver-dashboard-palaver-kafka", enabled("metrics", "dashboards", "enabled")},
			} {
				require.Equal(t, c.on, find(objs, c.kind, c.name) != nil, "%s %s rendered", c.kind, c.name)
			}
			if gw := find(objs, "Deployment", "palaver-gateway"); gw != nil {
				_, hasReplicas, _ := unstructured.NestedFieldNoCopy(gw.Object, "spec", "replicas")
				require.Equal(t, find(objs, "HorizontalPodAutoscaler", "palaver-gateway") == nil, hasReplicas,
					"replicas are set exactly when no HPA manages them")
			}
			if r := find(objs, "HTTPRoute", "palaver-gateway"); r != nil {
				rules, _, _ := unstructured.NestedSlice(r.Object, "spec", "rules")
				require.NotEmpty(t, rules)
				timeout, _, _ := unstructured.NestedString(rules[0].(map[string]any), "timeouts", "request")
				require.Equal(t, "0s", timeout, "WebSockets must not be cut by a request timeout")
			}
			for _, cm := range kinds(objs, "ConfigMap") {
				if strings.HasPrefix(cm.GetName(), "palaver-dashboard-") {
					require.Equal(t, "1", cm.GetLabels()["grafana_dashboard"], "the Grafana sidecar's label")
				}
			}
			checkHistory(t, objs)
			checkPresence(t, objs)
			if np := find(objs, "NetworkPolicy", "palaver-operator"); np != nil {
				ingress, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
				for _, rule := range ingress {
					_, hasFrom := rule.(map[string]any)["from"]
					require.True(t, hasFrom, "only the gateway is reachable from anywhere")
				}
			}
		})
	}
}

// checkHistory requires the history StatefulSet to run shards × copies
// pods on a volume each, and the gateways to list them per shard (pod k
// serves shard k mod shards) through the headless Service, reachable
// through both NetworkPolicies.
func checkHistory(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	sts := find(objs, "StatefulSet", "palaver-history")
	gw := find(objs, "Deployment", "palaver-gateway")
	var gwEnv map[string]string
	if gw != nil {
		gwEnv = containerEnv(t, gw, "gateway")
		_, hasURLs := gwEnv["PALAVER_HISTORY_URLS"]
		require.Equal(t, sts != nil, hasURLs, "the gateway lists history exactly when it runs")
	}
	if sts == nil {
		return
	}
	var set appsv1.StatefulSet
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(sts.Object, &set))
	svc := find(objs, "Service", "palaver-history")
	require.NotNil(t, svc)
	clusterIP, _, _ := unstructured.NestedString(svc.Object, "spec", "clusterIP")
	require.Equal(t, "None", clusterIP, "the Service is headless: each pod has a name")
	notReady, _, _ := unstructured.NestedBool(svc.Object, "spec", "publishNotReadyAddresses")
	require.True(t, notReady, "a rebuilding replica is scraped (its rebuild progress) and keeps its name")
	require.Equal(t, "palaver-history", set.Spec.ServiceName)

	env := containerEnv(t, sts, "history")
	shards, err := strconv.Atoi(env["PALAVER_HISTORY_SHARDS"])
	require.NoError(t, err)
	require.Equal(t, "ordinal", env["PALAVER_HISTORY_SHARD"])
	require.NotNil(t, set.Spec.Replicas)
	replicas := int(*set.Spec.Replicas)
	require.Zero(t, replicas%shards, "every shard has as many copies")

	dataDir := env["PALAVER_HISTORY_DATA_DIR"]
	require.NotEmpty(t, dataDir)
	require.Len(t, set.Spec.VolumeClaimTemplates, 1)
	claim := set.Spec.VolumeClaimTemplates[0]
	mounted := false
	for _, m := range set.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounted = mounted || (m.Name == claim.Name && m.MountPath == dataDir && !m.ReadOnly)
	}
	require.True(t, mounted, "the store's directory %s is the claim %s", dataDir, claim.Name)

	if gw == nil {
		return
	}
	entries := strings.Split(gwEnv["PALAVER_HISTORY_URLS"], ",")
	require.Len(t, entries, shards, "one entry per shard")
	ns := sts.GetNamespace()
	seen := map[int]bool{}
	for s, entry := range entries {
		urls := strings.Split(entry, "|")
		require.Len(t, urls, replicas/shards, "shard %d: one URL per copy", s)
		for _, u := range urls {
			var k int
			_, err := fmt.Sscanf(u, "http://palaver-history-%d.palaver-history."+ns+".svc:8081", &k)
			require.NoError(t, err, "shard %d: %s", s, u)
			require.Equal(t, fmt.Sprintf("http://palaver-history-%d.palaver-history.%s.svc:8081", k, ns), u)
			require.Equal(t, s, k%shards, "%s serves shard %d", u, k%shards)
			require.Less(t, k, replicas)
			require.False(t, seen[k], "%s listed twice", u)
			seen[k] = true
		}
	}
	if np := find(objs, "NetworkPolicy", "palaver-history"); np != nil {
		ingress, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
		for _, rule := range ingress {
			_, hasFrom := rule.(map[string]any)["from"]
			require.True(t, hasFrom, "the history API is for the gateways only")
		}
		from, _, _ := unstructured.NestedSlice(ingress[0].(map[string]any), "from")
		component, _, _ := unstructured.NestedString(from[0].(map[string]any), "podSelector", "matchLabels", "app.kubernetes.io/component")
		require.Equal(t, "gateway", component)
		gwNP := find(objs, "NetworkPolicy", "palaver-gateway")
		require.NotNil(t, gwNP)
		egress, _, _ := unstructured.NestedSlice(gwNP.Object, "spec", "egress")
		toHistory := false
		for _, rule := range egress {
			to, _, _ := unstructured.NestedSlice(rule.(map[string]any), "to")
			for _, peer := range to {
				c, _, _ := unstructured.NestedString(peer.(map[string]any), "podSelector", "matchLabels", "app.kubernetes.io/component")
				toHistory = toHistory || c == "history"
			}
		}
		require.True(t, toHistory, "the gateway may reach history")
	}
}

// checkPresence requires the gateways to write presence events exactly
// when the presence service runs, the service to join the consumer group
// its KafkaUser may read, and nothing but the scraper to reach it.
func checkPresence(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	d := find(objs, "Deployment", "palaver-presence")
	if gw := find(objs, "Deployment", "palaver-gateway"); gw != nil {
		require.Equal(t, strconv.FormatBool(d != nil), containerEnv(t, gw, "gateway")["PALAVER_PRESENCE"],
			"the gateway writes presence events exactly when presence runs")
	}
	if d == nil {
		return
	}
	env := containerEnv(t, d, "presence")
	require.Equal(t, "palaver-presence", env["PALAVER_PRESENCE_GROUP"], "the group k8s/kafka/users.yaml allows")
	require.Equal(t, "palaver-presence", env["PALAVER_KAFKA_CLIENT_ID"])
	for _, k := range []string{"PALAVER_PRESENCE_EVENTS_TOPIC", "PALAVER_PRESENCE_STATE_TOPIC"} {
		_, set := env[k]
		require.False(t, set, "%s: the topics are the ones the KafkaUsers allow", k)
	}
	svc := find(objs, "Service", "palaver-presence")
	require.NotNil(t, svc)
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	require.Len(t, ports, 1, "the Service is for metrics only")
	require.Equal(t, "metrics", ports[0].(map[string]any)["name"])
	if np := find(objs, "NetworkPolicy", "palaver-presence"); np != nil {
		ingress, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
		require.Len(t, ingress, 1, "only the scraper reaches presence")
		rule := ingress[0].(map[string]any)
		_, hasFrom := rule["from"]
		require.True(t, hasFrom)
		rulePorts, _, _ := unstructured.NestedSlice(rule, "ports")
		require.Len(t, rulePorts, 1)
		require.EqualValues(t, 9090, rulePorts[0].(map[string]any)["port"])
		egress, _, _ := unstructured.NestedSlice(np.Object, "spec", "egress")
		require.Len(t, egress, 2, "DNS and Kafka only")
	}
}

// containerEnv returns the literal environment of a workload's container.
func containerEnv(t *testing.T, o *unstructured.Unstructured, name string) map[string]string {
	t.Helper()
	var pod corev1.PodTemplateSpec
	spec, _, _ := unstructured.NestedMap(o.Object, "spec", "template")
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(spec, &pod))
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			return env
		}
	}
	t.Fatalf("%s %s has no container %s", o.GetKind(), o.GetName(), name)
	return nil
}

// checkPod requires a hardened pod whose probes use declared ports.
func checkPod(t *testing.T, d *unstructured.Unstructured) {
	t.Helper()
	spec, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec")
	require.Equal(t, true, spec["securityContext"].(map[string]any)["runAsNonRoot"], d.GetName())
	seccomp, _, _ := unstructured.NestedString(spec, "securityContext", "seccompProfile", "type")
	require.Equal(t, "RuntimeDefault", seccomp, d.GetName())
	containers, _, _ := unstructured.NestedSlice(spec, "containers")
	require.NotEmpty(t, containers)
	for _, c := range containers {
		c := c.(map[string]any)
		sc := c["securityContext"].(map[string]any)
		require.Equal(t, true, sc["readOnlyRootFilesystem"], "%s: read-only root filesystem", d.GetName())
		require.Equal(t, false, sc["allowPrivilegeEscalation"], d.GetName())
		drop, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "drop")
		require.Equal(t, []string{"ALL"}, drop, "%s: no capabilities", d.GetName())
		require.NotEmpty(t, c["resources"], d.GetName())
		ports := map[string]bool{}
		for _, p := range c["ports"].([]any) {
			ports[p.(map[string]any)["name"].(string)] = true
		}
		for _, probe := range []string{"livenessProbe", "readinessProbe"} {
			port, _, _ := unstructured.NestedString(c, probe, "httpGet", "port")
			require.True(t, ports[port], "%s: %s on undeclared port %q", d.GetName(), probe, port)
		}
	}
}

// lookupBool reads a boolean at path in values, or def when it is unset.
func lookupBool(values map[string]any, def bool, path ...string) bool {
	var cur any = values
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return def
		}
		if cur, ok = m[p]; !ok {
			return def
		}
	}
	b, ok := cur.(bool)
	if !ok {
		return def
	}
	return b
}
