package auth

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"palaver.dev/services/internal/envflag"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("auth: invalid configuration")

// Modes of Config.Mode.
const (
	ModeJWT = "jwt" // verify tokens from an identity provider
	ModeDev = "dev" // anyone may log in under any name; see DevIssuer
)

// Defaults applied by RegisterFlags where def leaves a field zero.
const (
	DefaultRoomsClaim  = "rooms"
	DefaultLeeway      = 30 * time.Second
	DefaultDevTokenTTL = 12 * time.Hour
)

// Limits on the configuration.
const (
	MinSecretBytes = 32 // HS256 secrets shorter than this are refused
	maxSecretBytes = 64 << 10
	maxLeeway      = 5 * time.Minute
	maxDevTokenTTL = 7 * 24 * time.Hour
)

// Config says how tokens are checked. It comes from flags with environment
// fallbacks; the HS256 secret comes from a file or the environment, never
// from a flag, because flags show in process lists.
type Config struct {
	Mode            string        // ModeJWT (default) or ModeDev
	HS256SecretFile string        // file holding the shared secret (at least 32 bytes)
	HS256Secret     string        `json:"-"` // PALAVER_AUTH_HS256_SECRET env only, never a flag
	JWKSURL         string        // RS256 and ES256 keys; https, or http on loopback only
	Issuer          string        // required "iss" when set
	Audience        string        // required in "aud" when set
	RoomsClaim      string        // claim listing the rooms a user may join, default "rooms"
	Leeway          time.Duration // clock skew allowed on nbf (and by Verify on exp; the gateway refuses a token past exp), default 30s
	DevTokenTTL     time.Duration // dev mode token lifetime, default 12h

	env envflag.Vars // remembers environment values that did not parse, for Validate
}

// RegisterFlags binds the configuration to flags on fs, each defaulting to
// an environment variable (named in the flag's help) and then to def, then
// to the package defaults. It also reads PALAVER_AUTH_HS256_SECRET.
func (c *Config) RegisterFlags(fs *flag.FlagSet, def Config) {
	if def.Mode == "" {
		def.Mode = ModeJWT
	}
	if def.RoomsClaim == "" {
		def.RoomsClaim = DefaultRoomsClaim
	}
	if def.Leeway == 0 {
		def.Leeway = DefaultLeeway
	}
	if def.DevTokenTTL == 0 {
		def.DevTokenTTL = DefaultDevTokenTTL
	}
	c.HS256Secret = envflag.String("PALAVER_AUTH_HS256_SECRET", def.HS256Secret)
	fs.StringVar(&c.Mode, "auth", envflag.String("PALAVER_AUTH", def.Mode), "authentication: "+ModeJWT+" (tokens from an identity provider) or "+ModeDev+" (anyone logs in under any name; never in production) ($PALAVER_AUTH)")
	fs.StringVar(&c.HS256SecretFile, "auth-hs256-secret-file", envflag.String("PALAVER_AUTH_HS256_SECRET_FILE", def.HS256SecretFile), "file holding the HS256 shared secret, at least 32 bytes ($PALAVER_AUTH_HS256_SECRET_FILE; or the secret itself in $PALAVER_AUTH_HS256_SECRET)")
	fs.StringVar(&c.JWKSURL, "auth-jwks-url", envflag.String("PALAVER_AUTH_JWKS_URL", def.JWKSURL), "JWKS URL of the identity provider's RS256/ES256 keys ($PALAVER_AUTH_JWKS_URL)")
	fs.StringVar(&c.Issuer, "auth-issuer", envflag.String("PALAVER_AUTH_ISSUER", def.Issuer), "required token issuer (iss), if set ($PALAVER_AUTH_ISSUER)")
	fs.StringVar(&c.Audience, "auth-audience", envflag.String("PALAVER_AUTH_AUDIENCE", def.Audience), "required token audience (aud), if set ($PALAVER_AUTH_AUDIENCE)")
	fs.StringVar(&c.RoomsClaim, "auth-rooms-claim", envflag.String("PALAVER_AUTH_ROOMS_CLAIM", def.RoomsClaim), "claim listing the rooms a user may join; absent means all rooms ($PALAVER_AUTH_ROOMS_CLAIM)")
	c.env = envflag.Vars{}
	c.env.Duration(fs, &c.Leeway, "auth-leeway", "PALAVER_AUTH_LEEWAY", def.Leeway, "clock skew allowed when checking a token's nbf; a token past its exp is refused all the same")
	c.env.Duration(fs, &c.DevTokenTTL, "auth-dev-token-ttl", "PALAVER_AUTH_DEV_TOKEN_TTL", def.DevTokenTTL, "lifetime of tokens issued in dev mode")
}

