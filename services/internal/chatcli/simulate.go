package chatcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/simulate"
	"palaver.dev/services/kafkabus"
)

// SimulateOptions configure Simulate.
type SimulateOptions struct {
	Conn Conn
	Sim  simulate.Config // URLs and Token are set from Conn
	// ScratchRooms, when Sim.Rooms is empty, is how many rooms to make
	// for the run through Kafka at Kafka (removed afterwards).
	ScratchRooms int
	Kafka        kafkabus.Config
	JSON         bool      // print the result as JSON instead of text
	Out          io.Writer // the summary
	Err          io.Writer // progress
}

// ErrSimulateProblems is returned by Simulate when the run was made but a
// message was lost, repeated, reordered or never acknowledged.
var ErrSimulateProblems = errors.New("the simulation had problems")

// Simulate runs simulated people chatting through the gateway (package
// simulate), in the rooms given or in scratch rooms made for the run.
// With --name person i logs in as NAME-i (dev mode); with a token, every
// person is the token's user.
func Simulate(ctx context.Context, o SimulateOptions) error {
	if err := o.Conn.resolve(); err != nil {
		return err
	}
	cfg := o.Sim
	if len(cfg.URLs) == 0 {
		cfg.URLs = []string{o.Conn.URL}
	}
	tokens, err := peopleTokens(ctx, o.Conn)
	if err != nil {
		return o.Conn.explainLogin(ctx, err)
	}
	cfg.Token = tokens
	cfg.Progress = o.Err
	if f, ok := o.Err.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			cfg.Live = true
		}
	}
	if len(cfg.Rooms) == 0 {
		if o.ScratchRooms <= 0 {
			return &UsageError{"simulate: give --rooms, or --scratch-rooms with --kafka-bootstrap"}
		}
		fmt.Fprintf(o.Err, "making %d scratch rooms through Kafka at %s\n", o.ScratchRooms, strings.Join(o.Kafka.Brokers, ","))
		scratch, err := simulate.NewScratch(ctx, o.Kafka, "simulate", o.ScratchRooms)
		defer func() {
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := scratch.Remove(rctx); err != nil {
				fmt.Fprintf(o.Err, "the scratch rooms were not all removed: %v\n", err)
			}
		}()
		if err != nil {
			return err
		}
		if err := awaitRooms(ctx, cfg.URLs[0], tokens, scratch.Names); err != nil {
			return err
		}
		cfg.Rooms = scratch.Names
	}
	res, err := simulate.Run(ctx, cfg)
	if errors.Is(err, simulate.ErrConfig) {
		return &UsageError{err.Error()}
	}
	if err != nil {
		return o.Conn.explain(ctx, err)
	}
	return report(o.Out, o.JSON, res, ErrSimulateProblems)
}

// peopleTokens returns the token of each simulated person or load member:
// with --name, a dev login as NAME-1, NAME-2, ...; otherwise the one token
// for all.
func peopleTokens(ctx context.Context, c Conn) (func(context.Context, int) (string, error), error) {
	if c.devLogin() {
		return func(ctx context.Context, i int) (string, error) {
			p := Conn{URL: c.URL, Name: fmt.Sprintf("%s-%d", c.Name, i+1)}
			return p.Token(ctx)
		}, nil
	}
	tok, err := c.Token(ctx)
	if err != nil {
		return nil, err
	}
	return func(context.Context, int) (string, error) { return tok, nil }, nil
}

// awaitRooms waits until the gateway lists rooms: it learns of new rooms
// from the registry a moment after they are published.
func awaitRooms(ctx context.Context, url string, tokens func(context.Context, int) (string, error), rooms []string) error {
	tok, err := tokens(ctx, 0)
	if err != nil {
		return err
	}
	api := chatclient.API{BaseURL: url, Token: tok}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		listed, err := api.Rooms(ctx)
		if err == nil {
			missing := slices.ContainsFunc(rooms, func(r string) bool {
				return !slices.ContainsFunc(listed, func(l chatclient.Room) bool { return l.Name == r })
			})
			if !missing {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("not listed yet")
			}
			return fmt.Errorf("the gateway at %s did not list the scratch rooms within a minute: %w", url, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
