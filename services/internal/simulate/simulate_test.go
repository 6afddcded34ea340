package simulate

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/chatclient/fakegateway"
	"palaver.dev/services/internal/testio"
)

// The real gateway is simulated against by the drills (package drills,
// through the same loadgen.Person); these check the simulation's own
// behaviour against the scripted fake.

func fakeTokens(_ context.Context, i int) (string, error) {
	return fakegateway.Token(fmt.Sprintf("p%d", i)), nil
}

func TestRunChatsAcrossRoomsWithinItsBounds(t *testing.T) {
	gw := fakegateway.Start(t)
	rooms := []string{"lobby", "random"}
	var progress testio.SyncBuffer
	res, err := Run(t.Context(), Config{
		URLs: []string{gw.URL}, Rooms: rooms, People: 12, Rate: 30, Duration: 3 * time.Second, MaxMessages: 120,
		Churn: 10, Seed: 7, Token: fakeTokens, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Problems(); len(p) > 0 {
		t.Fatalf("problems: %v", p)
	}
	if res.Sent == 0 || res.Sent > 120 || res.Verdict.Acked != int(res.Sent) {
		t.Fatalf("sent %d, acked %d; want 1 to 120 (the bound), all acknowledged", res.Sent, res.Verdict.Acked)
	}
	// Every message is read by its room's members: more deliveries than
	// messages, and the hot room the busiest.
	if res.Verdict.Deliveries <= int(res.Sent) {
		t.Fatalf("%d deliveries of %d messages", res.Verdict.Deliveries, res.Sent)
	}
	hot, quiet := len(gw.Messages("lobby")), 0
	for _, r := range rooms[1:] {
		quiet = max(quiet, len(gw.Messages(r)))
	}
	if hot == 0 || quiet == 0 {
		t.Fatalf("hot room %d messages, busiest quiet room %d: want both used", hot, quiet)
	}
	if res.Joins == 0 || res.Leaves == 0 {
		t.Errorf("nobody moved between rooms: %d joins, %d leaves", res.Joins, res.Leaves)
	}
	// The fake knows no typing command: the first answer turns it off.
	if res.TypingSupported || res.Verdict.Errors["unknown_op"] == 0 || res.Verdict.Errors["unknown_op"] > res.People {
		t.Errorf("typing: supported %v, unknown_op answers %d; want it found missing and no longer sent",
			res.TypingSupported, res.Verdict.Errors["unknown_op"])
	}
	if !strings.Contains(progress.String(), "connected 12/12") {
		t.Errorf("progress:\n%s", progress.String())
	}
	var out strings.Builder
	res.Format(&out)
	for _, want := range []string{"12 people in 2 rooms", "typing notices: none", "send to message"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunResumesAfterDisconnects(t *testing.T) {
	gw := fakegateway.Start(t)
	var progress testio.SyncBuffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(time.Minute)
		for len(gw.Messages("lobby")) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		gw.CloseAll(4408, "slow consumer")
	}()
	res, err := Run(t.Context(), Config{
		URLs: []string{gw.URL}, Rooms: []string{"lobby"}, People: 4, Rate: 20, Duration: 3 * time.Second,
		Churn: -1, Token: fakeTokens, Progress: &progress,
	})
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Problems(); len(p) > 0 {
		t.Fatalf("problems: %v", p)
	}
	cut := 0
	for reason, n := range res.Verdict.Closes {
		if strings.HasPrefix(reason, "connection closed: 4408") {
			cut += n
		}
	}
	if cut != 4 {
		t.Fatalf("connections lost: %v; want the 4 people cut once each", res.Verdict.Closes)
	}
}

func TestRunRefusesABadConfig(t *testing.T) {
	for _, c := range []Config{
		{Rooms: []string{"a"}, Token: fakeTokens},
		{URLs: []string{"http://x"}, Token: fakeTokens},
		{URLs: []string{"http://x"}, Rooms: []string{"a"}, Token: fakeTokens, Hot: 2},
	} {
		if _, err := Run(t.Context(), c); err == nil {
			t.Errorf("%+v ran", c)
		}
	}
}
