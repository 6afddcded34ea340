package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func blockUntilDone(stopped *atomic.Int32) Func {
	return func(ctx context.Context) error {
		<-ctx.Done()
		stopped.Add(1)
		return nil
	}
}

func TestRunStopsAllOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var stopped atomic.Int32
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, nil, time.Second,
			Named{"a", blockUntilDone(&stopped)},
			Named{"b", blockUntilDone(&stopped)})
	}()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run = %v, want nil on a clean stop", err)
	}
	if stopped.Load() != 2 {
		t.Fatalf("%d parts stopped, want 2", stopped.Load())
	}
}

func TestRunFailureStopsTheOthers(t *testing.T) {
	boom := errors.New("boom")
	var stopped atomic.Int32
	err := Run(t.Context(), nil, time.Second,
		Named{"ok", blockUntilDone(&stopped)},
		Named{"bad", Func(func(context.Context) error { return boom })})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "bad:") {
		t.Fatalf("Run = %v, want the failing part's error with its name", err)
	}
	if stopped.Load() != 1 {
		t.Fatal("the healthy part was not stopped")
	}
}

func TestRunDrainIsBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	release := make(chan struct{})
	defer close(release)
	err := Run(ctx, nil, 50*time.Millisecond,
		Named{"stuck", Func(func(context.Context) error { <-release; return nil })})
	if !errors.Is(err, ErrDrainTimeout) || !strings.Contains(err.Error(), "stuck") {
		t.Fatalf("Run = %v, want ErrDrainTimeout naming the stuck part", err)
	}
}

func TestHTTPServerFinishesInFlightRequests(t *testing.T) {
	started := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(100 * time.Millisecond)
		io.WriteString(w, "done")
	})
	srv, err := Listen("127.0.0.1:0", &http.Server{Handler: mux}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()

	body := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + srv.Addr().String() + "/slow")
		if err != nil {
			body <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body <- string(b)
	}()
	<-started
	cancel()
	if got := <-body; got != "done" {
		t.Fatalf("in-flight request got %q, want it to finish", got)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestRunPartsThatEndAtOnce: a part may end before the others have even
// started; Run's bookkeeping of what still runs must not race with it.
func TestRunPartsThatEndAtOnce(t *testing.T) {
	var parts []Named
	for i := range 50 {
		parts = append(parts, Named{Name: fmt.Sprintf("part-%d", i), Part: Func(func(ctx context.Context) error {
			if i == 0 {
				return nil
			}
			<-ctx.Done()
			return nil
		})})
	}
	if err := Run(t.Context(), nil, 5*time.Second, parts...); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestFailure: Main names the command once, whether or not the error
// already does.
func TestFailure(t *testing.T) {
	for _, c := range []struct{ err, want string }{
		{"gateway: invalid configuration: --queue-size", "gateway: invalid configuration: --queue-size"},
		{"listen tcp :8080: bind: address already in use", "gateway: listen tcp :8080: bind: address already in use"},
		{"gatewayish: x", "gateway: gatewayish: x"},
	} {
		if got := failure("gateway", errors.New(c.err)); got != c.want {
			t.Errorf("failure(%q) = %q, want %q", c.err, got, c.want)
		}
	}
}
