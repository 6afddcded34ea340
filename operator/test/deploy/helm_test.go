package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

var chartDir = filepath.Join(repoRoot, "charts", "palaver")

const release = "palaver"

// helmBinary builds (once per machine, see hack/tools.sh) and returns the
// pinned Helm CLI.
var helmBinary = sync.OnceValues(func() (string, error) { return buildTool("helm") })

// buildTool runs hack/tools.sh, which builds the pinned tool once per
// machine, and returns the binary's path.
func buildTool(name string) (string, error) {
	var out, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "tools.sh"), name)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", errors.New("hack/tools.sh " + name + ": " + err.Error() + "\n" + stderr.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := tryHelm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tryHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the Helm CLI, built once from its Go module (make helm): skipped in -short mode")
	}
	bin, err := helmBinary()
	if err != nil {
		t.Fatal(err)
	}
	return tryCommand(t, nil, bin, args...)
}

// valuesFile writes values (YAML) to a file for --values.
func valuesFile(t *testing.T, values string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(path, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// render runs helm template for namespace with values (YAML) and returns
// the manifest and its objects. CRDs are included.
func render(t *testing.T, namespace, values string) (string, []*unstructured.Unstructured) {
	t.Helper()
	out := helm(t, "template", release, chartDir, "--namespace", namespace, "--include-crds",
		"--values", valuesFile(t, values))
	return out, decodeObjects(t, out)
}

// decodeObjects splits a YAML stream into objects, skipping empty ones.
func decodeObjects(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var o unstructured.Unstructured
		err := dec.Decode(&o.Object)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("decode manifest: %v", err)
		}
		if len(o.Object) > 0 {
			objs = append(objs, &o)
		}
	}
}

// find returns the object of kind and name, or nil.
func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func kinds(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// The value combinations every chart test renders.
var valueSets = []struct{ name, values string }{
	{"defaults", ""},
	{"kind", mustRead(filepath.Join(repoRoot, "k8s", "platform", "palaver-kind-values.yaml"))},
	// As the Tiltfile deploys it: with the live update directory.
	{"tilt", mustRead(filepath.Join(repoRoot, "k8s", "platform", "palaver-kind-values.yaml")) + "liveUpdate: {enabled: true}\n"},
	{"production", `
image: {registry: registry.example.com/chat, tag: "1.2.3", pullPolicy: Always}
imagePullSecrets: [{name: registry}]
kafka:
  bootstrap: kafka-kafka-bootstrap.kafka.svc:9093
  networkPolicyPeers:
  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kafka}}
    podSelector: {matchLabels: {strimzi.io/cluster: kafka, strimzi.io/kind: Kafka}}
metrics:
  serviceMonitor: {labels: {release: kube-prometheus-stack}}
  dashboards: {namespace: monitoring}
gateway:
  auth:
    hs256: {create: false, existingSecret: chat-jwt, key: secret}
    jwksURL: https://id.example.com/.well-known/jwks.json
    issuer: https://id.example.com/
    audience: palaver
    roomsClaim: chat_rooms
  allowedOrigins: [chat.example.com, "*.example.com"]
  env: {PALAVER_SENDS_PER_SECOND: "5"}
  ingress:
    hosts: [chat.example.com]
    tls: [{hosts: [chat.example.com], secretName: chat-tls}]
    annotations: {cert-manager.io/cluster-issuer: letsencrypt}
  httpRoute:
    enabled: true
    parentRefs: [{name: public, namespace: gateways, sectionName: https}]
    hostnames: [chat.example.com]
  networkPolicy:
    httpFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: traefik}}}]
    extraEgress: [{ports: [{protocol: TCP, port: 443}]}]
operator:
  defaultReplicationFactor: 3
  extraArgs: [--kafka-resync-interval=1m]
`},
	{"minimal", `
metrics: {serviceMonitor: {enabled: false}, dashboards: {enabled: false}}
networkPolicy: {enabled: false}
gateway:
  autoscaling: {enabled: false}
  podDisruptionBudget: {enabled: false}
  ingress: {enabled: false}
operator: {enabled: false}
`},
	{"history-sharded", `
history:
  shards: 2
  copies: 2
  storage: {size: 50Gi, storageClassName: fast-ssd}
  env: {PALAVER_HISTORY_READY_LAG: "500"}
  resources:
    requests: {cpu: 500m, memory: 1Gi}
    limits: {cpu: "4", memory: 4Gi}
`},
	{"without-history", `
history: {enabled: false}
`},
	{"presence-tuned", `
presence:
  replicas: 3
  topics: {partitions: 24, replicationFactor: 3}
  env: {PALAVER_PRESENCE_GATEWAY_TIMEOUT: 20s}
  podDisruptionBudget: {enabled: true, maxUnavailable: 2}
  resources:
    requests: {cpu: 200m, memory: 256Mi}
    limits: {cpu: "2", memory: 1Gi}
`},
	{"without-presence", `
presence: {enabled: false}
`},
	{"operator-only", `
gateway: {enabled: false}
kafka: {tls: {enabled: false}, sasl: {mechanism: ""}, bootstrap: "kafka:9092", networkPolicyPorts: [9092]}
`},
}

func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}
