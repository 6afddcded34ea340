package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify feeds arbitrary strings to an HS256 verifier. The seeds are
// near misses (another secret, expired, unsigned, tampered), so the fuzzer
// starts deep in the parser; without the secret nothing may verify.
func FuzzVerify(f *testing.F) {
	mk := func(m jwt.SigningMethod, key any, c jwt.MapClaims, h map[string]any) string {
		tok := jwt.NewWithClaims(m, c)
		for k, v := range h {
			tok.Header[k] = v
		}
		if key == nil {
			key = jwt.UnsafeAllowNoneSignatureType
		}
		s, err := tok.SignedString(key)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	hs := jwt.SigningMethodHS256
	for _, s := range []string{
		"",
		"a.b.c",
		"eyJhbGciOiJIUzI1NiJ9.e30.",
		mk(hs, otherSecret, base(), nil),
		mk(hs, otherSecret, base("rooms", []string{"lobby"}, "aud", []string{"x"}), map[string]any{"kid": "k"}),
		mk(hs, testSecret, base("exp", testNow.Add(-time.Hour).Unix()), nil), // right secret, expired
		mk(hs, testSecret, base("sub", nil), nil),                            // right secret, no sub
		mk(hs, testSecret, base("rooms", "lobby"), nil),                      // right secret, bad rooms
		mk(jwt.SigningMethodNone, nil, base(), nil),
		mk(jwt.SigningMethodHS512, testSecret, base(), nil),
	} {
		f.Add(s)
	}
	v := hsVerifier(Config{})
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(t.Context(), token)
		if err == nil {
			t.Fatalf("accepted %q as %+v", token, id)
		}
		if !errors.Is(err, ErrMissingToken) && !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrExpired) {
			t.Fatalf("error %v wraps none of the sentinels", err)
		}
		if leaks(err, token) {
			t.Fatalf("error %q quotes the token", err)
		}
	})
}
