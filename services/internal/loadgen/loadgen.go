// Package loadgen drives a gateway the way a busy room does: members
// connected over WebSocket, the senders among them sending at a fixed total
// rate, and every member timing each message from the moment it was sent
// to the moment it read it. It is the engine of `palaver load` and of the
// gateway's latency benchmark, and it checks what it measures: every
// member must read every message exactly once.
package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/protocol"
)

// ErrOverLimit is returned by Run, before anything is sent, when each
// sender would have to send faster than the gateway allows a connection.
var ErrOverLimit = errors.New("loadgen: over the send limit")

// Config describes a run. Zero fields take the defaults of DefaultConfig,
// but for Warmup: zero is none.
type Config struct {
	URL     string // gateway base URL: http://host:port or https://...
	Room    string // an existing room every member joins
	Members int    // connections joined to the room
	// Senders is how many of the members send, taking turns; 0 means all
	// of them. Each sends Rate/Senders messages a second, which must be
	// within the gateway's per-connection limit (sends_per_second).
	Senders int
	Rate    float64       // messages a second, all senders together
	Count   int           // messages measured
	Warmup  time.Duration // sending at Rate before measuring
	// TextBytes is the length of each message's text.
	TextBytes int
	// Drain bounds the wait for the last deliveries after the last send.
	Drain time.Duration
	// Token returns the bearer token member i (0-based) connects with.
	Token func(ctx context.Context, member int) (string, error) `json:"-"`
	// TLS configures https URLs; nil means the system's roots.
	TLS *tls.Config `json:"-"`
	// Progress receives a line a second while the run sends; nil for none.
	Progress io.Writer `json:"-"`
	// Measured, if set, is called with true as the first measured message
	// is sent and with false once the last deliveries came (or Drain
	// passed): the window a benchmark samples the gateway's CPU over.
	Measured func(begin bool) `json:"-"`
}

// DefaultConfig is a room of 100 members, all of them talking, 1,000
// messages a second between them (10 each, the gateway's default limit).
func DefaultConfig() Config {
	return Config{Members: 100, Rate: 1000, Count: 5000, Warmup: 2 * time.Second, TextBytes: 48, Drain: 10 * time.Second}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Members <= 0 {
		c.Members = d.Members
	}
	if c.Senders <= 0 || c.Senders > c.Members {
		c.Senders = c.Members
	}
	if c.Rate <= 0 {
		c.Rate = d.Rate
	}
	if c.Count <= 0 {
		c.Count = d.Count
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.TextBytes <= 0 {
		c.TextBytes = d.TextBytes
	}
	if c.Drain <= 0 {
		c.Drain = d.Drain
	}
	return c
}

// Result is what a run measured.
type Result struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
	Senders int    `json:"senders"`

	Sent  int `json:"sent"`  // measured messages written
	Acked int `json:"acked"` // of them, acknowledged
	// Errors counts the gateway's error frames by code (rate_limited, ...).
	Errors map[string]int `json:"errors,omitempty"`
	// Deliveries counts measured messages read, all members together; a
	// complete run has Sent × Members of them.
	Deliveries int `json:"deliveries"`
	Missing    int `json:"missing"`    // deliveries that never came, on members still connected
	Duplicates int `json:"duplicates"` // messages a member read twice
	// Disorder counts messages a member read at an offset before that of
	// one it read earlier in their partition (the room's messages, the
	// run's or not); FirstDisorder is the first of them.
	Disorder      int    `json:"disorder"`
	FirstDisorder string `json:"first_disorder,omitempty"`
	Foreign       int    `json:"foreign"` // messages not sent by this run (others chatting in the room)
	// Disconnected counts members whose connection ended during the run;
	// Disconnect is the first reason.
	Disconnected int    `json:"disconnected"`
	Disconnect   string `json:"disconnect,omitempty"`

	Elapsed time.Duration `json:"elapsed_ns"` // first measured send to last
	// Lag is how late the sends were against their schedule: the load
	// generator's own delay, which a busy machine makes long.
	Lag Percentiles `json:"lag"`
	// Delivery is the time from writing a send to a member reading its
	// message frame, over every delivery to every member.
	Delivery Percentiles `json:"delivery"`
	// Ack is the time from writing a send to its sender reading the ack.
	Ack Percentiles `json:"ack"`
}

// Rate is the measured sending rate in messages a second.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 || r.Sent < 2 {
		return 0
	}
	return float64(r.Sent-1) / r.Elapsed.Seconds()
}

