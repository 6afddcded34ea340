package chatcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"palaver.dev/services/internal/bench"
	"palaver.dev/services/internal/simulate"
	"palaver.dev/services/kafkabus"
)

// BenchOptions configure Bench.
type BenchOptions struct {
	Conn      Conn
	Bench     bench.Options // URL, Token, Rooms and Progress are set here
	Scenarios []string      // names from bench.Scenarios
	// Kafka is where the scratch rooms of the scenarios are made (and
	// removed after).
	Kafka kafkabus.Config
	Out   io.Writer // the reports, as JSON
	Err   io.Writer // progress
}

// ErrBenchProblems is returned by Bench when a scenario ran but a message
// was lost, repeated or reordered, or a member fell behind.
var ErrBenchProblems = errors.New("the benchmark had problems")

// Bench runs the benchmark scenarios one after the other, each in scratch
// rooms of its own, and writes their reports as a JSON array.
func Bench(ctx context.Context, o BenchOptions) error {
	for _, s := range o.Scenarios {
		if !strings.Contains(strings.Join(bench.Scenarios, ""), strings.ToUpper(s)) || len(s) != 1 {
			return &UsageError{fmt.Sprintf("bench: unknown scenario %q (want %s)", s, strings.Join(bench.Scenarios, ", "))}
		}
	}
	if err := o.Conn.resolve(); err != nil {
		return err
	}
	tokens, err := peopleTokens(ctx, o.Conn)
	if err != nil {
		return o.Conn.explainLogin(ctx, err)
	}
	b := o.Bench
	b.URL, b.Token, b.Progress = o.Conn.URL, tokens, o.Err
	var scratches []*simulate.Scratch
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, s := range scratches {
			if err := s.Remove(rctx); err != nil {
				fmt.Fprintf(o.Err, "the scratch rooms were not all removed: %v\n", err)
			}
		}
	}()
	b.Rooms = func(ctx context.Context, n int) ([]string, error) {
		fmt.Fprintf(o.Err, "making %d scratch rooms through Kafka at %s\n", n, strings.Join(o.Kafka.Brokers, ","))
		s, err := simulate.NewScratch(ctx, o.Kafka, "bench", n)
		if s != nil {
			scratches = append(scratches, s)
		}
		if err != nil {
			return nil, err
		}
		if err := awaitRooms(ctx, o.Conn.URL, tokens, s.Names); err != nil {
			return nil, err
		}
		return s.Names, nil
	}
	var reports []*bench.Report
	var problems []string
	for _, s := range o.Scenarios {
		r, err := bench.Run(ctx, b, s)
		if err != nil {
			return o.Conn.explain(ctx, fmt.Errorf("scenario %s: %w", s, err))
		}
		reports = append(reports, r)
		for _, p := range r.Problems {
			problems = append(problems, r.Scenario+": "+p)
		}
	}
	enc := json.NewEncoder(o.Out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(reports); err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrBenchProblems, strings.Join(problems, "; "))
	}
	return nil
}
