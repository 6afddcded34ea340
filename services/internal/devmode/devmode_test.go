package devmode

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

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
		errc <- Run(ctx, Config{OpsAddr: "127.0.0.1:0", DataDir: t.TempDir(), RoomsDir: samplesDir(t)}, nil, out)
	}()

	var banner string
	select {
	case banner = <-out.ch:
	case err := <-errc:
		t.Fatalf("Run returned before printing its addresses: %v", err)
	}
	kafkaAddr := regexp.MustCompile(`Kafka \(embedded\):\s+(\S+)`).FindStringSubmatch(banner)
	opsAddr := regexp.MustCompile(`metrics:\s+http://(\S+)/metrics`).FindStringSubmatch(banner)
	if kafkaAddr == nil || opsAddr == nil {
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
