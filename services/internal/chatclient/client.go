package chatclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/protocol"
)

// Defaults of Options.
const (
	DefaultMessageBuffer = 256
	DefaultHelloTimeout  = 10 * time.Second
	writeTimeout         = 10 * time.Second
	readLimit            = 1 << 20
	endedBuffer          = 16 // unread Ended notices kept
)

// Options tune Dial. The zero value is ready to use.
type Options struct {
	// HTTPClient makes the upgrade request; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Header is added to the upgrade request (e.g. Origin).
	Header http.Header
	// Versions lists the protocol versions offered in hello; default [1].
	Versions []int
	// MessageBuffer is the capacity of the Messages channel; default 256.
	MessageBuffer int
	// HelloTimeout bounds the wait for welcome; default 10 s.
	HelloTimeout time.Duration
	// OnPresence, if set, is called from the reading goroutine with every
	// presence frame. It must not block.
	OnPresence func(Presence)
	// Logger logs frames the client ignores; nil discards.
	Logger *slog.Logger
}

// Client is one WebSocket session with a gateway. Its methods are safe for
// concurrent use. Messages of every joined room arrive on Messages; the
// client remembers the latest cursor of each room (Cursor), to be passed to
// Join on a new Client after a disconnect.
type Client struct {
	conn    *websocket.Conn
	api     API
	welcome Welcome
	log     *slog.Logger
	onPres  func(Presence)

	refs atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan protocol.ServerFrame
	rooms   map[string]*roomState
	err     error

	msgs      chan Message
	ended     chan *Error
	done      chan struct{}
	closing   chan struct{}
	closeOnce sync.Once
}

type roomState struct {
	cursor   string        // latest cursor the server gave for the room
	seen     cursor.Cursor // what was delivered, to drop a message delivered twice
	presence []User
}

// Dial connects to the gateway at baseURL (http://host:port or https://...),
// authenticates with token (sent both as Authorization: Bearer on the upgrade
// and in hello) and negotiates the protocol version. The context bounds the
// dial and the handshake only.
func Dial(ctx context.Context, baseURL, token string, opts *Options) (*Client, error) {
	if opts == nil {
		opts = &Options{}
	}
	wsURL, err := websocketURL(baseURL)
	if err != nil {
		return nil, err
	}
	hdr := opts.Header.Clone()
	if hdr == nil {
		hdr = http.Header{}
	}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: opts.HTTPClient, HTTPHeader: hdr})
	if resp != nil && resp.Body != nil { // only set on a failed upgrade
		defer resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(resp.Body)
			}
			return nil, fmt.Errorf("connect to %s: %w", wsURL, httpError(resp.StatusCode, body))
		}
		return nil, fmt.Errorf("connect to %s: %w", wsURL, err)
	}
	conn.SetReadLimit(readLimit)

	c := &Client{
		conn:    conn,
		api:     API{BaseURL: baseURL, Token: token, HTTPClient: opts.HTTPClient},
		log:     opts.Logger,
		onPres:  opts.OnPresence,
		pending: make(map[string]chan protocol.ServerFrame),
		rooms:   make(map[string]*roomState),
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	n := opts.MessageBuffer
	if n <= 0 {
		n = DefaultMessageBuffer
	}
	c.msgs = make(chan Message, n)
	c.ended = make(chan *Error, endedBuffer)

	if err := c.hello(ctx, token, opts); err != nil {
		_ = conn.CloseNow()
		return nil, err
	}
	go c.read()
	return c, nil
}

