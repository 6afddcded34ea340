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
	"palaver.dev/services/internal/protocol"
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
	// Quiet does not report other users joining and leaving on Err.
	Quiet bool

	In  io.Reader // lines to send
	Out io.Writer // the room's messages
	Err io.Writer // connection state, errors, acks with Verbose
	// Editor, when set, reads the lines typed at a terminal instead of In:
	// the chat is interactive. Out and Err should write through it.
	Editor *Editor

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
// In ends (then it waits for the pending ack, and for the history asked for
// to be printed, and returns) or ctx is done. On a disconnect it reconnects
// with backoff and rejoins with the room's cursor, so no message is missed
// or printed twice; a send in flight is sent again with the same id, which
// the server stores only once.
func Chat(ctx context.Context, o ChatOptions) error {
	if err := validateRoom(o.Room); err != nil {
		return err
	}
	if err := o.Conn.resolve(); err != nil {
		return err
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
		return o.Conn.explainLogin(ctx, err)
	}
	var src lineReader = scanner{bufio.NewScanner(o.In)}
	if o.Editor != nil {
		src = o.Editor
	}
	s := &chat{o: o, token: token, lines: readLines(src), errw: &lockedWriter{w: o.Err}, progress: make(chan struct{}, 1)}
	if !o.Quiet {
		s.notices = &presenceNotices{room: o.Room, say: s.say}
	}
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

	// With --last or --from-beginning, an end of stdin waits until the
	// history asked for was printed: everything up to goal, the room's end
	// when it was joined. printed is the position of what was printed,
	// from the start of each join on.
	mu       sync.Mutex
	printed  cursor.Cursor
	goal     cursor.Cursor
	planned  bool             // goal was read
	progress chan struct{}    // a message was printed
	presence bool             // the gateway sent presence on this connection
	notices  *presenceNotices // others joining and leaving, printed; nil with Quiet
}

type outgoing struct {
	id, text string
}

type lineOrErr struct {
	line string
	err  error
}

// lineReader is where lines to send come from: stdin, or the line editor.
type lineReader interface {
	ReadLine() (string, error)
}

// scanner reads lines from a pipe or a file.
type scanner struct{ sc *bufio.Scanner }

func (s scanner) ReadLine() (string, error) {
	if s.sc.Scan() {
		return s.sc.Text(), nil
	}
	if err := s.sc.Err(); err != nil {
		return "", fmt.Errorf("read stdin: %w", err)
	}
	return "", io.EOF
}

