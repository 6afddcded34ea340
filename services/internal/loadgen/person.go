package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/protocol"
)

// Person is a simulated chat user that behaves as a good client should:
// one connection at a time to one of the gateways, the rooms it is in
// joined, every room's latest cursor kept so that a lost connection is
// resumed on the next gateway with nothing missed, and every send retried
// with its id until it is acknowledged (unavailable, rate_limited, or a
// connection lost before the ack), paced under the gateway's announced
// rate so that a backlog of retries does not make it a flooder. What it
// reads goes to its Inbox.
//
// The driver calls Join, Leave, Send and Typing from any goroutine; Run
// holds the connection.
type Person struct {
	Name  string
	URLs  []string // gateways, tried in turn
	Token func(ctx context.Context) (string, error)
	TLS   *tls.Config
	Inbox *Inbox

	l *Ledger

	mu      sync.Mutex
	c       *Client // nil while disconnected
	pace    *rate.Limiter
	rooms   map[string]*membership
	pending map[string]*outgoing // by id
	refs    int
}

type membership struct {
	cursor  string // latest position read, or the join's
	joined  bool   // answered joined on the current connection
	leaving bool
	// rejoinAt is when to write the join again while it is not answered
	// (or was answered unavailable).
	rejoinAt time.Time
}

// joinWait is how long a join may go unanswered before it is written again.
const joinWait = 10 * time.Second

// join writes m's join on c; p.mu is held.
func (p *Person) join(c *Client, room string, m *membership) {
	m.rejoinAt = time.Now().Add(joinWait)
	_ = c.Join("j:"+room, room, m.cursor)
}

type outgoing struct {
	room, id, text string
	tries          int
	written        bool      // on the current connection, answer awaited
	retryAt        time.Time // when not written: not before this
}

// NewPerson returns a person keeping its books in l.
func (l *Ledger) NewPerson(name string, urls []string, token func(context.Context) (string, error), tlsConf *tls.Config) *Person {
	return &Person{
		Name: name, URLs: urls, Token: token, TLS: tlsConf, Inbox: l.NewInbox(name), l: l,
		rooms: map[string]*membership{}, pending: map[string]*outgoing{},
	}
}

// Run connects and reconnects until ctx ends, then closes the connection.
// ready, if not nil, is called after each successful hello.
func (p *Person) Run(ctx context.Context, ready func()) {
	next, failures := 0, 0
	for ctx.Err() == nil {
		url := p.URLs[next%len(p.URLs)]
		next++ // the next connection goes to the next gateway
		c, err := p.dial(ctx, url)
		if err != nil {
			if ctx.Err() == nil {
				p.l.closed("connect: " + errorKind(err))
				sleep(ctx, backoff(failures))
				failures++
			}
			continue
		}
		failures = 0
		p.l.Connected.Add(1)
		p.attach(c)
		if ready != nil {
			ready()
		}
		stop := context.AfterFunc(ctx, c.Close)
		err = p.read(c)
		stop()
		p.detach()
		p.l.Connected.Add(-1)
		if ctx.Err() != nil {
			c.Close()
			return
		}
		p.l.closed(errorKind(err))
		sleep(ctx, 50*time.Millisecond)
	}
}

func (p *Person) dial(ctx context.Context, url string) (*Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tok, err := p.Token(ctx)
	if err != nil {
		return nil, err
	}
	return Dial(ctx, url, tok, p.TLS)
}

func backoff(attempt int) time.Duration {
	return min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// errorKind names why a connection ended, for counting: the close code, or
// the kind of network error.
func errorKind(err error) string {
	var ce *chatclient.CloseError
	switch {
	case errors.As(err, &ce):
		return ce.Error()
	case chatclient.Code(err) != "":
		return chatclient.Code(err)
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	case strings.Contains(err.Error(), "connection reset"), strings.Contains(err.Error(), "EOF"):
		return "connection lost"
	}
	return err.Error()
}

// attach makes c the connection and joins the rooms, each from its cursor.
func (p *Person) attach(c *Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.c = c
	p.pace = rate.NewLimiter(rate.Inf, 0)
	if l := c.Welcome.Limits; l.SendsPerSecond > 0 {
		// A margin under the limit: the gateway's bucket and this one do
		// not start at the same instant.
		p.pace = rate.NewLimiter(rate.Limit(0.8*l.SendsPerSecond), max(1, l.SendBurst/2))
	}
	for room, m := range p.rooms {
		m.joined = false
		if m.leaving {
			delete(p.rooms, room)
			continue
		}
		p.join(c, room, m)
	}
	for _, o := range p.pending {
		o.written = false
	}
}

func (p *Person) detach() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.c = nil
	for _, m := range p.rooms {
		m.joined = false
	}
	for _, o := range p.pending {
		o.written = false
	}
}

// read handles c's frames until it ends.
func (p *Person) read(c *Client) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	frames := make(chan Frame, 64)
	errc := make(chan error, 1)
	go func() {
		for {
			f, err := c.Read()
			if err != nil {
				errc <- err
				close(frames)
				return
			}
			frames <- f
		}
	}()
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return <-errc
			}
			p.handle(c, &f)
		case <-tick.C:
			p.retry(c)
		}
	}
}

