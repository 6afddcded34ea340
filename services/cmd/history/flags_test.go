package main

import (
	"bytes"
	"errors"
	"flag"
	"testing"

	"palaver.dev/services/doccheck"
)

// TestFlagsAreDocumented: every flag of the history service, and its environment
// variable, is in docs/history.md, with the default the doc gives it.
func TestFlagsAreDocumented(t *testing.T) {
	var usage bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -h: %v", err)
	}
	doccheck.FlagsAreDocumented(t, usage.String(), "../../../docs/history.md")
}