// readLines reads lines on their own goroutine, so a disconnect can be
// noticed while waiting for the user to type. The channel closes at the
// end of input.
func readLines(in lineReader) <-chan lineOrErr {
	if s, ok := in.(scanner); ok {
		s.sc.Buffer(make([]byte, 64<<10), 1<<20)
	}
	ch := make(chan lineOrErr)
	go func() {
		defer close(ch)
		for {
			line, err := in.ReadLine()
			switch {
			case errors.Is(err, io.EOF):
				return
			case err != nil:
				ch <- lineOrErr{err: err}
				return
			}
			ch <- lineOrErr{line: line}
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
		c, err := s.connect(ctx, !connected)
		if err == nil {
			failures, relogged, connected = 0, false, true
			err = s.session(ctx, c)
			if err == nil { // stdin ended, everything was acked and printed
				if s.failed > 0 {
					return fmt.Errorf("%d line(s) not sent: %w", s.failed, errNotSent)
				}
				return nil
			}
		}
		if ctx.Err() != nil || errors.Is(err, errInterrupted) {
			return nil // interrupted: nothing more to say
		}
		if !connected {
			// A wrong URL, a gateway not running, a room that does not
			// exist: say so now.
			return s.o.Conn.explainJoin(ctx, err, s.token, s.o.Room)
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
func (s *chat) connect(ctx context.Context, first bool) (*chatclient.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	s.mu.Lock()
	s.presence = false
	s.mu.Unlock()
	c, err := chatclient.Dial(dctx, s.o.Conn.URL, s.token, &chatclient.Options{OnPresence: func(p chatclient.Presence) {
		if p.Room == s.o.Room {
			s.mu.Lock()
			s.presence = true
			s.mu.Unlock()
		}
		s.notices.notice(p)
	}})
	if err != nil {
		return nil, err
	}
	s.notices.connected(c)
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
	if err := s.planHistory(dctx, c, j); err != nil {
		c.Close()
		return nil, err
	}
	me := c.Welcome().User.Name
	if me == "" {
		me = c.Welcome().User.ID
	}
	if j.Reset {
		s.say("%s was reset (its topic was created again, or its broker wiped): it goes on from its oldest message", s.o.Room)
	}
	switch {
	case s.cursor != "":
		s.say("reconnected to %s as %s (recovering: %t)", s.o.Room, me, j.Recovering)
	case first && s.o.Editor != nil:
		s.say("you are %s in %s at %s; /help lists the commands", clean(me), s.o.Room, s.o.Conn.URL)
	case first:
		s.say("you are %s in %s at %s", clean(me), s.o.Room, s.o.Conn.URL)
	}
	return c, nil
}

// planHistory records where the join starts and, while the history asked
// for (--last, --from-beginning) is not all printed, the room's end now:
// an end of stdin waits until that was printed. A later join plans again,
// since the room may have been emptied or re-created meanwhile.
func (s *chat) planHistory(ctx context.Context, c *chatclient.Client, j chatclient.Joined) error {
	start, _ := cursor.Parse(j.Cursor)
	s.mu.Lock()
	if j.Reset {
		// Positions start over in the room as it is now.
		s.printed, s.planned = cursor.Cursor{}, false
	}
	for _, p := range start.Partitions() {
		if next, _ := start.Next(p); next > 0 {
			s.printed.Advance(p, next-1)
		}
	}
	done := s.planned && s.caughtUpLocked()
	s.mu.Unlock()
	if (s.o.Last == 0 && !s.o.FromBeginning) || done {
		return nil
	}
	// The newest message's cursor is the room's end in every partition.
	page, err := c.API().History(ctx, s.o.Room, "", 1)
	if err != nil {
		return err
	}
	var goal cursor.Cursor
	if n := len(page.Messages); n > 0 {
		if goal, err = cursor.Parse(page.Messages[n-1].Cursor); err != nil {
			return fmt.Errorf("the newest message of %s: %w", s.o.Room, err)
		}
	}
	s.mu.Lock()
	s.goal, s.planned = goal, true
	s.mu.Unlock()
	return nil
}

// caughtUpLocked reports whether everything up to the goal was printed.
// s.mu is held.
func (s *chat) caughtUpLocked() bool {
	for _, p := range s.goal.Partitions() {
		if next, _ := s.goal.Next(p); next > 0 && !s.printed.Covers(p, next-1) {
			return false
		}
	}
	return true
}

func (s *chat) caughtUp() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caughtUpLocked()
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
			s.mu.Lock()
			s.printed.Advance(m.Partition, m.Offset)
			s.mu.Unlock()
			select {
			case s.progress <- struct{}{}:
			default:
			}
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
			lines := s.lines
			var progress <-chan struct{}
			if s.eof {
				// Stdin ended: print the history asked for, then stop.
				if s.caughtUp() {
					return nil
				}
				lines, progress = nil, s.progress
			}
			select {
			case <-progress:
				continue
			case l, ok := <-lines:
				switch {
				case !ok:
					s.eof = true
					continue
				case l.err != nil:
					return l.err
				case strings.TrimSpace(l.line) == "":
					continue
				}
				text, isCommand := s.command(c, l.line)
				if isCommand {
					continue
				}
				if max := limits.MaxTextBytes; max > 0 && len(text) > max {
					s.failed++
					s.say("not sent: the line is %d bytes, the limit is %d", len(text), max)
					continue
				}
				s.out = &outgoing{id: newID(), text: text}
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
		case (code == protocol.CodeUnavailable || code == protocol.CodeRateLimited) && retries >= maxSendRetries:
			s.failed++
			s.say("not sent after %d tries (it may or may not be stored): %v", retries+1, err)
			s.out = nil
		case code == protocol.CodeUnavailable || code == protocol.CodeRateLimited:
			wait := backoff(s.o.MinBackoff, s.o.MaxBackoff, retries)
			retries++
			if code == protocol.CodeUnavailable || s.o.Verbose {
				s.say("send: %s; retrying in %s with the same id", code, wait.Round(time.Millisecond))
			}
			select {
			case <-time.After(wait):
			case <-c.Done():
				return c.Err()
			case <-ctx.Done():
				return ctx.Err()
			}
		case code == protocol.CodeTooLarge || code == protocol.CodeInvalidUTF8 || code == protocol.CodeBadRequest:
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

// helpText is what /help prints.
const helpText = `commands (never sent to the room):
  /help   this list
  /who    who is in the room, as the gateway last said
  /quit   leave (also Ctrl-D on an empty line; Ctrl-C leaves at once)
  //text  sends "/text"`

// command handles a line that is a command and reports true; otherwise it
// returns the text to send. /help, /who and /quit are commands wherever the
// lines come from; at a terminal every line starting with "/" is one, and
// "//" sends a line starting with "/".
func (s *chat) command(c *chatclient.Client, line string) (string, bool) {
	trimmed := strings.TrimSpace(line)
	if !strings.HasPrefix(trimmed, "/") {
		return line, false
	}
	interactive := s.o.Editor != nil
	if strings.HasPrefix(trimmed, "//") {
		if interactive {
			return strings.TrimPrefix(strings.TrimLeft(line, " \t"), "/"), false
		}
		return line, false
	}
	word, _, _ := strings.Cut(trimmed, " ")
	switch strings.ToLower(word) {
	case "/help":
		fmt.Fprintln(s.errw, helpText)
	case "/quit", "/exit":
		s.eof = true
	case "/who":
		s.mu.Lock()
		known := s.presence
		s.mu.Unlock()
		if !known {
			s.say("who is in %s is not known: the gateway has sent no presence for it", s.o.Room)
			break
		}
		var names []string
		for _, u := range c.Presence(s.o.Room) {
			name := u.Name
			if name == "" {
				name = u.ID
			}
			names = append(names, clean(name))
		}
		s.say("in %s: %s", s.o.Room, strings.Join(names, ", "))
	default:
		if !interactive {
			return line, false
		}
		s.say("unknown command %s: /help lists them (start the line with // to send it)", clean(word))
	}
	return "", true
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
	case protocol.CodeNotFound, protocol.CodeForbidden, protocol.CodeUnauthorized,
		protocol.CodeBadRequest, protocol.CodeUnsupportedVersion:
		return false
	case "":
	default:
		return true // unavailable, rate_limited, internal...
	}
	switch chatclient.CloseCode(err) {
	case protocol.CloseUnauthorized, protocol.CloseBadFrame, protocol.CloseTooBig:
		return false
	}
	var ue *UsageError
	return !errors.As(err, &ue)
}

func isAuthFailure(err error) bool {
	return chatclient.Code(err) == protocol.CodeUnauthorized || chatclient.CloseCode(err) == protocol.CloseUnauthorized
}

// describe says why a connection ended, for the reconnect notice.
func describe(err error) string {
	var ce *chatclient.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case protocol.CloseGoingAway:
			return "the gateway is going away"
		case protocol.CloseSlowConsumer:
			return "disconnected as a slow consumer"
		case protocol.CloseRateLimited:
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
