package devmode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"palaver.dev/services/internal/testio"
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
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	out := syncBuffer{make(chan string, 1)}
	var logs testio.SyncBuffer
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr = Run(ctx, Config{OpsAddr: "127.0.0.1:0", Listen: "127.0.0.1:0", DataDir: dataDir, RoomsDir: samplesDir(t)},
			slog.New(slog.NewTextHandler(&logs, nil)), out)
	}()
	// On a failure too, dev mode stops before its data directory is
	// removed (cleanups run last registered first).
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("dev mode did not stop within 15 s of the test's end")
		}
	})

	var banner string
	select {
	case banner = <-out.ch:
	case <-done:
		t.Fatalf("Run returned before printing its addresses: %v", runErr)
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
	for _, name := range []string{"lobby", "engineering", "random", ScratchRoom} {
		in, err := reg.Get(name)
		if err != nil || in.Topic != "palaver.room.default."+name {
			t.Errorf("registry entry of %q: %+v, %v", name, in, err)
		}
	}
	if !strings.Contains(banner, "lobby") {
		t.Errorf("banner does not list the rooms:\n%s", banner)
	}

	tok, seen := chatThroughGateway(t, gatewayURL[1])
	searchThroughGateway(t, gatewayURL[1], tok, seen)

	// A second dev server on the same data directory is refused, and says
	// which flag gives it its own.
	err = Run(t.Context(), Config{OpsAddr: "127.0.0.1:0", Listen: "127.0.0.1:0", DataDir: dataDir, RoomsDir: samplesDir(t)}, nil, io.Discard)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("in use by another dev server (process %d)", os.Getpid())) || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("a second dev server on the data directory: %v", err)
	}

	cancel()
	select {
	case <-done:
		if runErr != nil {
			t.Fatalf("Run = %v, want a clean stop", runErr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("dev mode did not stop within 15 s of cancellation")
	}
	// Ctrl-C stops everything cleanly: the broker outlives every part
	// that still writes to it.
	if _, stopping, ok := strings.Cut(logs.String(), `msg="shutting down"`); !ok {
		t.Errorf("no shutdown in the log:\n%s", logs.String())
	} else if strings.Contains(stopping, "level=WARN") || strings.Contains(stopping, "level=ERROR") {
		t.Errorf("the shutdown logged warnings:\n%s", stopping)
	}
}

// TestRunNamesTheFlagOfAnAddressInUse: each address dev mode takes, when
// in use, is refused before anything starts, naming the flag that moves it.
func TestRunNamesTheFlagOfAnAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	port := taken.Addr().(*net.TCPAddr).Port
	for _, tt := range []struct {
		name string
		cfg  Config
		flag string
	}{
		{"gateway", Config{Listen: addr, OpsAddr: "127.0.0.1:0"}, "--listen (or $PALAVER_DEV_LISTEN)"},
		{"ops", Config{Listen: "127.0.0.1:0", OpsAddr: addr}, "--ops-addr (or $PALAVER_OPS_ADDR)"},
		{"kafka", Config{Listen: "127.0.0.1:0", OpsAddr: "127.0.0.1:0", KafkaPort: port}, "--kafka-port"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.RoomsDir = samplesDir(t)
			err := Run(t.Context(), tt.cfg, nil, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), tt.flag) {
				t.Fatalf("Run = %v; want it to name %s", err, tt.flag)
			}
		})
	}
}

// chatThroughGateway logs in with dev login, says hello over the WebSocket,
// joins the lobby, sends a message and receives its ack and the message; it
// returns the token and the message's cursor.
func chatThroughGateway(t *testing.T, base string) (string, string) {
	t.Helper()
	s := signIn(t, base, "Ada")
	s.call(map[string]any{"op": "join", "room": "lobby"}, "joined")
	ack := s.call(map[string]any{"op": "send", "room": "lobby", "id": "dev-1", "text": "hello from dev mode"}, "ack")
	// The ack and the message frame come in either order (see inbox).
	msg, err := s.in.next("message")
	if err != nil {
		t.Fatal(err)
	}
	if ack.ID != "dev-1" || msg.ID != "dev-1" || msg.Text != "hello from dev mode" || msg.Sender.Name != "Ada" || msg.Offset != ack.Offset || msg.Cursor == "" {
		t.Fatalf("message %+v, ack %+v", msg, ack)
	}
	s.ws.Close(websocket.StatusNormalClosure, "")
	return s.token, msg.Cursor
}

