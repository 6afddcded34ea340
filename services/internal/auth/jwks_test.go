package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var rsaKeys = sync.OnceValues(func() ([]*rsa.PrivateKey, error) {
	var keys []*rsa.PrivateKey
	for range 3 {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
})

func rsaKey(t *testing.T, i int) *rsa.PrivateKey {
	t.Helper()
	keys, err := rsaKeys()
	if err != nil {
		t.Fatal(err)
	}
	return keys[i]
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	pt, err := k.Bytes()
	if err != nil {
		panic(err)
	}
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": enc(pt[1:33]), "y": enc(pt[33:])}
}

// jwksServer serves a JWK set that tests can change, and counts requests.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int32
	mu   sync.Mutex
	body []byte
	code int
}

func newJWKSServer(t *testing.T, keys ...map[string]any) *jwksServer {
	t.Helper()
	s := &jwksServer{code: http.StatusOK}
	s.set(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, code := s.body, s.code
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(code)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(t *testing.T, keys ...map[string]any) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	s.setRaw(http.StatusOK, body)
}

func (s *jwksServer) setRaw(code int, body []byte) {
	s.mu.Lock()
	s.body, s.code = body, code
	s.mu.Unlock()
}

// clock is a settable time for the rate limit.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// jwksVerifier builds a verifier on srv whose token checks and rate limit
// run on clk (nil: frozen at testNow).
func jwksVerifier(t *testing.T, srv *jwksServer, clk *clock, cfg Config) *verifier {
	t.Helper()
	cfg.JWKSURL = srv.URL
	if cfg.RoomsClaim == "" {
		cfg.RoomsClaim = DefaultRoomsClaim
	}
	if clk == nil {
		clk = &clock{t: testNow}
	}
	v, err := newVerifier(t.Context(), cfg, nil, jwksOptions{refreshEvery: time.Hour, now: clk.now})
	if err != nil {
		t.Fatalf("newVerifier: %v", err)
	}
	return v
}

func TestJWKS(t *testing.T) {
	r0, r1, r2 := rsaKey(t, 0), rsaKey(t, 1), rsaKey(t, 2)
	e0 := ecKey(t)
	srv := newJWKSServer(t,
		rsaJWK("r0", &r0.PublicKey),
		rsaJWK("r1", &r1.PublicKey),
		ecJWK("e0", &e0.PublicKey),
		map[string]any{"kty": "oct", "kid": "s0", "k": enc(testSecret)},
	)
	v := jwksVerifier(t, srv, nil, Config{})
	pubDER, err := x509.MarshalPKIXPublicKey(&r0.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	kid := func(k string) map[string]any { return map[string]any{"kid": k} }

	tests := []struct {
		name    string
		token   string
		wantErr error
		wantSub string
	}{
		{name: "RS256", token: sign(t, jwt.SigningMethodRS256, r0, base(), kid("r0")), wantSub: "u-42"},
		{name: "RS256 second key", token: sign(t, jwt.SigningMethodRS256, r1, base("sub", "u-1"), kid("r1")), wantSub: "u-1"},
		{name: "ES256", token: sign(t, jwt.SigningMethodES256, e0, base("sub", "u-e"), kid("e0")), wantSub: "u-e"},
		{name: "RS256 without kid tries every RSA key", token: sign(t, jwt.SigningMethodRS256, r1, base(), nil), wantSub: "u-42"},
		{name: "ES256 without kid", token: sign(t, jwt.SigningMethodES256, e0, base(), nil), wantSub: "u-42"},
		{name: "RS256 with another key's kid", token: sign(t, jwt.SigningMethodRS256, r1, base(), kid("r0")), wantErr: ErrInvalidToken},
		{name: "RS256 from an unknown key", token: sign(t, jwt.SigningMethodRS256, r2, base(), nil), wantErr: ErrInvalidToken},
		{name: "RS256 naming an EC key", token: sign(t, jwt.SigningMethodRS256, r0, base(), kid("e0")), wantErr: ErrInvalidToken},
		{name: "expired RS256", token: sign(t, jwt.SigningMethodRS256, r0, base("exp", testNow.Add(-time.Hour).Unix()), kid("r0")), wantErr: ErrExpired},
		{name: "RS256 without sub", token: sign(t, jwt.SigningMethodRS256, r0, base("sub", nil), kid("r0")), wantErr: ErrInvalidToken},
		{name: "HS256 to a JWKS-only verifier", token: sign(t, jwt.SigningMethodHS256, testSecret, base(), nil), wantErr: ErrInvalidToken},
		{name: "HS256 with the oct key's kid", token: sign(t, jwt.SigningMethodHS256, testSecret, base(), kid("s0")), wantErr: ErrInvalidToken},
		{name: "HS256 signed with the RSA public key (PEM)", token: sign(t, jwt.SigningMethodHS256, pubPEM, base(), kid("r0")), wantErr: ErrInvalidToken},
		{name: "HS256 signed with the RSA public key (DER)", token: sign(t, jwt.SigningMethodHS256, pubDER, base(), nil), wantErr: ErrInvalidToken},
		{name: "alg none", token: sign(t, jwt.SigningMethodNone, nil, base(), kid("r0")), wantErr: ErrInvalidToken},
		{name: "PS256 with an RSA key", token: sign(t, jwt.SigningMethodPS256, r0, base(), kid("r0")), wantErr: ErrInvalidToken},
		{name: "kid not a string", token: sign(t, jwt.SigningMethodRS256, r0, base(), map[string]any{"kid": 7}), wantErr: ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), tt.token)
			checkErr(t, tt.token, err, tt.wantErr)
			if err == nil && id.UserID != tt.wantSub {
				t.Errorf("sub %q, want %q", id.UserID, tt.wantSub)
			}
		})
	}
}