// Problems lists what went wrong: lost, repeated or refused messages,
// dropped members. A clean run has none.
func (r *Result) Problems() []string {
	var p []string
	if r.Acked < r.Sent {
		p = append(p, fmt.Sprintf("%d of %d sends not acknowledged", r.Sent-r.Acked, r.Sent))
	}
	for _, code := range slices.Sorted(maps.Keys(r.Errors)) {
		p = append(p, fmt.Sprintf("%d %s errors", r.Errors[code], code))
	}
	if r.Missing > 0 {
		p = append(p, fmt.Sprintf("%d deliveries missing", r.Missing))
	}
	if r.Duplicates > 0 {
		p = append(p, fmt.Sprintf("%d messages delivered twice", r.Duplicates))
	}
	if r.Disorder > 0 {
		p = append(p, fmt.Sprintf("%d messages read out of order (first: %s)", r.Disorder, r.FirstDisorder))
	}
	if r.Disconnected > 0 {
		p = append(p, fmt.Sprintf("%d members disconnected (first: %s)", r.Disconnected, r.Disconnect))
	}
	return p
}

// Format writes the result for people.
func (r *Result) Format(w io.Writer) {
	fmt.Fprintf(w, "room %s: %d members, %d of them sending\n", r.Room, r.Members, r.Senders)
	fmt.Fprintf(w, "sent %d messages in %.2f s (%.0f/s), %d acknowledged; %d of %d deliveries\n",
		r.Sent, r.Elapsed.Seconds(), r.Rate(), r.Acked, r.Deliveries, r.Sent*r.Members)
	fmt.Fprintf(w, "send to message, every member: %s\n", r.Delivery)
	fmt.Fprintf(w, "send to ack, at the sender:    %s\n", r.Ack)
	fmt.Fprintf(w, "sends behind schedule:         %s\n", r.Lag)
	if r.Foreign > 0 {
		fmt.Fprintf(w, "%d messages from others in the room were not counted\n", r.Foreign)
	}
	for _, p := range r.Problems() {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
}

// Percentiles summarise a set of durations.
type Percentiles struct {
	N    int           `json:"n"`
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[int(q*float64(len(d)-1))] }
	return Percentiles{N: len(d), P50: at(0.50), P90: at(0.90), P99: at(0.99), P999: at(0.999), Max: d[len(d)-1]}
}

func (p Percentiles) String() string {
	if p.N == 0 {
		return "no samples"
	}
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) }
	return fmt.Sprintf("p50 %s ms  p90 %s ms  p99 %s ms  p99.9 %s ms  max %s ms  (n=%d)",
		ms(p.P50), ms(p.P90), ms(p.P99), ms(p.P999), ms(p.Max), p.N)
}

// run is one run's shared state.
type run struct {
	cfg     Config
	id      string    // prefixes the client message ids of this run
	clock   time.Time // origin of the send and receive times
	sentAt  []atomic.Int64
	members []*member
	closing atomic.Bool
}

// since is the run's clock: nanoseconds since its origin (monotonic).
func (r *run) since() int64 { return int64(time.Since(r.clock)) }

// member is one connection and what it read. Only its reading goroutine
// writes the plain fields; the atomics are read by the progress line.
type member struct {
	ws   *wsConn
	got  []uint64 // bitset of the measured messages read
	lat  []time.Duration
	acks []time.Duration
	errs map[string]int
	dups int
	fore int
	// last is the latest message read in each partition (a room has
	// one); disorder counts messages read before it.
	last          []Position
	disorder      int
	firstDisorder string
	ended         error
	read          atomic.Int64 // measured messages read
	acked         atomic.Int64
	closed        atomic.Bool
}

// Run connects the members, warms up, sends cfg.Count messages at
// cfg.Rate and waits for every member to read them (or cfg.Drain). An
// error means the run could not be made; a run that was made returns its
// Result, whose Problems say what went wrong in it.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if cfg.URL == "" || cfg.Room == "" || cfg.Token == nil {
		return nil, errors.New("loadgen: URL, Room and Token are required")
	}
	var idb [4]byte
	_, _ = rand.Read(idb[:])
	r := &run{cfg: cfg, id: "load-" + hex.EncodeToString(idb[:]), sentAt: make([]atomic.Int64, cfg.Count)}

	limit, err := r.connect(ctx)
	defer r.closeAll()
	if err != nil {
		return nil, err
	}
	if each := cfg.Rate / float64(cfg.Senders); limit > 0 && each > limit {
		return nil, fmt.Errorf("%w: %d senders at %g messages/s is %.4g each, over the gateway's %g per connection (sends_per_second): use more senders (at least %d)",
			ErrOverLimit, cfg.Senders, cfg.Rate, each, limit, int(cfg.Rate/limit+0.999))
	}

	var wg sync.WaitGroup
	r.clock = time.Now()
	for _, m := range r.members {
		wg.Go(func() { r.read(m) })
	}
	res, lag := r.send(ctx)
	r.drain(ctx, res.Sent)
	if cfg.Measured != nil && res.Sent > 0 {
		cfg.Measured(false)
	}
	r.closeAll()
	wg.Wait()
	r.collect(res, lag)
	return res, nil
}

