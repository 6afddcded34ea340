package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/chatclient/fakegateway"
)

// The real gateway on the real broker is loaded by the gateway package's
// tests and benchmark; these check the load generator's own accounting
// against the scripted fake.

func fakeTokens(_ context.Context, i int) (string, error) {
	return fakegateway.Token(fmt.Sprintf("m%d", i)), nil
}

func TestRunTimesEveryDelivery(t *testing.T) {
	gw := fakegateway.Start(t)
	res, err := Run(t.Context(), Config{URL: gw.URL, Room: "lobby", Members: 5, Rate: 50, Count: 60,
		Warmup: 200 * time.Millisecond, Token: fakeTokens})
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Problems(); len(p) > 0 {
		t.Fatalf("problems: %v", p)
	}
	if res.Sent != 60 || res.Acked != 60 || res.Deliveries != 300 || res.Delivery.N != 300 || res.Ack.N != 60 {
		t.Fatalf("sent %d, acked %d, deliveries %d (%d timed), acks timed %d; want 60, 60, 300, 300, 60",
			res.Sent, res.Acked, res.Deliveries, res.Delivery.N, res.Ack.N)
	}
	if d := res.Delivery; d.P50 <= 0 || d.P50 > d.P99 || d.P99 > d.Max || d.Max > 10*time.Second {
		t.Fatalf("delivery percentiles out of order: %+v", d)
	}
	// 60 messages at 50/s: 59 intervals of 20 ms.
	if res.Elapsed < 1100*time.Millisecond || res.Rate() > 55 {
		t.Fatalf("60 messages at 50/s took %v (%.1f/s)", res.Elapsed, res.Rate())
	}
	if got := len(gw.Messages("lobby")); got != 60+10 {
		t.Fatalf("the room holds %d messages, want 70 (10 warm-up, 60 measured)", got)
	}
	var out strings.Builder
	res.Format(&out)
	if !strings.Contains(out.String(), "300 of 300 deliveries") || strings.Contains(out.String(), "problem") {
		t.Fatalf("summary:\n%s", out.String())
	}
}

func TestRunIgnoresOthersMessages(t *testing.T) {
	gw := fakegateway.Start(t)
	bob := chatclient.API{BaseURL: gw.URL, Token: fakegateway.Token("bob")}
	res, err := Run(t.Context(), Config{URL: gw.URL, Room: "lobby", Members: 2, Rate: 20, Count: 10, Warmup: -1,
		Token: fakeTokens, Progress: progressFunc(func(line string) {
			if strings.HasPrefix(line, "connected 2 of 2") {
				if _, err := bob.Post(t.Context(), "lobby", "b1", "hello, load test"); err != nil {
					t.Error(err)
				}
			}
		})})
	if err != nil || len(res.Problems()) > 0 || res.Deliveries != 20 || res.Foreign != 2 {
		t.Fatalf("Run = %+v, %v; want 20 deliveries and bob's message seen by both members, apart", res, err)
	}
}

func TestRunReportsRefusedSends(t *testing.T) {
	gw := fakegateway.Start(t)
	gw.RateLimitNextSends(3)
	res, err := Run(t.Context(), Config{URL: gw.URL, Room: "lobby", Members: 2, Rate: 20, Count: 10, Warmup: -1,
		Drain: 500 * time.Millisecond, Token: fakeTokens})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors["rate_limited"] != 3 || res.Acked != 7 || res.Missing != 6 {
		t.Fatalf("errors %v, acked %d, missing %d; want 3 rate_limited, 7 acked, 6 missing (3 to each member)", res.Errors, res.Acked, res.Missing)
	}
	p := strings.Join(res.Problems(), "; ")
	for _, want := range []string{"3 of 10 sends not acknowledged", "3 rate_limited errors", "6 deliveries missing"} {
		if !strings.Contains(p, want) {
			t.Errorf("problems %q lack %q", p, want)
		}
	}
}

