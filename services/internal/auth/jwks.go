package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWKS fetching limits.
const (
	jwksTimeout      = 10 * time.Second
	jwksMaxBytes     = 1 << 20
	jwksRefreshEvery = 10 * time.Minute
	jwksMissInterval = 30 * time.Second // least time between fetches caused by unknown key ids
	jwksMaxKeys      = 64               // a token without kid is tried against each key of its type
	rsaMinBits       = 2048
	rsaMaxBits       = 8192 // bigger keys make every verification slow
)

// jwksOptions are knobs for tests; zero values mean the defaults above.
type jwksOptions struct {
	now          func() time.Time
	refreshEvery time.Duration
	missInterval time.Duration
	client       *http.Client
}

// jwk is one usable verification key.
type jwk struct {
	kid string
	alg string              // algRS256 or algES256
	key jwt.VerificationKey // *rsa.PublicKey or *ecdsa.PublicKey
}

// keySet holds the keys of a JWKS URL, refreshed in the background.
type keySet struct {
	url    string
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
	miss   time.Duration
	base   context.Context // the verifier's lifetime, for fetches that outlive one Verify

	mu        sync.Mutex
	keys      []jwk
	lastFetch time.Time     // start of the latest fetch, by any cause
	inflight  chan struct{} // closed when the running fetch ends; nil when none runs
}

// newKeySet fetches the keys once (failing if it cannot) and refreshes
// them until ctx is done.
func newKeySet(ctx context.Context, url string, log *slog.Logger, opts jwksOptions) (*keySet, error) {
	ks := &keySet{url: url, log: log, now: opts.now, miss: opts.missInterval, client: opts.client, base: ctx}
	if ks.now == nil {
		ks.now = time.Now
	}
	if ks.miss == 0 {
		ks.miss = jwksMissInterval
	}
	if ks.client == nil {
		ks.client = &http.Client{Timeout: jwksTimeout, CheckRedirect: noDowngrade}
	}
	every := opts.refreshEvery
	if every == 0 {
		every = jwksRefreshEvery
	}
	ks.lastFetch = ks.now()
	if err := ks.fetch(ctx); err != nil {
		return nil, err
	}
	go ks.refreshLoop(ctx, every)
	return ks, nil
}

// noDowngrade follows redirects like the default client, but never from
// https to http.
func noDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing redirect from https to %s", req.URL.Scheme)
	}
	return nil
}

func (ks *keySet) refreshLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ks.mu.Lock()
		done := ks.startFetchLocked()
		ks.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
	}
}

// startFetchLocked starts a fetch unless one is running and returns a
// channel closed when it ends. ks.mu must be held.
func (ks *keySet) startFetchLocked() <-chan struct{} {
	if ks.inflight != nil {
		return ks.inflight
	}
	done := make(chan struct{})
	ks.inflight = done
	ks.lastFetch = ks.now()
	go func() {
		if err := ks.fetch(ks.base); err != nil {
			ks.log.Warn("auth: refreshing JWKS failed; keeping the keys we have", "url", ks.url, "err", err)
		}
		ks.mu.Lock()
		ks.inflight = nil
		ks.mu.Unlock()
		close(done)
	}()
	return done
}

// lookup returns the keys for a token's kid and algorithm: the key with
// that kid, or every key of the algorithm when kid is "". An unknown kid
// triggers a fetch, at most once per miss interval.
func (ks *keySet) lookup(ctx context.Context, kid, alg string) ([]jwt.VerificationKey, error) {
	if keys := ks.find(kid, alg); len(keys) > 0 {
		return keys, nil
	}
	if kid == "" {
		return nil, &keyError{msg: fmt.Sprintf("no %s key in the JWKS", alg)}
	}
	ks.mu.Lock()
	var done <-chan struct{}
	if ks.inflight != nil || ks.now().Sub(ks.lastFetch) >= ks.miss {
		done = ks.startFetchLocked() // or join the one running
	}
	ks.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, &keyError{msg: "gave up waiting for the JWKS: " + ctx.Err().Error()}
		}
		if keys := ks.find(kid, alg); len(keys) > 0 {
			return keys, nil
		}
	}
	return nil, &keyError{msg: fmt.Sprintf("no %s key with kid %q in the JWKS", alg, truncate(kid, 64))}
}

func (ks *keySet) find(kid, alg string) []jwt.VerificationKey {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var out []jwt.VerificationKey
	for _, k := range ks.keys {
		if k.alg == alg && (kid == "" || k.kid == kid) {
			out = append(out, k.key)
		}
	}
	return out
}

