// Package auth authenticates the gateway's clients and authorizes them per
// room. Clients present JWTs (see docs/protocol.md, Authentication): HS256
// tokens are checked with a shared secret, RS256 and ES256 tokens with the
// keys of a JWKS URL. In dev mode a [DevIssuer] hands out short-lived HS256
// tokens to whoever asks, under a random secret made at start-up.
//
// Every error a [Verifier] returns wraps exactly one of [ErrMissingToken],
// [ErrInvalidToken] or [ErrExpired]; the gateway maps all three to the
// protocol's `unauthorized` code (close code 4401, HTTP 401), and a room
// outside [Identity.MayJoin] to `forbidden` (HTTP 403). Error texts never
// contain the token.
package auth

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Identity is an authenticated user.
type Identity struct {
	UserID  string    // "sub" claim
	Name    string    // "name" claim; falls back to UserID
	Rooms   []string  // optional claim (default name "rooms"): rooms the user may join; nil = all rooms
	Expires time.Time // "exp"
}

// MayJoin reports whether the identity may join room. A token without a
// rooms claim allows every room; an empty list allows none.
func (id Identity) MayJoin(room string) bool {
	if id.Rooms == nil {
		return true
	}
	return slices.Contains(id.Rooms, room)
}

// Verifier checks a bearer token.
type Verifier interface {
	// Verify returns the identity the token proves. Its errors wrap
	// ErrMissingToken, ErrInvalidToken or ErrExpired.
	Verify(ctx context.Context, token string) (Identity, error)
}

// Errors returned (wrapped, with detail) by Verify.
var (
	ErrMissingToken = errors.New("auth: missing token")
	ErrInvalidToken = errors.New("auth: invalid token") // malformed, bad signature, wrong alg/issuer/audience, missing sub
	ErrExpired      = errors.New("auth: token expired")
)

// BearerToken extracts the token from "Authorization: Bearer <token>" (the
// scheme is case-insensitive); it returns "" when the header is absent or
// uses another scheme.
func BearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
