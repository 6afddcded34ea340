package chatcli

import (
	"context"
	"io"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/devmode"
	"palaver.dev/services/internal/testio"
)

// devGateway runs dev mode (gateway and presence on the embedded broker)
// for a test and returns the gateway's URL.
func devGateway(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	rooms := filepath.Join(filepath.Dir(file), "..", "..", "..", "k8s", "samples")
	ctx, cancel := context.WithCancel(context.Background())
	banner := &testio.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- devmode.Run(ctx, devmode.Config{OpsAddr: "127.0.0.1:0", Listen: "127.0.0.1:0", RoomsDir: rooms}, nil, banner)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("dev mode did not stop")
		}
	})
	url := regexp.MustCompile(`gateway:\s+(http://\S+)`)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m := url.FindStringSubmatch(banner.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("dev mode stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("dev mode did not start")
		}
	}
}

// eventually is waitFor with the patience a whole dev mode needs.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// palaver chat reports others joining and leaving on stderr (not with
// --quiet), and palaver who lists who is online.
func TestChatPresenceAndWho(t *testing.T) {
	url := devGateway(t)
	ctx := t.Context()

	chatWith := func(name string, quiet bool) (*testio.SyncBuffer, *io.PipeWriter, chan error) {
		var out, errw testio.SyncBuffer
		in, w := io.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- Chat(ctx, ChatOptions{Conn: Conn{URL: url, Name: name}, Room: "lobby", Quiet: quiet, In: in, Out: &out, Err: &errw})
		}()
		return &errw, w, done
	}
	grace, graceIn, graceDone := chatWith("Grace", false)
	quiet, quietIn, quietDone := chatWith("Lin", true)

	who := func() string {
		var out testio.SyncBuffer
		if err := Who(ctx, WhoOptions{Conn: Conn{URL: url, Name: "Carol"}, Room: "lobby", Out: &out}); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	eventually(t, "Grace and Lin online", func() bool {
		return strings.Contains(who(), "2 online in lobby")
	})

	tok, err := chatclient.DevLogin(ctx, url, "Ada")
	if err != nil {
		t.Fatal(err)
	}
	ada, err := chatclient.Dial(ctx, url, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ada.Join(ctx, "lobby", "", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, `"Ada joined" on Grace's stderr`, func() bool { return strings.Contains(grace.String(), "palaver: Ada joined\n") })
	if err := ada.Typing(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Ada typing in palaver who", func() bool {
		return regexp.MustCompile(`(?m)^Ada\s+dev:ada\s+typing…`).MatchString(who())
	})
	out := who()
	for _, name := range []string{"3 online in lobby", "Ada", "Grace", "Lin"} {
		if !strings.Contains(out, name) {
			t.Errorf("palaver who does not show %q:\n%s", name, out)
		}
	}
	var rooms testio.SyncBuffer
	if err := Rooms(ctx, RoomsOptions{Conn: Conn{URL: url, Name: "Carol"}, Out: &rooms}); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^NAME\s+DISPLAY NAME\s+ONLINE\s+DESCRIPTION$`).MatchString(rooms.String()) ||
		!regexp.MustCompile(`(?m)^lobby\s+Lobby\s+3\s+Say hello`).MatchString(rooms.String()) {
		t.Errorf("palaver rooms does not show 3 online in the lobby:\n%s", rooms.String())
	}
	ada.Close()
	eventually(t, `"Ada left" on Grace's stderr`, func() bool { return strings.Contains(grace.String(), "palaver: Ada left\n") })
	if strings.Contains(grace.String(), "Grace joined") {
		t.Errorf("Grace was told of her own join:\n%s", grace.String())
	}
	if s := quiet.String(); strings.Contains(s, "joined") || strings.Contains(s, "left") {
		t.Errorf("--quiet printed presence:\n%s", s)
	}
	graceIn.Close()
	quietIn.Close()
	for _, d := range []chan error{graceDone, quietDone} {
		if err := <-d; err != nil {
			t.Fatalf("chat: %v", err)
		}
	}
}
