// Package chatcli implements the chat commands of the palaver tool:
// `palaver chat` (a console producer and consumer for one room) and
// `palaver rooms`. It talks protocol v1 through chatclient.
package chatcli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/envflag"
)

// Exit codes of the chat commands, also documented in docs/cli.md.
const (
	ExitOK           = 0
	ExitFailure      = 1 // anything else: network, server bug, a message not sent
	ExitUsage        = 2 // bad flags or arguments
	ExitNotFound     = 3 // no such room
	ExitUnauthorized = 4 // no valid token
	ExitForbidden    = 5 // the token does not allow the room
)

// DefaultURL is where `make dev` serves the gateway.
const DefaultURL = "http://127.0.0.1:8080"

// UsageError is a mistake in the command line.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// ExitCode maps an error of a command to the process exit code.
func ExitCode(err error) int {
	var ue *UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	}
	switch chatclient.Code(err) {
	case chatclient.CodeNotFound:
		return ExitNotFound
	case chatclient.CodeUnauthorized:
		return ExitUnauthorized
	case chatclient.CodeForbidden:
		return ExitForbidden
	}
	if chatclient.CloseCode(err) == chatclient.CloseUnauthorized {
		return ExitUnauthorized
	}
	return ExitFailure
}

// Conn is where and as whom to connect: the flags every chat command shares.
type Conn struct {
	URL       string
	TokenFile string
	Name      string
}

// RegisterFlags adds --url, --token-file and --name to fs.
func (c *Conn) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "url", envflag.String("PALAVER_URL", DefaultURL), "gateway base URL ($PALAVER_URL)")
	fs.StringVar(&c.TokenFile, "token-file", "", "read the token (a JWT) from this file; else $PALAVER_TOKEN")
	fs.StringVar(&c.Name, "name", "", "log in to a dev-mode gateway under this name (POST /v1/dev/login)")
}

// devLogin reports whether the token comes from dev login, which can be
// asked again when it expires.
func (c *Conn) devLogin() bool { return c.Name != "" }

// Token returns the token to use: the --token-file's, a dev login's for
// --name, or $PALAVER_TOKEN, in that order.
func (c *Conn) Token(ctx context.Context) (string, error) {
	switch {
	case c.TokenFile != "" && c.Name != "":
		return "", &UsageError{"give either --token-file or --name, not both"}
	case c.TokenFile != "":
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", fmt.Errorf("read token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", &UsageError{fmt.Sprintf("token file %s is empty", c.TokenFile)}
		}
		return tok, nil
	case c.Name != "":
		return chatclient.DevLogin(ctx, c.URL, c.Name)
	}
	if tok := strings.TrimSpace(os.Getenv("PALAVER_TOKEN")); tok != "" {
		return tok, nil
	}
	return "", &UsageError{"no credentials: pass --name NAME (dev mode), --token-file FILE, or set PALAVER_TOKEN"}
}