// TestHS256AndJWKS checks a verifier with both kinds of key uses each only
// with its own algorithm.
func TestHS256AndJWKS(t *testing.T) {
	r0 := rsaKey(t, 0)
	srv := newJWKSServer(t, rsaJWK("r0", &r0.PublicKey))
	v := jwksVerifier(t, srv, nil, Config{HS256Secret: string(testSecret)})
	for name, tc := range map[string]struct {
		token string
		ok    bool
	}{
		"HS256":                          {sign(t, jwt.SigningMethodHS256, testSecret, base(), nil), true},
		"RS256":                          {sign(t, jwt.SigningMethodRS256, r0, base(), map[string]any{"kid": "r0"}), true},
		"HS256 with the RSA modulus":     {sign(t, jwt.SigningMethodHS256, r0.N.Bytes(), base(), map[string]any{"kid": "r0"}), false},
		"none":                           {sign(t, jwt.SigningMethodNone, nil, base(), nil), false},
		"HS256 with another secret":      {sign(t, jwt.SigningMethodHS256, otherSecret, base(), nil), false},
		"RS256 signed by an unknown key": {sign(t, jwt.SigningMethodRS256, rsaKey(t, 1), base(), nil), false},
	} {
		_, err := v.Verify(t.Context(), tc.token)
		if (err == nil) != tc.ok {
			t.Errorf("%s: Verify error %v, want ok=%v", name, err, tc.ok)
		}
	}
}

func TestJWKSRotation(t *testing.T) {
	r0, r1 := rsaKey(t, 0), rsaKey(t, 1)
	srv := newJWKSServer(t, rsaJWK("2026-01", &r0.PublicKey))
	clk := &clock{t: testNow}
	v := jwksVerifier(t, srv, clk, Config{})
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("%d fetches at start, want 1", got)
	}
	old := sign(t, jwt.SigningMethodRS256, r0, base(), map[string]any{"kid": "2026-01"})
	rotated := sign(t, jwt.SigningMethodRS256, r1, base(), map[string]any{"kid": "2026-02"})
	if _, err := v.Verify(t.Context(), old); err != nil {
		t.Fatalf("old key: %v", err)
	}

	// The identity provider rotates: the new key appears, the old one goes.
	srv.set(t, rsaJWK("2026-02", &r1.PublicKey))

	// Within 30 s of the last fetch an unknown kid does not fetch again.
	clk.add(10 * time.Second)
	if _, err := v.Verify(t.Context(), rotated); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "2026-02") {
		t.Fatalf("new kid within the rate limit: %v", err)
	}
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("%d fetches, want 1", got)
	}

	clk.add(25 * time.Second)
	if _, err := v.Verify(t.Context(), rotated); err != nil {
		t.Fatalf("new kid after the rate limit: %v", err)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2", got)
	}
	if _, err := v.Verify(t.Context(), old); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("key removed from the JWKS still verifies: %v", err)
	}
}

