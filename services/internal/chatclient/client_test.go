package chatclient_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/chatclient/fakegateway"
	"palaver.dev/services/internal/protocol"
)

func dial(t *testing.T, gw *fakegateway.Server, name string) *chatclient.Client {
	t.Helper()
	c, err := chatclient.Dial(t.Context(), gw.URL, fakegateway.Token(name), nil)
	if err != nil {
		t.Fatalf("Dial as %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func next(t *testing.T, c *chatclient.Client) chatclient.Message {
	t.Helper()
	select {
	case m, ok := <-c.Messages():
		if !ok {
			t.Fatalf("Messages closed: %v", c.Err())
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5 s")
	}
	return chatclient.Message{}
}

func TestHelloWelcome(t *testing.T) {
	gw := fakegateway.Start(t)
	c := dial(t, gw, "Ada")
	w := c.Welcome()
	if w.Version != 1 || w.User.ID != "u-Ada" || w.User.Name != "Ada" || w.Limits.MaxTextBytes != 4096 {
		t.Fatalf("Welcome = %+v", w)
	}
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("Err of an open client = %v", err)
	}
}

func TestDialErrors(t *testing.T) {
	gw := fakegateway.Start(t)
	tests := []struct {
		name     string
		token    string
		versions []int
		code     string
	}{
		{"bad token", "nope", nil, protocol.CodeUnauthorized},
		{"no token", "", nil, protocol.CodeUnauthorized},
		{"no common version", fakegateway.Token("Ada"), []int{7}, protocol.CodeUnsupportedVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := chatclient.Dial(t.Context(), gw.URL, tt.token, &chatclient.Options{Versions: tt.versions})
			if got := chatclient.Code(err); got != tt.code {
				t.Fatalf("Dial error = %v (code %q), want code %q", err, got, tt.code)
			}
			var e *chatclient.Error
			if errors.As(err, &e) && tt.code == protocol.CodeUnsupportedVersion && len(e.Supported) != 1 {
				t.Fatalf("Supported = %v", e.Supported)
			}
		})
	}
}

func TestDialHTTPErrorAndBadURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"code":"unauthorized","message":"token expired"}`))
	}))
	defer srv.Close()
	_, err := chatclient.Dial(t.Context(), srv.URL, "x", nil)
	var e *chatclient.Error
	if !errors.As(err, &e) || e.Code != protocol.CodeUnauthorized || e.Status != 401 || e.Message != "token expired" {
		t.Fatalf("Dial to a 401 = %v", err)
	}
	for _, u := range []string{"ftp://x", "127.0.0.1:8080", "http://"} {
		if _, err := chatclient.Dial(t.Context(), u, "x", nil); err == nil {
			t.Errorf("Dial(%q) succeeded", u)
		}
	}
}

func TestJoinSendReceive(t *testing.T) {
	gw := fakegateway.Start(t)
	ada, grace := dial(t, gw, "Ada"), dial(t, gw, "Grace")
	for _, c := range []*chatclient.Client{ada, grace} {
		if _, err := c.Join(t.Context(), "lobby", "", 0); err != nil {
			t.Fatalf("Join: %v", err)
		}
	}
	ack, err := ada.Send(t.Context(), "lobby", "c-1", "hello, world")
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if ack.ID != "c-1" || ack.Room != "lobby" || ack.Offset != 0 || ack.Duplicate || ack.Time.IsZero() {
		t.Fatalf("Ack = %+v", ack)
	}
	for _, c := range []*chatclient.Client{ada, grace} {
		m := next(t, c)
		if m.Text != "hello, world" || m.Sender.Name != "Ada" || m.ID != "c-1" || m.Cursor == "" {
			t.Fatalf("Message = %+v", m)
		}
		if d := time.Since(m.ClientTime); d < 0 || d > time.Minute {
			t.Fatalf("Message client time %v: Send gives the sender's clock", m.ClientTime)
		}
		if c.Cursor("lobby") != m.Cursor {
			t.Fatalf("Cursor = %q, want the message's %q", c.Cursor("lobby"), m.Cursor)
		}
	}
	// A retry with the same id is acked as a duplicate at the same position.
	again, err := ada.Send(t.Context(), "lobby", "c-1", "hello, world")
	if err != nil || !again.Duplicate || again.Offset != ack.Offset {
		t.Fatalf("retried Send = %+v, %v", again, err)
	}
	if err := grace.Leave(t.Context(), "lobby"); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if err := grace.Leave(t.Context(), "lobby"); chatclient.Code(err) != protocol.CodeNotJoined {
		t.Fatalf("second Leave = %v, want not_joined", err)
	}
}

func TestCommandErrors(t *testing.T) {
	gw := fakegateway.Start(t)
	c := dial(t, gw, "Ada")
	tests := []struct {
		name string
		do   func() error
		code string
	}{
		{"join unknown room", func() error { _, err := c.Join(t.Context(), "nowhere", "", 0); return err }, protocol.CodeNotFound},
		{"join forbidden room", func() error { _, err := c.Join(t.Context(), "secret", "", 0); return err }, protocol.CodeForbidden},
		{"join with a bad cursor", func() error { _, err := c.Join(t.Context(), "lobby", "!!", 0); return err }, protocol.CodeBadRequest},
		{"send before join", func() error { _, err := c.Send(t.Context(), "random", "c-1", "hi"); return err }, protocol.CodeNotJoined},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			var e *chatclient.Error
			if !errors.As(err, &e) || e.Code != tt.code {
				t.Fatalf("error = %v, want code %q", err, tt.code)
			}
			if !strings.Contains(err.Error(), tt.code) {
				t.Fatalf("error text %q does not name the code", err)
			}
		})
	}
	// The connection survives command errors.
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("Ping after errors: %v", err)
	}
}

func TestJoinLastAndRecoverWithCursor(t *testing.T) {
	gw := fakegateway.Start(t)
	gw.Seed("lobby", "Grace", "one", "two", "three")
	c := dial(t, gw, "Ada")
	j, err := c.Join(t.Context(), "lobby", "", 2)
	if err != nil || j.Recovering {
		t.Fatalf("Join last 2 = %+v, %v", j, err)
	}
	if a, b := next(t, c), next(t, c); a.Text != "two" || b.Text != "three" {
		t.Fatalf("last 2 = %q, %q", a.Text, b.Text)
	}
	cur := c.Cursor("lobby")
	c.Close()
	if !errors.Is(c.Err(), chatclient.ErrClosed) {
		t.Fatalf("Err after Close = %v", c.Err())
	}
	if _, err := c.Send(t.Context(), "lobby", "x", "y"); !errors.Is(err, chatclient.ErrClosed) {
		t.Fatalf("Send after Close = %v", err)
	}

	gw.Seed("lobby", "Grace", "four", "five")
	c2 := dial(t, gw, "Ada")
	j, err = c2.Join(t.Context(), "lobby", cur, 0)
	if err != nil || !j.Recovering {
		t.Fatalf("Join with cursor = %+v, %v", j, err)
	}
	if a, b := next(t, c2), next(t, c2); a.Text != "four" || b.Text != "five" {
		t.Fatalf("recovered %q, %q; want four, five", a.Text, b.Text)
	}
}

// TestJoinResetForgetsOldPositions: a rejoin whose cursor the server
// resets (the room was wiped: offsets start again) delivers the room's
// messages from the new start, though the client saw those offsets before.
func TestJoinResetForgetsOldPositions(t *testing.T) {
	gw := fakegateway.Start(t)
	gw.Seed("lobby", "Grace", "one", "two", "three")
	c := dial(t, gw, "Ada")
	if _, err := c.Join(t.Context(), "lobby", "", 3); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		next(t, c)
	}
	cur := c.Cursor("lobby")
	if err := c.Leave(t.Context(), "lobby"); err != nil {
		t.Fatal(err)
	}
	gw.Wipe("lobby")
	gw.Seed("lobby", "Grace", "new one")
	j, err := c.Join(t.Context(), "lobby", cur, 0)
	if err != nil || !j.Reset || !j.Recovering {
		t.Fatalf("Join with a cursor past the end = %+v, %v; want reset", j, err)
	}
	a := next(t, c)
	if a.Text != "new one" {
		t.Fatalf("after the reset: %q", a.Text)
	}
	gw.Seed("lobby", "Grace", "new two") // stored, not pushed live by the fake: join again
	if err := c.Leave(t.Context(), "lobby"); err != nil {
		t.Fatal(err)
	}
	// The message's own cursor: Cursor may still be settling on the
	// message just handed over.
	if j, err := c.Join(t.Context(), "lobby", a.Cursor, 0); err != nil || j.Reset {
		t.Fatalf("Join with the new cursor = %+v, %v", j, err)
	}
	if b := next(t, c); b.Text != "new two" {
		t.Fatalf("after the new cursor: %q", b.Text)
	}
}

func TestServerCloseSurfacesCode(t *testing.T) {
	for _, code := range []int{protocol.CloseGoingAway, protocol.CloseSlowConsumer, protocol.CloseUnauthorized} {
		gw := fakegateway.Start(t)
		c := dial(t, gw, "Ada")
		if _, err := c.Join(t.Context(), "lobby", "", 0); err != nil {
			t.Fatal(err)
		}
		pending := make(chan error, 1)
		go func() { _, err := c.Join(t.Context(), "random", "", 0); pending <- err }()
		gw.CloseAll(websocket.StatusCode(code), "bye")
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed after the server closed")
		}
		if _, ok := <-c.Messages(); ok {
			t.Fatal("Messages not closed")
		}
		if got := chatclient.CloseCode(c.Err()); got != code {
			t.Fatalf("CloseCode(%v) = %d, want %d", c.Err(), got, code)
		}
		if _, err := c.Send(t.Context(), "lobby", "c", "x"); chatclient.CloseCode(err) != code {
			t.Fatalf("Send after close = %v", err)
		}
		<-pending // answered or failed, never stuck
	}
}

func TestSendContextCancelled(t *testing.T) {
	gw := fakegateway.Start(t)
	c := dial(t, gw, "Ada")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Send(ctx, "lobby", "c-1", "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Send with a cancelled context = %v", err)
	}
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("a cancelled command broke the connection: %v", err)
	}
}

func TestSlowReaderDoesNotDropOrBlockClose(t *testing.T) {
	gw := fakegateway.Start(t)
	texts := make([]string, 20)
	for i := range texts {
		texts[i] = strings.Repeat("x", i+1)
	}
	gw.Seed("lobby", "Grace", texts...)
	c, err := chatclient.Dial(t.Context(), gw.URL, fakegateway.Token("Ada"), &chatclient.Options{MessageBuffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join(t.Context(), "lobby", "", 20); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if m := next(t, c); m.Text != texts[i] {
			t.Fatalf("message %d = %q", i, m.Text)
		}
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked behind a full Messages channel")
	}
}

func TestPresence(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ctx := r.Context()
		ws.Read(ctx) // hello
		ws.Write(ctx, websocket.MessageText, []byte(`{"op":"welcome","ref":"hello","version":1,"user":{"id":"u-1","name":"Ada"}}`))
		ws.Write(ctx, websocket.MessageText, []byte(`not json`))
		ws.Write(ctx, websocket.MessageText, []byte(`{"op":"presence","room":"lobby","users":[{"id":"u-1","name":"Ada"},{"id":"u-2","name":"Grace"}]}`))
		ws.Read(ctx)
	}))
	defer srv.Close()
	got := make(chan chatclient.Presence, 1)
	c, err := chatclient.Dial(t.Context(), srv.URL, "t", &chatclient.Options{OnPresence: func(p chatclient.Presence) { got <- p }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case p := <-got:
		if p.Room != "lobby" || len(p.Users) != 2 || p.Users[1].Name != "Grace" {
			t.Fatalf("presence = %+v", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no presence")
	}
	if us := c.Presence("lobby"); len(us) != 2 {
		t.Fatalf("Presence(lobby) = %+v", us)
	}
}

func TestEndedReportsRoomsTheServerLeft(t *testing.T) {
	gw := fakegateway.Start(t)
	c := dial(t, gw, "Ada")
	if _, err := c.Join(t.Context(), "lobby", "", 0); err != nil {
		t.Fatal(err)
	}
	gw.EndRoom("lobby", protocol.CodeNotFound)
	select {
	case e := <-c.Ended():
		if e.Code != protocol.CodeNotFound || e.Room != "lobby" {
			t.Fatalf("Ended: %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notice on Ended")
	}
}
