package envflag

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Vars defines flags of types other than string and bool, each defaulting
// to an environment variable. An environment value that does not parse is
// not silently ignored: Err reports it, so the service's Validate can refuse
// to start.
type Vars struct {
	errs []error
}

// Err returns every malformed environment value seen so far, or nil.
func (v *Vars) Err() error { return errors.Join(v.errs...) }

// Int defines an int flag with an environment fallback.
func (v *Vars) Int(fs *flag.FlagSet, p *int, name, env string, def int, usage string) {
	define(v, fs, p, name, env, def, usage, strconv.Atoi)
}

// Float defines a float64 flag with an environment fallback.
func (v *Vars) Float(fs *flag.FlagSet, p *float64, name, env string, def float64, usage string) {
	define(v, fs, p, name, env, def, usage, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) })
}

// Duration defines a duration flag (like 30s) with an environment fallback.
func (v *Vars) Duration(fs *flag.FlagSet, p *time.Duration, name, env string, def time.Duration, usage string) {
	define(v, fs, p, name, env, def, usage, time.ParseDuration)
}

func define[T any](v *Vars, fs *flag.FlagSet, p *T, name, env string, def T, usage string, parse func(string) (T, error)) {
	*p = def
	set := func(s string) error {
		x, err := parse(s)
		if err != nil {
			return err
		}
		*p = x
		return nil
	}
	fs.Func(name, fmt.Sprintf("%s ($%s) (default %v)", usage, env, def), set)
	if s, ok := os.LookupEnv(env); ok {
		if err := set(s); err != nil {
			v.errs = append(v.errs, fmt.Errorf("$%s=%q: %w", env, s, err))
		}
	}
}

// List splits a comma-separated list, dropping blanks and spaces around
// items: "a:1, b:2," is [a:1 b:2].
func List(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
