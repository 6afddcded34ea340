package auth

import (
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	testSecret  = []byte("0123456789abcdef0123456789abcdef") // 32 bytes
	otherSecret = []byte("fedcba9876543210fedcba9876543210")
	testNow     = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
)

func fixedNow() time.Time { return testNow }

// sign makes a token with the given method, key and claims; a nil key
// makes an unsigned ("none") token.
func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	if key == nil {
		key = jwt.UnsafeAllowNoneSignatureType
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// base are valid claims at testNow; with returns a copy changed by kv
// pairs, a nil value deleting the claim.
func base(kv ...any) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub":  "u-42",
		"name": "Ada Lovelace",
		"exp":  testNow.Add(time.Hour).Unix(),
		"iat":  testNow.Unix(),
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

func hsVerifier(cfg Config) *verifier {
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	return buildVerifier(testSecret, nil, cfg, fixedNow)
}

func TestVerifyHS256(t *testing.T) {
	hs := jwt.SigningMethodHS256
	tests := []struct {
		name    string
		cfg     Config
		token   func(t *testing.T) string
		wantErr error
		check   func(t *testing.T, id Identity)
	}{
		{
			name:  "valid",
			token: func(t *testing.T) string { return sign(t, hs, testSecret, base(), nil) },
			check: func(t *testing.T, id Identity) {
				want := Identity{UserID: "u-42", Name: "Ada Lovelace", Expires: testNow.Add(time.Hour)}
				if id.UserID != want.UserID || id.Name != want.Name || !id.Expires.Equal(want.Expires) || id.Rooms != nil {
					t.Errorf("identity %+v, want %+v", id, want)
				}
				if !id.MayJoin("lobby") || !id.MayJoin("anything") {
					t.Error("no rooms claim must allow every room")
				}
			},
		},
		{
			name:  "no name falls back to sub",
			token: func(t *testing.T) string { return sign(t, hs, testSecret, base("name", nil), nil) },
			check: func(t *testing.T, id Identity) {
				if id.Name != "u-42" {
					t.Errorf("name %q", id.Name)
				}
			},
		},
		{
			name:  "long name cut at a rune boundary",
			token: func(t *testing.T) string { return sign(t, hs, testSecret, base("name", strings.Repeat("é", 40)), nil) },
			check: func(t *testing.T, id Identity) {
				if id.Name != strings.Repeat("é", 32) {
					t.Errorf("name %q (%d bytes)", id.Name, len(id.Name))
				}
			},
		},
		{
			name: "rooms claim",
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("rooms", []string{"lobby", "ops"}), nil)
			},
			check: func(t *testing.T, id Identity) {
				if !slices.Equal(id.Rooms, []string{"lobby", "ops"}) {
					t.Errorf("rooms %q", id.Rooms)
				}
				for room, want := range map[string]bool{"lobby": true, "ops": true, "random": false, "": false, "Lobby": false} {
					if got := id.MayJoin(room); got != want {
						t.Errorf("MayJoin(%q) = %v", room, got)
					}
				}
			},
		},
		{
			name:  "empty rooms claim allows none",
			token: func(t *testing.T) string { return sign(t, hs, testSecret, base("rooms", []string{}), nil) },
			check: func(t *testing.T, id Identity) {
				if id.Rooms == nil || id.MayJoin("lobby") {
					t.Errorf("rooms %#v allow lobby", id.Rooms)
				}
			},
		},
		{
			name: "custom rooms claim",
			cfg:  Config{RoomsClaim: "palaver_rooms"},
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("rooms", []string{"ignored"}, "palaver_rooms", []string{"ops"}), nil)
			},
			check: func(t *testing.T, id Identity) {
				if !id.MayJoin("ops") || id.MayJoin("ignored") {
					t.Errorf("rooms %q", id.Rooms)
				}
			},
		},
		{
			name: "expiry within leeway",
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("exp", testNow.Add(-10*time.Second).Unix()), nil)
			},
		},
		{
			name: "nbf within leeway",
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("nbf", testNow.Add(10*time.Second).Unix()), nil)
			},
		},
		{
			name: "expired",
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("exp", testNow.Add(-2*time.Minute).Unix()), nil)
			},
			wantErr: ErrExpired,
		},
		{
			name: "expired beyond a configured leeway",
			cfg:  Config{Leeway: time.Second},
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("exp", testNow.Add(-10*time.Second).Unix()), nil)
			},
			wantErr: ErrExpired,
		},
		{
			name: "not yet valid beyond leeway",
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("nbf", testNow.Add(2*time.Minute).Unix()), nil)
			},
			wantErr: ErrInvalidToken,
		},
		{
			name: "expired and wrong issuer is invalid, not merely expired",
			cfg:  Config{Issuer: "https://idp.example"},
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("exp", testNow.Add(-time.Hour).Unix(), "iss", "https://evil.example"), nil)
			},
			wantErr: ErrInvalidToken,
		},
		{
			name:    "no exp",
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("exp", nil), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "wrong secret",
			token:   func(t *testing.T) string { return sign(t, hs, otherSecret, base(), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "alg none",
			token:   func(t *testing.T) string { return sign(t, jwt.SigningMethodNone, nil, base(), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "HS384 with the right secret",
			token:   func(t *testing.T) string { return sign(t, jwt.SigningMethodHS384, testSecret, base(), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name: "tampered payload",
			token: func(t *testing.T) string {
				return tamper(t, sign(t, hs, testSecret, base(), nil), base("sub", "admin"))
			},
			wantErr: ErrInvalidToken,
		},
		{
			name:    "missing sub",
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("sub", nil), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "empty sub",
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("sub", ""), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "sub not a string",
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("sub", 42), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "sub with a newline",
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("sub", "u-42\nadmin"), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "name with a bidi override",
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("name", "Ada\u202eecilA"), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "rooms claim not a list",
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("rooms", "lobby"), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "rooms claim null",
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("rooms", []string(nil)), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "rooms claim with a number",
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("rooms", []any{"lobby", 7}), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:  "issuer match",
			cfg:   Config{Issuer: "https://idp.example"},
			token: func(t *testing.T) string { return sign(t, hs, testSecret, base("iss", "https://idp.example"), nil) },
		},
		{
			name:    "issuer mismatch",
			cfg:     Config{Issuer: "https://idp.example"},
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("iss", "https://evil.example"), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "issuer missing",
			cfg:     Config{Issuer: "https://idp.example"},
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base(), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name: "audience in a list",
			cfg:  Config{Audience: "palaver"},
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("aud", []string{"other", "palaver"}), nil)
			},
		},
		{
			name:    "audience mismatch",
			cfg:     Config{Audience: "palaver"},
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base("aud", "grafana"), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "audience missing",
			cfg:     Config{Audience: "palaver"},
			token:   func(t *testing.T) string { return sign(t, hs, testSecret, base(), nil) },
			wantErr: ErrInvalidToken,
		},
		{
			name:    "empty",
			token:   func(t *testing.T) string { return "  " },
			wantErr: ErrMissingToken,
		},
		{
			name:    "garbage",
			token:   func(t *testing.T) string { return "not.a.jwt-at-all" },
			wantErr: ErrInvalidToken,
		},
		{
			name: "huge",
			token: func(t *testing.T) string {
				return sign(t, hs, testSecret, base("pad", strings.Repeat("x", 20000)), nil)
			},
			wantErr: ErrInvalidToken,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := hsVerifier(tt.cfg)
			token := tt.token(t)
			id, err := v.Verify(t.Context(), token)
			checkErr(t, token, err, tt.wantErr)
			if err == nil && tt.check != nil {
				tt.check(t, id)
			}
		})
	}
}

// checkErr compares err with the wanted sentinel, and checks the other
// sentinels do not match and the token is not in the text.
func checkErr(t *testing.T, token string, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("Verify: %v, want %v", err, want)
	}
	for _, other := range []error{ErrMissingToken, ErrInvalidToken, ErrExpired} {
		if !errors.Is(want, other) && errors.Is(err, other) {
			t.Errorf("Verify: %v is also %v", err, other)
		}
	}
	if leaks(err, token) {
		t.Errorf("error text %q holds the token or its parts", err)
	}
}

