package loadgen

import (
	"context"
	"sync"
	"testing"
	"time"

	"palaver.dev/services/internal/chatclient/fakegateway"
)

// A person with a backlog of sends (a burst, or retries after an outage)
// writes them paced under the rate the gateway announced, not all at
// once: a gateway would refuse them and then close the connection for
// flooding. The fake announces 10 a second with bursts of 20.
func TestPersonPacesItsSends(t *testing.T) {
	gw := fakegateway.Start(t)
	l := NewLedger()
	p := l.NewPerson("ada", []string{gw.URL}, func(context.Context) (string, error) { return fakegateway.Token("ada"), nil }, nil)
	p.Join("lobby")
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, nil) })
	defer func() { cancel(); wg.Wait() }()
	waitUntil(t, func() bool { return len(p.Rooms()) == 1 })

	began := time.Now()
	for range 30 {
		if _, ok := p.Send("lobby", "hello"); !ok {
			t.Fatal("not a member")
		}
	}
	waitUntil(t, func() bool { return p.Pending() == 0 })
	// 10 at once (half the burst), then 20 at 8 a second.
	if took := time.Since(began); took < 2*time.Second {
		t.Fatalf("30 sends took %v: faster than the gateway's 10 a second allow", took)
	}
	if n := len(gw.Messages("lobby")); n != 30 || l.AckedN.Load() != 30 {
		t.Fatalf("%d stored, %d acknowledged; want 30", n, l.AckedN.Load())
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
