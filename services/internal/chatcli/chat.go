package chatcli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"
	"unicode"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/message"
)

// maxSendRetries bounds the retries of one line answered unavailable or
// rate_limited (about two minutes with the default backoff).
const maxSendRetries = 8

// MaxLast is the most messages a join may ask for (docs/protocol.md).
const MaxLast = 500

// ChatOptions configure Chat.
type ChatOptions struct {
	Conn Conn
	Room string
	// Last asks for the latest Last messages before live ones.
	Last int
	// FromBeginning prints the room's whole stored history first.
	FromBeginning bool
	// Verbose reports acks (partition/offset) and retries on Err.
	Verbose bool

	In  io.Reader // lines to send
	Out io.Writer // the room's messages
	Err io.Writer // connection state, errors, acks with Verbose

	// Location formats message times; nil is time.Local.
	Location *time.Location
	// MinBackoff and MaxBackoff bound the wait between reconnects; zero
	// means 500 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
}

// beginning is the cursor of no position at all, which resumes a room from
// its oldest retained message.
var beginning = cursor.Cursor{}.String()

// errNotSent is returned when some lines could not be sent at all.
var errNotSent = errors.New("some messages were not sent")

// Chat joins a room, prints its messages and sends each line of In, until
// In ends (then it waits for the pending ack and returns) or ctx is done.
// On a disconnect it reconnects with backoff and rejoins with the room's
// cursor, so no message is missed or printed twice; a send in flight is
// sent again with the same id, which the server stores only once.
func Chat(ctx context.Context, o ChatOptions) error {
	if err := message.ValidateRoom(o.Room); err != nil {
		return &UsageError{fmt.Sprintf("--room: %v", err)}
	}
	if o.Last < 0 || o.Last > MaxLast {
		return &UsageError{fmt.Sprintf("--last must be 0 to %d", MaxLast)}
	}
	if o.FromBeginning && o.Last > 0 {
		return &UsageError{"give either --from-beginning or --last, not both"}
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	token, err := o.Conn.Token(ctx)
	if err != nil {
		return reachable(err, o.Conn.URL)
	}
	s := &chat{o: o, token: token, lines: readLines(o.In), errw: &lockedWriter{w: o.Err}}
	return s.run(ctx)
}

type chat struct {
	o      ChatOptions
	token  string
	lines  <-chan lineOrErr
	errw   *lockedWriter
	cursor string    // the room's latest cursor, carried across connections
	out    *outgoing // the line being sent, kept until acked
	eof    bool
	failed int // lines the server refused for good
}

type outgoing struct {
	id, text string
}

type lineOrErr struct {
	line string
	err  error
}

// readLines reads In on its own goroutine, so a disconnect can be noticed
// while waiting for the user to type.
func readLines(in io.Reader) <-chan lineOrErr {
	ch := make(chan lineOrErr)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			ch <- lineOrErr{line: sc.Text()}
		}
		if err := sc.Err(); err != nil {
			ch <- lineOrErr{err: fmt.Errorf("read stdin: %w", err)}
		}
	}()
	return ch
}

func (s *chat) say(format string, args ...any) {
	fmt.Fprintf(s.errw, "palaver: "+format+"\n", args...)
}

