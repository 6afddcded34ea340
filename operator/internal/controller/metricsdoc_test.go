package controller

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"palaver.dev/operator/internal/topics"
)

var (
	descParts  = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	metricCell = regexp.MustCompile("^\\| `([a-z0-9_]+)(\\{([a-z0-9_,]*)\\})?` \\|")
)

// collectors is a prometheus.Registerer that keeps what is registered.
type collectors []prometheus.Collector

func (c *collectors) Register(x prometheus.Collector) error { *c = append(*c, x); return nil }
func (c *collectors) MustRegister(xs ...prometheus.Collector) {
	*c = append(*c, xs...)
}
func (c *collectors) Unregister(prometheus.Collector) bool { return false }

// TestMetricsDocumented holds docs/operator.md's table of metrics to the
// metrics the operator registers (the reconciler's and the Kafka view's):
// the same names, each with the same labels.
func TestMetricsDocumented(t *testing.T) {
	var reg collectors
	NewMetrics(&reg)
	topics.NewMetrics(&reg)
	code := map[string][]string{}
	for _, c := range reg {
		ch := make(chan *prometheus.Desc, 16)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := descParts.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read %s", d)
			}
			code[m[1]] = labelSet(m[2])
		}
	}

	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "operator.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	start := strings.Index(section, "\n## Metrics\n")
	if start < 0 {
		t.Fatal(`docs/operator.md has no "## Metrics"`)
	}
	section = section[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		m := metricCell.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name, labels := m[1], labelSet(m[3])
		documented[name] = true
		got, ok := code[name]
		switch {
		case !ok:
			t.Errorf("docs/operator.md documents %s, which the operator does not register", name)
		case !slices.Equal(got, labels):
			t.Errorf("docs/operator.md: %s has labels %v, the operator's %v", name, labels, got)
		}
	}
	if len(code) == 0 {
		t.Fatal("no metrics registered")
	}
	for name := range code {
		if !documented[name] {
			t.Errorf("%s is not in docs/operator.md's table of metrics", name)
		}
	}
}

func labelSet(s string) []string {
	var out []string
	for _, l := range strings.Split(s, ",") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}
