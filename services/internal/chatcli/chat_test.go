package chatcli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"palaver.dev/services/internal/chatclient/fakegateway"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/internal/testio"
)

// waitFor polls until cond holds, failing the test after 15 s (generous:
// a loaded machine).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// texts returns the message texts of printed lines.
func texts(out string) []string {
	var ts []string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if _, text, ok := strings.Cut(l, "> "); ok {
			ts = append(ts, text)
		}
	}
	return ts
}

func options(gw *fakegateway.Server, name, room string, in io.Reader, out, errw io.Writer) ChatOptions {
	return ChatOptions{
		Conn: Conn{URL: gw.URL, Name: name}, Room: room,
		In: in, Out: out, Err: errw, Location: time.UTC,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	}
}

func TestChatOneShotSend(t *testing.T) {
	gw := fakegateway.Start(t)
	var out, errw testio.SyncBuffer
	err := Chat(t.Context(), options(gw, "bot", "lobby", strings.NewReader("hi\n\nthere\n"), &out, &errw))
	if err != nil {
		t.Fatalf("Chat = %v; stderr:\n%s", err, errw.String())
	}
	if got := gw.Messages("lobby"); !slices.Equal(got, []string{"hi", "there"}) {
		t.Fatalf("stored %q", got)
	}
}

func TestChatPrintsTheRoomAndReconnects(t *testing.T) {
	gw := fakegateway.Start(t)
	gw.Seed("lobby", "Grace", "one", "two", "three")
	pr, pw := io.Pipe()
	var out, errw testio.SyncBuffer
	o := options(gw, "Ada", "lobby", pr, &out, &errw)
	o.Last = 2
	done := make(chan error, 1)
	go func() { done <- Chat(t.Context(), o) }()

	waitFor(t, "the last 2 messages", func() bool { return strings.Count(out.String(), "\n") == 2 })
	line := regexp.MustCompile(`^\d\d:\d\d:\d\d <Grace> two\n\d\d:\d\d:\d\d <Grace> three\n$`)
	if !line.MatchString(out.String()) {
		t.Fatalf("output:\n%s", out.String())
	}

	// The gateway goes away; messages stored meanwhile arrive once, in order.
	gw.CloseAll(websocket.StatusGoingAway, "restart")
	gw.Seed("lobby", "Grace", "four", "five")
	waitFor(t, "recovery", func() bool { return strings.Count(out.String(), "\n") == 4 })
	if got := texts(out.String()); !slices.Equal(got, []string{"two", "three", "four", "five"}) {
		t.Fatalf("output after reconnect:\n%s", out.String())
	}
	if e := errw.String(); !strings.Contains(e, "going away; reconnecting in") || !strings.Contains(e, "reconnected to lobby as Ada (recovering: true)") {
		t.Fatalf("stderr:\n%s", e)
	}
	joins := gw.Joins()
	if len(joins) != 2 || joins[1].Cursor == "" || joins[1].Last != 0 {
		t.Fatalf("joins = %+v; want a second one with the cursor", joins)
	}

	// A line typed now is sent on the new connection; EOF ends cleanly.
	io.WriteString(pw, "back\n")
	waitFor(t, "the echo", func() bool { return strings.Contains(out.String(), "<Ada> back\n") })
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("Chat = %v", err)
	}
	if got := texts(out.String()); !slices.Equal(got, []string{"two", "three", "four", "five", "back"}) {
		t.Fatalf("output (want no duplicates):\n%s", out.String())
	}
}

func TestChatRetriesUnavailableWithTheSameID(t *testing.T) {
	gw := fakegateway.Start(t)
	gw.FailNextSends(2)
	gw.RateLimitNextSends(0)
	var out, errw testio.SyncBuffer
	o := options(gw, "bot", "lobby", strings.NewReader("only once\n"), &out, &errw)
	o.Verbose = true
	if err := Chat(t.Context(), o); err != nil {
		t.Fatalf("Chat = %v", err)
	}
	if got := gw.Messages("lobby"); !slices.Equal(got, []string{"only once"}) {
		t.Fatalf("stored %q, want it once", got)
	}
	e := errw.String()
	if strings.Count(e, "send: unavailable; retrying") != 2 || !regexp.MustCompile(`ack c-[0-9a-f]+ partition 0 offset 0 \(duplicate\)`).MatchString(e) {
		t.Fatalf("stderr:\n%s", e)
	}
}

