// Package chatcli implements the chat commands of the palaver tool:
// `palaver chat` (a console producer and consumer for one room) and
// `palaver rooms`. It talks protocol v1 through chatclient.
package chatcli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/protocol"
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
	case protocol.CodeNotFound:
		return ExitNotFound
	case protocol.CodeUnauthorized:
		return ExitUnauthorized
	case protocol.CodeForbidden:
		return ExitForbidden
	}
	if chatclient.CloseCode(err) == protocol.CloseUnauthorized {
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

// resolve checks --url and completes it: a bare host:port (127.0.0.1:8080,
// localhost:8080) gets http://.
func (c *Conn) resolve() error {
	raw := strings.TrimSpace(c.URL)
	u := raw
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	parsed, err := url.Parse(u)
	bad := &UsageError{fmt.Sprintf("--url %q: want the gateway's address, such as http://127.0.0.1:8080", raw)}
	if raw == "" || err != nil || parsed.Host == "" || parsed.RawQuery != "" || parsed.Fragment != "" {
		return bad
	}
	switch parsed.Scheme {
	case "http", "https":
	case "ws":
		parsed.Scheme = "http"
	case "wss":
		parsed.Scheme = "https"
	default:
		return bad
	}
	parsed.Path = strings.TrimRight(parsed.Path, "/")
	c.URL = parsed.String()
	return nil
}

// validateRoom checks --room, suggesting the lowercase name for a name
// written as it is displayed (Lobby).
func validateRoom(room string) error {
	err := message.ValidateRoom(room)
	if err == nil {
		return nil
	}
	if lower := strings.ToLower(room); lower != room && message.ValidateRoom(lower) == nil {
		return &UsageError{fmt.Sprintf("--room %q: room names are lowercase: did you mean --room %s?", room, lower)}
	}
	return &UsageError{fmt.Sprintf("--room: %v", err)}
}

// explainLogin is explain for a failure to get a token: --name against a
// gateway without dev login is said so.
func (c *Conn) explainLogin(ctx context.Context, err error) error {
	err = c.explain(ctx, err)
	if c.devLogin() && chatclient.Code(err) == protocol.CodeNotFound {
		return &UsageError{fmt.Sprintf("--name: the gateway at %s has no dev login (it is not in dev mode): use --token-file FILE or $PALAVER_TOKEN", c.URL)}
	}
	return err
}

// explain rewrites a failure to reach the gateway into what the user
// should check: the gateway not running, --url pointing at something else.
func (c *Conn) explain(ctx context.Context, err error) error {
	var ue *UsageError
	if err == nil || errors.As(err, &ue) {
		return err
	}
	if _, ok := unreachable(err); ok {
		return reachable(err, c.URL)
	}
	if notGateway := c.probe(ctx); notGateway != nil {
		return notGateway
	}
	return err
}

// explainJoin is explain for a first connection that failed, and lists the
// rooms there are when the room named does not exist.
func (c *Conn) explainJoin(ctx context.Context, err error, token, room string) error {
	err = c.explain(ctx, err)
	if chatclient.Code(err) != protocol.CodeNotFound {
		return err
	}
	api := &chatclient.API{BaseURL: c.URL, Token: token}
	rooms, lerr := api.Rooms(ctx)
	if lerr != nil {
		return err
	}
	return fmt.Errorf("%s: %w", suggestRoom(room, rooms), err)
}

// suggestRoom says that room does not exist, which room was probably meant,
// and which ones there are.
func suggestRoom(room string, rooms []chatclient.Room) string {
	names := make([]string, 0, len(rooms))
	best, bestDist := "", 3
	for _, r := range rooms {
		names = append(names, r.Name)
		d := editDistance(strings.ToLower(room), r.Name)
		if strings.EqualFold(room, r.DisplayName) {
			d = 0
		}
		if d < bestDist {
			best, bestDist = r.Name, d
		}
	}
	msg := fmt.Sprintf("there is no room %q", room)
	if best != "" {
		msg += fmt.Sprintf(": did you mean %s?", best)
	}
	if len(names) == 0 {
		return msg + " (you may join no room)"
	}
	const shown = 10
	list := strings.Join(names[:min(len(names), shown)], ", ")
	if len(names) > shown {
		list += fmt.Sprintf(" and %d more (palaver rooms)", len(names)-shown)
	}
	return msg + " (rooms: " + list + ")"
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// probe asks the server at --url whether it is a gateway: a gateway
// answers GET /v1/rooms without a token with 401 and the protocol's error
// body. It returns an error saying what answered instead, or nil when it
// is a gateway or cannot tell.
func (c *Conn) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/v1/rooms", nil)
	if err != nil {
		return nil
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Code string `json:"code"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusUnauthorized && json.Unmarshal(b, &body) == nil && body.Code != "" {
		return nil
	}
	return fmt.Errorf("%s is not a Palaver gateway (GET /v1/rooms answered %q, not a protocol error): check --url", c.URL, resp.Status)
}
