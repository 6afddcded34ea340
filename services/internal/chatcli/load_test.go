package chatcli

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/chatclient/fakegateway"
	"palaver.dev/services/internal/loadgen"
)

func TestLoad(t *testing.T) {
	gw := fakegateway.Start(t)
	cfg := loadgen.Config{Room: "lobby", Members: 3, Rate: 30, Count: 30, Warmup: -1}
	var out, progress bytes.Buffer
	if err := Load(t.Context(), LoadOptions{Conn: Conn{URL: gw.URL, Name: "bot"}, Load: cfg, Out: &out, Err: &progress}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "90 of 90 deliveries") || !strings.Contains(progress.String(), "connected 3 of 3 members") {
		t.Fatalf("output:\n%s\nprogress:\n%s", out.String(), progress.String())
	}
	var users []string
	for _, j := range gw.Joins() {
		users = append(users, j.User)
	}
	slices.Sort(users)
	if !slices.Equal(users, []string{"bot-1", "bot-2", "bot-3"}) {
		t.Fatalf("members joined as %v, want bot-1..3 (one dev login each)", users)
	}

	// With a token every member is its user; --json prints the Result, and
	// refused sends make the run fail.
	t.Setenv("PALAVER_TOKEN", fakegateway.Token("ci"))
	gw.RateLimitNextSends(2)
	out.Reset()
	cfg.Drain = 300 * time.Millisecond
	err := Load(t.Context(), LoadOptions{Conn: Conn{URL: gw.URL}, Load: cfg, JSON: true, Out: &out})
	if !errors.Is(err, ErrLoadProblems) || !strings.Contains(err.Error(), "2 rate_limited errors") || ExitCode(err) != ExitFailure {
		t.Fatalf("a run with refused sends: %v", err)
	}
	var res loadgen.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Sent != 30 || res.Acked != 28 || res.Delivery.P99 <= 0 {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}

	err = Load(t.Context(), LoadOptions{Conn: Conn{URL: "http://127.0.0.1:1"}, Load: cfg, Out: &out})
	if err == nil || !strings.Contains(err.Error(), "cannot reach the gateway") {
		t.Fatalf("no gateway: %v", err)
	}
}
