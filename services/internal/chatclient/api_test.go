package chatclient_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/chatclient/fakegateway"
	"palaver.dev/services/internal/protocol"
)

func TestDevLoginRoomsHistoryPost(t *testing.T) {
	gw := fakegateway.Start(t)
	tok, err := chatclient.DevLogin(t.Context(), gw.URL, "Ada")
	if err != nil || tok != fakegateway.Token("Ada") {
		t.Fatalf("DevLogin = %q, %v", tok, err)
	}
	api := &chatclient.API{BaseURL: gw.URL + "/", Token: tok}
	rooms, err := api.Rooms(t.Context())
	if err != nil || len(rooms) != 3 || rooms[0].Name != "lobby" || rooms[0].DisplayName != "Lobby" || rooms[0].Description == "" {
		t.Fatalf("Rooms = %+v, %v", rooms, err)
	}
	for i := range 5 {
		if _, err := api.Post(t.Context(), "lobby", "c-"+string(rune('a'+i)), "m"+string(rune('0'+i))); err != nil {
			t.Fatalf("Post: %v", err)
		}
	}
	page, err := api.History(t.Context(), "lobby", "", 3)
	if err != nil || len(page.Messages) != 3 || page.Messages[0].Text != "m2" || page.Messages[2].Text != "m4" {
		t.Fatalf("History = %+v, %v", page, err)
	}
	older, err := api.History(t.Context(), "lobby", page.Before, 3)
	if err != nil || len(older.Messages) != 2 || older.Messages[0].Text != "m0" || older.Messages[0].Sender.Name != "Ada" {
		t.Fatalf("older History = %+v, %v", older, err)
	}

	if _, err := (&chatclient.API{BaseURL: gw.URL, Token: "bad"}).Rooms(t.Context()); chatclient.Code(err) != protocol.CodeUnauthorized {
		t.Fatalf("Rooms with a bad token = %v", err)
	}
	if _, err := api.History(t.Context(), "nowhere", "", 0); chatclient.Code(err) != protocol.CodeNotFound {
		t.Fatalf("History of no room = %v", err)
	}
}

func TestHTTPErrorWithoutProtocolBody(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := chatclient.DevLogin(t.Context(), srv.URL, "Ada")
	if chatclient.Code(err) != protocol.CodeNotFound {
		t.Fatalf("DevLogin on a gateway without dev login = %v, want not_found", err)
	}
	tests := map[int]string{400: "bad_request", 401: "unauthorized", 403: "forbidden", 413: "too_large", 429: "rate_limited", 503: "unavailable", 500: "internal"}
	for status, code := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
		_, err := (&chatclient.API{BaseURL: srv.URL}).Rooms(t.Context())
		srv.Close()
		if chatclient.Code(err) != code {
			t.Errorf("status %d: %v, want code %s", status, err, code)
		}
	}
}