func websocketURL(baseURL string) (string, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return "", fmt.Errorf("gateway URL %q: %w", baseURL, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("gateway URL %q: want http:// or https://", baseURL)
	}
	if u.Host == "" {
		return "", fmt.Errorf("gateway URL %q: no host", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/v1/ws"
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

func (c *Client) hello(ctx context.Context, token string, opts *Options) error {
	timeout := opts.HelloTimeout
	if timeout <= 0 {
		timeout = DefaultHelloTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	versions := opts.Versions
	if len(versions) == 0 {
		versions = []int{protocol.Version}
	}
	const ref = "hello"
	if err := c.write(ctx, protocol.Command{Op: protocol.OpHello, Ref: ref, Versions: versions, Token: token}); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	for {
		_, b, err := c.conn.Read(ctx)
		if err != nil {
			return fmt.Errorf("hello: %w", connError(err))
		}
		f, err := decodeFrame(b)
		if err != nil || f.Ref != ref {
			continue // not the answer to hello; nothing else is expected yet
		}
		switch f.Op {
		case protocol.OpWelcome:
			c.welcome = Welcome{Version: f.Version, User: f.User, Limits: f.Limits}
			return nil
		case protocol.OpError:
			return fmt.Errorf("hello: %w", errorOf(&f))
		default:
			return fmt.Errorf("hello: unexpected answer %q", f.Op)
		}
	}
}

// Welcome returns the server's welcome: the negotiated version, who the
// token names, and the server's limits.
func (c *Client) Welcome() Welcome { return c.welcome }

// API returns the HTTP API of the same gateway with the same token.
func (c *Client) API() *API { a := c.api; return &a }

// Rooms lists the rooms the caller may join (GET /v1/rooms).
func (c *Client) Rooms(ctx context.Context) ([]Room, error) { return c.api.Rooms(ctx) }

// Messages delivers the messages of every joined room, in the order the
// server sent them, without a message the client already delivered. The
// channel is bounded: while it is full the client stops reading the
// connection, and a server whose queue for the client overflows closes it
// with protocol.CloseSlowConsumer. It is closed when the connection ends, after the
// messages already received; then Err tells why.
func (c *Client) Messages() <-chan Message { return c.msgs }

// Ended receives an *Error (with Room set) each time the server ends a
// membership by itself: not_found when the room was deleted, forbidden
// when a refreshed token no longer allows it (the client is no longer a
// member of either), unavailable when the room's missed messages could
// not be read (join again with Cursor). Notices beyond endedBuffer unread
// ones are dropped.
func (c *Client) Ended() <-chan *Error { return c.ended }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is open; then why it ended: a
// *CloseError with the server's close code, ErrClosed after Close, or the
// network error.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Cursor returns the latest cursor of room: of the last message delivered
// on Messages, or of the join if none was. It is "" for a room never joined.
// A message counts as delivered once it is in the Messages channel.
func (c *Client) Cursor(room string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.rooms[room]; r != nil {
		return r.cursor
	}
	return ""
}

// applyPresence applies a change to a list of users, as sets.
func applyPresence(users, joined, left []User) []User {
	out := make([]User, 0, len(users)+len(joined))
	gone := make(map[string]bool, len(left)+len(joined))
	for _, u := range left {
		gone[u.ID] = true
	}
	for _, u := range joined {
		gone[u.ID] = true // replaced below, once
	}
	for _, u := range users {
		if !gone[u.ID] {
			out = append(out, u)
		}
	}
	return append(out, joined...)
}

// Typing tells the room's members that the user is typing (the typing
// command); the server answers typed.
func (c *Client) Typing(ctx context.Context, room string) error {
	if _, err := c.call(ctx, protocol.Command{Op: protocol.OpTyping, Room: room}, protocol.OpTyped); err != nil {
		return fmt.Errorf("typing in %s: %w", room, err)
	}
	return nil
}

// Presence returns who was in room according to the presence frames:
// the latest snapshot with the changes since applied.
func (c *Client) Presence(room string) []User {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.rooms[room]; r != nil {
		return append([]User(nil), r.presence...)
	}
	return nil
}

// Join subscribes to room. With a cursor (from Cursor or a Message), the
// server first delivers every message stored after it; otherwise delivery
// starts with the next message, preceded by the latest last ones if last > 0.
func (c *Client) Join(ctx context.Context, room, cursor string, last int) (Joined, error) {
	f, err := c.call(ctx, protocol.Command{Op: protocol.OpJoin, Room: room, Cursor: cursor, Last: last}, protocol.OpJoined)
	if err != nil {
		return Joined{}, fmt.Errorf("join %q: %w", room, err)
	}
	return Joined{Room: f.Room, Cursor: f.Cursor, Recovering: f.Recovering, Reset: f.Reset}, nil
}

// Leave unsubscribes from room.
func (c *Client) Leave(ctx context.Context, room string) error {
	if _, err := c.call(ctx, protocol.Command{Op: protocol.OpLeave, Room: room}, protocol.OpLeft); err != nil {
		return fmt.Errorf("leave %q: %w", room, err)
	}
	return nil
}

// Send stores text in room under the client message id and returns the ack,
// which the server sends once Kafka stored the message on all in-sync
// replicas. On an unavailable error, or a connection lost before the ack,
// the message may or may not be stored: send again with the same id, which
// is never stored twice.
func (c *Client) Send(ctx context.Context, room, id, text string) (Ack, error) {
	now := time.Now().UTC().Format(protocol.TimeLayout)
	f, err := c.call(ctx, protocol.Command{Op: protocol.OpSend, Room: room, ID: id, Text: text, ClientTime: now}, protocol.OpAck)
	if err != nil {
		return Ack{}, fmt.Errorf("send to %q: %w", room, err)
	}
	return Ack{Room: f.Room, ID: f.ID, Partition: f.Partition, Offset: f.Offset, Time: f.Time.Time, Duplicate: f.Duplicate}, nil
}

// Ping asks the server for a pong.
func (c *Client) Ping(ctx context.Context) error {
	if _, err := c.call(ctx, protocol.Command{Op: protocol.OpPing}, protocol.OpPong); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Close closes the connection normally (1000) and waits for the reading
// goroutine to stop. Messages is closed after it returns.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	err := c.conn.Close(websocket.StatusNormalClosure, "")
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// call sends f with a fresh ref and waits for its one answer.
func (c *Client) call(ctx context.Context, f protocol.Command, want string) (protocol.ServerFrame, error) {
	f.Ref = "r" + strconv.FormatUint(c.refs.Add(1), 10)
	ch := make(chan protocol.ServerFrame, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return protocol.ServerFrame{}, err
	}
	c.pending[f.Ref] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, f.Ref)
		c.mu.Unlock()
	}()

	if err := c.write(ctx, f); err != nil {
		if e := c.Err(); e != nil {
			return protocol.ServerFrame{}, e
		}
		return protocol.ServerFrame{}, err
	}
	var ans protocol.ServerFrame
	select {
	case ans = <-ch:
	case <-c.done:
		select {
		case ans = <-ch: // answered just before the end
		default:
			return protocol.ServerFrame{}, c.Err()
		}
	case <-ctx.Done():
		return protocol.ServerFrame{}, ctx.Err()
	}
	switch ans.Op {
	case want:
		return ans, nil
	case protocol.OpError:
		return protocol.ServerFrame{}, errorOf(&ans)
	}
	return protocol.ServerFrame{}, fmt.Errorf("chatclient: answer %q to %q, want %q", ans.Op, f.Op, want)
}

// write sends one frame. The caller's context only decides whether to start:
// cancelling a write midway would close the connection.
func (c *Client) write(ctx context.Context, f protocol.Command) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := c.conn.Write(wctx, websocket.MessageText, b); err != nil {
		return connError(err)
	}
	return nil
}

// read is the one goroutine reading the connection.
func (c *Client) read() {
	var err error
	defer func() {
		select {
		case <-c.closing:
			err = ErrClosed
		default:
		}
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.msgs)
		close(c.done)
		_ = c.conn.CloseNow()
	}()
	for {
		_, b, rerr := c.conn.Read(context.Background())
		if rerr != nil {
			err = connError(rerr)
			return
		}
		f, derr := decodeFrame(b)
		if derr != nil {
			c.log.Warn("ignoring a frame the client cannot decode", "err", derr)
			continue
		}
		if !c.handle(f) {
			err = ErrClosed
			return
		}
	}
}

// handle processes one server frame; it returns false when Close was called
// while it waited for room on Messages.
func (c *Client) handle(f protocol.ServerFrame) bool {
	switch f.Op {
	case protocol.OpMessage:
		m := messageOf(&f)
		// Positions move before the hand-over, so that Cursor never lags a
		// message the reader already has; a hand-over cut short by Close
		// puts the cursor back, so nothing undelivered is skipped on resume.
		c.mu.Lock()
		r := c.room(m.Room)
		if r.seen.Covers(m.Partition, m.Offset) {
			c.mu.Unlock()
			c.log.Debug("dropping a message delivered before", "room", m.Room, "partition", m.Partition, "offset", m.Offset)
			return true
		}
		prev := r.cursor
		r.seen.Advance(m.Partition, m.Offset)
		if m.Cursor != "" {
			r.cursor = m.Cursor
		}
		c.mu.Unlock()
		select {
		case c.msgs <- m:
			return true
		case <-c.closing:
			c.mu.Lock()
			r.cursor = prev
			c.mu.Unlock()
			return false
		}
	case protocol.OpPresence, protocol.OpPresenceDiff:
		p := Presence{Room: f.Room, Diff: f.Op == protocol.OpPresenceDiff, Count: f.Count, Users: f.Users, Truncated: f.Truncated,
			Joined: f.Joined, Left: f.Left, TypingChanged: f.Typing != nil || f.Op == protocol.OpPresence}
		if f.Typing != nil {
			p.Typing = *f.Typing
		}
		c.mu.Lock()
		r := c.room(p.Room)
		if p.Diff {
			r.presence = applyPresence(r.presence, p.Joined, p.Left)
		} else {
			r.presence = p.Users
		}
		c.mu.Unlock()
		if c.onPres != nil {
			c.onPres(p)
		}
		return true
	case protocol.OpJoined:
		// Recorded here, in order with the messages of the join that follow.
		c.mu.Lock()
		r := c.room(f.Room)
		if f.Reset {
			// The old positions mean nothing in the room as it is now:
			// start over from the join's.
			r.cursor, r.seen = "", cursor.Cursor{}
		}
		if f.Cursor != "" {
			if r.cursor == "" {
				r.cursor = f.Cursor
			}
			if cur, err := cursor.Parse(f.Cursor); err == nil {
				for _, p := range cur.Partitions() {
					if next, _ := cur.Next(p); next > 0 {
						r.seen.Advance(p, next-1)
					}
				}
			}
		}
		c.mu.Unlock()
	}
	if f.Ref == "" {
		switch {
		case f.Op == protocol.OpError && f.Room != "":
			select {
			case c.ended <- errorOf(&f):
			default:
				c.log.Warn("dropping a notice nobody reads", "room", f.Room, "code", f.Code)
			}
		case f.Op == protocol.OpError:
			c.log.Info("server error", "code", f.Code, "message", f.Message)
		default:
			c.log.Debug("ignoring a frame", "op", f.Op)
		}
		return true
	}
	c.mu.Lock()
	ch := c.pending[f.Ref]
	delete(c.pending, f.Ref)
	c.mu.Unlock()
	if ch != nil {
		ch <- f // buffered for exactly this one answer
	}
	return true
}

// room returns the state of room, creating it. c.mu must be held.
func (c *Client) room(name string) *roomState {
	r := c.rooms[name]
	if r == nil {
		r = &roomState{}
		c.rooms[name] = r
	}
	return r
}

// connError turns a close frame into a *CloseError.
func connError(err error) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return &CloseError{Code: int(ce.Code), Reason: ce.Reason}
	}
	return err
}
