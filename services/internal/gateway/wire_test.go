package gateway

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestAppendTextFrame: frames written by hand, several per write, are read
// by a WebSocket client as the messages they hold.
func TestAppendTextFrame(t *testing.T) {
	payloads := [][]byte{[]byte("{}"), bytes.Repeat([]byte("a"), 125), bytes.Repeat([]byte("b"), 126),
		bytes.Repeat([]byte("c"), 65535), bytes.Repeat([]byte("d"), 65536), []byte(`{"op":"pong"}`)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sb := &smallBuffers{ResponseWriter: w, read: 1024, write: 256}
		ws, err := websocket.Accept(sb, r, nil)
		if err != nil {
			return
		}
		var wire []byte
		for _, p := range payloads {
			wire = appendTextFrame(wire, p)
		}
		if _, err := sb.sock.Write(wire); err != nil {
			t.Error(err)
		}
		_, _, _ = ws.Read(context.Background()) // until the client closes
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	for i, want := range payloads {
		typ, got, err := ws.Read(ctx)
		if err != nil || typ != websocket.MessageText || !bytes.Equal(got, want) {
			t.Fatalf("message %d: %v, %d bytes, %v; want %d bytes", i, typ, len(got), err, len(want))
		}
	}
}
