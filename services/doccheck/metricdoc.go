package doccheck

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Registerer is a prometheus.Registerer that keeps what is registered on
// it, for MetricsAreDocumented.
type Registerer struct{ collectors []prometheus.Collector }

// Register keeps c.
func (r *Registerer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return nil
}

// MustRegister keeps cs.
func (r *Registerer) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
}

// Unregister does nothing.
func (r *Registerer) Unregister(prometheus.Collector) bool { return false }

var (
	descParts  = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	metricCell = regexp.MustCompile("`([a-z0-9_]+)(\\{([a-z0-9_,]*)\\})?`")
)

// MetricsAreDocumented checks the metrics registered on r against the
// docs: each, its name without prefix and with its labels
// (`joins_total`, `messages_received_total{room}`), appears in one of
// docs; and every metric in the first doc's "## Metrics" tables is
// registered.
func MetricsAreDocumented(t *testing.T, r *Registerer, prefix string, docs ...string) {
	t.Helper()
	var text []string
	for _, p := range docs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		text = append(text, string(b))
	}
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range r.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	registered := map[string]string{} // name without prefix: labels
	for d := range ch {
		m := descParts.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		labels := strings.ReplaceAll(m[2], " ", "")
		registered[strings.TrimPrefix(m[1], prefix)] = labels
	}
	if len(registered) == 0 {
		t.Fatal("no metric registered")
	}
	for name, labels := range registered {
		want := "`" + name + "`"
		if labels != "" {
			want = "`" + name + "{" + labels + "}`"
		}
		if !slices.ContainsFunc(text, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("%s%s{%s} is not documented as %s in %v", prefix, name, labels, want, docs)
		}
	}
	// The first doc's metric tables: rows whose first cell names metrics.
	in := false
	for _, line := range strings.Split(text[0], "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.TrimSpace(line) == "## Metrics"
			continue
		case !in || !strings.HasPrefix(line, "| `"):
			continue
		}
		first := splitRow(strings.TrimSpace(line))[0]
		for _, m := range metricCell.FindAllStringSubmatch(first, -1) {
			labels, ok := registered[m[1]]
			switch {
			case !ok:
				t.Errorf("%s documents %s%s, which is not registered", docs[0], prefix, m[1])
			case labels != m[3]:
				t.Errorf("%s documents %s%s with labels {%s}; its labels are {%s}", docs[0], prefix, m[1], m[3], labels)
			}
		}
	}
}