func TestChatRateLimitedIsRetried(t *testing.T) {
	gw := fakegateway.Start(t)
	gw.RateLimitNextSends(3)
	var out, errw testio.SyncBuffer
	if err := Chat(t.Context(), options(gw, "bot", "lobby", strings.NewReader("a\nb\n"), &out, &errw)); err != nil {
		t.Fatalf("Chat = %v", err)
	}
	if got := gw.Messages("lobby"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("stored %q", got)
	}
}

func TestChatTooLongLineIsReportedAndSkipped(t *testing.T) {
	gw := fakegateway.Start(t)
	var out, errw testio.SyncBuffer
	in := strings.Repeat("x", 5000) + "\nok\n"
	err := Chat(t.Context(), options(gw, "bot", "lobby", strings.NewReader(in), &out, &errw))
	if err == nil || ExitCode(err) != ExitFailure {
		t.Fatalf("Chat = %v, want a failure for the line not sent", err)
	}
	if got := gw.Messages("lobby"); !slices.Equal(got, []string{"ok"}) {
		t.Fatalf("stored %q", got)
	}
	if !strings.Contains(errw.String(), "not sent: the line is 5000 bytes, the limit is 4096") {
		t.Fatalf("stderr:\n%s", errw.String())
	}
}

func TestChatErrors(t *testing.T) {
	gw := fakegateway.Start(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(fakegateway.Token("Ada")+"\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)

	tests := []struct {
		name string
		conn Conn
		env  string
		room string
		last int
		exit int
		text string
	}{
		{"no such room", Conn{Name: "Ada"}, "", "nowhere", 0, ExitNotFound, "not_found"},
		{"forbidden room", Conn{TokenFile: good}, "", "secret", 0, ExitForbidden, "forbidden"},
		{"bad token from env", Conn{}, "forged", "lobby", 0, ExitUnauthorized, "unauthorized"},
		{"no credentials", Conn{}, "", "lobby", 0, ExitUsage, "no credentials"},
		{"both credentials", Conn{Name: "Ada", TokenFile: good}, "", "lobby", 0, ExitUsage, "not both"},
		{"empty token file", Conn{TokenFile: empty}, "", "lobby", 0, ExitUsage, "is empty"},
		{"bad room name", Conn{Name: "Ada"}, "", "Lobby!", 0, ExitUsage, "--room"},
		{"last too big", Conn{Name: "Ada"}, "", "lobby", 501, ExitUsage, "--last"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PALAVER_TOKEN", tt.env)
			tt.conn.URL = gw.URL
			var out, errw testio.SyncBuffer
			err := Chat(t.Context(), ChatOptions{Conn: tt.conn, Room: tt.room, Last: tt.last, In: strings.NewReader("x\n"), Out: &out, Err: &errw})
			if ExitCode(err) != tt.exit || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Chat = %v (exit %d), want exit %d mentioning %q", err, ExitCode(err), tt.exit, tt.text)
			}
		})
	}
}

func TestChatGatewayNotRunning(t *testing.T) {
	gw := fakegateway.Start(t)
	url := gw.URL
	gw.Close()
	var out, errw testio.SyncBuffer
	t.Setenv("PALAVER_TOKEN", "tok-Ada")
	err := Chat(t.Context(), ChatOptions{Conn: Conn{URL: url}, Room: "lobby", In: strings.NewReader(""), Out: &out, Err: &errw})
	if err == nil || ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "cannot reach the gateway at "+url+": connection refused") {
		t.Fatalf("Chat without a gateway = %v", err)
	}
}

func TestChatReloginWhenTheTokenIsRefused(t *testing.T) {
	gw := fakegateway.Start(t)
	pr, pw := io.Pipe()
	var out, errw testio.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- Chat(t.Context(), options(gw, "Ada", "lobby", pr, &out, &errw)) }()
	// Only a token refused once joined is an expired one: a refusal of
	// the first join ends the chat.
	waitFor(t, "the join", func() bool { return strings.Contains(errw.String(), "you are Ada in lobby") })
	gw.CloseAll(protocol.CloseUnauthorized, "token expired")
	waitFor(t, "the new connection", func() bool { return len(gw.Joins()) == 2 })
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("Chat = %v", err)
	}
	if !strings.Contains(errw.String(), `logging in again as "Ada"`) {
		t.Fatalf("stderr:\n%s", errw.String())
	}
}

