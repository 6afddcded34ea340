package chatcli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/chatclient/fakegateway"
	"palaver.dev/services/internal/simulate"
)

func TestSimulate(t *testing.T) {
	gw := fakegateway.Start(t)
	cfg := simulate.Config{Rooms: []string{"lobby", "random"}, People: 4, Rate: 10, Duration: time.Second}
	var out, progress bytes.Buffer
	err := Simulate(t.Context(), SimulateOptions{Conn: Conn{URL: gw.URL, Name: "sim"}, Sim: cfg, JSON: true, Out: &out, Err: &progress})
	if err != nil {
		t.Fatal(err)
	}
	var res simulate.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.People != 4 || res.Rooms != 2 {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}
	if !strings.Contains(progress.String(), "connected 4/4") {
		t.Fatalf("progress:\n%s", progress.String())
	}
	users := map[string]bool{}
	for _, j := range gw.Joins() {
		users[j.User] = true
	}
	for _, u := range []string{"sim-1", "sim-2", "sim-3", "sim-4"} {
		if !users[u] {
			t.Errorf("%s never joined (joins by %v)", u, users)
		}
	}

	// No rooms and no scratch rooms: nothing to chat in.
	err = Simulate(t.Context(), SimulateOptions{Conn: Conn{URL: gw.URL, Name: "sim"}, Sim: simulate.Config{}, Out: &out, Err: &progress})
	if ExitCode(err) != ExitUsage {
		t.Fatalf("no rooms: %v", err)
	}
	err = Simulate(t.Context(), SimulateOptions{Conn: Conn{URL: "http://127.0.0.1:1", Name: "sim"}, Sim: cfg, Out: &out, Err: &progress})
	if err == nil || !strings.Contains(err.Error(), "cannot reach the gateway") {
		t.Fatalf("no gateway: %v", err)
	}
}

func TestBenchRefusesUnknownScenarios(t *testing.T) {
	var out bytes.Buffer
	err := Bench(t.Context(), BenchOptions{Scenarios: []string{"A", "AB"}, Out: &out, Err: &out})
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), `"AB"`) {
		t.Fatalf("scenario AB: %v", err)
	}
}
