package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/chatclient/fakegateway"
)

// The scenarios against the real gateway are what `palaver bench` runs
// (docs/BENCHMARKS.md); these check their accounting against the scripted
// fake, with this test's own process standing in for the gateway's.

func fakeOptions(gw *fakegateway.Server) Options {
	return Options{
		URL:         gw.URL,
		Token:       func(_ context.Context, i int) (string, error) { return fakegateway.Token(fmt.Sprintf("m%d", i)), nil },
		GatewayPID:  os.Getpid(),
		settleEvery: 50 * time.Millisecond,
		Rooms: func(_ context.Context, n int) ([]string, error) {
			return []string{"lobby", "random"}[:n], nil
		},
	}
}

func TestScenarioA(t *testing.T) {
	gw := fakegateway.Start(t)
	o := fakeOptions(gw)
	o.AMembers, o.ARate, o.ACount = 4, 40, 40
	r, err := Run(t.Context(), o, "A")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 || r.Messages != 40 || r.Deliveries != 160 || r.Latency.N != 160 {
		t.Fatalf("report %+v: want 40 messages, 160 deliveries, no problems", r)
	}
	if r.Seconds <= 0.9 || r.DeliveriesPerSecond <= 0 || r.GatewayCores < 0 || r.Latency.P99 <= 0 {
		t.Fatalf("figures: %+v", r)
	}
}

func TestScenarioBStopsWhenMembersFallBehind(t *testing.T) {
	gw := fakegateway.Start(t)
	o := fakeOptions(gw)
	o.BMembers, o.BRate, o.BSteps, o.BDuration = 8, 10, 2, time.Second
	r, err := Run(t.Context(), o, "b")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Steps) != 2 || r.Steps[0].What != "10 messages/s" || r.Steps[1].What != "20 messages/s" {
		t.Fatalf("steps %+v: want two, the second at twice the rate", r.Steps)
	}
	if r.Latency == nil || r.Deliveries != r.Steps[1].Deliveries || !strings.Contains(r.What, "kept up with") {
		t.Fatalf("B reports the best step: %+v", r)
	}

	// A step where sends are refused is not kept up with.
	gw.RateLimitNextSends(1000)
	o.BSteps = 1
	r, err = Run(t.Context(), o, "B")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) == 0 || !strings.Contains(r.What, "no rate") {
		t.Fatalf("refused sends: %+v", r)
	}
}

func TestScenarioCReadsTheGatewaysMemory(t *testing.T) {
	gw := fakegateway.Start(t)
	o := fakeOptions(gw)
	o.CConnections = 50
	r, err := Run(t.Context(), o, "C")
	if err != nil {
		t.Fatal(err)
	}
	// The fake is this process: its memory per connection includes the
	// clients', so only its presence is checked.
	if r.Params["gateway_rss_after_bytes"].(int64) <= 0 {
		t.Fatalf("report %+v", r)
	}
	deadline := time.Now().Add(30 * time.Second)
	for gw.Conns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections left open", gw.Conns())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestScenarioD(t *testing.T) {
	gw := fakegateway.Start(t)
	o := fakeOptions(gw)
	o.DRooms, o.DMembers, o.DRate, o.DDuration = 2, 3, 5, 2*time.Second
	r, err := Run(t.Context(), o, "D")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 || r.Messages != 20 || r.Deliveries != 60 {
		t.Fatalf("report %+v: want 20 messages, each read by the 3 members of its room", r)
	}
	if n := len(gw.Messages("lobby")); n != 10 {
		t.Fatalf("lobby holds %d messages, want 10", n)
	}
}

func TestRunUnknownScenario(t *testing.T) {
	gw := fakegateway.Start(t)
	if _, err := Run(t.Context(), fakeOptions(gw), "E"); !errors.Is(err, ErrUnknownScenario) {
		t.Fatalf("scenario E: %v", err)
	}
}

func TestProcReadsThisProcess(t *testing.T) {
	p := proc{os.Getpid()}
	cpu, err := p.cpu()
	if err != nil {
		t.Fatal(err)
	}
	rss, err := p.rss()
	if err != nil || rss < 1<<20 {
		t.Fatalf("rss %d, %v", rss, err)
	}
	if cpu < 0 {
		t.Fatalf("cpu %v", cpu)
	}
	if _, err := (proc{-1}).cpu(); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}

// tryRates returns the rates B tries from first, and the one it reports,
// for members who keep up with rates up to limit.
func tryRates(first, limit float64) (tried []float64, kept float64) {
	var failed float64
	for rate := first; rate > 0 && len(tried) < 20; rate = nextRate(kept, failed) {
		tried = append(tried, rate)
		if rate <= limit {
			kept = rate
		} else {
			failed = rate
		}
	}
	return tried, kept
}

func TestNextRateBracketsTheHighestRateKeptUpWith(t *testing.T) {
	tried, kept := tryRates(50, 230)
	want := []float64{50, 100, 200, 400, 300, 250, 225, 237.5}
	if fmt.Sprint(tried) != fmt.Sprint(want) || kept != 225 {
		t.Fatalf("tried %v, kept %g; want %v, 225", tried, kept, want)
	}
	// From too high a first rate, down.
	tried, _ = tryRates(50, 9)
	if want := []float64{50, 25, 12.5, 6.25, 9.38}; len(tried) < 5 || fmt.Sprint(tried[:5]) != fmt.Sprint(want) {
		t.Fatalf("tried %v; want it to start %v", tried, want)
	}
}