func TestChatInterrupted(t *testing.T) {
	gw := fakegateway.Start(t)
	pr, _ := io.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	var out, errw testio.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- Chat(ctx, options(gw, "Ada", "lobby", pr, &out, &errw)) }()
	waitFor(t, "the connection", func() bool { return gw.Conns() == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Chat after Ctrl-C = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Chat did not stop when interrupted")
	}
}

func TestCleanNeutralizesTerminalControls(t *testing.T) {
	tests := map[string]string{
		"plain":                 "plain",
		"\x1b[2Jwiped":          "\uFFFD[2Jwiped",
		"bell\a":                "bell\uFFFD",
		"two\nlines":            "two\n    lines",
		"crlf\r\nx":             "crlf\n    x",
		"cr\roverwrite":         "cr\uFFFDoverwrite",
		"c1 \u009b31m":          "c1 \uFFFD31m",
		"<img src=x onerror=1>": "<img src=x onerror=1>",
	}
	for in, want := range tests {
		if got := cleanText(in); got != want {
			t.Errorf("cleanText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, time.Second
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		for range 20 {
			if got := backoff(lo, hi, attempt); got > want || got < want*3/4 {
				t.Fatalf("backoff(attempt %d) = %v, want in [%v, %v]", attempt, got, want*3/4, want)
			}
		}
	}
}

func TestChatFromBeginning(t *testing.T) {
	gw := fakegateway.Start(t)
	gw.Seed("lobby", "Grace", "one", "two", "three")
	var out, errw testio.SyncBuffer
	pr, pw := io.Pipe()
	o := options(gw, "Ada", "lobby", pr, &out, &errw)
	o.FromBeginning = true
	done := make(chan error, 1)
	go func() { done <- Chat(t.Context(), o) }()
	waitFor(t, "the history", func() bool { return len(texts(out.String())) == 3 })
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := texts(out.String()); !slices.Equal(got, []string{"one", "two", "three"}) {
		t.Fatalf("printed %q", got)
	}
	if j := gw.Joins(); len(j) != 1 || j[0].Cursor != beginning {
		t.Fatalf("joins = %+v, want one from the empty cursor", j)
	}
}

// TestChatWhenTheServerEndsTheRoom: a room left unreadable (unavailable)
// is joined again from the cursor; a deleted room (not_found) ends the chat
// with exit code 3.
func TestChatWhenTheServerEndsTheRoom(t *testing.T) {
	gw := fakegateway.Start(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	var out, errw testio.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- Chat(t.Context(), options(gw, "Ada", "lobby", pr, &out, &errw)) }()
	waitFor(t, "the join", func() bool { return len(gw.Joins()) == 1 })
	gw.Seed("lobby", "Grace", "before")
	io.WriteString(pw, "hello\n")
	waitFor(t, "the echo", func() bool { return strings.Contains(out.String(), "<Ada> hello\n") })

	gw.EndRoom("lobby", "unavailable")
	waitFor(t, "the join again", func() bool { return len(gw.Joins()) == 2 })
	if j := gw.Joins()[1]; j.Cursor == "" {
		t.Fatalf("joined again without the cursor: %+v", j)
	}

	gw.EndRoom("lobby", "not_found")
	select {
	case err := <-done:
		if ExitCode(err) != ExitNotFound {
			t.Fatalf("Chat = %v (exit %d), want exit %d", err, ExitCode(err), ExitNotFound)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Chat still running after its room was deleted")
	}
	if strings.Count(out.String(), "<Ada> hello") != 1 {
		t.Fatalf("output:\n%s", out.String())
	}
}

// TestChatPrintsTheHistoryBeforeStdinEnds: with stdin already at its end
// (</dev/null), --last N and --from-beginning print every message asked
// for before exiting, however late the gateway delivers them after joined.
func TestChatPrintsTheHistoryBeforeStdinEnds(t *testing.T) {
	gw := fakegateway.Start(t)
	var all []string
	for i := range 30 {
		all = append(all, fmt.Sprintf("m%02d", i))
	}
	gw.Seed("lobby", "Grace", all...)
	for _, tt := range []struct {
		name          string
		last          int
		fromBeginning bool
		delay         time.Duration
		want          []string
	}{
		{"last 20", 20, false, 0, all[10:]},
		{"from the beginning", 0, true, 0, all},
		{"last 20, slow backlog", 20, false, 300 * time.Millisecond, all[10:]},
		{"from the beginning, slow backlog", 0, true, 300 * time.Millisecond, all},
	} {
		t.Run(tt.name, func(t *testing.T) {
			gw.DelayJoinBacklog(tt.delay)
			runs := 20
			if tt.delay > 0 {
				runs = 3
			}
			for run := range runs {
				var out, errw testio.SyncBuffer
				o := options(gw, "Ada", "lobby", strings.NewReader(""), &out, &errw)
				o.Last, o.FromBeginning = tt.last, tt.fromBeginning
				if err := Chat(t.Context(), o); err != nil {
					t.Fatalf("run %d: Chat = %v; stderr:\n%s", run, err, errw.String())
				}
				if got := texts(out.String()); !slices.Equal(got, tt.want) {
					t.Fatalf("run %d printed %d lines, want %d:\n%s", run, len(got), len(tt.want), out.String())
				}
			}
		})
	}
	gw.DelayJoinBacklog(0)

	// An empty room ends at once.
	var out, errw testio.SyncBuffer
	o := options(gw, "Ada", "random", strings.NewReader(""), &out, &errw)
	o.FromBeginning = true
	if err := Chat(t.Context(), o); err != nil || out.String() != "" {
		t.Fatalf("empty room: Chat = %v, printed %q", err, out.String())
	}
}

func TestChatCommandsAreNeverSent(t *testing.T) {
	gw := fakegateway.Start(t)
	var out, errw testio.SyncBuffer
	in := "/help\nfirst\n/who\n/WHO  \n/me waves\n/quit\nnever\n"
	if err := Chat(t.Context(), options(gw, "Ada", "lobby", strings.NewReader(in), &out, &errw)); err != nil {
		t.Fatalf("Chat = %v; stderr:\n%s", err, errw.String())
	}
	// A pipe's other lines are sent as they are; /quit ends the input.
	if got := gw.Messages("lobby"); !slices.Equal(got, []string{"first", "/me waves"}) {
		t.Fatalf("stored %q", got)
	}
	e := errw.String()
	for _, want := range []string{"/who    who is in the room", "who is in lobby is not known"} {
		if !strings.Contains(e, want) {
			t.Fatalf("stderr lacks %q:\n%s", want, e)
		}
	}
}

func TestChatSaysWhereAndAsWhom(t *testing.T) {
	gw := fakegateway.Start(t)
	var out, errw testio.SyncBuffer
	o := options(gw, "Ada", "lobby", strings.NewReader(""), &out, &errw)
	o.Conn.URL = strings.TrimPrefix(gw.URL, "http://") // no scheme: http:// is added
	if err := Chat(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if want := "palaver: you are Ada in lobby at " + gw.URL + "\n"; errw.String() != want {
		t.Fatalf("stderr %q, want %q", errw.String(), want)
	}
}

func TestResolveURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":            "http://127.0.0.1:8080",
		"localhost:8080":            "http://localhost:8080",
		"http://localhost:8080/":    "http://localhost:8080",
		"https://chat.example.com":  "https://chat.example.com",
		"ws://127.0.0.1:8080":       "http://127.0.0.1:8080",
		"https://example.com/chat/": "https://example.com/chat",
	} {
		c := Conn{URL: in}
		if err := c.resolve(); err != nil || c.URL != want {
			t.Errorf("resolve(%q) = %q, %v; want %q", in, c.URL, err, want)
		}
	}
	for _, in := range []string{"", "ftp://x", "http://", "http://x/?a=b", "::"} {
		c := Conn{URL: in}
		if err := c.resolve(); ExitCode(err) != ExitUsage {
			t.Errorf("resolve(%q) = %v, want a usage error", in, err)
		}
	}
}

func TestChatRoomNames(t *testing.T) {
	gw := fakegateway.Start(t)
	for _, tt := range []struct {
		room, want string
		exit       int
	}{
		{"Lobby", "did you mean --room lobby?", ExitUsage},
		{"lobb", `there is no room "lobb": did you mean lobby?`, ExitNotFound},
		{"zzzzzz", `there is no room "zzzzzz" (rooms: `, ExitNotFound},
	} {
		var out, errw testio.SyncBuffer
		err := Chat(t.Context(), options(gw, "Ada", tt.room, strings.NewReader(""), &out, &errw))
		if ExitCode(err) != tt.exit || err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("--room %s: Chat = %v (exit %d), want exit %d saying %q", tt.room, err, ExitCode(err), tt.exit, tt.want)
		}
	}
}

// TestChatAtSomethingElse: --url pointing at a web server that is not a
// gateway is said so, not reported as a missing room.
func TestChatAtSomethingElse(t *testing.T) {
	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)
	for _, conn := range []Conn{{URL: other.URL, Name: "Ada"}, {URL: other.URL}} {
		t.Setenv("PALAVER_TOKEN", fakegateway.Token("Ada"))
		var out, errw testio.SyncBuffer
		err := Chat(t.Context(), ChatOptions{Conn: conn, Room: "lobby", In: strings.NewReader(""), Out: &out, Err: &errw})
		if ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), other.URL+" is not a Palaver gateway") {
			t.Errorf("Chat(%+v) = %v (exit %d)", conn, err, ExitCode(err))
		}
	}
}

