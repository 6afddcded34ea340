package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"palaver.dev/services/internal/presence"
)

// Figures of docs/BENCHMARKS.md. They run the real commands like the
// tests, one at a time (see the commands there).

// benchOnly skips a figure's run unless PALAVER_PRESENCE_BENCH is set:
// they take minutes and want the machine to themselves.
func benchOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("PALAVER_PRESENCE_BENCH") == "" {
		t.Skip("a benchmark: set PALAVER_PRESENCE_BENCH=1 to run it (docs/BENCHMARKS.md)")
	}
}

// lean is a WebSocket member that only counts and times presence frames.
type lean struct {
	ws      *websocket.Conn
	joined  time.Time // when the joined answer was read
	frames  atomic.Int64
	mu      sync.Mutex
	waiting map[string]chan time.Time // user id -> the time its join or leave was read
}

func dialLean(ctx context.Context, t *testing.T, gw *proc, user, room string) *lean {
	var ws *websocket.Conn
	var err error
	for try := 0; try < 5; try++ {
		if ws, _, err = websocket.Dial(ctx, "ws://"+gw.addr+"/v1/ws", nil); err == nil {
			break
		}
		time.Sleep(time.Duration(try+1) * 100 * time.Millisecond) // the listen backlog overflowed: retry
	}
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(16 << 20)
	l := &lean{ws: ws, waiting: map[string]chan time.Time{}}
	write := func(v any) {
		b, _ := json.Marshal(v)
		if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	write(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}, "token": token(t, user)})
	write(map[string]any{"op": "join", "ref": "j", "room": room})
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var f frame
		_ = json.Unmarshal(b, &f)
		if f.Op == "error" {
			t.Fatalf("%s: %s", user, b)
		}
		if f.Op == "joined" {
			l.joined = time.Now()
		}
		if f.Op == "presence" {
			break
		}
	}
	go l.read()
	return l
}

func (l *lean) read() {
	for {
		_, b, err := l.ws.Read(context.Background())
		if err != nil {
			return
		}
		now := time.Now()
		if !strings.Contains(string(b[:min(len(b), 40)]), `"op":"presence`) {
			continue
		}
		l.frames.Add(1)
		l.mu.Lock()
		if len(l.waiting) > 0 {
			var f frame
			_ = json.Unmarshal(b, &f)
			for _, u := range append(f.Joined, f.Left...) {
				if ch := l.waiting[u.ID]; ch != nil {
					ch <- now
					delete(l.waiting, u.ID)
				}
			}
		}
		l.mu.Unlock()
	}
}

func (l *lean) expect(user string) chan time.Time {
	ch := make(chan time.Time, 1)
	l.mu.Lock()
	l.waiting[user] = ch
	l.mu.Unlock()
	return ch
}

// TestBenchJoinVisible: in a room of 100 members on one gateway, a user
// joins (then leaves) through another gateway; every member times the
// moment it is told, from the moment the join (the close) was sent.
func TestBenchJoinVisible(t *testing.T) {
	benchOnly(t)
	e := newEnv(t)
	e.presence("presence-1")
	gwA, gwB := e.gateway("gw-a"), e.gateway("gw-b")
	ctx := t.Context()
	members := make([]*lean, 100)
	for i := range members {
		members[i] = dialLean(ctx, t, gwA, fmt.Sprintf("member-%03d", i), e.room)
	}
	// The members' own joins are coalesced into frames for a moment: let
	// the room settle before measuring.
	time.Sleep(2 * time.Second)
	hops := watchHops(t, e)
	const rounds = 50
	var lat []time.Duration
	var changes []*change
	// From the joined answer (the join is done for its user; presence
	// starts there), and from the close.
	measure := func(key, user string, act func() time.Time) {
		chs := make([]chan time.Time, len(members))
		for i, m := range members {
			chs[i] = m.expect(user)
		}
		began := act()
		c := hops.get(key)
		for _, ch := range chs {
			select {
			case at := <-ch:
				lat = append(lat, at.Sub(began))
				c.seen(began, at)
			case <-time.After(10 * time.Second):
				t.Fatalf("a member was not told of %s within 10 s", user)
			}
		}
		changes = append(changes, c)
	}
	for r := range rounds {
		user := "visitor-" + strconv.Itoa(r)
		var v *lean
		measure("join/"+user, user, func() time.Time {
			v = dialLean(ctx, t, gwB, user, e.room)
			return v.joined
		})
		// One change at a time, each after a quiet spell longer than the
		// frame interval: the figure is the path's latency, not the
		// coalescing's deliberate wait.
		time.Sleep(300 * time.Millisecond)
		measure("leave/"+user, user, func() time.Time {
			began := time.Now()
			_ = v.ws.Close(websocket.StatusNormalClosure, "")
			return began
		})
		time.Sleep(300 * time.Millisecond)
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	t.Logf("join/leave visible to the members of a 100-member room: %d observations, p50 %v, p99 %v, max %v",
		len(lat), q(0.5).Round(100*time.Microsecond), q(0.99).Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond))
	fmt.Fprintf(os.Stderr, "BENCH join-visible p50=%v p99=%v max=%v n=%d\n", q(0.5), q(0.99), lat[len(lat)-1], len(lat))
	hops.report(t, changes)
}

