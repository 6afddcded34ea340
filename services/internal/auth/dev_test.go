package auth

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"palaver.dev/services/internal/protocol"
)

func newDev(t *testing.T) *DevIssuer {
	t.Helper()
	d, err := NewDevIssuer(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDevIssuerRoundTrip(t *testing.T) {
	d := newDev(t)
	before := time.Now()
	token, exp, err := d.Issue("  Ada Lovelace ")
	if err != nil {
		t.Fatal(err)
	}
	if exp.Before(before.Add(time.Hour-time.Second)) || exp.After(time.Now().Add(time.Hour)) {
		t.Errorf("expires %v, want about an hour from %v", exp, before)
	}
	id, err := d.Verifier().Verify(t.Context(), token)
	if err != nil {
		t.Fatal(err)
	}
	if id.UserID != "dev:ada-lovelace" || id.Name != "Ada Lovelace" || !id.Expires.Equal(exp) || !id.MayJoin("lobby") {
		t.Errorf("identity %+v", id)
	}

	// Another issuer (another start of the gateway) has another secret.
	if _, err := newDev(t).Verifier().Verify(t.Context(), token); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("token of another dev issuer: %v", err)
	}
	// A dev verifier takes only its own HS256 tokens.
	forged := sign(t, jwt.SigningMethodHS256, d.secret, base("iss", "somebody-else", "exp", time.Now().Add(time.Hour).Unix()), nil)
	if _, err := d.Verifier().Verify(t.Context(), forged); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("dev token with another issuer: %v", err)
	}
}

func TestDevIssuerExpiry(t *testing.T) {
	d := newDev(t)
	d.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	token, _, err := d.Issue("Ada")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Verifier().Verify(t.Context(), token); !errors.Is(err, ErrExpired) {
		t.Errorf("old dev token: %v", err)
	}
}

func TestNewDevIssuerTTL(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Second, 8 * 24 * time.Hour} {
		if _, err := NewDevIssuer(ttl); err == nil {
			t.Errorf("NewDevIssuer(%v) works", ttl)
		}
	}
}

