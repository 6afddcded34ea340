package chatcli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/chatclient/fakegateway"
)

func TestSearch(t *testing.T) {
	gw := fakegateway.Start(t)
	tok, err := chatclient.DevLogin(t.Context(), gw.URL, "Ada")
	if err != nil {
		t.Fatal(err)
	}
	api := &chatclient.API{BaseURL: gw.URL, Token: tok}
	for i, text := range []string{"deploy started", "lunch?", "deploy done \x1b[2J"} {
		if _, err := api.Post(t.Context(), "lobby", string(rune('a'+i)), text); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	o := SearchOptions{Conn: Conn{URL: gw.URL, Name: "Ada"}, Room: "lobby", Query: "Deploy", Out: &out, Location: time.UTC}
	if err := Search(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "<Ada> *deploy* done \uFFFD[2J") || !strings.HasSuffix(lines[1], "<Ada> *deploy* started") {
		t.Fatalf("output:\n%s", out.String())
	}

	out.Reset()
	o.JSON, o.Limit = true, 1
	if err := Search(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Results []chatclient.SearchResult `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || len(got.Results) < 1 || got.Results[0].Text != "deploy done \x1b[2J" {
		t.Fatalf("--json: %s (%v)", out.String(), err)
	}

	if err := Search(t.Context(), SearchOptions{Conn: o.Conn, Room: "lobby", Out: &out}); ExitCode(err) != ExitUsage {
		t.Fatalf("no query: %v", err)
	}
	if err := Search(t.Context(), SearchOptions{Conn: o.Conn, Room: "nope", Query: "x", Out: &out}); ExitCode(err) != ExitNotFound {
		t.Fatalf("unknown room: %v", err)
	}
}
