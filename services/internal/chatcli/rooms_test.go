package chatcli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"palaver.dev/services/internal/chatclient/fakegateway"
)

func TestRooms(t *testing.T) {
	gw := fakegateway.Start(t)
	var out bytes.Buffer
	if err := Rooms(t.Context(), RoomsOptions{Conn: Conn{URL: gw.URL, Name: "Ada"}, Out: &out}); err != nil {
		t.Fatal(err)
	}
	want := `NAME    DISPLAY NAME  DESCRIPTION
lobby   Lobby         Say hello
random  Random        Anything goes
secret  Secret        
`
	if out.String() != want {
		t.Fatalf("table:\n%q\nwant\n%q", out.String(), want)
	}

	out.Reset()
	if err := Rooms(t.Context(), RoomsOptions{Conn: Conn{URL: gw.URL, Name: "Ada"}, JSON: true, Out: &out}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Rooms []struct {
			Name        string `json:"name"`
			DisplayName string `json:"display_name"`
		}
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || len(got.Rooms) != 3 || got.Rooms[0].DisplayName != "Lobby" {
		t.Fatalf("--json: %s (%v)", out.String(), err)
	}

	t.Setenv("PALAVER_TOKEN", "forged")
	err := Rooms(t.Context(), RoomsOptions{Conn: Conn{URL: gw.URL}, Out: &out})
	if ExitCode(err) != ExitUnauthorized || !strings.Contains(err.Error(), "unauthorized") {
		t.Fatalf("Rooms with a bad token = %v", err)
	}
}