// searchThroughGateway finds the message just sent with the in-process
// history service, through the gateway's search.
func searchThroughGateway(t *testing.T, base, tok, seen string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v1/rooms/lobby/search?q=DEV+mode&seen="+seen, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		Results []struct{ ID, Text string } `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("search through dev mode's gateway: %d %v", resp.StatusCode, err)
	}
	if len(res.Results) != 1 || res.Results[0].ID != "dev-1" {
		t.Fatalf("search found %+v, want the message dev-1", res.Results)
	}
}

// frame is a server frame, flattened.
type frame struct {
	Op, Ref, Room, ID, Text, Code, Message, Cursor string
	Offset                                         int64
	Sender                                         struct{ ID, Name string }
	Recovering, Reset, Duplicate                   bool
}

// inbox reads a connection's server frames and hands them out by op.
//
// Frames read while waiting for another op are kept, not dropped: the
// gateway does not order a send's ack and the sender's own message frame.
// The room's tail may fetch the record before the producer's completion
// reports it stored, with the embedded broker and with Apache Kafka alike,
// so the message frame can come first.
type inbox struct {
	read func() ([]byte, error)
	kept []frame
}

// next returns the oldest frame with op, kept or newly read. An error
// frame, a read error or a frame that is not JSON ends the wait.
func (in *inbox) next(op string) (frame, error) {
	for i, f := range in.kept {
		if f.Op == op {
			in.kept = slices.Delete(in.kept, i, i+1)
			return f, nil
		}
	}
	for {
		b, err := in.read()
		if err != nil {
			return frame{}, fmt.Errorf("waiting for %s: %w", op, err)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			return frame{}, fmt.Errorf("waiting for %s: frame %q: %w", op, b, err)
		}
		if f.Op == "error" {
			return frame{}, fmt.Errorf("waiting for %s: error %s: %s", op, f.Code, f.Message)
		}
		if f.Op == op {
			return f, nil
		}
		in.kept = append(in.kept, f)
	}
}

// TestInboxKeepsFramesReadEarly: the sender's own message frame may come
// before its ack; waiting for the ack must not lose it.
func TestInboxKeepsFramesReadEarly(t *testing.T) {
	const (
		ack     = `{"op":"ack","ref":"s","room":"lobby","id":"dev-1","offset":0}`
		message = `{"op":"message","room":"lobby","id":"dev-1","text":"hi","offset":0,"cursor":"AQEAAQ"}`
		other   = `{"op":"presence","room":"lobby"}`
	)
	for name, script := range map[string][]string{
		"ack first":     {ack, other, message},
		"message first": {message, other, ack},
	} {
		t.Run(name, func(t *testing.T) {
			in := &inbox{read: func() ([]byte, error) {
				if len(script) == 0 {
					return nil, io.EOF
				}
				b := script[0]
				script = script[1:]
				return []byte(b), nil
			}}
			a, err := in.next("ack")
			if err != nil || a.Ref != "s" {
				t.Fatalf("ack: %+v, %v", a, err)
			}
			m, err := in.next("message")
			if err != nil || m.ID != "dev-1" || m.Cursor != "AQEAAQ" {
				t.Fatalf("message: %+v, %v", m, err)
			}
			if p, err := in.next("presence"); err != nil || p.Room != "lobby" {
				t.Fatalf("presence: %+v, %v", p, err)
			}
			if f, err := in.next("message"); !errors.Is(err, io.EOF) {
				t.Fatalf("after the script: %+v, %v; want io.EOF", f, err)
			}
		})
	}
	in := &inbox{read: func() ([]byte, error) {
		return []byte(`{"op":"error","ref":"s","code":"not_joined","message":"join first"}`), nil
	}}
	if _, err := in.next("ack"); err == nil || !strings.Contains(err.Error(), "not_joined") {
		t.Fatalf("error frame: %v, want it reported", err)
	}
}