// fetch downloads and parses the key set, replacing the keys on success.
func (ks *keySet) fetch(ctx context.Context) error {
	keys, err := ks.download(ctx)
	if err != nil {
		return fmt.Errorf("auth: JWKS %s: %w", ks.url, err)
	}
	ks.mu.Lock()
	old := ks.keys
	ks.keys = keys
	ks.mu.Unlock()
	if !slices.EqualFunc(old, keys, func(a, b jwk) bool { return a.kid == b.kid && a.alg == b.alg }) {
		ks.log.Info("auth: JWKS keys loaded", "url", ks.url, "kids", kids(keys))
	}
	return nil
}

func (ks *keySet) download(ctx context.Context) ([]jwk, error) {
	ctx, cancel := context.WithTimeout(ctx, jwksTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(body) > jwksMaxBytes {
		return nil, fmt.Errorf("response over %d bytes", jwksMaxBytes)
	}
	keys, skipped, err := parseJWKS(body)
	if err != nil {
		return nil, err
	}
	for _, s := range skipped {
		ks.log.Debug("auth: JWKS key skipped", "url", ks.url, "reason", s)
	}
	return keys, nil
}

func kids(keys []jwk) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.kid
	}
	return out
}

// rawJWK is the subset of RFC 7517/7518 fields we read.
type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS parses a JWK Set, keeping the RSA keys (2048 to 8192 bits) and
// the EC P-256 keys meant for signatures. It reports why the other keys were
// skipped, and fails if none is usable: an empty set is more likely a broken
// identity provider than a deliberate revocation of every key.
func parseJWKS(body []byte) (keys []jwk, skipped []string, err error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, nil, fmt.Errorf("not a JWK set: %w", err)
	}
	for i, raw := range set.Keys {
		var r rawJWK
		if err := json.Unmarshal(raw, &r); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		k, err := parseJWK(r)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, truncate(r.Kid, 64), err))
			continue
		}
		if len(keys) == jwksMaxKeys {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): over %d keys", i, truncate(r.Kid, 64), jwksMaxKeys))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, skipped, fmt.Errorf("no usable RS256 or ES256 key among %d (skipped: %s)", len(set.Keys), strings.Join(skipped, "; "))
	}
	return keys, skipped, nil
}

func parseJWK(r rawJWK) (jwk, error) {
	if r.Use != "" && r.Use != "sig" {
		return jwk{}, fmt.Errorf("use %q is not sig", r.Use)
	}
	switch r.Kty {
	case "RSA":
		if r.Alg != "" && r.Alg != algRS256 {
			return jwk{}, fmt.Errorf("RSA key for %q, not %s", r.Alg, algRS256)
		}
		key, err := parseRSA(r.N, r.E)
		if err != nil {
			return jwk{}, err
		}
		return jwk{kid: r.Kid, alg: algRS256, key: key}, nil
	case "EC":
		if r.Alg != "" && r.Alg != algES256 {
			return jwk{}, fmt.Errorf("EC key for %q, not %s", r.Alg, algES256)
		}
		if r.Crv != "P-256" {
			return jwk{}, fmt.Errorf("EC curve %q, not P-256", r.Crv)
		}
		key, err := parseP256(r.X, r.Y)
		if err != nil {
			return jwk{}, err
		}
		return jwk{kid: r.Kid, alg: algES256, key: key}, nil
	default: // "oct" keys in particular never come from a JWKS URL
		return jwk{}, fmt.Errorf("key type %q not supported", r.Kty)
	}
}

func parseRSA(n64, e64 string) (*rsa.PublicKey, error) {
	nb, err := b64(n64)
	if err != nil || len(nb) == 0 {
		return nil, errors.New("RSA modulus n is not base64url")
	}
	eb, err := b64(e64)
	if err != nil || len(eb) == 0 {
		return nil, errors.New("RSA exponent e is not base64url")
	}
	n := new(big.Int).SetBytes(nb)
	if bits := n.BitLen(); bits < rsaMinBits || bits > rsaMaxBits {
		return nil, fmt.Errorf("RSA key of %d bits (want %d to %d)", bits, rsaMinBits, rsaMaxBits)
	}
	e := new(big.Int).SetBytes(eb)
	if e.BitLen() > 31 || e.Int64() < 3 || e.Bit(0) == 0 {
		return nil, errors.New("RSA exponent e is not an odd number from 3 to 2^31-1")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

func parseP256(x64, y64 string) (*ecdsa.PublicKey, error) {
	x, err := b64(x64)
	if err != nil || len(x) != 32 {
		return nil, errors.New("EC x is not 32 bytes of base64url")
	}
	y, err := b64(y64)
	if err != nil || len(y) != 32 {
		return nil, errors.New("EC y is not 32 bytes of base64url")
	}
	pt := append(append([]byte{4}, x...), y...)
	key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
	if err != nil {
		return nil, fmt.Errorf("EC point: %w", err)
	}
	return key, nil
}

// b64 decodes base64url, tolerating the padding RFC 7515 says to leave out.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
