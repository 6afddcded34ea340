package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/auth"
)

// TestDevLoginMethods: POST /v1/dev/login logs in; any other method of the
// path answers 405 in plain text with Allow: POST, as docs/protocol.md says
// of a method the HTTP API does not serve (GET must not reach the web UI).
func TestDevLoginMethods(t *testing.T) {
	e := sharedEnv(t)
	issuer, err := auth.NewDevIssuer(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(DefaultConfig(), Deps{Cluster: e.cluster, Rooms: e.rooms, Verifier: issuer.Verifier(), DevLogin: issuer.LoginHandler()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	for _, method := range []string{http.MethodPost, http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		req, err := http.NewRequestWithContext(t.Context(), method, hs.URL+"/v1/dev/login", strings.NewReader(`{"name":"Ada"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ct := resp.Header.Get("Content-Type")
		if method == http.MethodPost {
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"token"`) {
				t.Errorf("POST: %d %s", resp.StatusCode, body)
			}
			continue
		}
		if resp.StatusCode != http.StatusMethodNotAllowed || !strings.HasPrefix(ct, "text/plain") || resp.Header.Get("Allow") != "POST" {
			t.Errorf("%s: %d, Content-Type %q, Allow %q: %s", method, resp.StatusCode, ct, resp.Header.Get("Allow"), body)
		}
	}
	// The web UI is still served beside it.
	resp, err := http.Get(hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /: %d", resp.StatusCode)
	}
}