// startDev runs dev mode on dataDir and returns the gateway's URL and a
// stop that waits for a clean end.
func startDev(t *testing.T, dataDir string) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	out := syncBuffer{make(chan string, 1)}
	var logs testio.SyncBuffer
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr = Run(ctx, Config{OpsAddr: "127.0.0.1:0", Listen: "127.0.0.1:0", DataDir: dataDir, RoomsDir: samplesDir(t)},
			slog.New(slog.NewTextHandler(&logs, nil)), out)
	}()
	stop := func() {
		cancel()
		select {
		case <-done:
			if runErr != nil {
				t.Errorf("Run = %v, want a clean stop", runErr)
			}
		case <-time.After(15 * time.Second):
			t.Error("dev mode did not stop within 15 s")
		}
	}
	t.Cleanup(stop)
	select {
	case banner := <-out.ch:
		m := regexp.MustCompile(`gateway:\s+(http://\S+)`).FindStringSubmatch(banner)
		if m == nil {
			t.Fatalf("banner does not say where the gateway listens:\n%s", banner)
		}
		return m[1], stop
	case <-done:
		t.Fatalf("Run returned before printing its addresses: %v", runErr)
	}
	return "", nil
}

// session is a signed-in WebSocket to a dev-mode gateway.
type session struct {
	t     *testing.T
	token string
	ws    *websocket.Conn
	in    *inbox
	ctx   context.Context
	refs  int
}

func signIn(t *testing.T, base, name string) *session {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	resp, err := http.Post(base+"/v1/dev/login", "application/json", strings.NewReader(`{"name":"`+name+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	var login struct{ Token string }
	err = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if err != nil || login.Token == "" {
		t.Fatalf("dev login: %v", err)
	}
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	s := &session{t: t, token: login.Token, ws: ws, ctx: ctx, in: &inbox{read: func() ([]byte, error) {
		_, b, err := ws.Read(ctx)
		return b, err
	}}}
	s.call(map[string]any{"op": "hello", "versions": []int{1}, "token": login.Token}, "welcome")
	return s
}

// call sends a command and returns its answer of op.
func (s *session) call(v map[string]any, op string) frame {
	s.t.Helper()
	s.refs++
	v["ref"] = fmt.Sprint("r", s.refs)
	b, _ := json.Marshal(v)
	if err := s.ws.Write(s.ctx, websocket.MessageText, b); err != nil {
		s.t.Fatal(err)
	}
	f, err := s.in.next(op)
	if err != nil {
		s.t.Fatal(err)
	}
	return f
}

// TestRestartKeepsDedupAndCursors: dev mode stopped and started again on
// its data directory recognises a retried send (same user, same id) as
// the one stored before, and the cursors it gave still resume, not reset.
func TestRestartKeepsDedupAndCursors(t *testing.T) {
	dataDir := t.TempDir()
	base, stop := startDev(t, dataDir)
	s := signIn(t, base, "Ada")
	s.call(map[string]any{"op": "join", "room": "lobby"}, "joined")
	ack := s.call(map[string]any{"op": "send", "room": "lobby", "id": "x", "text": "once"}, "ack")
	msg, err := s.in.next("message")
	if err != nil {
		t.Fatal(err)
	}
	stop()

	base, _ = startDev(t, dataDir)
	s = signIn(t, base, "Ada")
	j := s.call(map[string]any{"op": "join", "room": "lobby", "cursor": msg.Cursor}, "joined")
	if j.Reset || !j.Recovering {
		t.Fatalf("joined %+v with a cursor of the first run: the restart must not reset it", j)
	}
	again := s.call(map[string]any{"op": "send", "room": "lobby", "id": "x", "text": "once"}, "ack")
	if again.Offset != ack.Offset || !again.Duplicate {
		t.Fatalf("retry after the restart: %+v, first ack %+v", again, ack)
	}
}
