package historyapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestClientBadRequestReason: a replica's bad request comes back with the
// replica's reason alone, worded as the gateway's own parsing words it, so
// that the gateway can tell the client what was wrong.
func TestClientBadRequestReason(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"code":"bad_request","message":"history: bad request: more than 16 words"}`))
	}))
	defer srv.Close()
	c := NewClient([][]string{{srv.URL}}, 5*time.Second)
	_, err := c.Search(t.Context(), "lobby", SearchRequest{Query: "a", Limit: 1})
	if !errors.Is(err, ErrBadRequest) {
		t.Fatalf("Search = %v, want ErrBadRequest", err)
	}
	if want := "history: bad request: more than 16 words"; err.Error() != want {
		t.Fatalf("Search = %q, want %q", err, want)
	}
	_, err = c.Messages(t.Context(), "lobby", PageRequest{Limit: 1})
	if !errors.Is(err, ErrBadRequest) || err.Error() != "history: bad request: more than 16 words" {
		t.Fatalf("Messages = %v", err)
	}
}
