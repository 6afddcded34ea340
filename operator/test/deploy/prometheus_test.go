package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The scrape interval of the test's Prometheus (the chart's ServiceMonitors
// say 15s; a test cannot wait for that), which is also the data source's
// scrape interval Grafana's $__rate_interval is computed from.
const scrapeInterval = time.Second

// prometheusBinary builds (once per machine, see hack/tools.sh) and returns
// the pinned Prometheus server.
var prometheusBinary = sync.OnceValues(func() (string, error) { return buildTool("prometheus") })

// prometheusServer is a real Prometheus server run as a process.
type prometheusServer struct {
	*process
	url     string    // http://127.0.0.1:port
	started time.Time // the start of the range the dashboards are queried over
	targets int       // the scrape targets its configuration names
}

// startPrometheus runs Prometheus scraping the chart's processes as the
// Prometheus Operator scrapes them from the rendered ServiceMonitors (see
// serviceMonitorScrapeConfigs), every scrapeInterval, and waits until
// every target is up.
func startPrometheus(t *testing.T, ns string, objs []*unstructured.Unstructured, procs map[string]*process) *prometheusServer {
	t.Helper()
	bin, err := prometheusBinary()
	require.NoError(t, err)
	jobs := serviceMonitorScrapeConfigs(t, ns, objs, procs)
	targets := 0
	for _, j := range jobs {
		for _, s := range j.StaticConfigs {
			targets += len(s.Targets)
		}
	}
	// JSON is YAML: Prometheus reads the file as its YAML configuration.
	config, err := json.Marshal(map[string]any{
		"global": map[string]any{
			"scrape_interval": scrapeInterval.String(), "scrape_timeout": scrapeInterval.String(),
			"evaluation_interval": scrapeInterval.String(),
		},
		"scrape_configs": jobs,
	})
	require.NoError(t, err)
	dir := t.TempDir()
	configFile := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(configFile, config, 0o600))
	t.Logf("prometheus configuration: %s", config)

	addr := freeAddr(t)
	pr := &prometheusServer{process: &process{name: "prometheus"}, url: "http://" + addr, started: time.Now(), targets: targets}
	cmd := exec.Command(bin, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--storage.tsdb.retention.time=1d")
	cmd.Dir = dir
	pr.startProcess(t, cmd, filepath.Join(dir, "prometheus.log"))
	waitFor(t, 2*time.Minute, "prometheus ready", func() error {
		select {
		case <-pr.exited:
			return fmt.Errorf("exited: %w", pr.waitErr)
		default:
		}
		return get(pr.url+"/-/ready", nil)
	})
	pr.waitTargetsUp(t)
	return pr
}

// scrapeConfig is one scrape job of Prometheus's configuration.
type scrapeConfig struct {
	JobName       string         `json:"job_name"`
	MetricsPath   string         `json:"metrics_path"`
	HonorLabels   bool           `json:"honor_labels"`
	StaticConfigs []staticConfig `json:"static_configs"`
}