func TestJWKSUnknownKidRateLimit(t *testing.T) {
	r0 := rsaKey(t, 0)
	srv := newJWKSServer(t, rsaJWK("r0", &r0.PublicKey))
	clk := &clock{t: testNow}
	v := jwksVerifier(t, srv, clk, Config{})
	attack := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				tok := sign(t, jwt.SigningMethodRS256, r0, base(), map[string]any{"kid": fmt.Sprintf("bogus-%d", i)})
				if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrInvalidToken) {
					t.Errorf("bogus kid: %v", err)
				}
			})
		}
		wg.Wait()
	}
	steps := []struct {
		advance time.Duration
		tokens  int
		hits    int32
	}{
		{0, 50, 1},                // just fetched at start
		{31 * time.Second, 50, 2}, // one refetch for the lot
		{10 * time.Second, 50, 2}, // within 30 s of it
		{25 * time.Second, 50, 3}, // 35 s later: one more
		{0, 50, 3},
	}
	for i, s := range steps {
		clk.add(s.advance)
		attack(s.tokens)
		if got := srv.hits.Load(); got != s.hits {
			t.Fatalf("step %d: %d fetches, want %d", i, got, s.hits)
		}
	}
}

// TestJWKSConcurrentMiss checks that verifications racing on a new kid
// share one fetch and all succeed.
func TestJWKSConcurrentMiss(t *testing.T) {
	r0, r1 := rsaKey(t, 0), rsaKey(t, 1)
	srv := newJWKSServer(t, rsaJWK("a", &r0.PublicKey))
	clk := &clock{t: testNow}
	v := jwksVerifier(t, srv, clk, Config{})
	srv.set(t, rsaJWK("a", &r0.PublicKey), rsaJWK("b", &r1.PublicKey))
	clk.add(time.Minute)
	tok := sign(t, jwt.SigningMethodRS256, r1, base(), map[string]any{"kid": "b"})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := v.Verify(t.Context(), tok); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
	wg.Wait()
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("%d fetches, want 2", got)
	}
}

