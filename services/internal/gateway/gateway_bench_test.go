package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// BenchmarkEndToEndLatency: one member sends b.N messages at 1,000 a second
// into a room of 100 members on one gateway; the time from writing a send
// to another member reading its message frame, over the real broker
// (acks=all) and back through the room's tail. All 100 members read every
// message. Run with a fixed count:
//
//	go test -run '^$' -bench EndToEndLatency -benchtime 5000x ./internal/gateway/
//
// PALAVER_BENCH_MEMBERS changes the room's size (2 isolates the Kafka
// round trip from the fan-out).
func BenchmarkEndToEndLatency(b *testing.B) {
	members, rate := 100, 1000
	if v, err := strconv.Atoi(os.Getenv("PALAVER_BENCH_MEMBERS")); err == nil {
		members = v
	}
	e := sharedEnv(b)
	info := e.newRoom(b, 1)
	gw := startServer(b, e, func(c *Config) {
		c.Limits.SendsPerSecond, c.Limits.SendBurst = float64(2*rate), 2*rate
		c.MaxInFlight = 1024
	})
	// The sender and the measuring receiver are full clients; the other
	// members are lean sockets (rawMember) that count the message frames
	// they read: the clients share the two cores with the gateway and the
	// broker, and should cost as little as they can.
	var clients []*client
	for i := range 2 {
		c := dial(b, gw, dialOpts{noReader: true})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c.write(map[string]any{"op": "hello", "versions": []int{1}, "token": token(b, fmt.Sprintf("m%d", i), nil, time.Hour)})
		c.write(map[string]any{"op": "join", "room": info.Name})
		for joined := false; !joined; {
			_, msg, err := c.ws.Read(ctx)
			if err != nil {
				b.Fatal(err)
			}
			joined = strings.Contains(string(msg), `"op":"joined"`)
		}
		cancel()
		clients = append(clients, c)
	}
	sender, receiver := clients[0], clients[1]

	var wg sync.WaitGroup
	wg.Go(func() { // the sender's acks and messages
		for {
			if _, _, err := sender.ws.Read(context.Background()); err != nil {
				return
			}
		}
	})

	// Warm up for two seconds at the measured rate: the writer learns the
	// new topic's metadata (the first sends to a room provisioned a moment
	// ago wait up to a second for it), and a broker the test just started
	// compiles its hot paths (its JVM runs C1 only).
	warmup := 2 * rate
	start := time.Now()
	go func() {
		for i := range warmup {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
			b := fmt.Appendf(nil, `{"op":"send","room":%q,"id":"w%d","text":"warming up"}`, info.Name, i)
			if err := sender.ws.Write(context.Background(), websocket.MessageText, b); err != nil {
				return // the reads below fail too
			}
		}
	}()
	for seen := 0; seen < warmup; {
		_, msg, err := receiver.ws.Read(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if strings.HasPrefix(string(msg), `{"op":"message"`) {
			seen++
		}
	}

	var (
		delivered atomic.Int64
		passive   []net.Conn
	)
	for i := 2; i < members; i++ {
		nc, br := rawMember(b, gw.url, token(b, fmt.Sprintf("m%d", i), nil, time.Hour), info.Name)
		passive = append(passive, nc)
		wg.Go(func() { countMessages(br, &delivered) })
	}

	sent := make([]atomic.Int64, b.N) // unix nanos of each send
	lat := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var f struct {
			Op string `json:"op"`
			ID string `json:"id"`
		}
		for len(lat) < b.N {
			_, msg, err := receiver.ws.Read(context.Background())
			if err != nil {
				return
			}
			now := time.Now()
			if json.Unmarshal(msg, &f) != nil || f.Op != "message" {
				continue
			}
			i, err := strconv.Atoi(strings.TrimPrefix(f.ID, "b"))
			if err != nil || i >= b.N {
				continue
			}
			lat = append(lat, now.Sub(time.Unix(0, sent[i].Load())))

		}
	}()

	b.ResetTimer()
	start = time.Now()
	for i := range b.N {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		sent[i].Store(time.Now().UnixNano())
		sender.write(fmt.Appendf(nil, `{"op":"send","room":%q,"id":"b%d","text":"benchmark message %d, about as long as a chat line"}`, info.Name, i, i))
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("received %d of %d messages", len(lat), b.N)
	}
	b.StopTimer()
	elapsed := time.Since(start)

	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
	for _, c := range clients {
		_ = c.ws.CloseNow()
	}
	for _, nc := range passive {
		_ = nc.Close()
	}
	wg.Wait()
	b.Logf("produce latency (send accepted -> Kafka ack): %s; delivery latency (record time -> socket): %s",
		histQuantiles(gw.metrics.ProduceLatency), histQuantiles(gw.metrics.DeliveryLatency))
	b.Logf("%d members; %d message frames read by the %d passive members; %v slow consumers cut", members, delivered.Load(), len(passive),
		testutil.ToFloat64(gw.metrics.Disconnects.WithLabelValues(reasonSlowConsumer)))
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

// rawMember joins room over a bare WebSocket: the handshake, masked hello
// and join frames, then a buffered reader of the server's frames from the
// joined answer on.
func rawMember(tb testing.TB, base, tok, room string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	host := strings.TrimPrefix(base, "http://")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = nc.Close() })
	var key [16]byte
	_, _ = rand.Read(key[:])
	fmt.Fprintf(nc, "GET /v1/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", host, base64.StdEncoding.EncodeToString(key[:]))
	br := bufio.NewReaderSize(nc, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, f := range []string{
		fmt.Sprintf(`{"op":"hello","versions":[1],"token":%q}`, tok),
		fmt.Sprintf(`{"op":"join","room":%q}`, room),
	} {
		if _, err := nc.Write(maskedTextFrame([]byte(f))); err != nil {
			tb.Fatal(err)
		}
	}
	for {
		payload, err := readFrame(br, true)
		if err != nil {
			tb.Fatal(err)
		}
		if strings.Contains(string(payload), `"op":"joined"`) {
			return nc, br
		}
	}
}

// maskedTextFrame frames p as a client must: masked (RFC 6455 5.3).
func maskedTextFrame(p []byte) []byte {
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	f := []byte{0x81}
	switch n := len(p); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	default:
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	}
	f = append(f, mask[:]...)
	for i, c := range p {
		f = append(f, c^mask[i%4])
	}
	return f
}

// readFrame reads one server frame; with keep it returns the payload,
// otherwise its first bytes only.
func readFrame(br *bufio.Reader, keep bool) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, err
	}
	n := int64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(br, ext[:]); err != nil {
			return nil, err
		}
		n = int64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(br, ext[:]); err != nil {
			return nil, err
		}
		n = int64(binary.BigEndian.Uint64(ext[:]))
	}
	if keep {
		p := make([]byte, n)
		_, err := io.ReadFull(br, p)
		return p, err
	}
	head, err := br.Peek(int(min(n, 16)))
	if err != nil {
		return nil, err
	}
	head = append([]byte(nil), head...)
	_, err = br.Discard(int(n))
	return head, err
}

// countMessages counts message frames until the connection ends.
func countMessages(br *bufio.Reader, n *atomic.Int64) {
	for {
		head, err := readFrame(br, false)
		if err != nil {
			return
		}
		if strings.HasPrefix(string(head), `{"op":"message"`) {
			n.Add(1)
		}
	}
}
