package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Limits on what a token may carry.
const (
	maxTokenBytes   = 16 << 10 // larger tokens are refused before parsing
	maxSubjectBytes = 256
	maxNameBytes    = 64 // longer "name" claims are cut at a rune boundary
	maxRooms        = 1024
	maxRoomBytes    = 256
)

// Algorithms per key type. A key is only ever used with its own algorithm,
// so "none" and HS256-signed-with-an-RSA-public-key cannot verify.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
)

// New builds the verifier for jwt mode: HS256 with the configured secret,
// and/or RS256 and ES256 with the keys of the JWKS URL. With a JWKS URL it
// fetches the keys before returning (an unreachable URL is an error) and
// refreshes them every 10 minutes until ctx is done, and on a token with an
// unknown key id at most once per 30 seconds. log may be nil.
func New(ctx context.Context, cfg Config, log *slog.Logger) (Verifier, error) {
	return newVerifier(ctx, cfg, log, jwksOptions{})
}

// verifier checks HS256 tokens with secret (when set) and RS256/ES256
// tokens with jwks (when set).
type verifier struct {
	secret     []byte
	jwks       *keySet
	parser     *jwt.Parser
	methods    []string
	roomsClaim string
}

func newVerifier(ctx context.Context, cfg Config, log *slog.Logger, opts jwksOptions) (*verifier, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Mode == ModeDev {
		return nil, fmt.Errorf("%w: --auth=%s: use NewDevIssuer", ErrConfig, ModeDev)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	secret, err := cfg.secret()
	if err != nil {
		return nil, err
	}
	var ks *keySet
	if cfg.JWKSURL != "" {
		ks, err = newKeySet(ctx, cfg.JWKSURL, log, opts)
		if err != nil {
			return nil, err
		}
	}
	return buildVerifier(secret, ks, cfg, opts.now), nil
}

// buildVerifier fixes the parser options; now is for tests (nil: time.Now).
func buildVerifier(secret []byte, ks *keySet, cfg Config, now func() time.Time) *verifier {
	v := &verifier{secret: secret, jwks: ks, roomsClaim: cfg.RoomsClaim}
	if v.roomsClaim == "" {
		v.roomsClaim = DefaultRoomsClaim
	}
	if secret != nil {
		v.methods = append(v.methods, algHS256)
	}
	if ks != nil {
		v.methods = append(v.methods, algRS256, algES256)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if now != nil {
		opts = append(opts, jwt.WithTimeFunc(now))
	}
	v.parser = jwt.NewParser(opts...)
	return v
}

// Verify implements Verifier.
func (v *verifier) Verify(ctx context.Context, token string) (Identity, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return Identity{}, ErrMissingToken
	}
	if len(token) > maxTokenBytes {
		return Identity{}, fmt.Errorf("%w: over %d bytes", ErrInvalidToken, maxTokenBytes)
	}
	c := &claims{roomsClaim: v.roomsClaim}
	tok, err := v.parser.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		return v.key(ctx, t)
	})
	if err != nil {
		return Identity{}, v.classify(tok, err)
	}
	if c.Subject == "" {
		return Identity{}, fmt.Errorf("%w: no sub claim", ErrInvalidToken)
	}
	if len(c.Subject) > maxSubjectBytes || !printable(c.Subject) {
		return Identity{}, fmt.Errorf("%w: sub claim is over %d bytes or has control characters", ErrInvalidToken, maxSubjectBytes)
	}
	id := Identity{UserID: c.Subject, Name: c.name, Rooms: c.rooms, Expires: c.ExpiresAt.Time}
	if id.Name == "" {
		id.Name = id.UserID
	}
	return id, nil
}

// key returns the verification key(s) for the token's algorithm: only the
// secret for HS256, only JWKS keys of the matching type for RS256/ES256.
func (v *verifier) key(ctx context.Context, t *jwt.Token) (any, error) {
	switch alg := t.Method.Alg(); {
	case alg == algHS256 && v.secret != nil:
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, errAlgorithm
		}
		return v.secret, nil
	case (alg == algRS256 || alg == algES256) && v.jwks != nil:
		var kid string
		if k, ok := t.Header["kid"]; ok {
			if kid, ok = k.(string); !ok || kid == "" {
				return nil, &keyError{msg: "kid header is not a non-empty string"}
			}
		}
		keys, err := v.jwks.lookup(ctx, kid, alg)
		if err != nil {
			return nil, err
		}
		if len(keys) == 1 {
			return keys[0], nil
		}
		return jwt.VerificationKeySet{Keys: keys}, nil
	default:
		return nil, errAlgorithm
	}
}