func (s *chat) run(ctx context.Context) error {
	failures := 0      // consecutive failed connection attempts
	relogged := false  // a dev login was renewed since the last good join
	connected := false // the first connection worked: from then on, reconnect
	for {
		c, err := s.connect(ctx)
		if err == nil {
			failures, relogged, connected = 0, false, true
			err = s.session(ctx, c)
			if err == nil { // stdin ended and everything was acked
				if s.failed > 0 {
					return fmt.Errorf("%d line(s) not sent: %w", s.failed, errNotSent)
				}
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil // interrupted: nothing more to say
		}
		if !connected {
			// A wrong URL or a gateway not running: say so now.
			return reachable(err, s.o.Conn.URL)
		}
		switch {
		case isAuthFailure(err) && s.o.Conn.devLogin() && !relogged:
			// Dev tokens are short-lived and die with the dev gateway: log in again.
			relogged = true
			s.say("token refused (%v); logging in again as %q", err, s.o.Conn.Name)
			tok, lerr := chatclient.DevLogin(ctx, s.o.Conn.URL, s.o.Conn.Name)
			if lerr == nil {
				s.token = tok
				continue
			}
			err = lerr
			if !retryable(lerr) {
				return lerr
			}
		case !retryable(err):
			return err
		}
		wait := backoff(s.o.MinBackoff, s.o.MaxBackoff, failures)
		failures++
		s.say("%s; reconnecting in %s", describe(err), wait.Round(time.Millisecond))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
	}
}

// connect dials and joins the room, resuming from the cursor if there is one.
func (s *chat) connect(ctx context.Context) (*chatclient.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := chatclient.Dial(dctx, s.o.Conn.URL, s.token, nil)
	if err != nil {
		return nil, err
	}
	from, last := s.cursor, s.o.Last
	switch {
	case from != "":
		last = 0
	case s.o.FromBeginning:
		// A cursor with no position: every partition is read from its
		// oldest retained message.
		from, last = beginning, 0
	}
	j, err := c.Join(dctx, s.o.Room, from, last)
	if err != nil {
		c.Close()
		return nil, err
	}
	if s.cursor != "" {
		s.say("reconnected to %s as %s (recovering: %t)", s.o.Room, c.Welcome().User.Name, j.Recovering)
	} else if s.o.Verbose {
		s.say("joined %s as %s", s.o.Room, c.Welcome().User.Name)
	}
	return c, nil
}

// session runs one connection: prints its messages and sends lines. It
// returns nil when stdin ended and the last line was acked.
func (s *chat) session(ctx context.Context, c *chatclient.Client) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m := range c.Messages() {
			s.print(m)
		}
	}()
	err := s.sendLoop(ctx, c)
	c.Close()
	wg.Wait() // every message received was printed: the cursor is final
	if cur := c.Cursor(s.o.Room); cur != "" {
		s.cursor = cur
	}
	return err
}

func (s *chat) sendLoop(ctx context.Context, c *chatclient.Client) error {
	limits := c.Welcome().Limits
	pace := newPacer(limits.SendsPerSecond, limits.SendBurst)
	retries := 0
	for {
		if s.out == nil {
			if s.eof {
				return nil
			}
			select {
			case l, ok := <-s.lines:
				switch {
				case !ok:
					s.eof = true
					continue
				case l.err != nil:
					return l.err
				case strings.TrimSpace(l.line) == "":
					continue
				}
				if max := limits.MaxTextBytes; max > 0 && len(l.line) > max {
					s.failed++
					s.say("not sent: the line is %d bytes, the limit is %d", len(l.line), max)
					continue
				}
				s.out = &outgoing{id: newID(), text: l.line}
				retries = 0
			case e := <-c.Ended():
				if e.Room == s.o.Room {
					return e // not_found (deleted) ends the chat; unavailable rejoins from the cursor
				}
			case <-c.Done():
				return c.Err()
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := pace.wait(ctx); err != nil {
			return err
		}
		ack, err := c.Send(ctx, s.o.Room, s.out.id, s.out.text)
		switch code := chatclient.Code(err); {
		case err == nil:
			if s.o.Verbose {
				dup := ""
				if ack.Duplicate {
					dup = " (duplicate)"
				}
				s.say("ack %s partition %d offset %d%s", ack.ID, ack.Partition, ack.Offset, dup)
			}
			s.out = nil
		case (code == chatclient.CodeUnavailable || code == chatclient.CodeRateLimited) && retries >= maxSendRetries:
			s.failed++
			s.say("not sent after %d tries (it may or may not be stored): %v", retries+1, err)
			s.out = nil
		case code == chatclient.CodeUnavailable || code == chatclient.CodeRateLimited:
			wait := backoff(s.o.MinBackoff, s.o.MaxBackoff, retries)
			retries++
			if code == chatclient.CodeUnavailable || s.o.Verbose {
				s.say("send: %s; retrying in %s with the same id", code, wait.Round(time.Millisecond))
			}
			select {
			case <-time.After(wait):
			case <-c.Done():
				return c.Err()
			case <-ctx.Done():
				return ctx.Err()
			}
		case code == chatclient.CodeTooLarge || code == chatclient.CodeInvalidUTF8 || code == chatclient.CodeBadRequest:
			s.failed++
			s.say("not sent: %v", err)
			s.out = nil
		case code != "":
			return err // not_found, forbidden, unauthorized, not_joined...: end this session
		default:
			return err // the connection ended (or ctx): resend after reconnecting
		}
	}
}

func (s *chat) print(m chatclient.Message) {
	t := m.Time.In(s.o.Location)
	ts := t.Format("15:04:05")
	if y, mo, d := time.Now().In(s.o.Location).Date(); t.Year() != y || t.Month() != mo || t.Day() != d {
		ts = t.Format("2006-01-02 15:04:05")
	}
	name := m.Sender.Name
	if name == "" {
		name = m.Sender.ID
	}
	fmt.Fprintf(s.o.Out, "%s <%s> %s\n", ts, clean(name), cleanText(m.Text))
}

// clean makes user text safe for a terminal: control characters (escape
// sequences could rewrite the screen) are shown escaped, not obeyed.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return '\uFFFD'
		}
		return r
	}, s)
}