// Validate reports missing or contradictory settings. It does not read the
// secret file; New does.
func (c *Config) Validate() error {
	if err := c.env.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.Leeway < 0 || c.Leeway > maxLeeway {
		return fmt.Errorf("%w: --auth-leeway %v is outside 0..%v", ErrConfig, c.Leeway, maxLeeway)
	}
	switch c.Mode {
	case ModeDev:
		if c.HS256SecretFile != "" || c.HS256Secret != "" || c.JWKSURL != "" {
			return fmt.Errorf("%w: --auth=%s makes its own secret; remove the HS256 secret and JWKS URL settings, or use --auth=%s", ErrConfig, ModeDev, ModeJWT)
		}
		if c.DevTokenTTL <= 0 || c.DevTokenTTL > maxDevTokenTTL {
			return fmt.Errorf("%w: --auth-dev-token-ttl %v is outside (0, %v]", ErrConfig, c.DevTokenTTL, maxDevTokenTTL)
		}
		return nil
	case ModeJWT, "":
	default:
		return fmt.Errorf("%w: --auth=%q (want %s or %s)", ErrConfig, c.Mode, ModeJWT, ModeDev)
	}
	if c.HS256SecretFile == "" && c.HS256Secret == "" && c.JWKSURL == "" {
		return fmt.Errorf("%w: --auth=%s needs a key: set --auth-hs256-secret-file (or $PALAVER_AUTH_HS256_SECRET) for HS256 tokens, and/or --auth-jwks-url for RS256/ES256 tokens", ErrConfig, ModeJWT)
	}
	if c.HS256SecretFile != "" && c.HS256Secret != "" {
		return fmt.Errorf("%w: both --auth-hs256-secret-file and $PALAVER_AUTH_HS256_SECRET are set; keep one", ErrConfig)
	}
	if c.HS256Secret != "" {
		if err := checkSecret([]byte(c.HS256Secret), "$PALAVER_AUTH_HS256_SECRET"); err != nil {
			return err
		}
	}
	if c.JWKSURL != "" {
		if err := checkJWKSURL(c.JWKSURL); err != nil {
			return err
		}
	}
	if err := checkRoomsClaim(c.RoomsClaim); err != nil {
		return err
	}
	return nil
}

// checkJWKSURL accepts https URLs, and http ones only to loopback: keys
// fetched in clear text could be swapped on the way.
func checkJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: --auth-jwks-url %q is not an absolute URL", ErrConfig, s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%w: --auth-jwks-url %q must use https (http only to localhost): keys fetched in clear text can be replaced in transit", ErrConfig, s)
	default:
		return fmt.Errorf("%w: --auth-jwks-url %q must use https", ErrConfig, s)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// registered claims cannot double as the rooms claim.
var registeredClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "name"}

func checkRoomsClaim(name string) error {
	if name == "" {
		return fmt.Errorf("%w: --auth-rooms-claim is empty", ErrConfig)
	}
	for _, r := range registeredClaims {
		if name == r {
			return fmt.Errorf("%w: --auth-rooms-claim %q is a registered claim", ErrConfig, name)
		}
	}
	return nil
}

// checkSecret refuses secrets too short to resist brute force; from is where
// the secret came from, for the message.
func checkSecret(secret []byte, from string) error {
	if len(secret) < MinSecretBytes {
		return fmt.Errorf("%w: the HS256 secret from %s is %d bytes; at least %d are needed (e.g. `openssl rand -base64 48`)", ErrConfig, from, len(secret), MinSecretBytes)
	}
	return nil
}

// secret returns the HS256 secret, reading the file once; nil when HS256 is
// not configured.
func (c *Config) secret() ([]byte, error) {
	if c.HS256Secret != "" {
		s := []byte(c.HS256Secret)
		return s, checkSecret(s, "$PALAVER_AUTH_HS256_SECRET")
	}
	if c.HS256SecretFile == "" {
		return nil, nil
	}
	f, err := os.Open(c.HS256SecretFile)
	if err != nil {
		return nil, fmt.Errorf("auth: read HS256 secret: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return nil, fmt.Errorf("auth: read HS256 secret %s: %w", c.HS256SecretFile, err)
	}
	if len(b) > maxSecretBytes {
		return nil, fmt.Errorf("%w: HS256 secret file %s is over %d bytes; is it the right file?", ErrConfig, c.HS256SecretFile, maxSecretBytes)
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	return b, checkSecret(b, c.HS256SecretFile)
}

// LogValue keeps the secret out of logs: it shows where it comes from, not
// what it is.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("mode", c.Mode),
		slog.String("hs256_secret", c.secretSource()),
		slog.String("jwks_url", c.JWKSURL),
		slog.String("issuer", c.Issuer),
		slog.String("audience", c.Audience),
		slog.String("rooms_claim", c.RoomsClaim),
		slog.Duration("leeway", c.Leeway),
		slog.Duration("dev_token_ttl", c.DevTokenTTL),
	)
}

// String keeps the secret out of %v and %s.
func (c Config) String() string {
	return fmt.Sprintf("auth.Config{Mode:%q HS256Secret:%s JWKSURL:%q Issuer:%q Audience:%q RoomsClaim:%q Leeway:%v DevTokenTTL:%v}",
		c.Mode, c.secretSource(), c.JWKSURL, c.Issuer, c.Audience, c.RoomsClaim, c.Leeway, c.DevTokenTTL)
}

// GoString keeps the secret out of %#v.
func (c Config) GoString() string { return c.String() }

func (c Config) secretSource() string {
	switch {
	case c.HS256Secret != "":
		return "$PALAVER_AUTH_HS256_SECRET"
	case c.HS256SecretFile != "":
		return "file " + c.HS256SecretFile
	default:
		return "none"
	}
}
