package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// TestDashboards checks the Grafana dashboards: the committed JSON is what
// hack/dashboards generates, every query parses as PromQL (Prometheus's
// parser), every query uses the datasource template variable, and every
// Kafka metric is one the brokers' exporter configuration (k8s/kafka) or
// Kafka Exporter publishes. (Palaver's own metrics are checked against the
// running binaries by TestChartRunsTheBinaries.)
func TestDashboards(t *testing.T) {
	names := dashboardMetrics(t)
	files, err := filepath.Glob(filepath.Join(chartDir, "dashboards", "*.json"))
	require.NoError(t, err)
	require.Len(t, names, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var d map[string]any
		require.NoError(t, json.Unmarshal(b, &d))
		require.NotContains(t, d, "__inputs", "%s: the datasource is a template variable, not an import input", f)
		vars := d["templating"].(map[string]any)["list"].([]any)
		require.Equal(t, "datasource", vars[0].(map[string]any)["type"], "%s: first variable is the datasource", f)
		// Every datasource reference in the file is the variable.
		refs := 0
		walkJSON(d, func(m map[string]any) {
			if ds, ok := m["datasource"].(map[string]any); ok {
				refs++
				require.Equal(t, "${datasource}", ds["uid"], "%s", f)
			}
		})
		require.Positive(t, refs, "%s", f)
	}

	rules := exporterNamePatterns(t)
	for file, used := range names {
		for _, n := range used {
			if !strings.HasPrefix(n, "kafka_") || kafkaExporterMetrics[n] {
				continue
			}
			require.True(t, jmxExporterMetric(rules, n), "%s queries %s, which no rule of k8s/kafka/metrics.yaml makes", file, n)
		}
	}
}

// kafkaExporterMetrics are the Kafka Exporter metrics the dashboards use.
var kafkaExporterMetrics = map[string]bool{"kafka_consumergroup_lag": true, "kafka_topic_partition_current_offset": true}

// jmxExporterMetric reports whether one of the brokers' JMX exporter rules
// (exporterNamePatterns) makes the metric name.
func jmxExporterMetric(rules []*regexp.Regexp, name string) bool {
	for _, r := range rules {
		if r.MatchString(name) {
			return true
		}
	}
	return false
}

// walkJSON calls f with every object in v.
func walkJSON(v any, f func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		f(v)
		for _, x := range v {
			walkJSON(x, f)
		}
	case []any:
		for _, x := range v {
			walkJSON(x, f)
		}
	}
}

// exporterNamePatterns turns the JMX exporter rules' name templates into
// patterns of the names they can make ($1 stands for any lowercase text).
func exporterNamePatterns(t *testing.T) []*regexp.Regexp {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "k8s", "kafka", "metrics.yaml"))
	require.NoError(t, err)
	var cm struct {
		Data map[string]string `json:"data"`
	}
	require.NoError(t, yaml.Unmarshal(b, &cm))
	var cfg struct {
		Rules []struct {
			Name string `json:"name"`
		} `json:"rules"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(cm.Data["kafka-metrics-config.yml"]), &cfg))
	var out []*regexp.Regexp
	for _, r := range cfg.Rules {
		parts := regexp.MustCompile(`\$[0-9]+`).Split(r.Name, -1)
		for i := range parts {
			parts[i] = regexp.QuoteMeta(parts[i])
		}
		out = append(out, regexp.MustCompile("^"+strings.Join(parts, "[a-z0-9]+")+"$"))
	}
	require.NotEmpty(t, out)
	return out
}