// cleanText is clean, but keeps line breaks as indented continuation lines.
func cleanText(s string) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	for i, l := range lines {
		lines[i] = clean(l)
	}
	return strings.Join(lines, "\n    ")
}

// newID makes a client message id: random, so ids never repeat.
func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return "c-" + hex.EncodeToString(b)
}

// retryable reports whether a failed connection or join is worth another try.
func retryable(err error) bool {
	switch chatclient.Code(err) {
	case chatclient.CodeNotFound, chatclient.CodeForbidden, chatclient.CodeUnauthorized,
		chatclient.CodeBadRequest, chatclient.CodeUnsupportedVersion:
		return false
	case "":
	default:
		return true // unavailable, rate_limited, internal...
	}
	switch chatclient.CloseCode(err) {
	case chatclient.CloseUnauthorized, chatclient.CloseBadFrame, chatclient.CloseTooBig:
		return false
	}
	var ue *UsageError
	return !errors.As(err, &ue)
}

func isAuthFailure(err error) bool {
	return chatclient.Code(err) == chatclient.CodeUnauthorized || chatclient.CloseCode(err) == chatclient.CloseUnauthorized
}

// describe says why a connection ended, for the reconnect notice.
func describe(err error) string {
	var ce *chatclient.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case chatclient.CloseGoingAway:
			return "the gateway is going away"
		case chatclient.CloseSlowConsumer:
			return "disconnected as a slow consumer"
		case chatclient.CloseRateLimited:
			return "disconnected for flooding"
		}
		return fmt.Sprintf("disconnected (close %d %s)", ce.Code, ce.Reason)
	}
	if reason, ok := unreachable(err); ok {
		return "cannot reach the gateway: " + reason
	}
	return "disconnected: " + err.Error()
}

// reachable rewrites a failure to reach the gateway at all into a short
// message that says what to check; other errors pass unchanged.
func reachable(err error, url string) error {
	if reason, ok := unreachable(err); ok {
		return fmt.Errorf("cannot reach the gateway at %s: %s (is it running? `make dev` starts one)", url, reason)
	}
	return err
}

// unreachable reports whether err is a failure to reach the gateway at all,
// and its innermost reason ("connection refused").
func unreachable(err error) (string, bool) {
	var op *net.OpError
	if !errors.As(err, &op) {
		return "", false
	}
	inner := error(op)
	for u := errors.Unwrap(inner); u != nil; u = errors.Unwrap(inner) {
		inner = u
	}
	return inner.Error(), true
}

// backoff is exponential from lo, capped at hi, with up to 25% jitter.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := lo
	for range min(attempt, 30) {
		d *= 2
		if d >= hi {
			d = hi
			break
		}
	}
	return d - time.Duration(mrand.Int64N(int64(d)/4+1))
}

// pacer keeps sends under the server's rate so a pasted file is not refused.
type pacer struct {
	every  time.Duration
	burst  int
	tokens float64
	last   time.Time
}

func newPacer(perSecond float64, burst int) *pacer {
	if perSecond <= 0 {
		return &pacer{}
	}
	burst = max(burst, 1)
	return &pacer{every: time.Duration(float64(time.Second) / perSecond), burst: burst, tokens: float64(burst), last: time.Now()}
}

func (p *pacer) wait(ctx context.Context) error {
	if p.every == 0 {
		return nil
	}
	now := time.Now()
	p.tokens = min(float64(p.burst), p.tokens+float64(now.Sub(p.last))/float64(p.every))
	p.last = now
	if p.tokens < 1 {
		d := time.Duration((1 - p.tokens) * float64(p.every))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
		p.tokens, p.last = 1, time.Now()
	}
	p.tokens--
	return nil
}

// lockedWriter serializes writes from the printing and sending goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