// TestChatInteractive: at a terminal, lines come from the line editor, the
// room prints through it, and every line starting with "/" is a command.
func TestChatInteractive(t *testing.T) {
	gw := fakegateway.Start(t)
	pr, keys := io.Pipe()
	defer keys.Close()
	var screen testio.SyncBuffer
	ed := NewEditor(pr, &screen, "lobby> ", nil)
	o := options(gw, "Ada", "lobby", nil, ed, ed)
	o.Editor = ed
	done := make(chan error, 1)
	go func() { done <- Chat(t.Context(), o) }()
	waitFor(t, "the greeting", func() bool {
		return strings.Contains(screen.String(), "palaver: you are Ada in lobby at "+gw.URL+"; /help lists the commands\r\n")
	})
	io.WriteString(keys, "hello\r/nope\r//slash\r/quit\r")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Chat = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Chat did not end after /quit")
	}
	if got := gw.Messages("lobby"); !slices.Equal(got, []string{"hello", "/slash"}) {
		t.Fatalf("stored %q", got)
	}
	s := screen.String()
	if n := strings.Count(s, "<Ada> hello"); n != 1 {
		t.Fatalf("own line printed %d times:\n%q", n, s)
	}
	if !strings.Contains(s, "unknown command /nope") {
		t.Fatalf("screen:\n%q", s)
	}
}