func TestJWKSPeriodicRefresh(t *testing.T) {
	r0, r1 := rsaKey(t, 0), rsaKey(t, 1)
	srv := newJWKSServer(t, rsaJWK("a", &r0.PublicKey))
	cfg := Config{JWKSURL: srv.URL, RoomsClaim: DefaultRoomsClaim}
	clk := &clock{t: testNow} // frozen: only the timer can refetch
	v, err := newVerifier(t.Context(), cfg, nil, jwksOptions{refreshEvery: 20 * time.Millisecond, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	srv.set(t, rsaJWK("b", &r1.PublicKey))
	deadline := time.Now().Add(5 * time.Second)
	for srv.hits.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d fetches after 5 s of refreshing every 20 ms", srv.hits.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	tok := sign(t, jwt.SigningMethodRS256, r1, base(), map[string]any{"kid": "b"})
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("key from the periodic refresh: %v", err)
	}
	// A failing refresh keeps the keys.
	srv.setRaw(http.StatusServiceUnavailable, []byte("down"))
	n := srv.hits.Load()
	for srv.hits.Load() < n+2 {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("after a failed refresh: %v", err)
	}
}

func TestNewJWKSErrors(t *testing.T) {
	r0 := rsaKey(t, 0)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := json.Marshal(map[string]any{"keys": []any{rsaJWK("r0", &r0.PublicKey)}})
	tests := []struct {
		name    string
		code    int
		body    []byte
		wantErr string
	}{
		{"server error", http.StatusInternalServerError, good, "500"},
		{"not JSON", http.StatusOK, []byte("<html>"), "not a JWK set"},
		{"no keys", http.StatusOK, []byte(`{"keys":[]}`), "no usable"},
		{"only a weak key", http.StatusOK, mustJSON(t, map[string]any{"keys": []any{rsaJWK("s", &small.PublicKey)}}), "1024 bits"},
		{"over 1 MiB", http.StatusOK, append(append([]byte(`{"keys":[],"pad":"`), make([]byte, 1<<20)...), '"', '}'), "over 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newJWKSServer(t)
			srv.setRaw(tt.code, tt.body)
			_, err := New(t.Context(), Config{JWKSURL: srv.URL, RoomsClaim: DefaultRoomsClaim}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New: %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseJWKS(t *testing.T) {
	r0 := rsaKey(t, 0)
	e0 := ecKey(t)
	withKV := func(m map[string]any, kv ...any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i].(string)] = kv[i+1]
		}
		return out
	}
	rj, ej := rsaJWK("r", &r0.PublicKey), ecJWK("e", &e0.PublicKey)
	offCurve := withKV(ej, "y", enc(make([]byte, 32)))
	tests := []struct {
		name string
		key  map[string]any
		alg  string // "" if skipped
	}{
		{"RSA", rj, algRS256},
		{"RSA without alg and use", withKV(rj, "alg", "", "use", ""), algRS256},
		{"RSA with padded base64", withKV(rj, "e", "AQAB"+"=="), algRS256},
		{"EC", ej, algES256},
		{"EC with alg", withKV(ej, "alg", "ES256"), algES256},
		{"encryption key", withKV(rj, "use", "enc"), ""},
		{"RSA for PS256", withKV(rj, "alg", "PS256"), ""},
		{"RSA-OAEP", withKV(rj, "alg", "RSA-OAEP"), ""},
		{"even exponent", withKV(rj, "e", enc([]byte{1, 0, 0})), ""},
		{"exponent 1", withKV(rj, "e", enc([]byte{1})), ""},
		{"huge exponent", withKV(rj, "e", enc([]byte{1, 0, 0, 0, 1})), ""},
		{"modulus not base64", withKV(rj, "n", "!!"), ""},
		{"P-384", withKV(ej, "crv", "P-384"), ""},
		{"EC with alg ES384", withKV(ej, "alg", "ES384"), ""},
		{"EC point off the curve", offCurve, ""},
		{"EC short x", withKV(ej, "x", enc(make([]byte, 31))), ""},
		{"oct", map[string]any{"kty": "oct", "k": enc(testSecret)}, ""},
		{"OKP", map[string]any{"kty": "OKP", "crv": "Ed25519", "x": enc(make([]byte, 32))}, ""},
		{"not an object", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var key any = tt.key
			if tt.key == nil {
				key = "a string"
			}
			keys, skipped, err := parseJWKS(mustJSON(t, map[string]any{"keys": []any{key, ej}}))
			if err != nil {
				t.Fatal(err)
			}
			if tt.alg == "" {
				if len(keys) != 1 || len(skipped) != 1 {
					t.Fatalf("kept %d keys, skipped %q; want the key skipped", len(keys), skipped)
				}
				return
			}
			if len(keys) != 2 || keys[0].alg != tt.alg {
				t.Fatalf("keys %+v, skipped %q; want the key as %s", keys, skipped, tt.alg)
			}
		})
	}

	many := make([]any, jwksMaxKeys+5)
	for i := range many {
		many[i] = ecJWK(fmt.Sprint(i), &e0.PublicKey)
	}
	keys, skipped, err := parseJWKS(mustJSON(t, map[string]any{"keys": many}))
	if err != nil || len(keys) != jwksMaxKeys || len(skipped) != 5 {
		t.Errorf("%d keys: kept %d, skipped %d, err %v", len(many), len(keys), len(skipped), err)
	}
}

func TestValidateJWKSURL(t *testing.T) {
	for url, ok := range map[string]bool{
		"https://idp.example/.well-known/jwks.json": true,
		"http://127.0.0.1:8080/jwks":                true,
		"http://localhost/jwks":                     true,
		"http://[::1]:9000/jwks":                    true,
		"http://keycloak.auth.svc/jwks":             false,
		"ftp://idp.example/jwks":                    false,
		"/jwks":                                     false,
		"idp.example/jwks":                          false,
	} {
		err := (&Config{JWKSURL: url, RoomsClaim: "rooms"}).Validate()
		if (err == nil) != ok {
			t.Errorf("%s: %v, want ok=%v", url, err, ok)
		}
	}
}

func FuzzParseJWKS(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(map[string]any{"keys": []any{ecJWK("e", &k.PublicKey)}})
	f.Add(good)
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		keys, _, err := parseJWKS(body)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range keys {
			switch key := k.key.(type) {
			case *rsa.PublicKey:
				if k.alg != algRS256 || key.N.BitLen() < rsaMinBits {
					t.Fatalf("bad RSA key %+v", k)
				}
			case *ecdsa.PublicKey:
				if k.alg != algES256 || key.Curve != elliptic.P256() {
					t.Fatalf("bad EC key %+v", k)
				}
			default:
				t.Fatalf("key of type %T", key)
			}
		}
	})
}