func TestDevIssueNames(t *testing.T) {
	tests := []struct {
		name   string
		wantID string // "" for an error
	}{
		{"Ada", "dev:ada"},
		{"Ada Lovelace", "dev:ada-lovelace"},
		{"ada.lovelace", "dev:ada-lovelace"},
		{"  --Grace   Hopper!! ", "dev:grace-hopper"},
		{"Zoë", "dev:zoë"},
		{"李雷", "dev:李雷"},
		{"🦀🦀", "dev:u-"},
		{"👩‍💻", "dev:u-"},
		{strings.Repeat("a", 64), "dev:" + strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), ""},
		{strings.Repeat("é", 33), ""}, // 66 bytes
		{"", ""},
		{" \t ", ""},
		{"Ada\x00", ""},
		{"Ada\nLovelace", ""},
		{"Ada\u202e", ""},
		{"Ada\x9b", ""},
		{"Ada\xff", ""},
		{"Ada\ufffd", ""},
	}
	d := newDev(t)
	for _, tt := range tests {
		token, _, err := d.Issue(tt.name)
		if tt.wantID == "" {
			if !errors.Is(err, ErrBadName) {
				t.Errorf("Issue(%q): %v, want ErrBadName", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Issue(%q): %v", tt.name, err)
			continue
		}
		id, err := d.Verifier().Verify(t.Context(), token)
		if err != nil {
			t.Errorf("Verify(Issue(%q)): %v", tt.name, err)
			continue
		}
		if !strings.HasPrefix(id.UserID, tt.wantID) || id.Name != strings.TrimSpace(tt.name) {
			t.Errorf("Issue(%q): id %q name %q, want id %q", tt.name, id.UserID, id.Name, tt.wantID)
		}
	}
	if a, b := devUserID("🦀"), devUserID("🦀🦀"); a == b || a != devUserID("🦀") {
		t.Errorf("hashed ids %q and %q: not distinct or not stable", a, b)
	}
}

func TestLoginHandler(t *testing.T) {
	d := newDev(t)
	h := d.LoginHandler()
	tests := []struct {
		name     string
		method   string
		body     string
		wantCode int
		wantErr  string // error code in the body
		wantUser loginUser
	}{
		{name: "good", method: "POST", body: `{"name":"Ada"}`, wantCode: 200, wantUser: loginUser{ID: "dev:ada", Name: "Ada"}},
		{name: "good, trimmed", method: "POST", body: `{"name":"  Ada Lovelace\t"}`, wantCode: 200, wantUser: loginUser{ID: "dev:ada-lovelace", Name: "Ada Lovelace"}},
		{name: "unknown fields ignored", method: "POST", body: `{"name":"Ada","color":"red"}`, wantCode: 200, wantUser: loginUser{ID: "dev:ada", Name: "Ada"}},
		{name: "bad JSON", method: "POST", body: `{"name":`, wantCode: 400, wantErr: "bad_request"},
		{name: "trailing data", method: "POST", body: `{"name":"Ada"}}`, wantCode: 400, wantErr: "bad_request"},
		{name: "not an object", method: "POST", body: `["Ada"]`, wantCode: 400, wantErr: "bad_request"},
		{name: "name not a string", method: "POST", body: `{"name":7}`, wantCode: 400, wantErr: "bad_request"},
		{name: "no name", method: "POST", body: `{}`, wantCode: 400, wantErr: "bad_request"},
		{name: "null", method: "POST", body: `null`, wantCode: 400, wantErr: "bad_request"},
		{name: "empty body", method: "POST", body: ``, wantCode: 400, wantErr: "bad_request"},
		{name: "empty name", method: "POST", body: `{"name":""}`, wantCode: 400, wantErr: "bad_request"},
		{name: "blank name", method: "POST", body: `{"name":"   "}`, wantCode: 400, wantErr: "bad_request"},
		{name: "70-byte name", method: "POST", body: `{"name":"` + strings.Repeat("x", 70) + `"}`, wantCode: 400, wantErr: "bad_request"},
		{name: "control character", method: "POST", body: `{"name":"Ada\u0007"}`, wantCode: 400, wantErr: "bad_request"},
		{name: "lone surrogate", method: "POST", body: `{"name":"Ada\ud800"}`, wantCode: 400, wantErr: "bad_request"},
		{name: "invalid UTF-8", method: "POST", body: "{\"name\":\"Ada\xff\"}", wantCode: 400, wantErr: "invalid_utf8"},
		{name: "body over 4 KiB", method: "POST", body: `{"name":"Ada","pad":"` + strings.Repeat("x", 5000) + `"}`, wantCode: 413, wantErr: "too_large"},
		{name: "GET", method: "GET", wantCode: 405},
		{name: "PUT", method: "PUT", body: `{"name":"Ada"}`, wantCode: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(t.Context(), tt.method, "/v1/dev/login", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.wantCode, rec.Body)
			}
			if tt.wantCode == http.StatusMethodNotAllowed {
				// As the HTTP API answers any method it does not serve.
				if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || rec.Header().Get("Allow") != "POST" {
					t.Errorf("Content-Type %q, Allow %q", ct, rec.Header().Get("Allow"))
				}
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tt.wantErr != "" {
				var e protocol.HTTPError
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != tt.wantErr || e.Message == "" {
					t.Errorf("error body %s (%v), want code %q and a message", rec.Body, err, tt.wantErr)
				}
				return
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
			var resp loginResponse
			dec := json.NewDecoder(rec.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&resp); err != nil {
				t.Fatal(err)
			}
			if resp.User != tt.wantUser {
				t.Errorf("user %+v, want %+v", resp.User, tt.wantUser)
			}
			exp, err := time.Parse(time.RFC3339, resp.ExpiresAt)
			if err != nil {
				t.Fatalf("expires_at %q: %v", resp.ExpiresAt, err)
			}
			id, err := d.Verifier().Verify(t.Context(), resp.Token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.UserID != tt.wantUser.ID || id.Name != tt.wantUser.Name || !id.Expires.Equal(exp) {
				t.Errorf("token identity %+v, response %+v", id, resp)
			}
		})
	}
}
