package chatcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"palaver.dev/services/internal/loadgen"
)

// LoadOptions configure Load.
type LoadOptions struct {
	Conn Conn
	Load loadgen.Config // URL and Token are set from Conn
	JSON bool           // print the result as JSON instead of text
	Out  io.Writer      // the result
	Err  io.Writer      // progress
}

// ErrLoadProblems is returned by Load when the run was made but messages
// were lost, repeated or refused, or members were dropped.
var ErrLoadProblems = errors.New("the load run had problems")

// Load runs a load test against the gateway (see loadgen): members join
// the room, send at the rate, and time every delivery. With --name each
// member logs in as NAME-1, NAME-2, ... (dev mode); with a token, every
// member is the token's user.
func Load(ctx context.Context, o LoadOptions) error {
	if err := validateRoom(o.Load.Room); err != nil {
		return err
	}
	if err := o.Conn.resolve(); err != nil {
		return err
	}
	cfg := o.Load
	cfg.URL = o.Conn.URL
	cfg.Progress = o.Err
	tokens, err := peopleTokens(ctx, o.Conn)
	if err != nil {
		return o.Conn.explainLogin(ctx, err)
	}
	cfg.Token = tokens
	res, err := loadgen.Run(ctx, cfg)
	if errors.Is(err, loadgen.ErrOverLimit) {
		return &UsageError{err.Error()}
	}
	if err != nil {
		return o.Conn.explain(ctx, err)
	}
	return report(o.Out, o.JSON, res, ErrLoadProblems)
}

// runResult is what a run of load or simulate prints.
type runResult interface {
	Format(io.Writer)
	Problems() []string
}

// report prints res as text or JSON and returns problem, naming what went
// wrong, when the run had problems.
func report(out io.Writer, asJSON bool, res runResult, problem error) error {
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		res.Format(out)
	}
	if p := res.Problems(); len(p) > 0 {
		return fmt.Errorf("%w: %s", problem, strings.Join(p, "; "))
	}
	return nil
}