func (p *Person) handle(c *Client, f *Frame) {
	switch {
	case f.Op == protocol.OpMessage:
		p.Inbox.Deliver(f)
	case strings.HasPrefix(f.Ref, "t:") && f.Op != protocol.OpError:
		p.l.TypingAnswer.Add(1)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch f.Op {
	case protocol.OpMessage:
		if m := p.rooms[f.Room]; m != nil && f.Cursor != "" {
			m.cursor = f.Cursor
		}
	case protocol.OpJoined:
		m := p.rooms[f.Room]
		if m == nil {
			return
		}
		m.joined = true
		if m.cursor == "" {
			m.cursor = f.Cursor
		}
		p.flush(c, f.Room)
	case protocol.OpLeft:
		if m := p.rooms[f.Room]; m != nil && m.leaving {
			delete(p.rooms, f.Room)
		}
	case protocol.OpAck:
		if _, ok := p.pending[f.Ref]; ok {
			delete(p.pending, f.Ref)
			p.l.Ack(f.Room, f.ID, Position{Partition: f.Partition, Offset: f.Offset})
		}
	case protocol.OpError:
		p.l.Error(f.Code)
		p.failed(f)
	}
}

// failed handles an error frame; p.mu is held.
func (p *Person) failed(f *Frame) {
	switch {
	case strings.HasPrefix(f.Ref, "t:"):
		if f.Code == protocol.CodeUnknownOp {
			p.l.TypingOff.Store(true)
		}
	case strings.HasPrefix(f.Ref, "j:"):
		m := p.rooms[f.Room]
		switch {
		case m == nil:
		case f.Code == protocol.CodeUnavailable:
			m.rejoinAt = time.Now().Add(300 * time.Millisecond)
		default: // not_found, forbidden: give up on the room
			delete(p.rooms, f.Room)
			p.dropPending(f.Room)
		}
	case p.pending[f.Ref] != nil:
		o := p.pending[f.Ref]
		switch f.Code {
		case protocol.CodeRateLimited:
			o.written, o.retryAt = false, time.Now().Add(time.Second)
		case protocol.CodeUnavailable, protocol.CodeNotJoined:
			o.written, o.retryAt = false, time.Now().Add(300*time.Millisecond)
		default: // refused for good
			delete(p.pending, f.Ref)
		}
	case f.Ref == "" && f.Room != "":
		m := p.rooms[f.Room]
		if m == nil {
			return
		}
		if f.Code == protocol.CodeUnavailable {
			m.joined, m.rejoinAt = false, time.Now() // join again from the cursor (retry)
			return
		}
		delete(p.rooms, f.Room)
		p.dropPending(f.Room)
	}
}

func (p *Person) dropPending(room string) {
	for id, o := range p.pending {
		if o.room == room {
			delete(p.pending, id)
		}
	}
}

// flush writes the sends of room waiting for it to be joined; p.mu is held.
func (p *Person) flush(c *Client, room string) {
	now := time.Now()
	for _, o := range p.pending {
		if o.room == room && !o.written && !now.Before(o.retryAt) {
			if !p.pace.Allow() {
				return // the next retry goes on
			}
			o.written = true
			if o.tries++; o.tries > 1 {
				p.l.retry(o.id)
			}
			_ = c.Send(o.room, o.id, o.text)
		}
	}
}

// retry joins rooms that were not joined and writes sends due again.
func (p *Person) retry(c *Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c != c {
		return
	}
	for room, m := range p.rooms {
		if m.joined {
			p.flush(c, room)
			continue
		}
		if !m.leaving && !time.Now().Before(m.rejoinAt) {
			p.join(c, room, m)
		}
	}
}

// Join makes the person a member of room from now on; it reports false
// when the person is in the room or still leaving it.
func (p *Person) Join(room string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rooms[room] != nil {
		return false
	}
	m := &membership{}
	p.rooms[room] = m
	if p.c != nil {
		p.join(p.c, room, m)
	}
	return true
}

// Leave leaves room, unless a send to it awaits its ack; it reports
// whether it did.
func (p *Person) Leave(room string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.rooms[room]
	if m == nil || !m.joined || m.leaving {
		return false
	}
	for _, o := range p.pending {
		if o.room == room {
			return false
		}
	}
	m.leaving = true
	p.refs++
	_ = p.c.Leave("l:"+strconv.Itoa(p.refs), room)
	return true
}

// Rooms returns the rooms the person is joined to now.
func (p *Person) Rooms() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var rs []string
	for r, m := range p.rooms {
		if m.joined && !m.leaving {
			rs = append(rs, r)
		}
	}
	return rs
}

// Send sends text to room, a room the person joined; it returns the id,
// and false if the person is not a member. The send is retried until
// acknowledged.
func (p *Person) Send(room, text string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.rooms[room]
	if m == nil || m.leaving {
		return "", false
	}
	id := p.l.NewID(p.Name)
	o := &outgoing{room: room, id: id, text: text}
	p.pending[id] = o
	p.l.Sent.Add(1)
	if m.joined && p.c != nil && p.pace.Allow() {
		o.written, o.tries = true, 1
		_ = p.c.Send(room, id, text)
	}
	return id, true
}

// Typing says the person is typing in room, unless the gateway does not
// know the command.
func (p *Person) Typing(room string) {
	if p.l.TypingOff.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.rooms[room]; m == nil || !m.joined || p.c == nil {
		return
	}
	p.refs++
	p.l.TypingSent.Add(1)
	_ = p.c.Typing("t:"+strconv.Itoa(p.refs), room)
}

// Pending returns how many sends await their ack.
func (p *Person) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// Connected reports whether the person holds a connection.
func (p *Person) Connected() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c != nil
}

// Cursor returns the person's latest cursor of room.
func (p *Person) Cursor(room string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.rooms[room]; m != nil {
		return m.cursor
	}
	return ""
}

// String names the person and its state, for failure messages.
func (p *Person) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("%s (connected %v, %d rooms, %d sends pending)", p.Name, p.c != nil, len(p.rooms), len(p.pending))
}
