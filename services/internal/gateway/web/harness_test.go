package web_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/gateway"
	"palaver.dev/services/internal/history"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/presence"
	"palaver.dev/services/internal/runner"
	"palaver.dev/services/internal/testio"
	"palaver.dev/services/kafkabus"
	"palaver.dev/services/kafkatest"
	"palaver.dev/services/room"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// repoRoot is the repository's top directory, from this file's place in it.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
}

// gatewayOptions adjust startGateway.
type gatewayOptions struct {
	Addr   string          // listen address; default 127.0.0.1:0
	Issuer *auth.DevIssuer // dev login; default a new one (gateways sharing one accept each other's tokens)
}

// testGateway is a running gateway.
type testGateway struct {
	URL  string
	stop func() error
}

// Stop shuts the gateway down as on SIGTERM: connections are closed with
// 1001 going away. It is safe to call more than once.
func (g *testGateway) Stop() error { return g.stop() }

// startGateway provisions the sample rooms on the broker at bootstrap and
// serves a dev-mode gateway (dev login, any origin) on loopback until the
// test ends or Stop.
func startGateway(t *testing.T, bootstrap string, o gatewayOptions) *testGateway {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testio.Log(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}

	cluster, err := kafkabus.New(kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "palaver-e2e"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Close() })
	if _, err := room.ProvisionManifestDir(ctx, cluster, filepath.Join(repoRoot(t), "k8s", "samples"), 1); err != nil {
		t.Fatalf("provision the sample rooms: %v", err)
	}
	rooms := room.NewRegistry(cluster, log)
	issuer := o.Issuer
	if issuer == nil {
		if issuer, err = auth.NewDevIssuer(time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// History in process, as in dev mode: search and jump to a date.
	histCfg := history.DefaultConfig()
	histCfg.Dir = t.TempDir()
	hist, err := history.New(histCfg, history.Deps{Cluster: cluster, Rooms: rooms, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	histAPI, err := runner.Listen("127.0.0.1:0", &http.Server{Handler: hist.Handler()}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Presence in the same process, as in dev mode, on topics of this run.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	presCfg := presence.DefaultConfig()
	presCfg.EventsTopic, presCfg.StateTopic, presCfg.Group = "e2e.presence.events."+run, "e2e.presence.state."+run, "e2e-presence-"+run
	presCfg.Partitions, presCfg.ReplicationFactor = 2, 1
	presCfg.Timing.TypingTTL = 2 * time.Second
	pres, err := presence.New(presCfg, cluster, rooms, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := cluster.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	_, err = presence.EnsureTopics(ctx, admin, presCfg)
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.Dev = true
	cfg.AllowedOrigins = []string{"*"}
	cfg.StallCheck = 2 * time.Second // a topic created again is noticed within the browser test's waits
	cfg.HistoryURLs = "http://" + histAPI.Addr().String()
	cfg.Presence.Enabled = true
	cfg.Presence.EventsTopic, cfg.Presence.StateTopic = presCfg.EventsTopic, presCfg.StateTopic
	gw, err := gateway.New(cfg, gateway.Deps{
		Cluster: cluster, Rooms: rooms, Verifier: issuer.Verifier(), DevLogin: issuer.LoginHandler(), Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	api, err := runner.Listen(o.Addr, gateway.HTTPServer(gw.Handler()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runner.Run(runCtx, log, 15*time.Second,
			runner.Named{Name: "rooms", Part: rooms},
			runner.Named{Name: "presence", Part: pres},
			runner.Named{Name: "gateway", Part: gw},
			runner.Named{Name: "http", Part: api},
			runner.Named{Name: "history", Part: hist},
			runner.Named{Name: "history-http", Part: histAPI})
		_ = hist.Close()
	}()
	var once sync.Once
	var stopErr error
	g := &testGateway{URL: "http://" + api.Addr().String(), stop: func() error {
		once.Do(func() {
			stop()
			stopErr = <-done
		})
		return stopErr
	}}
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("gateway stopped with %v", err)
		}
	})
	select {
	case <-rooms.Ready():
	case err := <-done:
		t.Fatalf("gateway stopped before the room registry was read: %v", err)
	case <-ctx.Done():
		t.Fatal("the room registry was not readable within 2 minutes")
	}
	return g
}

// produceLoad writes rate messages a second into the room's topic for
// seconds, in batches every 10 ms, as a busy room's senders would (straight
// to Kafka: the test machine's CPU goes to the gateway and the browser).
func produceLoad(ctx context.Context, t *testing.T, w *kafka.Writer, topic, roomName string, rate, seconds int) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	per := rate / 100
	for n := 0; n < rate*seconds; n += per {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		batch := make([]kafka.Message, per)
		for i := range batch {
			sender := fmt.Sprintf("load-%d", (n+i)%20)
			v, err := message.Encode(&message.Envelope{V: message.Version, ID: fmt.Sprintf("load-%d", n+i), Room: roomName,
				SenderID: sender, SenderName: sender, Text: fmt.Sprintf("load message %d", n+i)})
			if err != nil {
				t.Errorf("encode: %v", err)
				return
			}
			batch[i] = kafka.Message{Topic: topic, Key: []byte(sender), Value: v, Time: time.Now()}
		}
		if err := w.WriteMessages(ctx, batch...); err != nil && ctx.Err() == nil {
			t.Logf("load on %s: %v", roomName, err)
			return
		}
	}
}

// roomControl serves what the browser test does to rooms as an operator
// would: POST /rooms/{name} provisions a room (topic and registry entry),
// DELETE /rooms/{name} removes it from the registry, POST
// /rooms/{name}/recreate deletes its topic and creates it again under the
// same name; and POST /load/{name}?rate=R&seconds=S stores R messages a
// second in the room for S seconds, in the background, answering at once.
// Loopback only, for the test's lifetime.
func roomControl(t *testing.T, bootstrap string) string {
	t.Helper()
	cluster, err := kafkabus.New(kafkabus.Config{Brokers: strings.Split(bootstrap, ","), ClientID: "palaver-e2e-control"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Close() })
	admin, err := cluster.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	prov := room.NewProvisioner(admin)
	writer := cluster.Writer()
	t.Cleanup(func() { _ = writer.Close() })
	mux := http.NewServeMux()
	mux.HandleFunc("POST /rooms/{name}", func(w http.ResponseWriter, r *http.Request) {
		spec := room.Spec{Name: r.PathValue("name"), DisplayName: r.URL.Query().Get("display_name"), Partitions: 1, Retention: time.Hour}.WithDefaults(1)
		if err := prov.Ensure(r.Context(), spec); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := room.Publish(r.Context(), writer, spec.Info()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("POST /rooms/{name}/recreate", func(w http.ResponseWriter, r *http.Request) {
		spec := room.Spec{Name: r.PathValue("name"), Partitions: 1, Retention: time.Hour}.WithDefaults(1)
		before, err := prov.Observe(r.Context(), spec.Topic)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := prov.DeleteTopics(r.Context(), spec.Topic); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for {
			// Kafka deletes asynchronously: Ensure may still find the old
			// topic, so done is a topic with another id.
			err := prov.Ensure(r.Context(), spec)
			if err == nil {
				var now map[string]room.TopicState
				if now, err = prov.Observe(r.Context(), spec.Topic); err == nil {
					if st := now[spec.Topic]; st.Exists && st.ID != before[spec.Topic].ID {
						break
					}
					err = fmt.Errorf("topic %s not created again yet", spec.Topic)
				}
			}
			select {
			case <-r.Context().Done():
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /rooms/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := room.Tombstone(r.Context(), writer, r.PathValue("name")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	loadCtx, stopLoads := context.WithCancel(context.Background())
	var loads sync.WaitGroup
	t.Cleanup(func() { stopLoads(); loads.Wait() })
	mux.HandleFunc("POST /load/{name}", func(w http.ResponseWriter, r *http.Request) {
		rate, err1 := strconv.Atoi(r.URL.Query().Get("rate"))
		seconds, err2 := strconv.Atoi(r.URL.Query().Get("seconds"))
		if err1 != nil || err2 != nil || rate < 100 || seconds <= 0 {
			http.Error(w, "want rate (at least 100) and seconds", http.StatusBadRequest)
			return
		}
		name := r.PathValue("name")
		topic := room.Spec{Name: name}.WithDefaults(1).Topic
		loads.Go(func() { produceLoad(loadCtx, t, writer, topic, name, rate, seconds) })
		w.WriteHeader(http.StatusAccepted)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}
