package web_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/chatcli"
	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/internal/testio"
	"palaver.dev/services/kafkatest"
)

// The Go client and `palaver chat` against the real gateway on the real
// broker: what the unit tests check against a scripted fake.

func TestGoClientAgainstTheGateway(t *testing.T) {
	g := startGateway(t, kafkatest.Shared(t), gatewayOptions{})
	ctx := t.Context()
	run := fmt.Sprintf("go-%d", time.Now().UnixNano())

	tok, err := chatclient.DevLogin(ctx, g.URL, "Ada")
	if err != nil {
		t.Fatal(err)
	}
	rooms, err := (&chatclient.API{BaseURL: g.URL, Token: tok}).Rooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rooms {
		names = append(names, r.Name)
	}
	if !slices.Contains(names, "engineering") || !slices.Contains(names, "lobby") {
		t.Fatalf("rooms = %v", names)
	}

	c, err := chatclient.Dial(ctx, g.URL, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if w := c.Welcome(); w.Version != 1 || w.User.Name != "Ada" || w.Limits.MaxTextBytes == 0 {
		t.Fatalf("welcome = %+v", w)
	}
	if _, err := c.Join(ctx, "engineering", "", 0); err != nil {
		t.Fatal(err)
	}
	ack, err := c.Send(ctx, "engineering", run, "deploy "+run)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Send(ctx, "engineering", run, "deploy "+run)
	if err != nil || !again.Duplicate || again.Offset != ack.Offset {
		t.Fatalf("retried send = %+v, %v; want a duplicate of %+v", again, err, ack)
	}
	select {
	case m := <-c.Messages():
		if m.Text != "deploy "+run || m.Sender.Name != "Ada" || m.Offset != ack.Offset || m.Cursor == "" {
			t.Fatalf("message = %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("own message not delivered")
	}
	page, err := c.API().History(ctx, "engineering", "", 10)
	if err != nil || len(page.Messages) == 0 || page.Messages[len(page.Messages)-1].Text != "deploy "+run {
		t.Fatalf("history = %+v, %v", page, err)
	}

	for _, tt := range []struct {
		name string
		err  error
		code string
	}{
		{"join a room that does not exist", func() error { _, err := c.Join(ctx, "nowhere", "", 0); return err }(), protocol.CodeNotFound},
		{"send too much text", func() error {
			_, err := c.Send(ctx, "engineering", run+"-big", strings.Repeat("x", c.Welcome().Limits.MaxTextBytes+1))
			return err
		}(), protocol.CodeTooLarge},
		{"send to a room not joined", func() error { _, err := c.Send(ctx, "random", run+"-2", "x"); return err }(), protocol.CodeNotJoined},
		{"dial with a forged token", func() error { _, err := chatclient.Dial(ctx, g.URL, "forged", nil); return err }(), protocol.CodeUnauthorized},
	} {
		if got := chatclient.Code(tt.err); got != tt.code {
			t.Errorf("%s: %v, want code %s", tt.name, tt.err, tt.code)
		}
	}
	if err := c.Leave(ctx, "engineering"); err != nil {
		t.Fatal(err)
	}
}

// printed returns the texts of the lines `palaver chat` printed that contain run.
func printed(out, run string) []string {
	var texts []string
	for _, l := range strings.Split(out, "\n") {
		if _, text, ok := strings.Cut(l, "> "); ok && strings.Contains(text, run) {
			texts = append(texts, strings.TrimSuffix(text, " "+run))
		}
	}
	return texts
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestChatRecoversWhenItsGatewayRestarts stops the gateway `palaver chat` is
// connected to while another replica takes messages, then brings it back:
// the chat reconnects and prints what it missed, once and in order.
func TestChatRecoversWhenItsGatewayRestarts(t *testing.T) {
	bootstrap := kafkatest.Shared(t)
	issuer, err := auth.NewDevIssuer(time.Hour) // both replicas accept its tokens
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a := startGateway(t, bootstrap, gatewayOptions{Addr: addr, Issuer: issuer})
	b := startGateway(t, bootstrap, gatewayOptions{Issuer: issuer})
	ctx := t.Context()
	run := fmt.Sprintf("cli-%d", time.Now().UnixNano())
	const room = "engineering"

	// Grace talks through replica b.
	tok, err := chatclient.DevLogin(ctx, b.URL, "Grace")
	if err != nil {
		t.Fatal(err)
	}
	grace, err := chatclient.Dial(ctx, b.URL, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer grace.Close()
	if _, err := grace.Join(ctx, room, "", 0); err != nil {
		t.Fatal(err)
	}
	say := func(text string) {
		t.Helper()
		if _, err := grace.Send(ctx, room, fmt.Sprintf("%s-%s", run, text), text+" "+run); err != nil {
			t.Fatalf("Grace sends %q: %v", text, err)
		}
	}

	// Ada runs `palaver chat` against replica a.
	pr, pw := io.Pipe()
	var out, errw testio.SyncBuffer
	chatCtx, stopChat := context.WithCancel(ctx)
	defer stopChat()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("palaver chat's stdout:\n%s\nstderr:\n%s", out.String(), errw.String())
		}
	})
	done := make(chan error, 1)
	go func() {
		done <- chatcli.Chat(chatCtx, chatcli.ChatOptions{
			Conn: chatcli.Conn{URL: a.URL, Name: "Ada"}, Room: room,
			In: pr, Out: &out, Err: &errw, Verbose: true,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		})
	}()
	waitFor(t, "Ada's join", 30*time.Second, func() bool { return strings.Contains(errw.String(), "you are Ada in "+room) })
	say("before")
	waitFor(t, "the first message", 30*time.Second, func() bool { return len(printed(out.String(), run)) == 1 })

	if err := a.Stop(); err != nil {
		t.Fatalf("stop replica a: %v", err)
	}
	waitFor(t, "the notice of the disconnect", 10*time.Second, func() bool {
		return strings.Contains(errw.String(), "going away; reconnecting")
	})
	say("during 1")
	say("during 2")
	time.Sleep(300 * time.Millisecond) // a few failed reconnects
	startGateway(t, bootstrap, gatewayOptions{Addr: addr, Issuer: issuer})

	waitFor(t, "the recovery", 30*time.Second, func() bool { return len(printed(out.String(), run)) >= 3 })
	if got := printed(out.String(), run); !slices.Equal(got, []string{"before", "during 1", "during 2"}) {
		t.Fatalf("Ada printed %q, want each message once, in order\nstderr:\n%s", got, errw.String())
	}
	if !strings.Contains(errw.String(), "reconnected to "+room+" as Ada (recovering: true)") {
		t.Fatalf("stderr:\n%s", errw.String())
	}

	// Ada's line goes out on the new connection; EOF then ends the chat.
	fmt.Fprintf(pw, "back %s\n", run)
	pw.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chat = %v\nstderr:\n%s", err, errw.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("chat did not end after stdin closed")
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-grace.Messages():
			if m.Text == "back "+run && m.Sender.Name == "Ada" {
				return
			}
		case <-deadline:
			t.Fatal("Grace never got Ada's line")
		}
	}
}
