package envflag

import "testing"

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