var errAlgorithm = &keyError{msg: "algorithm not allowed"}

// keyError explains why no key was found; its text never holds the token.
type keyError struct{ msg string }

func (e *keyError) Error() string { return e.msg }

// claimError explains a claim of the wrong shape; its text names the claim,
// not its value.
type claimError struct{ msg string }

func (e *claimError) Error() string { return e.msg }

// classify maps the parser's error to one of the package's sentinels, with
// a detail built here (never jwt's text, which could quote the token).
func (v *verifier) classify(tok *jwt.Token, err error) error {
	var ke *keyError
	var ce *claimError
	switch {
	case errors.As(err, &ce):
		return fmt.Errorf("%w: %s", ErrInvalidToken, ce.msg)
	case tok != nil && tok.Method != nil && !slices.Contains(v.methods, tok.Method.Alg()):
		// The name comes from jwt's registry of methods, not the token.
		return fmt.Errorf("%w: algorithm %s not allowed (want %s)", ErrInvalidToken, tok.Method.Alg(), strings.Join(v.methods, ", "))
	case errors.As(err, &ke):
		return fmt.Errorf("%w: %s", ErrInvalidToken, ke.msg)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("%w: malformed", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return fmt.Errorf("%w: unknown or missing algorithm", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return fmt.Errorf("%w: bad signature", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return fmt.Errorf("%w: wrong or missing issuer", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return fmt.Errorf("%w: wrong or missing audience", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return fmt.Errorf("%w: not valid yet (nbf)", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return fmt.Errorf("%w: no exp claim", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenExpired):
		return fmt.Errorf("%w: exp passed", ErrExpired)
	default:
		return fmt.Errorf("%w: rejected", ErrInvalidToken)
	}
}

// claims are the registered claims plus the display name and the rooms
// list, whose claim name is configurable.
type claims struct {
	jwt.RegisteredClaims
	roomsClaim string

	name  string
	rooms []string
}

// UnmarshalJSON decodes the registered claims, then "name" and the rooms
// claim. A rooms claim that is not a list of strings makes the token
// invalid rather than allowing all rooms.
func (c *claims) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &c.RegisteredClaims); err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if m, ok := raw["name"]; ok && string(m) != "null" {
		var name string
		if err := json.Unmarshal(m, &name); err != nil {
			return &claimError{msg: "name claim is not a string"}
		}
		name = strings.TrimSpace(name)
		if !printable(name) {
			return &claimError{msg: "name claim has control characters"}
		}
		c.name = truncate(name, maxNameBytes)
	}
	if m, ok := raw[c.roomsClaim]; ok {
		var rooms []string
		if err := json.Unmarshal(m, &rooms); err != nil || rooms == nil {
			return &claimError{msg: fmt.Sprintf("%s claim is not a list of strings", c.roomsClaim)}
		}
		if len(rooms) > maxRooms {
			return &claimError{msg: fmt.Sprintf("%s claim lists over %d rooms", c.roomsClaim, maxRooms)}
		}
		for _, r := range rooms {
			if r == "" || len(r) > maxRoomBytes || !printable(r) {
				return &claimError{msg: fmt.Sprintf("%s claim has an empty, long or unprintable room name", c.roomsClaim)}
			}
		}
		c.rooms = rooms
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters,
// line or paragraph separators, or bidirectional overrides (which can make
// a name display as another).
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		switch {
		case r < 0x20, r >= 0x7f && r < 0xa0: // C0, DEL, C1
			return false
		case r == '\u2028', r == '\u2029': // line and paragraph separators
			return false
		case r == '\u200e', r == '\u200f', r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069': // bidi controls
			return false
		}
	}
	return true
}

// truncate cuts s to at most n bytes without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strings.TrimSpace(s[:n])
}
