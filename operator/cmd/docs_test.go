package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	docFlag = regexp.MustCompile("`--([a-z0-9-]+)`")
	docEnv  = regexp.MustCompile("`(PALAVER_[A-Z0-9_]+)`")
	helpEnv = regexp.MustCompile(`\$(PALAVER_[A-Z0-9_]+)`)
)

// TestFlagsDocumented holds docs/operator.md's table of flags ("Running
// it") to the flags the operator registers: each flag in a row, each row's
// flag registered, the environment variable a row names the one the flag
// reads, and a single flag's default (the first word of its cell) its own.
func TestFlagsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operator.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	start := strings.Index(section, "## Running it")
	if start < 0 {
		t.Fatal(`docs/operator.md has no "## Running it"`)
	}
	section = section[start:]
	if end := strings.Index(section, "\n### "); end >= 0 {
		section = section[:end]
	}

	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	var cfg config
	cfg.registerFlags(fs)

	documented := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`--") {
			continue
		}
		names := docFlag.FindAllStringSubmatch(cells[1], -1)
		envs := docEnv.FindAllStringSubmatch(cells[1], -1)
		for _, m := range names {
			name := m[1]
			documented[name] = true
			f := fs.Lookup(name)
			if f == nil {
				t.Errorf("docs/operator.md documents --%s, which the operator does not have", name)
				continue
			}
			reads := helpEnv.FindAllStringSubmatch(f.Usage, -1)
			for _, e := range envs {
				if !slices.ContainsFunc(reads, func(r []string) bool { return r[1] == e[1] }) {
					t.Errorf("docs/operator.md: --%s reads %s, but its help names %v", name, e[1], reads)
				}
			}
			if want, ok := docDefault(cells[2]); ok && len(names) == 1 && !sameDefault(want, f.DefValue) {
				t.Errorf("docs/operator.md: --%s defaults to %q, the flag to %q", name, want, f.DefValue)
			}
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !documented[f.Name] {
			t.Errorf("--%s is not in docs/operator.md's table of flags", f.Name)
		}
	})
}

// docDefault is the default a cell states: its first word when that is
// quoted or a number (not prose such as "the pod's namespace").
func docDefault(cell string) (string, bool) {
	fields := strings.Fields(cell)
	if len(fields) == 0 {
		return "", false
	}
	w := fields[0]
	if strings.HasPrefix(w, "`") {
		return strings.Trim(w, "`,"), true
	}
	if w[0] >= '0' && w[0] <= '9' || w == "true" || w == "false" {
		return w, true
	}
	return "", false
}

// sameDefault compares a documented default with a flag's, durations by
// value ("5m" is "5m0s").
func sameDefault(doc, def string) bool {
	if doc == def {
		return true
	}
	a, errA := time.ParseDuration(doc)
	b, errB := time.ParseDuration(def)
	return errA == nil && errB == nil && a == b
}
