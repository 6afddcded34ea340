// Package doccheck holds the operating notes in docs/ to the programs, for
// the tests of every module: a command's flags, environment variables and
// defaults against a doc's flag tables, and the metrics a program
// registers against a doc's metric tables.
package doccheck

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Flag is a flag as a command's -h lists it.
type Flag struct {
	Name    string
	Env     string // the environment variable its help names, if any
	Default string // as -h prints it, unquoted; "" when it prints none
}

var (
	flagLine   = regexp.MustCompile(`^  -([a-z0-9-]+)`)
	envName    = regexp.MustCompile(`\$(PALAVER_[A-Z0-9_]+)`)
	defaultEnd = regexp.MustCompile(`\(default (.*)\)$`)
)

// ParseUsage reads the flags out of the usage a flag.FlagSet prints
// (PrintDefaults).
func ParseUsage(usage string) []Flag {
	var flags []Flag
	for line := range strings.Lines(usage) {
		line = strings.TrimRight(line, "\n")
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flags = append(flags, Flag{Name: m[1]})
			continue
		}
		if len(flags) == 0 || !strings.HasPrefix(line, "    \t") {
			continue
		}
		f := &flags[len(flags)-1]
		if m := envName.FindStringSubmatch(line); m != nil && f.Env == "" {
			f.Env = m[1]
		}
		if m := defaultEnd.FindStringSubmatch(line); m != nil {
			f.Default = m[1]
			if s, err := strconv.Unquote(m[1]); err == nil {
				f.Default = s
			}
		}
	}
	return flags
}

var (
	docFlag       = regexp.MustCompile("`--([a-z0-9-]+)`")
	docFlagPrefix = regexp.MustCompile("`--([a-z0-9-]+-)\\*`")
	docEnvPrefix  = regexp.MustCompile("`(PALAVER_[A-Z0-9_]+_)\\*`")
)

// FlagsAreDocumented checks a command's flags (its -h output) against the
// operating notes at docPath: every flag not in skip appears there as
// `--name` or under a `--prefix-*` pattern, and so does the environment
// variable its help names (`PALAVER_X`, or a `PALAVER_PREFIX_*` pattern).
// In the doc's tables with a flag and a default column, a row that lists
// as many defaults as flags (comma-separated) gives each flag its default,
// which must be the one -h prints.
func FlagsAreDocumented(t *testing.T, usage, docPath string, skip ...string) {
	t.Helper()
	b, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	flags := ParseUsage(usage)
	if len(flags) < 5 {
		t.Fatalf("found %d flags in the usage:\n%s", len(flags), usage)
	}
	documented := map[string]bool{}
	for _, m := range docFlag.FindAllStringSubmatch(doc, -1) {
		documented[m[1]] = true
	}
	prefixes := docFlagPrefix.FindAllStringSubmatch(doc, -1)
	envPrefixes := docEnvPrefix.FindAllStringSubmatch(doc, -1)
	byName := map[string]Flag{}
	for _, f := range flags {
		byName[f.Name] = f
		if slices.Contains(skip, f.Name) {
			continue
		}
		covered := documented[f.Name]
		for _, p := range prefixes {
			covered = covered || strings.HasPrefix(f.Name, p[1])
		}
		if !covered {
			t.Errorf("%s: --%s is not documented", docPath, f.Name)
		}
		if f.Env == "" {
			continue
		}
		covered = strings.Contains(doc, "`"+f.Env+"`")
		for _, p := range envPrefixes {
			covered = covered || strings.HasPrefix(f.Env, p[1])
		}
		if !covered {
			t.Errorf("%s: --%s's environment variable %s is not documented", docPath, f.Name, f.Env)
		}
	}
	checked := 0
	for _, row := range tableRows(doc) {
		names := docFlag.FindAllStringSubmatch(row.flags, -1)
		defaults := strings.Split(row.def, ", ")
		if len(names) == 0 || len(names) != len(defaults) {
			continue
		}
		for i, m := range names {
			f, ok := byName[m[1]]
			if !ok {
				t.Errorf("%s: documents --%s, which the command does not have", docPath, m[1])
				continue
			}
			checked++
			if !sameDefault(defaults[i], f.Default) {
				t.Errorf("%s: --%s defaults to %q, the doc says %s", docPath, f.Name, f.Default, defaults[i])
			}
		}
	}
	if checked == 0 {
		t.Errorf("%s: no flag table with defaults found", docPath)
	}
}

type flagRow struct{ flags, def string }

// tableRows returns the flag and default cells of the rows of every table
// whose header has a "flag" and a "default" column.
func tableRows(doc string) []flagRow {
	var rows []flagRow
	fi, di := -1, -1
	for line := range strings.Lines(doc) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			fi, di = -1, -1
			continue
		}
		cells := splitRow(line)
		if fi < 0 {
			for i, c := range cells {
				switch strings.TrimSpace(c) {
				case "flag":
					fi = i
				case "default":
					di = i
				}
			}
			if fi < 0 || di < 0 {
				fi, di = -1, -1
			}
			continue
		}
		if max(fi, di) < len(cells) && !strings.HasPrefix(strings.TrimSpace(cells[fi]), "---") {
			rows = append(rows, flagRow{flags: cells[fi], def: strings.TrimSpace(cells[di])})
		}
	}
	return rows
}

// splitRow cuts a Markdown table row into cells, keeping escaped pipes.
func splitRow(line string) []string {
	line = strings.Trim(line, "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, cur.String())
}

// sameDefault reports whether a default as the doc writes it (`jwt`, 10s,
// 200000, 1,000, on, (none)) is the one -h prints.
func sameDefault(doc, flag string) bool {
	doc = strings.Trim(strings.TrimSpace(doc), "`")
	switch doc {
	case "(none)":
		return flag == ""
	case "on":
		return flag == "true"
	case "off":
		return flag == "" || flag == "false"
	}
	if doc == flag {
		return true
	}
	if d, err := time.ParseDuration(doc); err == nil {
		f, err := time.ParseDuration(flag)
		return err == nil && d == f
	}
	if d, err := strconv.ParseFloat(strings.ReplaceAll(doc, ",", ""), 64); err == nil {
		f, err := strconv.ParseFloat(flag, 64)
		return err == nil && d == f
	}
	return false
}