type staticConfig struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// serviceMonitorScrapeConfigs turns the rendered ServiceMonitors into
// static scrape jobs, one per endpoint, as the Prometheus Operator would
// from the cluster's endpoints: a ServiceMonitor selects Services by
// label; an endpoint names a Service port; that port's target port is a
// container port of the pods the Service selects (here the processes, by
// their pods' labels, on the loopback addresses their ports moved to).
// The targets get the operator's labels: job (the Service's name),
// namespace, service, pod, container and endpoint (the port's name).
func serviceMonitorScrapeConfigs(t *testing.T, ns string, objs []*unstructured.Unstructured, procs map[string]*process) []scrapeConfig {
	t.Helper()
	var services []corev1.Service
	for _, o := range kinds(objs, "Service") {
		var s corev1.Service
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &s))
		services = append(services, s)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range procs {
			if !yield(k) {
				return
			}
		}
	})
	monitors := kinds(objs, "ServiceMonitor")
	require.NotEmpty(t, monitors, "the chart renders no ServiceMonitor")
	var jobs []scrapeConfig
	for _, sm := range monitors {
		_, hasExpr, _ := unstructured.NestedSlice(sm.Object, "spec", "selector", "matchExpressions")
		_, hasNS, _ := unstructured.NestedMap(sm.Object, "spec", "namespaceSelector")
		require.False(t, hasExpr || hasNS, "ServiceMonitor %s: the test knows matchLabels in the release's namespace only", sm.GetName())
		selector, _, err := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		require.NoError(t, err)
		endpoints, _, err := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		require.NoError(t, err)
		require.NotEmpty(t, endpoints, "ServiceMonitor %s", sm.GetName())
		found := 0
		for i, e := range endpoints {
			endpoint := e.(map[string]any)
			port, _ := endpoint["port"].(string)
			require.NotEmpty(t, port, "ServiceMonitor %s: endpoint %d names no port", sm.GetName(), i)
			job := scrapeConfig{JobName: fmt.Sprintf("serviceMonitor/%s/%s/%d", ns, sm.GetName(), i), MetricsPath: "/metrics"}
			if path, ok := endpoint["path"].(string); ok {
				job.MetricsPath = path
			}
			job.HonorLabels, _ = endpoint["honorLabels"].(bool)
			for _, svc := range services {
				if !matches(selector, svc.Labels) {
					continue
				}
				i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port })
				if i < 0 {
					continue // the operator finds no endpoint either
				}
				target := svc.Spec.Ports[i].TargetPort
				for _, name := range names {
					p := procs[name]
					if !matches(svc.Spec.Selector, p.labels) {
						continue
					}
					addr, ok := p.ports[containerPortName(p.container, target)]
					require.True(t, ok, "Service %s port %s: container %s has no port %s", svc.Name, port, p.name, target.String())
					job.StaticConfigs = append(job.StaticConfigs, staticConfig{Targets: []string{addr}, Labels: map[string]string{
						"job": svc.Name, "namespace": ns, "service": svc.Name, "pod": p.pod,
						"container": p.container.Name, "endpoint": port,
					}})
					found++
				}
			}
			jobs = append(jobs, job)
		}
		require.Positive(t, found, "ServiceMonitor %s selects no running container", sm.GetName())
	}
	return jobs
}

// matches reports whether labels has every label of selector.
func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return len(selector) > 0
}

// containerPortName is the name of the container port a Service's target
// port refers to (by name or by number).
func containerPortName(c corev1.Container, target intstr.IntOrString) string {
	if target.Type == intstr.String {
		return target.StrVal
	}
	for _, p := range c.Ports {
		if p.ContainerPort == target.IntVal {
			return p.Name
		}
	}
	return ""
}