// change is one join or leave followed along its path: when the test
// began it, the event's record time (set by the gateway that wrote it),
// when an observer of the events topic read the event, the state record's
// time (set by the replica as it published), when an observer of the
// state topic read it, and when the first and the last member read the
// frame.
type change struct {
	key                                       string
	began, event, eventSeen, state, stateSeen time.Time
	first, last                               time.Time
}

func (c *change) seen(began, at time.Time) {
	c.began = began
	if c.first.IsZero() || at.Before(c.first) {
		c.first = at
	}
	if at.After(c.last) {
		c.last = at
	}
}

// hopWatch reads both presence topics beside the services (franz-go,
// fetches answered as soon as a record arrives) and timestamps the
// visitors' events and the states that show them.
type hopWatch struct {
	mu      sync.Mutex
	changes map[string]*change
}

func (h *hopWatch) get(key string) *change {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.changes[key]
	if c == nil {
		c = &change{key: key}
		h.changes[key] = c
	}
	return c
}

func watchHops(t *testing.T, e *env) *hopWatch {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(e.bootstrap, ",")...), kgo.ConsumeTopics(e.events, e.state),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	h := &hopWatch{changes: map[string]*change{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	go func() {
		defer close(done)
		present := map[string]bool{}
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				switch r.Topic {
				case e.events:
					var ev presence.Event
					if json.Unmarshal(r.Value, &ev) != nil || !strings.HasPrefix(ev.User, "visitor-") {
						return
					}
					c := h.get(ev.Type + "/" + ev.User)
					h.mu.Lock()
					c.event, c.eventSeen = r.Timestamp, now
					h.mu.Unlock()
				case e.state:
					if string(r.Key) != e.room {
						return
					}
					st, err := presence.DecodeState(r.Value)
					if err != nil {
						return
					}
					in := map[string]bool{}
					for _, u := range st.Users {
						if strings.HasPrefix(u.ID, "visitor-") {
							in[u.ID] = true
						}
					}
					mark := func(key string) {
						c := h.get(key)
						h.mu.Lock()
						if c.state.IsZero() {
							c.state, c.stateSeen = st.Time, now
						}
						h.mu.Unlock()
					}
					for id := range in {
						if !present[id] {
							mark("join/" + id)
						}
					}
					for id := range present {
						if !in[id] {
							mark("leave/" + id)
						}
					}
					present = in
				}
			})
		}
	}()
	// Changes before the observer's first fetch positioned it at the
	// ends are not followed: they are left out of the hops' figures.
	return h
}