// connect opens the members' connections, a few at a time, each
// authenticated and joined. It returns the gateway's per-connection send
// limit from its welcome.
func (r *run) connect(ctx context.Context) (limit float64, err error) {
	r.members = make([]*member, r.cfg.Members)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		next  atomic.Int64
		done  atomic.Int64
	)
	for range min(8, r.cfg.Members) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < r.cfg.Members && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				m, l, err := r.join(ctx, i)
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("member %d: %w", i+1, err)
					cancel()
				}
				r.members[i], limit = m, l
				mu.Unlock()
				if n := done.Add(1); r.cfg.Progress != nil && (n%25 == 0 || int(n) == r.cfg.Members) {
					fmt.Fprintf(r.cfg.Progress, "connected %d of %d members\n", n, r.cfg.Members)
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return limit, first
}

// join connects member i: hello, then join, each answered.
func (r *run) join(ctx context.Context, i int) (*member, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := r.cfg.Token(ctx, i)
	if err != nil {
		return nil, 0, err
	}
	ws, err := dialWS(ctx, r.cfg.URL, tok, r.cfg.TLS)
	if err != nil {
		return nil, 0, err
	}
	m := &member{ws: ws, got: make([]uint64, (r.cfg.Count+63)/64), lat: make([]time.Duration, 0, r.cfg.Count), errs: map[string]int{}}
	if dl, ok := ctx.Deadline(); ok {
		_ = ws.nc.SetDeadline(dl)
	}
	var welcome protocol.WelcomeFrame
	if err := m.call(helloCommand, protocol.OpWelcome, &welcome); err != nil {
		ws.close()
		return nil, 0, fmt.Errorf("hello: %w", err)
	}
	join := mustCommand(protocol.Command{Op: protocol.OpJoin, Ref: "join", Room: r.cfg.Room})
	if err := m.call(join, protocol.OpJoined, nil); err != nil {
		ws.close()
		return nil, 0, fmt.Errorf("join %s: %w", r.cfg.Room, err)
	}
	_ = ws.nc.SetDeadline(time.Time{})
	return m, welcome.Limits.SendsPerSecond, nil
}

// call writes a command and reads until its answer (op want) or an error
// frame, decoding the answer into out.
func (m *member) call(frame []byte, want string, out any) error {
	if err := m.ws.writeText(frame); err != nil {
		return err
	}
	for {
		p, err := m.ws.next()
		if err != nil {
			return err
		}
		var f protocol.ErrorFrame // its op, and the rest when it is an error
		if err := json.Unmarshal(p, &f); err != nil {
			return fmt.Errorf("a frame that is not JSON: %w", err)
		}
		switch f.Op {
		case want:
			if out != nil {
				return json.Unmarshal(p, out)
			}
			return nil
		case protocol.OpError:
			return &chatclient.Error{Code: f.Code, Message: f.Message, Room: f.Room}
		}
	}
}