func TestRunReportsDisconnectedMembers(t *testing.T) {
	gw := fakegateway.Start(t)
	var once sync.Once
	res, err := Run(t.Context(), Config{URL: gw.URL, Room: "lobby", Members: 5, Rate: 50, Count: 150, Warmup: -1,
		Drain: 500 * time.Millisecond, Token: fakeTokens, Progress: progressFunc(func(line string) {
			if strings.HasPrefix(line, "measuring") {
				once.Do(func() { gw.CloseAll(4408, "slow consumer") })
			}
		})})
	if err != nil {
		t.Fatal(err)
	}
	if res.Disconnected != 5 || !strings.Contains(res.Disconnect, "4408 slow consumer") || res.Sent >= 150 {
		t.Fatalf("disconnected %d (%q), sent %d; want 5 members cut with 4408 and the sends stopped", res.Disconnected, res.Disconnect, res.Sent)
	}
	if !strings.Contains(strings.Join(res.Problems(), ";"), "5 members disconnected") {
		t.Fatalf("problems: %v", res.Problems())
	}
}

func TestRunRefusesToOverrunTheLimit(t *testing.T) {
	gw := fakegateway.Start(t)
	_, err := Run(t.Context(), Config{URL: gw.URL, Room: "lobby", Members: 4, Senders: 2, Rate: 100, Token: fakeTokens})
	if err == nil || !strings.Contains(err.Error(), "over the gateway's 10 per connection") || !strings.Contains(err.Error(), "at least 10") {
		t.Fatalf("2 senders at 100/s against a limit of 10 each: %v", err)
	}
	if n := len(gw.Messages("lobby")); n != 0 {
		t.Fatalf("%d messages sent before refusing", n)
	}
}

func TestRunConnectErrors(t *testing.T) {
	gw := fakegateway.Start(t)
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown room", Config{URL: gw.URL, Room: "nowhere", Token: fakeTokens}, "join nowhere: not_found"},
		{"bad token", Config{URL: gw.URL, Room: "lobby", Token: func(context.Context, int) (string, error) { return "forged", nil }}, "hello: unauthorized"},
		// Members connect concurrently: only the second one's token fails,
		// so the error names it whichever member is first, and the others'
		// open connections must be closed.
		{"token source fails", Config{URL: gw.URL, Room: "lobby", Token: func(ctx context.Context, i int) (string, error) {
			if i == 1 {
				return "", fmt.Errorf("no credentials")
			}
			return fakeTokens(ctx, i)
		}}, "member 2: no credentials"},
		{"not a gateway", Config{URL: "ftp://127.0.0.1", Room: "lobby", Token: fakeTokens}, "scheme must be http or https"},
		{"missing room", Config{URL: gw.URL, Token: fakeTokens}, "required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Members = 3
			_, err := Run(t.Context(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
	gw.WaitConns(t, 0) // each failed run closed the connections it opened
}

// TestClientAnswersPingsAndReportsClose checks the lean WebSocket client
// against coder/websocket's server: a ping gets its pong, a fragmented
// message is joined, a close frame surfaces as its code and reason.
func TestClientAnswersPingsAndReportsClose(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/ws" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ctx := ws.CloseRead(r.Context()) // reads control frames, so Ping sees the pong
		if err := ws.Ping(ctx); err != nil {
			_ = ws.Close(websocket.StatusInternalError, "no pong: "+err.Error())
			return
		}
		wr, _ := ws.Writer(ctx, websocket.MessageText)
		_, _ = wr.Write([]byte(`{"op":"mess`))
		_, _ = wr.Write([]byte(`age"}`))
		_ = wr.Close()
		_ = ws.Close(4408, "slow consumer")
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := dialWS(ctx, srv.URL, "wrong", nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("dial with a bad token: %v", err)
	}
	ws, err := dialWS(ctx, srv.URL, "tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.close()
	p, err := ws.next()
	if err != nil || string(p) != `{"op":"message"}` {
		t.Fatalf("next = %q, %v", p, err)
	}
	_, err = ws.next()
	var ce *chatclient.CloseError
	if !errors.As(err, &ce) || ce.Code != 4408 || ce.Reason != "slow consumer" {
		t.Fatalf("after the close frame: %v", err)
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 1000; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p := percentiles(d)
	if p.N != 1000 || p.P50 != 500*time.Millisecond || p.P99 != 990*time.Millisecond || p.P999 != 999*time.Millisecond || p.Max != time.Second {
		t.Fatalf("percentiles of 1..1000 ms: %+v", p)
	}
	if got := (Percentiles{}).String(); got != "no samples" {
		t.Fatalf("empty: %q", got)
	}
}

// progressFunc calls f with each progress line.
type progressFunc func(line string)

func (f progressFunc) Write(p []byte) (int, error) { f(string(p)); return len(p), nil }
