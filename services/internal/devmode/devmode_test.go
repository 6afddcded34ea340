package devmode

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"palaver.dev/services/kafkabus"
	"palaver.dev/services/room"
)

func samplesDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "k8s", "samples")
}

type syncBuffer struct {
	ch chan string
}

func (b syncBuffer) Write(p []byte) (int, error) { b.ch <- string(p); return len(p), nil }

func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	out := syncBuffer{make(chan string, 1)}
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, Config{OpsAddr: "127.0.0.1:0", Listen: "127.0.0.1:0", DataDir: t.TempDir(), RoomsDir: samplesDir(t)}, nil, out)
	}()

	var banner string
	select {
	case banner = <-out.ch:
	case err := <-errc:
		t.Fatalf("Run returned before printing its addresses: %v", err)
	}
	kafkaAddr := regexp.MustCompile(`Kafka \(embedded\):\s+(\S+)`).FindStringSubmatch(banner)
	opsAddr := regexp.MustCompile(`metrics:\s+http://(\S+)/metrics`).FindStringSubmatch(banner)
	gatewayURL := regexp.MustCompile(`gateway:\s+(http://\S+)`).FindStringSubmatch(banner)
	if kafkaAddr == nil || opsAddr == nil || gatewayURL == nil {
		t.Fatalf("banner does not say where dev mode listens:\n%s", banner)
	}

	cl, err := kafkabus.New(kafkabus.Config{Brokers: []string{kafkaAddr[1]}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Ping(t.Context()); err != nil {
		t.Fatalf("embedded broker does not answer at the printed address: %v", err)
	}
	resp, err := http.Get("http://" + opsAddr[1] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz = %d %s", resp.StatusCode, body.String())
	}

	// The sample rooms are provisioned and registered.
	reg := room.NewRegistry(cl, nil)
	regCtx, stopReg := context.WithCancel(t.Context())
	defer stopReg()
	go reg.Run(regCtx)
	select {
	case <-reg.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("room registry not readable")
	}
	for _, name := range []string{"lobby", "engineering", "random"} {
		in, err := reg.Get(name)
		if err != nil || in.Topic != "palaver.room.default."+name {
			t.Errorf("registry entry of %q: %+v, %v", name, in, err)
		}
	}
	if !strings.Contains(banner, "lobby") {
		t.Errorf("banner does not list the rooms:\n%s", banner)
	}

	chatThroughGateway(t, gatewayURL[1])

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run = %v, want a clean stop", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("dev mode did not stop within 15 s of cancellation")
	}
}

// chatThroughGateway logs in with dev login, says hello over the WebSocket,
// joins the lobby, sends a message and receives its ack and the message.
func chatThroughGateway(t *testing.T, base string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	resp, err := http.Post(base+"/v1/dev/login", "application/json", strings.NewReader(`{"name":"Ada"}`))
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		Token string `json:"token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || login.Token == "" {
		t.Fatalf("dev login: %d %v", resp.StatusCode, err)
	}

	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	type frame struct {
		Op, Ref, Room, ID, Text, Code, Message, Cursor string
		Offset                                         int64
		Sender                                         struct{ ID, Name string }
	}
	send := func(v map[string]any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	next := func(op string) frame {
		t.Helper()
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("waiting for %s: %v", op, err)
			}
			var f frame
			if err := json.Unmarshal(b, &f); err != nil {
				t.Fatal(err)
			}
			if f.Op == "error" {
				t.Fatalf("waiting for %s: error %s: %s", op, f.Code, f.Message)
			}
			if f.Op == op {
				return f
			}
		}
	}
	send(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}, "token": login.Token})
	next("welcome")
	send(map[string]any{"op": "join", "ref": "j", "room": "lobby"})
	next("joined")
	send(map[string]any{"op": "send", "ref": "s", "room": "lobby", "id": "dev-1", "text": "hello from dev mode"})
	ack := next("ack")
	msg := next("message")
	if msg.ID != "dev-1" || msg.Text != "hello from dev mode" || msg.Sender.Name != "Ada" || msg.Offset != ack.Offset || msg.Cursor == "" {
		t.Fatalf("message %+v, ack %+v", msg, ack)
	}
	ws.Close(websocket.StatusNormalClosure, "")
}
