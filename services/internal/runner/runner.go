// Package runner runs the long-lived parts of a service together: each part
// is a Run(ctx) error; the first failure or a signal stops them all, and
// shutdown waits a bounded time for every part to drain.
package runner

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// ErrDrainTimeout is returned when parts did not stop within the drain time.
var ErrDrainTimeout = errors.New("runner: drain timeout")

// Part is a long-lived piece of a service. Run blocks until ctx is done, then
// finishes its in-flight work and returns; or it returns early with an error.
type Part interface {
	Run(ctx context.Context) error
}

// Func adapts a function to Part.
type Func func(ctx context.Context) error

// Run implements Part.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// Named is a part with the name used in logs and errors.
type Named struct {
	Name string
	Part Part
}

// SignalContext returns a context cancelled on SIGINT or SIGTERM (what
// Kubernetes sends before killing a pod).
func SignalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// Run starts every part and returns when all have stopped. Parts stop when
// ctx is done or when any part returns; after that, Run waits at most drain
// for the rest and then gives up with ErrDrainTimeout naming the stragglers.
// The first part error is returned; a clean stop returns nil.
func Run(ctx context.Context, log *slog.Logger, drain time.Duration, parts ...Named) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g, gctx := errgroup.WithContext(ctx)

	var mu sync.Mutex
	running := make(map[string]bool, len(parts))
	for _, p := range parts {
		running[p.Name] = true // before any part starts: a part may stop at once
	}
	for _, p := range parts {
		g.Go(func() error {
			err := p.Part.Run(gctx)
			mu.Lock()
			delete(running, p.Name)
			mu.Unlock()
			switch {
			case err != nil && gctx.Err() == nil:
				log.Error("part failed", "part", p.Name, "err", err)
				return fmt.Errorf("%s: %w", p.Name, err)
			case err != nil && !errors.Is(err, context.Canceled):
				log.Warn("part stopped with error during shutdown", "part", p.Name, "err", err)
				return fmt.Errorf("%s: %w", p.Name, err)
			case gctx.Err() == nil:
				log.Info("part finished; stopping the others", "part", p.Name)
				return errStopped
			}
			log.Debug("part stopped", "part", p.Name)
			return nil
		})
	}

	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	select {
	case err := <-done:
		return cleanStop(err)
	case <-gctx.Done():
	}
	log.Info("shutting down", "drain", drain)
	timer := time.NewTimer(drain)
	defer timer.Stop()
	select {
	case err := <-done:
		return cleanStop(err)
	case <-timer.C:
		mu.Lock()
		names := make([]string, 0, len(running))
		for n := range running {
			names = append(names, n)
		}
		mu.Unlock()
		slices.Sort(names)
		return fmt.Errorf("%w after %v: still running: %v", ErrDrainTimeout, drain, names)
	}
}

// errStopped cancels the group when a part returns cleanly before shutdown.
var errStopped = errors.New("runner: part finished")

func cleanStop(err error) error {
	if errors.Is(err, errStopped) {
		return nil
	}
	return err
}

// Main runs a command's run with the process's arguments until it returns
// or a signal stops it, and exits 1 after printing "name: err" when it
// fails (asking for -h is not a failure).
func Main(name string, run func(ctx context.Context, args []string, stderr io.Writer) error) {
	ctx, stop := SignalContext(context.Background())
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, failure(name, err))
		os.Exit(1)
	}
}

// failure is what Main prints for err: "name: err", or err alone when it
// already starts with the name (a package's error of the same name, such
// as "gateway: invalid configuration: ...").
func failure(name string, err error) string {
	msg := err.Error()
	if strings.HasPrefix(msg, name+": ") {
		return msg
	}
	return name + ": " + msg
}