// report logs each hop's quantiles over the changes and the hops of every
// change some member read late.
func (h *hopWatch) report(t *testing.T, changes []*change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	type hop struct {
		name string
		d    func(c *change) time.Duration
	}
	hops := []hop{
		{"began->event (gateway B)", func(c *change) time.Duration { return c.event.Sub(c.began) }},
		{"event->observed (B writer, broker)", func(c *change) time.Duration { return c.eventSeen.Sub(c.event) }},
		{"observed->state (replica reads, applies)", func(c *change) time.Duration { return c.state.Sub(c.eventSeen) }},
		{"state->observed (replica writes, broker)", func(c *change) time.Duration { return c.stateSeen.Sub(c.state) }},
		{"observed->first member (gateway A)", func(c *change) time.Duration { return c.first.Sub(c.stateSeen) }},
		{"first->last member (fan-out)", func(c *change) time.Duration { return c.last.Sub(c.first) }},
		{"began->last member", func(c *change) time.Duration { return c.last.Sub(c.began) }},
	}
	for _, hp := range hops {
		var ds []time.Duration
		for _, c := range changes {
			if !c.event.IsZero() && !c.state.IsZero() {
				ds = append(ds, hp.d(c))
			}
		}
		if len(ds) == 0 {
			continue
		}
		slices.Sort(ds)
		q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))].Round(100 * time.Microsecond) }
		t.Logf("hop %-42s n=%d p50 %v p90 %v p99 %v max %v", hp.name, len(ds), q(0.5), q(0.9), q(0.99), ds[len(ds)-1].Round(100*time.Microsecond))
	}
	for _, c := range changes {
		if c.last.Sub(c.began) <= 100*time.Millisecond {
			continue
		}
		var parts []string
		for _, hp := range hops {
			parts = append(parts, fmt.Sprintf("%s %v", hp.name, hp.d(c).Round(100*time.Microsecond)))
		}
		t.Logf("late %s: %s", c.key, strings.Join(parts, "; "))
	}
}

