package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"palaver.dev/services/internal/protocol"
)

// devIssuer is the "iss" of dev tokens, which their verifier requires.
const devIssuer = "palaver-dev"

// maxLoginBody bounds the body of POST /v1/dev/login.
const maxLoginBody = 4 << 10

// ErrBadName is wrapped by Issue's errors for a name that cannot be used.
var ErrBadName = errors.New("auth: bad name")

// DevIssuer signs short-lived HS256 tokens for `--auth=dev`, where anyone
// may log in under any name. Its secret is random, made at start-up, and
// never leaves the process, so tokens die with it.
type DevIssuer struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
	v      *verifier
}

// NewDevIssuer makes an issuer whose tokens live for ttl.
func NewDevIssuer(ttl time.Duration) (*DevIssuer, error) {
	if ttl <= 0 || ttl > maxDevTokenTTL {
		return nil, fmt.Errorf("%w: dev token lifetime %v is outside (0, %v]", ErrConfig, ttl, maxDevTokenTTL)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("auth: dev secret: %w", err)
	}
	d := &DevIssuer{secret: secret, ttl: ttl, now: time.Now}
	d.v = buildVerifier(secret, nil, Config{Issuer: devIssuer, Leeway: DefaultLeeway}, nil)
	return d, nil
}

// Verifier checks the tokens this issuer signed (HS256 only).
func (d *DevIssuer) Verifier() Verifier { return d.v }

// Issue signs a token for name: sub is "dev:" and a stable slug of name,
// the name claim is name trimmed of spaces. The name must be 1 to 64 bytes
// of valid UTF-8 without control characters; otherwise the error wraps
// ErrBadName.
func (d *DevIssuer) Issue(name string) (token string, expires time.Time, err error) {
	name, err = checkName(name)
	if err != nil {
		return "", time.Time{}, err
	}
	now := d.now()
	exp := jwt.NewNumericDate(now.Add(d.ttl))
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, devClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    devIssuer,
			Subject:   devUserID(name),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: exp,
		},
		Name: name,
	})
	token, err = tok.SignedString(d.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: sign dev token: %w", err)
	}
	return token, exp.Time, nil
}

type devClaims struct {
	jwt.RegisteredClaims
	Name string `json:"name"`
}

func checkName(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: not valid UTF-8", ErrBadName)
	}
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty", ErrBadName)
	case len(name) > maxNameBytes:
		return "", fmt.Errorf("%w: over %d bytes", ErrBadName, maxNameBytes)
	case !printable(name) || strings.ContainsRune(name, utf8.RuneError):
		return "", fmt.Errorf("%w: has control, bidi or replacement characters", ErrBadName)
	}
	return name, nil
}

// devUserID is the user id dev mode gives name: "dev:" and the name in
// lower case with each run of other characters than letters, digits and
// marks turned into one "-" (so "Ada Lovelace" is "dev:ada-lovelace"). A
// name with no letter or digit gets "dev:u-" and a hash of the name.
func devUserID(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.TrimSpace(name) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		dash = true
	}
	if b.Len() == 0 {
		sum := sha256.Sum256([]byte(name))
		return "dev:u-" + hex.EncodeToString(sum[:6])
	}
	return "dev:" + b.String()
}

// LoginHandler serves POST /v1/dev/login: {"name":"Ada"} answers 200 with
// {"token":"...","expires_at":"RFC 3339","user":{"id":"...","name":"..."}};
// a bad body or name answers 400 {"code":"bad_request","message":"..."},
// a body over 4 KiB 413 "too_large", another method 405 in plain text
// (Allow: POST).
func (d *DevIssuer) LoginHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			// In plain text, as the HTTP API answers a method it does not serve.
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLoginBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeJSON(w, http.StatusRequestEntityTooLarge, protocol.HTTPError{Code: protocol.CodeTooLarge, Message: fmt.Sprintf("body over %d bytes", maxLoginBody)})
				return
			}
			writeJSON(w, http.StatusBadRequest, protocol.HTTPError{Code: protocol.CodeBadRequest, Message: "could not read the body"})
			return
		}
		// encoding/json would quietly turn invalid UTF-8 into U+FFFD.
		if !utf8.Valid(body) {
			writeJSON(w, http.StatusBadRequest, protocol.HTTPError{Code: protocol.CodeInvalidUTF8, Message: "body is not valid UTF-8"})
			return
		}
		var req struct {
			Name *string `json:"name"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, protocol.HTTPError{Code: protocol.CodeBadRequest, Message: `body must be {"name":"..."}`})
			return
		}
		if req.Name == nil {
			writeJSON(w, http.StatusBadRequest, protocol.HTTPError{Code: protocol.CodeBadRequest, Message: "name is missing"})
			return
		}
		token, exp, err := d.Issue(*req.Name)
		if err != nil {
			code := http.StatusInternalServerError
			resp := protocol.HTTPError{Code: protocol.CodeInternal, Message: "could not sign a token"}
			if errors.Is(err, ErrBadName) {
				code = http.StatusBadRequest
				resp = protocol.HTTPError{Code: protocol.CodeBadRequest, Message: "name: " + strings.TrimPrefix(err.Error(), ErrBadName.Error()+": ") + "; want 1 to 64 bytes of text"}
			}
			writeJSON(w, code, resp)
			return
		}
		name := strings.TrimSpace(*req.Name)
		writeJSON(w, http.StatusOK, loginResponse{
			Token:     token,
			ExpiresAt: exp.UTC().Format(time.RFC3339),
			User:      loginUser{ID: devUserID(name), Name: name},
		})
	})
}

type loginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt string    `json:"expires_at"`
	User      loginUser `json:"user"`
}

type loginUser struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