// send writes the warm-up and then the measured messages, at cfg.Rate,
// the senders taking turns. It returns the result so far and how late
// each measured send was.
func (r *run) send(ctx context.Context) (*Result, []time.Duration) {
	cfg := r.cfg
	res := &Result{Room: cfg.Room, Members: cfg.Members, Senders: cfg.Senders}
	warm := int(cfg.Warmup.Seconds() * cfg.Rate)
	total := warm + cfg.Count
	interval := float64(time.Second) / cfg.Rate
	lag := make([]time.Duration, 0, cfg.Count)
	room, _ := json.Marshal(cfg.Room)
	filler := strings.Repeat("x", cfg.TextBytes)
	var buf []byte

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	wait := time.NewTimer(0)
	defer wait.Stop()
	start := time.Now()
	var measureStart time.Time
	for k := range total {
		due := start.Add(time.Duration(float64(k) * interval))
		if d := time.Until(due); d > 0 {
			wait.Reset(d)
			select {
			case <-ctx.Done():
				return res, lag
			case <-wait.C:
			}
		}
		select {
		case <-tick.C:
			r.progress(res.Sent, k, warm)
		default:
		}
		if ctx.Err() != nil {
			return res, lag
		}
		m := r.members[k%cfg.Senders]
		if m.closed.Load() {
			continue
		}
		id := r.id + ".w" + strconv.Itoa(k)
		seq := k - warm
		if seq >= 0 {
			id = r.id + "." + strconv.Itoa(seq)
		}
		text := strconv.Itoa(k) + " " + filler
		buf = fmt.Appendf(buf[:0], `{"op":"`+protocol.OpSend+`","ref":%q,"room":%s,"id":%q,"text":%q}`, id, room, id, text[:cfg.TextBytes])
		now := r.since()
		if seq >= 0 {
			r.sentAt[seq].Store(now)
		}
		_ = m.ws.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := m.ws.writeText(buf); err != nil {
			r.ended(m, fmt.Errorf("send: %w", err))
			if seq >= 0 {
				r.sentAt[seq].Store(0)
			}
			continue
		}
		if seq >= 0 {
			if seq == 0 {
				measureStart = time.Now()
				if cfg.Measured != nil {
					cfg.Measured(true)
				}
			}
			res.Elapsed = time.Since(measureStart)
			res.Sent++
			lag = append(lag, max(0, time.Since(due)))
		}
	}
	return res, lag
}

// progress writes a line about the run so far: k sends made, warm of them
// warming up.
func (r *run) progress(sent, k, warm int) {
	if r.cfg.Progress == nil {
		return
	}
	if k < warm {
		fmt.Fprintf(r.cfg.Progress, "warming up: %d of %d messages sent\n", k, warm)
		return
	}
	var read, acked int64
	for _, m := range r.members {
		read += m.read.Load()
		acked += m.acked.Load()
	}
	fmt.Fprintf(r.cfg.Progress, "measuring: %d of %d messages sent, %d acknowledged, %d of %d deliveries\n",
		sent, r.cfg.Count, acked, read, sent*r.cfg.Members)
}