// waitTargetsUp waits until Prometheus has scraped every target
// successfully.
func (pr *prometheusServer) waitTargetsUp(t *testing.T) {
	t.Helper()
	waitFor(t, 2*time.Minute, "every scrape target up", func() error {
		var data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := pr.api(t.Context(), "/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
			return err
		}
		if len(data.ActiveTargets) != pr.targets {
			return fmt.Errorf("%d active targets, want %d", len(data.ActiveTargets), pr.targets)
		}
		for _, tg := range data.ActiveTargets {
			if tg.Health != "up" {
				return fmt.Errorf("%s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError)
			}
		}
		return nil
	})
}

// waitSeries waits until Prometheus has scraped a series the selector
// selects.
func (pr *prometheusServer) waitSeries(t *testing.T, selector string) {
	t.Helper()
	waitFor(t, time.Minute, "prometheus has "+selector, func() error {
		var series []map[string]string
		params := url.Values{"match[]": {selector}, "start": {promTime(pr.started)}, "end": {promTime(time.Now())}}
		if err := pr.api(t.Context(), "/api/v1/series", params, &series); err != nil {
			return err
		}
		if len(series) == 0 {
			return errors.New("not yet")
		}
		return nil
	})
}

// api calls Prometheus's HTTP API and decodes the data of its answer.
func (pr *prometheusServer) api(ctx context.Context, path string, params url.Values, data any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pr.url+path+"?"+params.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s %s: %s", path, params.Encode(), body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

// grafanaIntervals returns what Grafana makes of $__interval (the step of
// a panel's range query: the range over its maximum data points, at least
// the data source's scrape interval, in whole seconds here) and
// $__rate_interval (the larger of $__interval plus the scrape interval and
// four scrape intervals) for a range.
func grafanaIntervals(from, to time.Time) (interval, rateInterval time.Duration) {
	const maxDataPoints = 1000
	interval = max(scrapeInterval, to.Sub(from)/maxDataPoints).Round(time.Second)
	return interval, max(interval+scrapeInterval, 4*scrapeInterval)
}

// dashboardQuery is a query of a dashboard: a panel's target or a
// template variable's.
type dashboardQuery struct {
	where string // "file: panel (refId)" or "file: variable name"
	expr  string
}

// requireDashboardData evaluates every panel query of every dashboard
// (charts/palaver/dashboards, panels in rows included) through the HTTP
// API, as a range query over the time Prometheus has been scraping, with
// the template variables as Grafana fills them in: the data source is
// this Prometheus; a query variable, label_values(metric, label), takes
// every value the API lists for it (which must include the test's
// namespace when the label is namespace), regex-escaped and joined as
// Grafana does for a multi-value variable; $__interval and
// $__rate_interval as grafanaIntervals computes them. Each query must
// return a series with a sample that is a number (not NaN).
//
// Queries of the brokers' metrics, the JMX exporter's (k8s/kafka/metrics.yaml)
// and Kafka Exporter's, are left out, and listed: they need Strimzi's
// exporters, which do not run here (TestDashboards checks their names
// against the exporter's rules). A query mixing both kinds fails.
func (pr *prometheusServer) requireDashboardData(t *testing.T, ns string) {
	t.Helper()
	metricsByFile := dashboardMetrics(t)
	rules := exporterNamePatterns(t)
	kafkaSide := func(name string) bool {
		return kafkaExporterMetrics[name] || strings.HasPrefix(name, "kafka_") && jmxExporterMetric(rules, name)
	}
	files, err := filepath.Glob(filepath.Join(chartDir, "dashboards", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)

	var queries []dashboardQuery
	var skipped []string
	vars := map[string]string{} // "$name" -> its value
	labelValues := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)
	for _, f := range files {
		file := filepath.Base(f)
		used, ok := metricsByFile[file]
		require.True(t, ok, "%s: not checked by hack/dashboards", file)
		// The metrics a query selects: the file's metric names (found by
		// Prometheus's parser) that appear in it as names.
		selects := func(expr string) (palaver, kafka []string) {
			for _, tok := range promName.FindAllString(expr, -1) {
				switch {
				case !slices.Contains(used, tok):
				case kafkaSide(tok):
					kafka = append(kafka, tok)
				default:
					palaver = append(palaver, tok)
				}
			}
			return palaver, kafka
		}
		var d struct {
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
					Multi bool   `json:"multi"`
				} `json:"list"`
			} `json:"templating"`
			Panels []dashboardPanel `json:"panels"`
		}
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &d))

		for _, v := range d.Templating.List {
			switch v.Type {
			case "datasource": // this Prometheus
				continue
			case "query":
			default:
				t.Fatalf("%s: variable %s of type %s, which the test cannot fill in", file, v.Name, v.Type)
			}
			q, _ := v.Query.(map[string]any)
			s, _ := q["query"].(string)
			m := labelValues.FindStringSubmatch(s)
			require.NotNil(t, m, "%s: variable %s: query %q is not label_values(metric, label)", file, v.Name, s)
			if _, kafka := selects(m[1]); len(kafka) > 0 {
				skipped = append(skipped, fmt.Sprintf("%s: variable %s (%s)", file, v.Name, m[1]))
				continue
			}
			var values []string
			waitFor(t, time.Minute, fmt.Sprintf("%s: variable %s: %s", file, v.Name, s), func() error {
				params := url.Values{"match[]": {m[1]}, "start": {promTime(pr.started)}, "end": {promTime(time.Now())}}
				if err := pr.api(t.Context(), "/api/v1/label/"+m[2]+"/values", params, &values); err != nil {
					return err
				}
				if len(values) == 0 {
					return fmt.Errorf("no values")
				}
				if m[2] == "namespace" && !slices.Contains(values, ns) {
					return fmt.Errorf("values %q miss the release's namespace %s", values, ns)
				}
				return nil
			})
			for i := range values {
				values[i] = regexp.QuoteMeta(values[i])
			}
			value := values[0]
			if v.Multi && len(values) > 1 {
				value = "(" + strings.Join(values, "|") + ")"
			}
			vars["$"+v.Name], vars["${"+v.Name+"}"] = value, value
		}

		var walk func([]dashboardPanel)
		walk = func(panels []dashboardPanel) {
			for _, p := range panels {
				for _, tg := range p.Targets {
					where := fmt.Sprintf("%s: %q (%s)", file, p.Title, tg.RefID)
					palaver, kafka := selects(tg.Expr)
					switch {
					case len(kafka) > 0 && len(palaver) > 0:
						t.Errorf("%s mixes broker metrics %v with %v", where, kafka, palaver)
					case len(kafka) > 0:
						skipped = append(skipped, fmt.Sprintf("%s %v", where, kafka))
					case len(palaver) == 0:
						t.Errorf("%s selects no metric the dashboards' checker found: %s", where, tg.Expr)
					default:
						queries = append(queries, dashboardQuery{where: where, expr: tg.Expr})
					}
				}
				walk(p.Panels)
			}
		}
		walk(d.Panels)
	}
	require.NotEmpty(t, queries)
	t.Logf("left out %d queries of the brokers' exporters (Strimzi's JMX exporter and Kafka Exporter do not run here):\n  %s",
		len(skipped), strings.Join(skipped, "\n  "))

	// Every query at once, polled until all return data: the last
	// scrapes after the load may still be coming, and a histogram
	// observed now and then shows in a $__rate_interval window only once
	// an observation falls after its series' first scrape (the operator's
	// Kafka admin requests: its refresh every 30 s).
	variable := regexp.MustCompile(`\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?`)
	var empty []string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		end := time.Now()
		interval, rateInterval := grafanaIntervals(pr.started, end)
		builtins := map[string]string{
			"$__interval": promDuration(interval), "${__interval}": promDuration(interval),
			"$__rate_interval": promDuration(rateInterval), "${__rate_interval}": promDuration(rateInterval),
		}
		empty = empty[:0]
		for _, q := range queries {
			expr := variable.ReplaceAllStringFunc(q.expr, func(ref string) string {
				if v, ok := builtins[ref]; ok {
					return v
				}
				if v, ok := vars[ref]; ok {
					return v
				}
				t.Fatalf("%s: variable %s the test cannot fill in: %s", q.where, ref, q.expr)
				return ""
			})
			var result struct {
				Result []struct {
					Values [][2]any `json:"values"` // [time, "value"]
				} `json:"result"`
			}
			params := url.Values{"query": {expr}, "start": {promTime(pr.started)}, "end": {promTime(end)},
				"step": {promDuration(interval)}}
			require.NoError(t, pr.api(t.Context(), "/api/v1/query_range", params, &result), q.where)
			data := false
			for _, series := range result.Result {
				for _, v := range series.Values {
					f, err := strconv.ParseFloat(fmt.Sprint(v[1]), 64)
					data = data || err == nil && !math.IsNaN(f)
				}
			}
			if !data {
				empty = append(empty, fmt.Sprintf("%s: %s", q.where, expr))
			}
		}
		if len(empty) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dashboard queries return no data:\n  %s", len(empty), len(queries), strings.Join(empty, "\n  "))
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(scrapeInterval):
		}
	}
	t.Logf("%d dashboard queries return data", len(queries))
}

// promName matches metric (and label) names in PromQL.
var promName = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)

// dashboardPanel is a panel or a row of a dashboard's JSON.
type dashboardPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

// promTime is a time in the HTTP API's form.
func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// promDuration is a duration in PromQL's form (whole seconds).
func promDuration(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}
