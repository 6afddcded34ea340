// Package simulate plays a whole chat through a gateway's WebSocket API:
// people spread over many rooms (one hot, many quiet), coming and going,
// typing before they send, answering each other and sending in bursts.
// Each person is a loadgen.Person (a protocol client that resumes with its
// cursors and retries its sends), and a loadgen.Ledger checks that nothing
// read was repeated or out of order. It is the engine of `palaver
// simulate`: what to run to watch the dashboards move.
package simulate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"palaver.dev/services/internal/loadgen"
)

// Config describes a simulation. Zero fields take DefaultConfig's values.
type Config struct {
	URLs  []string // gateways; people connect to them in turn
	Rooms []string // existing rooms to chat in; Rooms[0] is the hot one
	// People is how many simulated people take part.
	People int
	// Rate is the average messages a second, everyone together.
	Rate float64
	// Duration and MaxMessages bound the run: it stops at whichever
	// comes first, then waits up to Drain for the last acks and
	// deliveries.
	Duration    time.Duration
	MaxMessages int
	Drain       time.Duration
	// Hot is the share of the messages sent to the hot room; Reply the
	// chance that a message is answered by someone else in its room;
	// Burst the chance that a sender goes on with a few quick messages.
	// Zero takes the default; a negative value means none.
	Hot, Reply, Burst float64
	// Churn is how many people a second leave a room for another one
	// (zero: the default; negative: nobody moves).
	Churn float64
	// NoTyping sends no typing notices. Otherwise each message is
	// preceded by one, as long as the gateway knows the command (a
	// gateway answering unknown_op is not asked again).
	NoTyping bool
	// Seed makes the run's choices repeatable; 0 picks one.
	Seed uint64

	// Token returns the bearer token of person i (0-based).
	Token func(ctx context.Context, person int) (string, error) `json:"-"`
	TLS   *tls.Config                                           `json:"-"`
	// Progress receives a line a second; Live rewrites one line in place
	// (a terminal) instead of writing a line each time.
	Progress io.Writer `json:"-"`
	Live     bool      `json:"-"`
}

