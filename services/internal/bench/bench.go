// Package bench runs the gateway's fixed benchmark scenarios from outside
// its process, through its WebSocket API, and reports each as a Report:
//
//	A  one room of 100 members at 1,000 messages a second
//	B  one big room at the highest rate every member keeps up with
//	C  idle connections: the gateway's memory per connection (RSS)
//	D  many rooms of 10 members: latency with thousands of rooms tailed
//
// The members are loadgen clients in this process; the gateway's CPU and
// memory are read from /proc for its process id, so that what is measured
// is the gateway's own cost. Every scenario that sends checks that every
// message reached every member once and in order. It is the engine of
// `palaver bench`; docs/BENCHMARKS.md records its figures.
package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"palaver.dev/services/internal/loadgen"
	"palaver.dev/services/internal/protocol"
)

// Options say where the gateway is and how big each scenario is. Zero
// sizes take the defaults of DefaultOptions, the scenarios as specified;
// docs/BENCHMARKS.md says which sizes a 2-core machine runs.
type Options struct {
	URL string
	// Token returns the bearer token of member i (0-based).
	Token func(ctx context.Context, member int) (string, error)
	TLS   *tls.Config
	// GatewayPID is the gateway's process id on this machine; 0 leaves
	// out the CPU and memory figures.
	GatewayPID int
	// Rooms returns n rooms to use (scratch rooms, made for the run).
	Rooms func(ctx context.Context, n int) ([]string, error)
	// Progress receives what the scenarios are doing; nil for nothing.
	Progress io.Writer

	AMembers int     // A: members of the room (100)
	ARate    float64 // A: messages a second (1,000)
	ACount   int     // A: messages measured (10,000)

	BMembers  int     // B: members of the room (10,000)
	BRate     float64 // B: first rate tried, doubled while every member keeps up (50)
	BSteps    int     // B: most rates tried (6)
	BDuration time.Duration

	CConnections int // C: idle connections (10,000)

	DRooms    int     // D: rooms (1,000)
	DMembers  int     // D: members per room (10)
	DRate     float64 // D: messages a second per room (1)
	DDuration time.Duration

	settleEvery time.Duration // between reads of the gateway's memory (1 s)
}

