package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"palaver.dev/services/internal/loadgen"
	"palaver.dev/services/internal/testio"
)

// BenchmarkEndToEndLatency: a room of 100 members on one gateway, every
// member sending in turn, 1,000 messages a second in all; the time from
// a member writing a send to each member reading its message frame, over
// the real broker (acks=all) and back through the room's tail. The members
// are loadgen's (as `palaver load` runs them) in a child process, so the
// gateway's process holds the gateway alone. Run with a fixed count:
//
//	go test -run '^$' -bench EndToEndLatency -benchtime 5000x ./internal/gateway/
//
// PALAVER_BENCH_MEMBERS and PALAVER_BENCH_SENDERS change the room's size
// and how many of its members send (2 and 1 isolate the Kafka round trip
// from the fan-out).
func BenchmarkEndToEndLatency(b *testing.B) {
	cfg := loadgen.DefaultConfig()
	if v, err := strconv.Atoi(os.Getenv("PALAVER_BENCH_MEMBERS")); err == nil {
		cfg.Members = v
	}
	if v, err := strconv.Atoi(os.Getenv("PALAVER_BENCH_SENDERS")); err == nil {
		cfg.Senders = v
	}
	cfg.Count = b.N
	e := sharedEnv(b)
	info := e.newRoom(b, 1)
	gw := startServer(b, e, func(c *Config) {
		// Room for any split of the rate between senders.
		c.Limits.SendsPerSecond, c.Limits.SendBurst = cfg.Rate, int(cfg.Rate)
		c.MaxInFlight = 1024
	})

	child := exec.Command(os.Args[0], "-test.run=^TestLoadClientsHelper$")
	conf, _ := json.Marshal(cfg)
	child.Env = append(os.Environ(), "PALAVER_LOAD_URL="+gw.url, "PALAVER_LOAD_ROOM="+info.Name, "PALAVER_LOAD_CONFIG="+string(conf))
	child.Stderr = os.Stderr
	delivered := gw.metrics.MessagesDelivered.WithLabelValues(info.Name)
	cpu0, del0 := testio.ProcessCPU(b), testutil.ToFloat64(delivered)
	b.ResetTimer()
	out, err := child.Output()
	b.StopTimer()
	// The gateway's CPU (this process: the clients are the child's) per
	// 1,000 message frames written, warm-up included.
	if n := testutil.ToFloat64(delivered) - del0; n > 0 {
		b.ReportMetric(float64((testio.ProcessCPU(b)-cpu0).Microseconds())/n, "cpu-ms/1k-deliveries")
	}
	var res loadgen.Result
	if i := bytes.Index(out, []byte(loadResultPrefix)); i < 0 || err != nil {
		b.Fatalf("load process: %v\n%s", err, out)
	} else if err := json.NewDecoder(bytes.NewReader(out[i+len(loadResultPrefix):])).Decode(&res); err != nil {
		b.Fatalf("load result: %v", err)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(res.Delivery.P50), "p50-ms")
	b.ReportMetric(ms(res.Delivery.P99), "p99-ms")
	b.ReportMetric(ms(res.Delivery.Max), "max-ms")
	b.ReportMetric(ms(res.Ack.P99), "ack-p99-ms")
	b.ReportMetric(ms(res.Lag.P99), "lag-p99-ms")
	b.ReportMetric(res.Rate(), "msgs/s")
	b.ReportMetric(0, "ns/op")
	var summary strings.Builder
	res.Format(&summary)
	b.Logf("%s\ngateway: produce latency (send accepted -> Kafka ack): %s; delivery latency (record time -> socket): %s",
		summary.String(), histQuantiles(gw.metrics.ProduceLatency), histQuantiles(gw.metrics.DeliveryLatency))
	if p := res.Problems(); len(p) > 0 {
		b.Fatalf("the run had problems: %s", strings.Join(p, "; "))
	}
}

// loadResultPrefix marks TestLoadClientsHelper's result line.
const loadResultPrefix = "LOAD-RESULT "

