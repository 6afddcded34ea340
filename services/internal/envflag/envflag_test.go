package envflag

import (
	"flag"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestString(t *testing.T) {
	t.Setenv("PALAVER_TEST_SET", "x")
	t.Setenv("PALAVER_TEST_EMPTY", "")
	if got := String("PALAVER_TEST_SET", "d"); got != "x" {
		t.Errorf("set: %q", got)
	}
	if got := String("PALAVER_TEST_EMPTY", "d"); got != "" {
		t.Errorf("set but empty is a value: %q", got)
	}
	if got := String("PALAVER_TEST_UNSET", "d"); got != "d" {
		t.Errorf("unset: %q", got)
	}
}

func TestBool(t *testing.T) {
	t.Setenv("PALAVER_TEST_TRUE", "true")
	t.Setenv("PALAVER_TEST_JUNK", "maybe")
	if !Bool("PALAVER_TEST_TRUE", false) || !Bool("PALAVER_TEST_JUNK", true) || Bool("PALAVER_TEST_UNSET", false) {
		t.Error("Bool disagrees with its environment")
	}
}

func TestVars(t *testing.T) {
	t.Setenv("PALAVER_TEST_INT", "7")
	t.Setenv("PALAVER_TEST_DUR", "soon")
	var v Vars
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var n, m int
	var d time.Duration
	var f float64
	v.Int(fs, &n, "n", "PALAVER_TEST_INT", 1, "n")
	v.Int(fs, &m, "m", "PALAVER_TEST_UNSET", 2, "m")
	v.Duration(fs, &d, "d", "PALAVER_TEST_DUR", time.Second, "d")
	v.Float(fs, &f, "f", "PALAVER_TEST_UNSET", 0.5, "f")
	if n != 7 || m != 2 || d != time.Second || f != 0.5 {
		t.Fatalf("env and defaults: n=%d m=%d d=%v f=%v", n, m, d, f)
	}
	if err := v.Err(); err == nil || !strings.Contains(err.Error(), "PALAVER_TEST_DUR") {
		t.Fatalf("Err() = %v, want the malformed duration named", err)
	}
	if err := fs.Parse([]string{"-n=9", "-d=2m"}); err != nil {
		t.Fatal(err)
	}
	if n != 9 || d != 2*time.Minute {
		t.Fatalf("flags do not win: n=%d d=%v", n, d)
	}
	if err := fs.Parse([]string{"-n=x"}); err == nil {
		t.Fatal("a malformed flag parsed")
	}
}

func TestList(t *testing.T) {
	if got := List(" a:1, b:2,,"); !slices.Equal(got, []string{"a:1", "b:2"}) {
		t.Fatalf("List = %q", got)
	}
	if got := List(""); got != nil {
		t.Fatalf("List(\"\") = %q", got)
	}
}