// drain waits until every member still connected has read every measured
// message sent, and the senders every ack, or cfg.Drain passes.
func (r *run) drain(ctx context.Context, sent int) {
	deadline := time.Now().Add(r.cfg.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		complete := true
		var acked int64
		for _, m := range r.members {
			if !m.closed.Load() && m.read.Load() < int64(sent) {
				complete = false
				break
			}
			acked += m.acked.Load()
		}
		if complete && acked >= int64(sent) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ended marks m's connection as ended early, for err.
func (r *run) ended(m *member, err error) {
	if !r.closing.Load() && m.closed.CompareAndSwap(false, true) {
		m.ended = err
		_ = m.ws.nc.Close()
	}
}

func (r *run) closeAll() {
	r.closing.Store(true)
	for _, m := range r.members {
		if m != nil && m.closed.CompareAndSwap(false, true) {
			m.ws.close()
		}
	}
}

// The frames read are told apart by their op without decoding them (a
// hundred members read a hundred thousand frames a second on the machine
// being measured). A string value cannot hold these bytes unescaped, so
// they are the op field wherever it is.
var (
	opMessage = []byte(`"op":"` + protocol.OpMessage + `"`)
	opAck     = []byte(`"op":"` + protocol.OpAck + `"`)
	opError   = []byte(`"op":"` + protocol.OpError + `"`)
)

// read reads m's frames until its connection ends, timing this run's
// messages and acks and checking that the room's messages come in the
// order they were stored. The frames of one read from the socket arrived
// together and share one reading of the clock.
func (r *run) read(m *member) {
	mine := []byte(r.id + ".")
	var now int64
	reads := -1
	for {
		p, err := m.ws.next()
		if n := m.ws.reads(); n != reads {
			now, reads = r.since(), n
		}
		if err != nil {
			if !r.closing.Load() {
				r.ended(m, err)
			}
			return
		}
		switch {
		case isOp(p, opMessage):
			m.order(p)
			id, ok := bytes.CutPrefix(field(p, `"id":"`), mine)
			if !ok {
				m.fore++
				continue
			}
			n, k := digits(id)
			seq := int(n)
			if k == 0 || k != len(id) || seq >= len(r.sentAt) {
				continue // warm-up
			}
			word, bit := seq/64, uint64(1)<<(seq%64)
			if m.got[word]&bit != 0 {
				m.dups++
				continue
			}
			m.got[word] |= bit
			m.lat = append(m.lat, time.Duration(now-r.sentAt[seq].Load()))
			m.read.Add(1)
		case isOp(p, opAck):
			id, ok := bytes.CutPrefix(field(p, `"ref":"`), mine)
			if n, k := digits(id); ok && k > 0 && k == len(id) && int(n) < len(r.sentAt) {
				m.acks = append(m.acks, time.Duration(now-r.sentAt[n].Load()))
				m.acked.Add(1)
			}
		case isOp(p, opError):
			m.errs[string(field(p, `"code":"`))]++
		}
	}
}

// isOp says whether frame p has the op field op ("op":"name"): at once
// when the frame starts with it, as the gateway writes them, else
// wherever it is.
func isOp(p, op []byte) bool {
	if len(p) > 0 && p[0] == '{' && bytes.HasPrefix(p[1:], opKey) {
		return bytes.HasPrefix(p[1:], op)
	}
	return bytes.Contains(p, op)
}

// opKey starts a frame whose first field is its op.
var opKey = []byte(`"op":`)

// order checks that message frame p was not stored before the last
// message m read in its partition (the room's messages, this run's or
// not, are delivered in the order of their offsets; the same message
// again is a duplicate, which the caller counts).
func (m *member) order(p []byte) {
	off, ok2 := intField(p, `"offset":`)
	part, ok1 := intField(p, `"partition":`)
	if !ok1 || !ok2 {
		return
	}
	i := slices.IndexFunc(m.last, func(l Position) bool { return l.Partition == int(part) })
	if i < 0 {
		m.last = append(m.last, Position{Partition: int(part), Offset: off})
		return
	}
	if last := m.last[i].Offset; off < last {
		if m.disorder++; m.firstDisorder == "" {
			m.firstDisorder = fmt.Sprintf("partition %d offset %d read after offset %d", part, off, last)
		}
		return
	}
	m.last[i].Offset = off
}

// intField returns the integer value of the last key ("name":) in a
// frame, searched from its end: a message's partition and offset follow
// its text. (A string value cannot hold the key's bytes unescaped.)
func intField(p []byte, key string) (int64, bool) {
	i := len(p) - len(key)
	for ; i >= 0 && (p[i] != '"' || string(p[i:i+len(key)]) != key); i-- {
	}
	if i < 0 {
		return 0, false
	}
	v := p[i+len(key):]
	neg := len(v) > 0 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	n, k := digits(v)
	if neg {
		n = -n
	}
	return n, k > 0
}

// digits returns the decimal number at the start of p and how many digits
// it has (0: none, or more than 18).
func digits(p []byte) (int64, int) {
	var n int64
	j := 0
	for ; j < len(p) && p[j] >= '0' && p[j] <= '9'; j++ {
		if j == 18 {
			return 0, 0
		}
		n = n*10 + int64(p[j]-'0')
	}
	return n, j
}

// field returns the string value of the first key ("name":") in a frame,
// up to the closing quote. The values read here are never escaped, and a
// message's id precedes its sender's (sender.id).
func field(p []byte, key string) []byte {
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return nil
	}
	v := p[i+len(key):]
	if j := bytes.IndexByte(v, '"'); j >= 0 {
		return v[:j]
	}
	return nil
}

// collect merges the members' observations into res.
func (r *run) collect(res *Result, lag []time.Duration) {
	var lat, acks []time.Duration
	for _, m := range r.members {
		lat = append(lat, m.lat...)
		acks = append(acks, m.acks...)
		res.Deliveries += len(m.lat)
		res.Acked += len(m.acks)
		res.Duplicates += m.dups
		res.Foreign += m.fore
		if res.Disorder += m.disorder; res.FirstDisorder == "" {
			res.FirstDisorder = m.firstDisorder
		}
		for code, n := range m.errs {
			if res.Errors == nil {
				res.Errors = map[string]int{}
			}
			res.Errors[code] += n
		}
		if m.ended != nil {
			res.Disconnected++
			if res.Disconnect == "" {
				res.Disconnect = m.ended.Error()
			}
		} else {
			res.Missing += res.Sent - len(m.lat)
		}
	}
	res.Delivery, res.Ack, res.Lag = percentiles(lat), percentiles(acks), percentiles(lag)
}