// TestLoadClientsHelper is BenchmarkEndToEndLatency's client process: it
// runs loadgen with PALAVER_LOAD_CONFIG against the gateway at
// PALAVER_LOAD_URL, and prints the result after loadResultPrefix.
func TestLoadClientsHelper(t *testing.T) {
	url := os.Getenv("PALAVER_LOAD_URL")
	if url == "" {
		t.Skip("run by BenchmarkEndToEndLatency")
	}
	var cfg loadgen.Config
	if err := json.Unmarshal([]byte(os.Getenv("PALAVER_LOAD_CONFIG")), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.URL, cfg.Room, cfg.Progress = url, os.Getenv("PALAVER_LOAD_ROOM"), os.Stderr
	cfg.Token = func(_ context.Context, i int) (string, error) {
		return token(t, fmt.Sprintf("m%d", i), nil, time.Hour), nil
	}
	res, err := loadgen.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(res)
	fmt.Printf("%s%s\n", loadResultPrefix, out)
}

// idleConns is the number of idle connections BenchmarkIdleConnectionMemory
// holds open.
const idleConns = 2000

// BenchmarkIdleConnectionMemory: the gateway's heap per idle connection
// (authenticated and joined to a room), from runtime.ReadMemStats after GC
// before and after opening idleConns connections. The clients run in a
// child process so their memory does not count. PALAVER_BENCH_HEAPPROFILE
// names a file to write the heap profile to while they are open.
//
//	go test -run '^$' -bench IdleConnectionMemory -benchtime 1x ./internal/gateway/
func BenchmarkIdleConnectionMemory(b *testing.B) {
	if os.Getenv("PALAVER_BENCH_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	e := sharedEnv(b)
	info := e.newRoom(b, 1)
	gw := startServer(b, e, nil)
	// The room's tail and ring exist before the baseline: they are the
	// room's cost, not the connections'.
	first := connect(b, gw, token(b, "first", nil, time.Hour))
	first.join(info.Name, nil)

	// One measurement whatever b.N: it is a size, not a rate.
	before := memStats()
	child := exec.Command(os.Args[0], "-test.run=^TestIdleClientsHelper$", "-test.v")
	child.Env = append(os.Environ(),
		"PALAVER_IDLE_URL="+gw.url, "PALAVER_IDLE_ROOM="+info.Name,
		"PALAVER_IDLE_TOKEN="+token(b, "idle", nil, time.Hour), "PALAVER_IDLE_N="+strconv.Itoa(idleConns))
	stdin, err := child.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "IDLE-READY") {
				ready <- nil
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("client process ended before its connections were ready: %w", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		b.Fatal("client process not ready within 2 minutes")
	}
	if n := gw.Connections(); n != idleConns+1 {
		b.Fatalf("%d connections open, want %d", n, idleConns+1)
	}
	time.Sleep(500 * time.Millisecond) // let the joins' writer goroutines finish
	after := memStats()
	if f := os.Getenv("PALAVER_BENCH_HEAPPROFILE"); f != "" {
		out, _ := os.Create(f)
		runtime.MemProfileRate = 1
		_ = pprof.WriteHeapProfile(out)
		out.Close()
	}
	b.ReportMetric(float64(after.heap-before.heap)/idleConns, "B/conn")
	b.ReportMetric(float64(after.stack-before.stack)/idleConns, "stack-B/conn")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/idleConns, "goroutines/conn")
	b.ReportMetric(0, "ns/op")
	_ = stdin.Close() // the child closes its connections and exits
	if err := child.Wait(); err != nil {
		b.Fatalf("client process: %v", err)
	}
	waitFor(b, "the connections to close", func() bool { return gw.Connections() == 1 })
}

type mem struct {
	heap, stack uint64
	goroutines  int
}

func memStats() mem {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return mem{heap: m.HeapAlloc, stack: m.StackInuse, goroutines: runtime.NumGoroutine()}
}

// TestIdleClientsHelper is BenchmarkIdleConnectionMemory's client process:
// it opens PALAVER_IDLE_N connections, says hello and joins on each, prints
// IDLE-READY and holds them until its stdin closes.
func TestIdleClientsHelper(t *testing.T) {
	url := os.Getenv("PALAVER_IDLE_URL")
	if url == "" {
		t.Skip("run by BenchmarkIdleConnectionMemory")
	}
	n, _ := strconv.Atoi(os.Getenv("PALAVER_IDLE_N"))
	hello := fmt.Sprintf(`{"op":"hello","versions":[1],"token":%q}`, os.Getenv("PALAVER_IDLE_TOKEN"))
	join := fmt.Sprintf(`{"op":"join","room":%q}`, os.Getenv("PALAVER_IDLE_ROOM"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conns := make([]*websocket.Conn, 0, n)
	for range n {
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/v1/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{hello, join} {
			if err := ws.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
				t.Fatal(err)
			}
		}
		for _, want := range []string{`"op":"welcome"`, `"op":"joined"`} {
			_, msg, err := ws.Read(ctx)
			if err != nil || !strings.Contains(string(msg), want) {
				t.Fatalf("waiting for %s: %s %v", want, msg, err)
			}
		}
		conns = append(conns, ws)
	}
	fmt.Println("IDLE-READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, ws := range conns {
		_ = ws.CloseNow()
	}
}

// histQuantiles summarises a histogram by bucket: the upper bounds below
// which 50% and 99% of the observations fall.
func histQuantiles(h prometheus.Histogram) string {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		return err.Error()
	}
	hist := m.GetHistogram()
	total := hist.GetSampleCount()
	q := func(p float64) string {
		for _, b := range hist.GetBucket() {
			if float64(b.GetCumulativeCount()) >= p*float64(total) {
				return fmt.Sprintf("<=%gms", b.GetUpperBound()*1000)
			}
		}
		return ">max"
	}
	return fmt.Sprintf("p50 %s p99 %s (n=%d)", q(0.5), q(0.99), total)
}