// DefaultOptions are the scenarios' specified sizes.
func DefaultOptions() Options {
	return Options{
		AMembers: 100, ARate: 1000, ACount: 10_000,
		BMembers: 10_000, BRate: 50, BSteps: 6, BDuration: 5 * time.Second,
		CConnections: 10_000,
		DRooms:       1000, DMembers: 10, DRate: 1, DDuration: 10 * time.Second,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	setI := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setF := func(v *float64, def float64) {
		if *v <= 0 {
			*v = def
		}
	}
	setI(&o.AMembers, d.AMembers)
	setF(&o.ARate, d.ARate)
	setI(&o.ACount, d.ACount)
	setI(&o.BMembers, d.BMembers)
	setF(&o.BRate, d.BRate)
	setI(&o.BSteps, d.BSteps)
	if o.BDuration <= 0 {
		o.BDuration = d.BDuration
	}
	setI(&o.CConnections, d.CConnections)
	setI(&o.DRooms, d.DRooms)
	setI(&o.DMembers, d.DMembers)
	setF(&o.DRate, d.DRate)
	if o.DDuration <= 0 {
		o.DDuration = d.DDuration
	}
	return o
}

// Report is one scenario's figures.
type Report struct {
	Scenario string         `json:"scenario"`
	What     string         `json:"what"`
	Params   map[string]any `json:"params"`

	Messages   int     `json:"messages,omitempty"`   // measured messages sent
	Deliveries int     `json:"deliveries,omitempty"` // of them, read by members
	Seconds    float64 `json:"seconds,omitempty"`    // the measured window
	// MessagesPerSecond and DeliveriesPerSecond are over the window.
	MessagesPerSecond   float64 `json:"messages_per_second,omitempty"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second,omitempty"`
	// Latency is from the send to each member reading the message.
	Latency *loadgen.Percentiles `json:"latency,omitempty"`

	// Gateway cost, read from /proc (absent without the gateway's pid):
	// CPU time per 1,000 deliveries, cores busy over the window,
	// deliveries per busy core, and resident memory per connection.
	GatewayCPUPer1000 float64 `json:"gateway_cpu_ms_per_1000_deliveries,omitempty"`
	GatewayCores      float64 `json:"gateway_cores,omitempty"`
	DeliveriesPerCore float64 `json:"deliveries_per_gateway_core_second,omitempty"`
	RSSPerConnection  float64 `json:"gateway_rss_bytes_per_connection,omitempty"`
	// The members' cost: this process's CPU time (every member, the
	// senders and the checks) per 1,000 deliveries and cores busy over
	// the window. Where it is near the cores the machine can give, the
	// members, not the gateway, set the ceiling.
	MembersCPUPer1000 float64 `json:"members_cpu_ms_per_1000_deliveries,omitempty"`
	MembersCores      float64 `json:"members_cores,omitempty"`

	// Steps are scenario B's rates, each with its figures.
	Steps []*Report `json:"steps,omitempty"`

	// Problems are lost, repeated or reordered messages and dropped
	// members; a clean scenario has none.
	Problems []string `json:"problems,omitempty"`
}

// Scenarios lists the scenario names in order.
var Scenarios = []string{"A", "B", "C", "D"}

// ErrUnknownScenario is returned by Run for a name not in Scenarios.
var ErrUnknownScenario = errors.New("bench: unknown scenario")

// Run runs one scenario.
func Run(ctx context.Context, o Options, scenario string) (*Report, error) {
	o = o.withDefaults()
	if o.URL == "" || o.Token == nil || o.Rooms == nil {
		return nil, errors.New("bench: URL, Token and Rooms are required")
	}
	switch strings.ToUpper(scenario) {
	case "A":
		return o.scenarioA(ctx)
	case "B":
		return o.scenarioB(ctx)
	case "C":
		return o.scenarioC(ctx)
	case "D":
		return o.scenarioD(ctx)
	}
	return nil, fmt.Errorf("%w %q (want one of %s)", ErrUnknownScenario, scenario, strings.Join(Scenarios, ", "))
}

func (o Options) logf(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// meter samples the gateway's CPU, and this process's, over a window.
type meter struct {
	p            proc
	on           bool
	began        time.Time
	cpu0, cpu1   time.Duration
	self0, self1 time.Duration
	selfErr      error
	took         time.Duration
	err          error
}

func (o Options) meter() *meter { return &meter{p: proc{o.GatewayPID}, on: o.GatewayPID > 0} }

func (m *meter) mark(begin bool) {
	if begin {
		m.began = time.Now()
	} else {
		m.took = time.Since(m.began)
	}
	if c, err := (proc{os.Getpid()}).cpu(); err != nil {
		m.selfErr = err
	} else if begin {
		m.self0 = c
	} else {
		m.self1 = c
	}
	if !m.on {
		return
	}
	c, err := m.p.cpu()
	if err != nil {
		m.err = err
	}
	if begin {
		m.cpu0 = c
	} else {
		m.cpu1 = c
	}
}

// fill sets r's rates and the gateway's CPU figures from the window.
func (m *meter) fill(r *Report) {
	r.Seconds = m.took.Seconds()
	if r.Seconds > 0 {
		r.MessagesPerSecond = float64(r.Messages) / r.Seconds
		r.DeliveriesPerSecond = float64(r.Deliveries) / r.Seconds
	}
	if m.selfErr == nil && r.Deliveries > 0 && r.Seconds > 0 {
		self := (m.self1 - m.self0).Seconds()
		r.MembersCPUPer1000 = round(self * 1000 / (float64(r.Deliveries) / 1000))
		r.MembersCores = round(self / r.Seconds)
	}
	if !m.on || m.err != nil || r.Deliveries == 0 || r.Seconds == 0 {
		return
	}
	cpu := (m.cpu1 - m.cpu0).Seconds()
	r.GatewayCPUPer1000 = round(cpu * 1000 / (float64(r.Deliveries) / 1000))
	r.GatewayCores = round(cpu / r.Seconds)
	if cpu > 0 {
		r.DeliveriesPerCore = math.Round(float64(r.Deliveries) / cpu)
	}
}

func round(x float64) float64 { return math.Round(x*1000) / 1000 }

// load runs loadgen in room, with the gateway's CPU sampled over the
// measured window.
func (o Options) load(ctx context.Context, room string, cfg loadgen.Config) (*Report, error) {
	cfg.URL, cfg.Room, cfg.Token, cfg.TLS, cfg.Progress = o.URL, room, o.Token, o.TLS, o.Progress
	m := o.meter()
	cfg.Measured = m.mark
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	r := &Report{Messages: res.Sent, Deliveries: res.Deliveries, Problems: res.Problems()}
	d := res.Delivery
	r.Latency = &d
	m.fill(r)
	return r, nil
}

// senders is how many members must send for rate to stay within the
// gateway's default per-connection limit (10 a second), with room.
func senders(rate float64, members int) int {
	return min(members, max(1, int(math.Ceil(rate/8))))
}

func (o Options) scenarioA(ctx context.Context) (*Report, error) {
	rooms, err := o.Rooms(ctx, 1)
	if err != nil {
		return nil, err
	}
	o.logf("A: one room of %d members at %g messages/s, %d messages", o.AMembers, o.ARate, o.ACount)
	r, err := o.load(ctx, rooms[0], loadgen.Config{
		Members: o.AMembers, Senders: senders(o.ARate, o.AMembers), Rate: o.ARate, Count: o.ACount,
		Warmup: 2 * time.Second, TextBytes: 100,
	})
	if err != nil {
		return nil, err
	}
	r.Scenario, r.What = "A", fmt.Sprintf("one room of %d members at %g messages/s", o.AMembers, o.ARate)
	r.Params = map[string]any{"members": o.AMembers, "rate": o.ARate, "count": o.ACount, "text_bytes": 100}
	return r, nil
}

// scenarioB looks for the highest rate every member of one big room
// keeps up with (every message read by every member, p99 under a
// second): from BRate it doubles the rate while the members keep up, or
// halves it while they do not, and once it has a rate kept up with and
// one not, tries the rate half way between them, up to BSteps rates in
// all. The report is the highest rate kept up with.
func (o Options) scenarioB(ctx context.Context) (*Report, error) {
	rooms, err := o.Rooms(ctx, 1)
	if err != nil {
		return nil, err
	}
	top := &Report{Scenario: "B", Params: map[string]any{"members": o.BMembers, "first_rate": o.BRate, "seconds_per_rate": o.BDuration.Seconds(), "text_bytes": 100}}
	var kept, failed float64 // the highest rate kept up with, the lowest not; 0 for none yet
	for rate, step := o.BRate, 0; step < o.BSteps && rate > 0; step++ {
		o.logf("B: one room of %d members at %g messages/s (rate %d of at most %d)", o.BMembers, rate, step+1, o.BSteps)
		r, err := o.load(ctx, rooms[0], loadgen.Config{
			Members: o.BMembers, Senders: senders(rate, o.BMembers), Rate: rate,
			Count: max(10, int(rate*o.BDuration.Seconds())), Warmup: time.Second, TextBytes: 100, Drain: 4 * o.BDuration,
		})
		if err != nil {
			return nil, err
		}
		r.Scenario, r.What = "B", fmt.Sprintf("%g messages/s", rate)
		top.Steps = append(top.Steps, r)
		if keptUp(r) {
			kept = rate
		} else {
			o.logf("B: at %g messages/s the members fell behind (p99 %v, %v)", rate, r.Latency.P99, r.Problems)
			failed = rate
		}
		rate = nextRate(kept, failed)
	}
	best := -1
	for i, s := range top.Steps {
		if keptUp(s) && (best < 0 || s.MessagesPerSecond > top.Steps[best].MessagesPerSecond) {
			best = i
		}
	}
	if best < 0 {
		top.What = fmt.Sprintf("one room of %d members: no rate kept up with", o.BMembers)
		last := top.Steps[len(top.Steps)-1]
		top.Problems = append([]string{fmt.Sprintf("the members kept up with no rate tried, from %g messages/s down to %s (p99 %v)",
			o.BRate, last.What, last.Latency.P99)}, last.Problems...)
		return top, nil
	}
	b := top.Steps[best]
	top.What = fmt.Sprintf("one room of %d members at %g messages/s, the highest rate tried that every member kept up with", o.BMembers, b.MessagesPerSecond)
	top.Messages, top.Deliveries, top.Seconds = b.Messages, b.Deliveries, b.Seconds
	top.MessagesPerSecond, top.DeliveriesPerSecond, top.Latency = b.MessagesPerSecond, b.DeliveriesPerSecond, b.Latency
	top.GatewayCPUPer1000, top.GatewayCores, top.DeliveriesPerCore = b.GatewayCPUPer1000, b.GatewayCores, b.DeliveriesPerCore
	top.MembersCPUPer1000, top.MembersCores = b.MembersCPUPer1000, b.MembersCores
	return top, nil
}

// keptUp says whether every member read every message of a step of B,
// with p99 under a second.
func keptUp(r *Report) bool { return len(r.Problems) == 0 && r.Latency.P99 <= time.Second }

// nextRate is the next rate B tries, given the highest rate kept up with
// and the lowest not (0: none yet): twice the one kept up with, half the
// one not, or half way between them; 0 once they are within a tenth of
// each other.
func nextRate(kept, failed float64) float64 {
	switch {
	case failed == 0:
		return 2 * kept
	case kept == 0:
		return failed / 2
	case failed-kept <= kept/10:
		return 0
	}
	return math.Round((kept+failed)/2*100) / 100
}

// connectAll opens n clients, 16 at a time, each joined to room(i).
func (o Options) connectAll(ctx context.Context, n int, room func(i int) string) ([]*loadgen.Client, error) {
	clients := make([]*loadgen.Client, n)
	var (
		next, done atomic.Int64
		mu         sync.Mutex
		first      error
		wg         sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(16, n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				c, err := o.join(ctx, i, room(i))
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("member %d: %w", i+1, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				clients[i] = c
				if k := done.Add(1); k%1000 == 0 || int(k) == n {
					o.logf("connected %d of %d", k, n)
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		closeAll(clients)
		return nil, first
	}
	return clients, nil
}

// join connects member i and joins room, waiting for the answer.
func (o Options) join(ctx context.Context, i int, room string) (*loadgen.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := o.Token(ctx, i)
	if err != nil {
		return nil, err
	}
	c, err := loadgen.Dial(ctx, o.URL, tok, o.TLS)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, c.Abort)
	defer stop()
	if err := c.Join("j", room, ""); err != nil {
		c.Abort()
		return nil, err
	}
	for {
		f, err := c.Read()
		if err != nil {
			c.Abort()
			return nil, err
		}
		switch {
		case f.Op == protocol.OpJoined && f.Ref == "j":
			return c, nil
		case f.Op == protocol.OpError && f.Ref == "j":
			c.Abort()
			return nil, f.Err()
		}
	}
}

func closeAll(cs []*loadgen.Client) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// settle waits for the gateway's memory to stop moving (its runtime
// returns what a burst of connections left behind in the background).
func settle(ctx context.Context, p proc, every time.Duration) (int64, error) {
	if every <= 0 {
		every = time.Second
	}
	var last int64
	for range 10 {
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
		rss, err := p.rss()
		if err != nil {
			return 0, err
		}
		if last > 0 && math.Abs(float64(rss-last)) < float64(last)/200 {
			return rss, nil
		}
		last = rss
	}
	return last, nil
}

// scenarioC opens idle connections, each joined to one room, and reads
// the gateway's resident memory before and after.
func (o Options) scenarioC(ctx context.Context) (*Report, error) {
	rooms, err := o.Rooms(ctx, 1)
	if err != nil {
		return nil, err
	}
	n := o.CConnections
	r := &Report{Scenario: "C", What: fmt.Sprintf("%d idle connections, each joined to one room", n), Params: map[string]any{"connections": n}}
	p := proc{o.GatewayPID}
	var before int64
	if o.GatewayPID > 0 {
		if before, err = settle(ctx, p, o.settleEvery); err != nil {
			return nil, err
		}
	}
	o.logf("C: opening %d idle connections", n)
	clients, err := o.connectAll(ctx, n, func(int) string { return rooms[0] })
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	if o.GatewayPID > 0 {
		after, err := settle(ctx, p, o.settleEvery)
		if err != nil {
			return nil, err
		}
		r.RSSPerConnection = math.Round(float64(after-before) / float64(n))
		r.Params["gateway_rss_before_bytes"], r.Params["gateway_rss_after_bytes"] = before, after
	}
	return r, nil
}

// scenarioD runs many small rooms at once: each room's first member sends
// DRate messages a second, every member of every room reads them.
func (o Options) scenarioD(ctx context.Context) (*Report, error) {
	nr, nm := o.DRooms, o.DMembers
	rooms, err := o.Rooms(ctx, nr)
	if err != nil {
		return nil, err
	}
	o.logf("D: %d rooms of %d members, %g messages/s in each, for %v", nr, nm, o.DRate, o.DDuration)
	clients, err := o.connectAll(ctx, nr*nm, func(i int) string { return rooms[i/nm] })
	if err != nil {
		return nil, err
	}
	l := loadgen.NewLedger()
	var wg sync.WaitGroup
	defer func() {
		closeAll(clients)
		wg.Wait()
	}()
	for i, c := range clients {
		in := l.NewInbox(fmt.Sprintf("r%dm%d", i/nm, i%nm))
		wg.Go(func() {
			for {
				f, err := c.ReadLean()
				if err != nil {
					return
				}
				switch f.Op {
				case protocol.OpMessage:
					in.Deliver(&f)
				case protocol.OpAck:
					l.Ack(f.Room, f.ID, loadgen.Position{Partition: f.Partition, Offset: f.Offset})
				case protocol.OpError:
					l.Error(f.Code)
				}
			}
		})
	}

	// Senders take turns: room k's first member sends every 1/DRate
	// seconds, the rooms spread evenly over that interval.
	m := o.meter()
	total := float64(nr) * o.DRate
	interval := time.Duration(float64(time.Second) / total)
	count := int(total * o.DDuration.Seconds())
	text := strings.Repeat("x", 100)
	start := time.Now()
	m.mark(true)
	sent := 0
	for k := range count {
		if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		room := k % nr
		if err := clients[room*nm].Send(rooms[room], l.NewID(fmt.Sprintf("r%d", room)), text); err == nil {
			sent++
		}
		if k > 0 && k%int(max(1, total)) == 0 {
			o.logf("D: %d of %d messages sent, %d acknowledged, %d deliveries", sent, count, l.AckedN.Load(), l.Delivered.Load())
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && (l.AckedN.Load() < int64(sent) || l.Delivered.Load() < l.AckedN.Load()*int64(nm)) {
		time.Sleep(10 * time.Millisecond)
	}
	m.mark(false)
	closeAll(clients)
	wg.Wait()

	roomOf := func(person string) string {
		var r, mm int
		_, _ = fmt.Sscanf(person, "r%dm%d", &r, &mm)
		return rooms[r]
	}
	v := l.Verify(func(person, room string) bool { return roomOf(person) == room })
	r := &Report{
		Scenario: "D", What: fmt.Sprintf("%d rooms of %d members, %g messages/s in each", nr, nm, o.DRate),
		Params:   map[string]any{"rooms": nr, "members": nm, "rate_per_room": o.DRate, "seconds": o.DDuration.Seconds(), "text_bytes": 100},
		Messages: sent, Deliveries: v.Deliveries, Latency: &v.Delivery, Problems: v.Problems(),
	}
	if v.Acked < sent {
		r.Problems = append(r.Problems, fmt.Sprintf("%d of %d sends not acknowledged (errors: %v)", sent-v.Acked, sent, v.Errors))
	}
	m.fill(r)
	return r, nil
}