// leaks reports whether err's text holds token, or its signature or payload.
func leaks(err error, token string) bool {
	if len(token) < 16 {
		return false
	}
	msg := err.Error()
	if strings.Contains(msg, token) {
		return true
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 16 && strings.Contains(msg, part) {
			return true
		}
	}
	return false
}

// tamper swaps the payload of a signed token.
func tamper(t *testing.T, token string, claims jwt.MapClaims) string {
	t.Helper()
	forged := sign(t, jwt.SigningMethodHS256, otherSecret, claims, nil)
	p := strings.Split(token, ".")
	p[1] = strings.Split(forged, ".")[1]
	return strings.Join(p, ".")
}

func TestNewSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", string(testSecret)+"\n")
	short := write("short", "too-short-secret\n")
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "file with trailing newline", cfg: Config{HS256SecretFile: good}},
		{name: "env", cfg: Config{HS256Secret: string(testSecret)}},
		{name: "short file", cfg: Config{HS256SecretFile: short}, wantErr: "at least 32"},
		{name: "short env", cfg: Config{HS256Secret: "short"}, wantErr: "at least 32"},
		{name: "missing file", cfg: Config{HS256SecretFile: filepath.Join(dir, "nope")}, wantErr: "no such file"},
		{name: "no key", cfg: Config{}, wantErr: "needs a key"},
		{name: "dev mode", cfg: Config{Mode: ModeDev}, wantErr: "NewDevIssuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.RoomsClaim = DefaultRoomsClaim
			v, err := New(t.Context(), tt.cfg, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: %v, want an error with %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "too-short-secret") {
					t.Errorf("error %q shows the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			token := sign(t, jwt.SigningMethodHS256, testSecret, base("exp", time.Now().Add(time.Hour).Unix()), nil)
			if _, err := v.Verify(t.Context(), token); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct{ header, want string }{
		{"", ""},
		{"Bearer abc.def.ghi", "abc.def.ghi"},
		{"bearer abc", "abc"},
		{"BEARER   abc  ", "abc"},
		{"Basic dXNlcjpwYXNz", ""},
		{"Bearer", ""},
		{"Bearerabc", ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/v1/ws", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		if got := BearerToken(r); got != tt.want {
			t.Errorf("BearerToken(%q) = %q, want %q", tt.header, got, tt.want)
		}
	}
}
