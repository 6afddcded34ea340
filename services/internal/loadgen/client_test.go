package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A client that writes a command and then only reads must still answer
// the gateway's pings long after that command: every write, the pong
// included, gets its own deadline.
func TestClientAnswersPingsLongAfterItsLastCommand(t *testing.T) {
	pinged := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		if _, _, err := ws.Read(ctx); err != nil { // hello
			return
		}
		_ = ws.Write(ctx, websocket.MessageText, []byte(`{"op":"welcome","ref":"hello","version":1,"user":{"id":"u"}}`))
		if _, _, err := ws.Read(ctx); err != nil { // join
			return
		}
		go func() {
			for {
				if _, _, err := ws.Read(ctx); err != nil {
					return
				}
			}
		}()
		time.Sleep(300 * time.Millisecond) // well past the client's write timeout
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		pinged <- ws.Ping(pctx)
		_ = ws.Write(ctx, websocket.MessageText, []byte(`{"op":"joined","ref":"j","room":"lobby"}`))
		<-ctx.Done()
	}))
	defer srv.Close()

	c, err := Dial(t.Context(), srv.URL, "token", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.ws.writeTimeout = 50 * time.Millisecond
	if err := c.Join("j", "lobby", ""); err != nil {
		t.Fatal(err)
	}
	f, err := c.Read()
	if err != nil || f.Op != "joined" {
		t.Fatalf("Read = %+v, %v; want the joined frame after the ping", f, err)
	}
	if err := <-pinged; err != nil {
		t.Fatalf("the server's ping was not answered: %v", err)
	}
}