// DefaultConfig is 50 people at 20 messages a second for a minute.
func DefaultConfig() Config {
	return Config{
		People: 50, Rate: 20, Duration: time.Minute, MaxMessages: 10_000, Drain: 10 * time.Second,
		Hot: 0.4, Reply: 0.3, Burst: 0.1, Churn: 0.5,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.People <= 0 {
		c.People = d.People
	}
	if c.Rate <= 0 {
		c.Rate = d.Rate
	}
	if c.Duration <= 0 {
		c.Duration = d.Duration
	}
	if c.MaxMessages <= 0 {
		c.MaxMessages = d.MaxMessages
	}
	if c.Drain <= 0 {
		c.Drain = d.Drain
	}
	for _, f := range []struct{ v, def *float64 }{{&c.Hot, &d.Hot}, {&c.Reply, &d.Reply}, {&c.Burst, &d.Burst}, {&c.Churn, &d.Churn}} {
		switch {
		case *f.v == 0:
			*f.v = *f.def
		case *f.v < 0:
			*f.v = 0
		}
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	return c
}

// ErrConfig is returned for a configuration that cannot run.
var ErrConfig = errors.New("simulate: invalid configuration")

// Result is what a simulation did and what the checks found.
type Result struct {
	People  int           `json:"people"`
	Rooms   int           `json:"rooms"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Sent    int64         `json:"sent"`    // messages sent (retries excluded)
	Retried int64         `json:"retried"` // sends written again after unavailable, rate_limited or a lost connection
	Joins   int64         `json:"joins"`   // rooms joined or left while running
	Leaves  int64         `json:"leaves"`
	// Typing counts typing notices sent; TypingSupported is false when the
	// gateway answered unknown_op (and none was sent after).
	Typing          int64           `json:"typing"`
	TypingSupported bool            `json:"typing_supported"`
	Verdict         loadgen.Verdict `json:"verdict"`
	Pending         int             `json:"pending"` // sends never acknowledged
}

// Problems lists what broke a promise; a clean run has none.
func (r *Result) Problems() []string {
	p := r.Verdict.Problems()
	if r.Pending > 0 {
		p = append(p, fmt.Sprintf("%d sends never acknowledged", r.Pending))
	}
	return p
}

// Format writes the summary for people.
func (r *Result) Format(w io.Writer) {
	v := r.Verdict
	fmt.Fprintf(w, "%d people in %d rooms for %.1f s\n", r.People, r.Rooms, r.Elapsed.Seconds())
	fmt.Fprintf(w, "sent %d messages (%d retried), %d acknowledged; %d deliveries\n", r.Sent, r.Retried, v.Acked, v.Deliveries)
	fmt.Fprintf(w, "joined %d rooms and left %d while chatting\n", r.Joins, r.Leaves)
	if r.TypingSupported {
		fmt.Fprintf(w, "typing notices: %d\n", r.Typing)
	} else {
		fmt.Fprintf(w, "typing notices: none (the gateway does not know the typing command)\n")
	}
	fmt.Fprintf(w, "send to message, every reader: %s\n", v.Delivery)
	fmt.Fprintf(w, "send to ack, at the sender:    %s\n", v.Ack)
	if len(v.Errors) > 0 {
		fmt.Fprintf(w, "errors answered: %v\n", v.Errors)
	}
	if len(v.Closes) > 0 {
		fmt.Fprintf(w, "connections lost and resumed: %v\n", v.Closes)
	}
	for _, p := range r.Problems() {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
}

// sim is one run's state.
type sim struct {
	cfg    Config
	l      *loadgen.Ledger
	people []*loadgen.Person
	rng    *rand.Rand
	rngMu  sync.Mutex
	quiet  []float64 // cumulative Zipf weights of the quiet rooms

	mu            sync.Mutex
	sent          int
	joins, leaves int64
}

// Run simulates the chat until cfg.Duration passes, cfg.MaxMessages are
// sent or ctx ends, then drains and checks. An error means the simulation
// could not start; problems in a run are in its Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	switch {
	case len(cfg.URLs) == 0 || cfg.Token == nil:
		return nil, fmt.Errorf("%w: URLs and Token are required", ErrConfig)
	case len(cfg.Rooms) == 0:
		return nil, fmt.Errorf("%w: no rooms to chat in", ErrConfig)
	case cfg.Hot > 1 || cfg.Reply > 1 || cfg.Burst > 1:
		return nil, fmt.Errorf("%w: hot, reply and burst are shares between 0 and 1", ErrConfig)
	}
	if err := probe(ctx, cfg); err != nil {
		return nil, err
	}
	s := &sim{cfg: cfg, l: loadgen.NewLedger(), rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed))}
	// Quiet rooms are chosen with Zipf weights: a few are lively, most
	// hear a message now and then.
	total := 0.0
	for i := range max(0, len(cfg.Rooms)-1) {
		total += 1 / float64(i+1)
		s.quiet = append(s.quiet, total)
	}

	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	ready := make(chan struct{}, cfg.People)
	for i := range cfg.People {
		name := fmt.Sprintf("p%d", i)
		p := s.l.NewPerson(name, cfg.URLs, func(ctx context.Context) (string, error) { return cfg.Token(ctx, i) }, cfg.TLS)
		for _, r := range s.homeRooms() {
			p.Join(r)
		}
		s.people = append(s.people, p)
		var once sync.Once
		wg.Go(func() { p.Run(runCtx, func() { once.Do(func() { ready <- struct{}{} }) }) })
	}
	defer func() { stop(); wg.Wait() }()
	// Wait for a first connection of everyone (a gateway that cannot be
	// reached fails the run here rather than after the duration).
	connectBy := time.NewTimer(30 * time.Second)
	defer connectBy.Stop()
	for range cfg.People {
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-connectBy.C:
			return nil, fmt.Errorf("simulate: %d of %d people connected in 30 s (connections lost: %v)",
				s.l.Connected.Load(), cfg.People, s.l.Closes())
		}
	}

	began := time.Now()
	s.chat(ctx)
	s.drain(ctx)
	elapsed := time.Since(began)
	stop()
	wg.Wait()

	pending := 0
	for _, p := range s.people {
		pending += p.Pending()
	}
	return &Result{
		People: cfg.People, Rooms: len(cfg.Rooms), Elapsed: elapsed,
		Sent: s.l.Sent.Load(), Retried: s.l.Retried.Load(), Joins: s.joins, Leaves: s.leaves,
		Typing: s.l.TypingSent.Load(), TypingSupported: !cfg.NoTyping && !s.l.TypingOff.Load(),
		Verdict: s.l.Verify(nil), Pending: pending,
	}, nil
}

// probe connects once as the first person: a gateway that cannot be
// reached, or refuses the token, fails the run before it starts.
func probe(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := cfg.Token(ctx, 0)
	if err != nil {
		return err
	}
	c, err := loadgen.Dial(ctx, cfg.URLs[0], tok, cfg.TLS)
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

func (s *sim) float() float64 {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64()
}

func (s *sim) intn(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.IntN(n)
}

// homeRooms picks where a person starts: the hot room for most, and one
// to three quiet rooms.
func (s *sim) homeRooms() []string {
	var rs []string
	if len(s.cfg.Rooms) == 1 || s.float() < 0.7 {
		rs = append(rs, s.cfg.Rooms[0])
	}
	for range 1 + s.intn(3) {
		if r := s.quietRoom(); r != "" && !contains(rs, r) {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		rs = append(rs, s.cfg.Rooms[0])
	}
	return rs
}

func contains(rs []string, r string) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// quietRoom picks a quiet room by its weight; "" when there is none.
func (s *sim) quietRoom() string {
	if len(s.quiet) == 0 {
		return ""
	}
	x := s.float() * s.quiet[len(s.quiet)-1]
	for i, c := range s.quiet {
		if x < c {
			return s.cfg.Rooms[i+1]
		}
	}
	return s.cfg.Rooms[len(s.cfg.Rooms)-1]
}

// chat makes conversation until the bounds: messages at cfg.Rate on
// average (Poisson arrivals), each one a person typing then sending, some
// answered, some followed by a burst; and people moving between rooms.
func (s *sim) chat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Duration)
	defer cancel()
	var talks sync.WaitGroup
	defer talks.Wait()
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	began := time.Now()
	nextMsg := time.Now()
	nextChurn := time.Now().Add(s.exp(s.cfg.Churn))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			s.line(time.Since(began), true)
			return
		case <-progress.C:
			s.line(time.Since(began), false)
			continue
		case <-timer.C:
		}
		now := time.Now()
		if !now.Before(nextMsg) {
			if !s.reserve(1) {
				s.line(time.Since(began), true)
				return
			}
			talks.Go(func() { s.conversation(ctx) })
			nextMsg = nextMsg.Add(s.exp(s.cfg.Rate))
		}
		if s.cfg.Churn > 0 && !now.Before(nextChurn) {
			s.move()
			nextChurn = nextChurn.Add(s.exp(s.cfg.Churn))
		}
		next := nextMsg
		if s.cfg.Churn > 0 && nextChurn.Before(next) {
			next = nextChurn
		}
		timer.Reset(time.Until(next))
	}
}

// exp draws the wait to the next event of a Poisson process of rate a
// second.
func (s *sim) exp(rate float64) time.Duration {
	if rate <= 0 {
		return time.Hour
	}
	return time.Duration(-math.Log(1-s.float()) / rate * float64(time.Second))
}

// reserve counts n more messages against MaxMessages; false when over.
func (s *sim) reserve(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sent+n > s.cfg.MaxMessages {
		return false
	}
	s.sent += n
	return true
}

// conversation is one message: someone in a room types and sends it;
// maybe a burst follows, maybe someone answers.
func (s *sim) conversation(ctx context.Context) {
	room := s.cfg.Rooms[0]
	if s.float() >= s.cfg.Hot {
		if q := s.quietRoom(); q != "" {
			room = q
		}
	}
	p := s.memberOf(room, nil)
	if p == nil {
		return
	}
	s.say(ctx, p, room, 300*time.Millisecond+time.Duration(s.intn(1200))*time.Millisecond)
	if s.float() < s.cfg.Burst {
		for range 1 + s.intn(3) {
			if !s.reserve(1) {
				break
			}
			s.say(ctx, p, room, 150*time.Millisecond+time.Duration(s.intn(350))*time.Millisecond)
		}
	}
	if s.float() < s.cfg.Reply && s.reserve(1) {
		if q := s.memberOf(room, p); q != nil {
			s.say(ctx, q, room, 500*time.Millisecond+time.Duration(s.intn(1500))*time.Millisecond)
		}
	}
}

// say has p type for think, then send to room.
func (s *sim) say(ctx context.Context, p *loadgen.Person, room string, think time.Duration) {
	if !s.cfg.NoTyping {
		p.Typing(room)
	}
	t := time.NewTimer(think)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	p.Send(room, s.text())
}

var words = strings.Fields(`the a deploy build broker lag offset partition room is done failing green red
	again today now later why how ok thanks lunch coffee meeting review merge ship it looks good to me
	can someone check this please rollback latency p99 dashboard alert paged fixed`)

// text is a chat line of 1 to 25 words.
func (s *sim) text() string {
	n := 1 + s.intn(25)
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[s.intn(len(words))])
	}
	return b.String()
}

// memberOf picks someone joined to room, other than not; nil if nobody.
func (s *sim) memberOf(room string, not *loadgen.Person) *loadgen.Person {
	start := s.intn(len(s.people))
	for k := range s.people {
		p := s.people[(start+k)%len(s.people)]
		if p != not && contains(p.Rooms(), room) {
			return p
		}
	}
	return nil
}

// move has someone leave one of their rooms or join another one.
func (s *sim) move() {
	p := s.people[s.intn(len(s.people))]
	in := p.Rooms()
	var out []string
	for _, r := range s.cfg.Rooms {
		if !contains(in, r) {
			out = append(out, r)
		}
	}
	if len(in) > 1 && (len(out) == 0 || s.float() < 0.5) {
		if p.Leave(in[s.intn(len(in))]) {
			s.mu.Lock()
			s.leaves++
			s.mu.Unlock()
		}
		return
	}
	if len(out) > 0 {
		r := s.quietRoom()
		if !contains(out, r) {
			r = out[s.intn(len(out))]
		}
		if p.Join(r) {
			s.mu.Lock()
			s.joins++
			s.mu.Unlock()
		}
	}
}

// drain waits for the last acks and deliveries: until no send is pending
// and deliveries stopped growing for a moment, or cfg.Drain.
func (s *sim) drain(ctx context.Context) {
	deadline := time.Now().Add(s.cfg.Drain)
	last, still := int64(-1), 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pending := 0
		for _, p := range s.people {
			pending += p.Pending()
		}
		d := s.l.Delivered.Load()
		if d == last {
			still++
		} else {
			last, still = d, 0
		}
		if pending == 0 && still >= 10 { // 0.5 s without a delivery
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// line writes the progress line.
func (s *sim) line(elapsed time.Duration, final bool) {
	w := s.cfg.Progress
	if w == nil {
		return
	}
	l := s.l
	lat := l.Window()
	latency := "no deliveries"
	if lat.N > 0 {
		latency = fmt.Sprintf("p50 %.1f ms  p99 %.1f ms", ms(lat.P50), ms(lat.P99))
	}
	typing := "typing off"
	if !s.cfg.NoTyping && !l.TypingOff.Load() {
		typing = fmt.Sprintf("typing %d", l.TypingSent.Load())
	}
	text := fmt.Sprintf("%3.0fs  connected %d/%d  sent %d  acked %d  delivered %d  errors %d  reconnects %d  %s  %s",
		elapsed.Seconds(), l.Connected.Load(), s.cfg.People, l.Sent.Load(), l.AckedN.Load(), l.Delivered.Load(),
		l.ErrorsN.Load(), l.Disconnects.Load(), typing, latency)
	switch {
	case s.cfg.Live && final:
		fmt.Fprintf(w, "\r\033[K%s\n", text)
	case s.cfg.Live:
		fmt.Fprintf(w, "\r\033[K%s", text)
	default:
		fmt.Fprintln(w, text)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