// TestBenchReplicaThroughput: events written beforehand, then one replica
// started; the rate at which it works through them (fetch, decode, apply,
// publish) is the figure.
func TestBenchReplicaThroughput(t *testing.T) {
	benchOnly(t)
	e := newEnv(t)
	rooms := []string{e.room}
	for i := range 9 {
		r := fmt.Sprintf("%s-%d", e.room, i)
		e.provision(r)
		rooms = append(rooms, r)
	}
	// The replica creates the topics: start it once to have them, and
	// stop it.
	p := e.presence("presence-0")
	p.signal(15)
	<-p.done
	const total = 600_000
	w := e.cluster.Writer()
	w.Balancer = &presence.EventBalancer{}
	w.BatchSize = 10_000
	w.BatchBytes = 16 << 20
	w.BatchTimeout = 10 * time.Millisecond
	w.Compression = kafka.Snappy
	defer w.Close()
	msgs := make([]kafka.Message, 0, 20_000)
	flush := func() {
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[:0]
	}
	write := func(base int) {
		now := time.Now()
		for i := base; i < base+total/2; i++ {
			room := rooms[i%len(rooms)]
			conn := strconv.Itoa(i)
			user := "u-" + strconv.Itoa(i%5000)
			j := presence.Event{V: 1, Type: presence.TypeJoin, Gateway: "gw-bench", Room: room, Conn: conn, User: user, Name: user}
			l := j
			l.Type = presence.TypeLeave
			msgs = append(msgs, kafka.Message{Topic: e.events, Key: []byte(room), Value: j.Encode(), Time: now},
				kafka.Message{Topic: e.events, Key: []byte(room), Value: l.Encode(), Time: now})
			if len(msgs) == cap(msgs) {
				flush()
			}
		}
		flush()
	}
	write(0)
	t.Logf("%d events written", total)
	p = e.presence("presence-1")
	var first time.Time
	for {
		n := metric(t, p, "palaver_presence_events_total", "")
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
		if n >= total {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(first)
	rate := float64(total) / took.Seconds()
	t.Logf("one replica taking over: %d events replayed in %v: %.0f events/s", total, took.Round(time.Millisecond), rate)
	fmt.Fprintf(os.Stderr, "BENCH replica-throughput takeover events=%d took=%v rate=%.0f/s\n", total, took, rate)

	// Live: the replica caught up, publishing as it goes, while the events
	// are written (the writer is faster than the replica).
	done := make(chan struct{})
	var wrote time.Duration
	go func() {
		defer close(done)
		began := time.Now()
		write(total / 2)
		wrote = time.Since(began)
	}()
	first = time.Time{}
	for {
		n := metric(t, p, "palaver_presence_events_total", "") - total
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
		if n >= total {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	took = time.Since(first)
	<-done
	rate = float64(total) / took.Seconds()
	pubs := metric(t, p, "palaver_presence_publications_total", "")
	t.Logf("one replica live: %d events in %v: %.0f events/s (%g room states published in all; the writer took %v)", total, took.Round(time.Millisecond), rate, pubs, wrote.Round(time.Millisecond))
	fmt.Fprintf(os.Stderr, "BENCH replica-throughput live events=%d took=%v rate=%.0f/s publications=%g\n", total, took, rate, pubs)
}

// TestBenchBigRoom: a room of 10,000 members, all connected to one
// gateway, while 100 users a second join and 100 leave (through a
// simulated gateway writing events). Each member counts the presence
// frames it gets; the gateway's CPU time is read from /proc.
func TestBenchBigRoom(t *testing.T) {
	benchOnly(t)
	e := newEnv(t)
	e.presence("presence-1")
	gw := e.gateway("gw-a")
	ctx := t.Context()
	n := 10_000
	if v, err := strconv.Atoi(os.Getenv("PALAVER_BENCH_MEMBERS")); err == nil {
		n = v
	}
	members := make([]*lean, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range members {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			members[i] = dialLean(ctx, t, gw, fmt.Sprintf("m-%05d", i), e.room)
		}()
	}
	wg.Wait()
	t.Logf("%d members connected", n)
	// The churn: a simulated gateway, heartbeating, whose users join and
	// leave, 100 of each a second.
	w := e.cluster.Writer()
	w.Balancer = &presence.EventBalancer{}
	defer w.Close()
	stop := make(chan struct{})
	churned := make(chan int)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		i := 0
		for k := 0; ; k++ {
			select {
			case <-stop:
				churned <- i
				return
			case <-tick.C:
			}
			var msgs []kafka.Message
			if k%50 == 0 {
				for p := range 3 {
					msgs = append(msgs, kafka.Message{Topic: e.events, Partition: p,
						Value: presence.Event{V: 1, Type: presence.TypeHeartbeat, Gateway: "gw-churn"}.Encode()})
				}
			}
			// One join and one leave every 10 ms; 200 users cycle.
			u := "churn-" + strconv.Itoa(i%200)
			join := presence.Event{V: 1, Type: presence.TypeJoin, Gateway: "gw-churn", Room: e.room, Conn: strconv.Itoa(i), User: u, Name: u}
			msgs = append(msgs, kafka.Message{Topic: e.events, Key: []byte(e.room), Value: join.Encode()})
			if i >= 100 {
				old := "churn-" + strconv.Itoa((i-100)%200)
				leave := presence.Event{V: 1, Type: presence.TypeLeave, Gateway: "gw-churn", Room: e.room, Conn: strconv.Itoa(i - 100), User: old, Name: old}
				msgs = append(msgs, kafka.Message{Topic: e.events, Key: []byte(e.room), Value: leave.Encode()})
			}
			_ = w.WriteMessages(context.Background(), msgs...)
			i++
		}
	}()
	time.Sleep(5 * time.Second) // warm up: the churn reaches its steady state
	for _, m := range members {
		m.frames.Store(0)
	}
	cpu0 := procCPU(t, gw)
	began := time.Now()
	const window = 20 * time.Second
	time.Sleep(window)
	cpu := procCPU(t, gw) - cpu0
	elapsed := time.Since(began)
	close(stop)
	<-churned
	var most, sum int64
	for _, m := range members {
		f := m.frames.Load()
		sum += f
		most = max(most, f)
	}
	perConn := float64(most) / elapsed.Seconds()
	share := cpu.Seconds() / elapsed.Seconds()
	t.Logf("%d members, 100 joins and 100 leaves a second: at most %.2f presence frames/s per connection (mean %.2f); gateway CPU %.1f%% of one core",
		n, perConn, float64(sum)/float64(n)/elapsed.Seconds(), 100*share)
	fmt.Fprintf(os.Stderr, "BENCH big-room members=%d frames/s/conn max=%.2f mean=%.2f gateway-cpu=%.1f%%\n",
		n, perConn, float64(sum)/float64(n)/elapsed.Seconds(), 100*share)
}

// procCPU is a process's user and system CPU time so far.
func procCPU(t *testing.T, p *proc) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ
}
