package auth

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/envflag"
)

func parseFlags(t *testing.T, def Config, args ...string) Config {
	t.Helper()
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs, def)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRegisterFlags(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		c := parseFlags(t, Config{})
		if c.Mode != ModeJWT || c.RoomsClaim != "rooms" || c.Leeway != 30*time.Second || c.DevTokenTTL != 12*time.Hour {
			t.Errorf("defaults %v", c)
		}
	})
	t.Run("env then flags", func(t *testing.T) {
		t.Setenv("PALAVER_AUTH", "dev")
		t.Setenv("PALAVER_AUTH_JWKS_URL", "https://env.example/jwks")
		t.Setenv("PALAVER_AUTH_ISSUER", "https://env.example")
		t.Setenv("PALAVER_AUTH_LEEWAY", "5s")
		t.Setenv("PALAVER_AUTH_HS256_SECRET", string(testSecret))
		c := parseFlags(t, Config{}, "--auth=jwt", "--auth-issuer=https://flag.example", "--auth-rooms-claim=groups", "--auth-dev-token-ttl=1h")
		want := Config{Mode: ModeJWT, HS256Secret: string(testSecret), JWKSURL: "https://env.example/jwks", Issuer: "https://flag.example",
			RoomsClaim: "groups", Leeway: 5 * time.Second, DevTokenTTL: time.Hour}
		c.env = envflag.Vars{} // bookkeeping, not configuration
		if !reflect.DeepEqual(c, want) {
			t.Errorf("got %v\nwant %v", c, want)
		}
		if err := c.Validate(); err != nil {
			t.Error(err)
		}
	})
	t.Run("no secret flag", func(t *testing.T) {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		new(Config).RegisterFlags(fs, Config{})
		fs.VisitAll(func(f *flag.Flag) {
			if strings.Contains(f.Name, "secret") && !strings.HasSuffix(f.Name, "-file") {
				t.Errorf("flag --%s would put a secret in process lists", f.Name)
			}
		})
	})
	t.Run("bad env duration", func(t *testing.T) {
		t.Setenv("PALAVER_AUTH_LEEWAY", "30")
		c := parseFlags(t, Config{JWKSURL: "https://idp.example/jwks"})
		if err := c.Validate(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "PALAVER_AUTH_LEEWAY") {
			t.Errorf("Validate: %v", err)
		}
	})
}

func TestValidate(t *testing.T) {
	ok := Config{Mode: ModeJWT, JWKSURL: "https://idp.example/jwks", RoomsClaim: "rooms", Leeway: time.Second, DevTokenTTL: time.Hour}
	with := func(f func(*Config)) Config { c := ok; f(&c); return c }
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"jwks", ok, ""},
		{"secret file", with(func(c *Config) { c.JWKSURL = ""; c.HS256SecretFile = "/run/secrets/hs256" }), ""},
		{"both kinds of key", with(func(c *Config) { c.HS256Secret = string(testSecret) }), ""},
		{"dev", Config{Mode: ModeDev, RoomsClaim: "rooms", DevTokenTTL: time.Hour}, ""},
		{"no key", with(func(c *Config) { c.JWKSURL = "" }), "needs a key"},
		{"secret from file and env", with(func(c *Config) { c.HS256Secret = string(testSecret); c.HS256SecretFile = "/x" }), "keep one"},
		{"short env secret", with(func(c *Config) { c.HS256Secret = "hunter2" }), "at least 32"},
		{"unknown mode", with(func(c *Config) { c.Mode = "oidc" }), `"oidc"`},
		{"plain http JWKS", with(func(c *Config) { c.JWKSURL = "http://idp.example/jwks" }), "https"},
		{"rooms claim empty", with(func(c *Config) { c.RoomsClaim = "" }), "rooms-claim"},
		{"rooms claim sub", with(func(c *Config) { c.RoomsClaim = "sub" }), "registered"},
		{"negative leeway", with(func(c *Config) { c.Leeway = -time.Second }), "leeway"},
		{"huge leeway", with(func(c *Config) { c.Leeway = time.Hour }), "leeway"},
		{"dev with a key", Config{Mode: ModeDev, JWKSURL: "https://idp.example/jwks", DevTokenTTL: time.Hour}, "makes its own secret"},
		{"dev with no ttl", Config{Mode: ModeDev}, "ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate: %v, want ErrConfig with %q", err, tt.wantErr)
			}
			if tt.cfg.HS256Secret != "" && strings.Contains(err.Error(), tt.cfg.HS256Secret) {
				t.Errorf("error %q shows the secret", err)
			}
		})
	}
}

func TestConfigKeepsSecretOutOfPrint(t *testing.T) {
	c := Config{Mode: ModeJWT, HS256Secret: string(testSecret), RoomsClaim: "rooms"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("auth", "config", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", &c), buf.String()} {
		if strings.Contains(s, string(testSecret)) {
			t.Errorf("secret shown in %s", s)
		}
		if !strings.Contains(s, "PALAVER_AUTH_HS256_SECRET") {
			t.Errorf("%s does not say where the secret comes from", s)
		}
	}
}
