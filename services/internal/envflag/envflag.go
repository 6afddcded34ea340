// Package envflag gives command-line flags their defaults from environment
// variables, so the same binary is configured by flags on a laptop and by
// env in a Kubernetes pod spec. Flags given on the command line win.
package envflag

import (
	"os"
	"strconv"
)

// String returns the value of the environment variable key, or def when it
// is unset.
func String(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// Bool returns the environment variable key parsed as a bool, or def when it
// is unset or not a bool.
func Bool(key string, def bool) bool {
	if b, err := strconv.ParseBool(os.Getenv(key)); err == nil {
		return b
	}
	return def
}
