// Command dashboards writes Palaver's Grafana dashboards
// (charts/palaver/dashboards/*.json) from their definitions in this
// package, and checks them:
//
//	go run . -write ../../charts/palaver/dashboards   # regenerate
//	go run . -check ../../charts/palaver/dashboards   # verify
//
// -check fails when a committed file differs from what the definitions
// generate, or when a query does not parse as PromQL (with Prometheus's own
// parser); it prints the metric names the queries use, as JSON, for the
// deployment tests to compare with what the binaries export.
//
// It is a module of its own, outside go.work, so Prometheus's dependencies
// stay out of the services and operator modules: run it with GOWORK=off.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	write := flag.String("write", "", "directory to write the dashboards into")
	check := flag.String("check", "", "directory of committed dashboards to verify")
	flag.Parse()
	var err error
	switch {
	case *write != "":
		err = writeAll(*write)
	case *check != "":
		var names map[string][]string
		if names, err = checkAll(*check); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(names)
		}
	default:
		err = errors.New("say -write DIR or -check DIR")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboards:", err)
		os.Exit(1)
	}
}

// render returns every dashboard's file name and JSON.
func render() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, d := range []Dashboard{palaverDashboard(), kafkaDashboard()} {
		b, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", d.UID, err)
		}
		out[d.UID+".json"] = append(b, '\n')
	}
	return out, nil
}

func writeAll(dir string) error {
	files, err := render()
	if err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// checkAll compares dir with the definitions and parses every query of
// the committed files. It returns the metric names per file.
func checkAll(dir string) (map[string][]string, error) {
	files, err := render()
	if err != nil {
		return nil, err
	}
	committed, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var errs []error
	names := map[string][]string{}
	for _, path := range committed {
		name := filepath.Base(path)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if want, ok := files[name]; !ok {
			errs = append(errs, fmt.Errorf("%s: no definition makes it", name))
		} else if !bytes.Equal(b, want) {
			errs = append(errs, fmt.Errorf("%s: differs from its definition: run `go run . -write %s` in hack/dashboards", name, dir))
		}
		delete(files, name)
		used, err := queryMetrics(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		names[name] = used
	}
	for name := range files {
		errs = append(errs, fmt.Errorf("%s: defined but not in %s", name, dir))
	}
	return names, errors.Join(errs...)
}

// Values the Grafana variables take when a query is parsed.
var variables = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "1m",
	"$namespace", "default",
	"$topic", "palaver.room.default.lobby",
)

// queryMetrics parses the expression of every target (panels nested in
// rows included) and every query variable, and returns the metric names
// they select, sorted.
func queryMetrics(dashboard []byte) ([]string, error) {
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		return nil, err
	}
	var exprs []string
	var walk func([]json.RawMessage) error
	walk = func(panels []json.RawMessage) error {
		for _, raw := range panels {
			var p struct {
				Title   string            `json:"title"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				return err
			}
			for _, t := range p.Targets {
				if t.Expr == "" {
					return fmt.Errorf("panel %q: a target without an expression", p.Title)
				}
				exprs = append(exprs, t.Expr)
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, err
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			if s, ok := q["query"].(string); ok {
				// label_values(metric, label) names a metric.
				if inner, ok := strings.CutPrefix(s, "label_values("); ok {
					metric, _, _ := strings.Cut(inner, ",")
					exprs = append(exprs, strings.TrimSpace(metric))
				}
			}
		}
	}
	// Prometheus's parser with its default options: what a Prometheus
	// server without feature flags accepts.
	promql := parser.NewParser(parser.Options{})
	var errs []error
	seen := map[string]bool{}
	for _, e := range exprs {
		expr, err := promql.ParseExpr(variables.Replace(e))
		if err != nil {
			errs = append(errs, fmt.Errorf("query %q: %w", e, err))
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
				seen[vs.Name] = true
			}
			return nil
		})
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, errors.Join(errs...)
}