// TestChatAfterAReset: a room wiped while the chat was away is printed
// again from its oldest message, and an end of stdin still waits for it.
func TestChatAfterAReset(t *testing.T) {
	gw := fakegateway.Start(t)
	gw.Seed("lobby", "Grace", "one", "two", "three", "four", "five")
	pr, pw := io.Pipe()
	var out, errw testio.SyncBuffer
	o := options(gw, "Ada", "lobby", pr, &out, &errw)
	o.FromBeginning = true
	done := make(chan error, 1)
	go func() { done <- Chat(t.Context(), o) }()
	waitFor(t, "the history", func() bool { return len(texts(out.String())) == 5 })

	gw.Wipe("lobby")
	gw.Seed("lobby", "Grace", "anew", "again")
	gw.DelayJoinBacklog(300 * time.Millisecond)
	gw.CloseAll(websocket.StatusGoingAway, "restart")
	waitFor(t, "the join again", func() bool { return len(gw.Joins()) == 2 })
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("Chat = %v", err)
	}
	if got := texts(out.String()); !slices.Equal(got, []string{"one", "two", "three", "four", "five", "anew", "again"}) {
		t.Fatalf("printed %q", got)
	}
	if !strings.Contains(errw.String(), "lobby was reset") {
		t.Fatalf("stderr:\n%s", errw.String())
	}
}
