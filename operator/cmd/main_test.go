package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"palaver.dev/services/kafkabus"
)

func TestApplyCredentialsDir(t *testing.T) {
	write := func(t *testing.T, dir string, files ...string) {
		t.Helper()
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("Strimzi TLS user with the cluster CA", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "ca.crt", "user.crt", "user.key")
		var cfg kafkabus.Config
		if err := applyCredentialsDir(&cfg, dir); err != nil {
			t.Fatal(err)
		}
		if !cfg.TLS || cfg.TLSCAFile != filepath.Join(dir, "ca.crt") || cfg.TLSCertFile != filepath.Join(dir, "user.crt") ||
			cfg.TLSKeyFile != filepath.Join(dir, "user.key") || cfg.SASLMechanism != "" {
			t.Fatalf("config = %+v", cfg)
		}
	})
	t.Run("SCRAM user over TLS", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "ca.crt", "password")
		if err := os.WriteFile(filepath.Join(dir, "username"), []byte("palaver-operator\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var cfg kafkabus.Config
		if err := applyCredentialsDir(&cfg, dir); err != nil {
			t.Fatal(err)
		}
		if !cfg.TLS || cfg.SASLMechanism != kafkabus.SCRAMSHA512 || cfg.SASLUsername != "palaver-operator" ||
			cfg.SASLPasswordFile != filepath.Join(dir, "password") || cfg.TLSCertFile != "" {
			t.Fatalf("config = %+v", cfg)
		}
	})
	t.Run("flags win", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "ca.crt", "password")
		cfg := kafkabus.Config{TLSCAFile: "/other/ca.pem", SASLUsername: "me", SASLPasswordFile: "/other/pw"}
		if err := applyCredentialsDir(&cfg, dir); err != nil {
			t.Fatal(err)
		}
		if cfg.TLSCAFile != "/other/ca.pem" || cfg.SASLPasswordFile != "/other/pw" || cfg.SASLUsername != "me" {
			t.Fatalf("config = %+v", cfg)
		}
	})
	t.Run("empty directory changes nothing", func(t *testing.T) {
		var cfg kafkabus.Config
		if err := applyCredentialsDir(&cfg, t.TempDir()); err != nil || !reflect.DeepEqual(cfg, kafkabus.Config{}) {
			t.Fatalf("config = %+v, %v", cfg, err)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		var cfg kafkabus.Config
		if err := applyCredentialsDir(&cfg, filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Fatal("no error")
		}
	})
}
