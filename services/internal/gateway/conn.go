package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/message"
)

// Per-connection limits that are not worth a flag.
const (
	maxBadFrames  = 10 // errors for bad frames before the connection is closed with 4400
	replyHeadroom = 32 // answers may exceed the queue size by this much
	joinTimeout   = 30 * time.Second
)

// conn is one WebSocket client. Its reader goroutine runs the commands; a
// writer goroutine, started when frames are queued and gone when the queue
// is empty, writes them, so an idle connection costs one goroutine.
type conn struct {
	s           *Server
	ws          *websocket.Conn
	sock        *sockWriter     // under ws: text frames are written here, in batches
	ctx         context.Context // ends when the connection is finished
	cancel      context.CancelFunc
	headerToken string // from the upgrade's Authorization header

	// Owned by the reader goroutine.
	id        auth.Identity
	sends     bucket // the announced send rate
	commands  bucket // every command: 5 times the send rate
	patience  bucket // rate_limited answers a flooder gets before 4429
	badFrames int
	sem       chan struct{} // sends waiting for Kafka

	welcomed   atomic.Bool
	writeSince atomic.Int64   // when the batch being written started (unix ns), 0 when not writing
	timers     [3]*time.Timer // hello deadline, token expiry, ping

	mu       sync.Mutex
	rooms    map[string]*roomSub
	q, spare []outItem
	queued   int  // frames queued and not yet written
	writing  bool // a writer goroutine runs
	closing  bool // no more commands or live messages; answers still queue until final
	final    bool // nothing more is queued: the close frame is next
	abort    bool // closing without flushing (slow consumer): writes stop
	code     websocket.StatusCode
	reason   string
	space    chan struct{} // closed when a queued frame is written, for PushWait
}

// outItem is one queued frame: bytes, or a delivery encoded on write.
type outItem struct {
	frame []byte
	d     *roomhub.Delivery
	rs    *roomSub
	live  bool
}

// serveWS upgrades GET /v1/ws.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "gateway shutting down", http.StatusServiceUnavailable)
		return
	}
	c := &conn{s: s, headerToken: auth.BearerToken(r)}
	opts := s.accept
	opts.OnPongReceived = func(context.Context, []byte) {}
	sb := &smallBuffers{ResponseWriter: w, read: s.cfg.ReadBufferBytes, write: s.cfg.WriteBufferBytes, sndbuf: s.cfg.SocketSendBuffer}
	ws, err := websocket.Accept(sb, r, &opts)
	if err != nil {
		s.log.Debug("gateway: upgrade refused", "err", err, "origin", r.Header.Get("Origin"))
		return
	}
	c.sock = sb.sock
	ws.SetReadLimit(int64(s.cfg.Limits.MaxFrameBytes))
	c.ws = ws
	c.ctx, c.cancel = context.WithCancel(context.Background())
	lim := s.cfg.Limits
	c.sends = newBucket(lim.SendsPerSecond, lim.SendBurst)
	c.commands = newBucket(5*lim.SendsPerSecond, 5*lim.SendBurst)
	c.patience = newBucket(lim.SendsPerSecond/2, 2*lim.SendBurst)
	c.sem = make(chan struct{}, s.cfg.MaxInFlight)
	if !s.addConn(c) {
		_ = ws.Close(closeGoingAway, "gateway shutting down")
		return
	}
	// A fresh goroutine reads, so that the HTTP server's request state (and
	// its grown stack) is released when this handler returns.
	go c.serve()
}

// serve is the reader loop. It only reads: each frame is handled on a
// short-lived goroutine, waited for, so that decoding, token checks and
// joins do not grow the stack this goroutine keeps for the connection's
// whole life.
func (c *conn) serve() {
	defer c.finish()
	c.timers[0] = time.AfterFunc(c.s.cfg.HelloTimeout, func() {
		if !c.welcomed.Load() {
			c.closeWith(closeUnauthorized, "no hello in time", reasonUnauthorized, false)
		}
	})
	for {
		// No context: closing the connection ends the read, and a context
		// with a deadline or cancellation would cost a registration per
		// read for every idle connection.
		typ, b, err := c.ws.Read(context.Background())
		if err != nil {
			c.readFailed(err)
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.frame(typ, b)
		}()
		<-done
	}
}

// frame handles one client frame.
func (c *conn) frame(typ websocket.MessageType, b []byte) {
	if typ != websocket.MessageText {
		c.s.m.RejectedFrames.WithLabelValues(codeBadFrame).Inc()
		c.closeWith(closeBadFrame, "binary frames are not part of the protocol", reasonBadFrame, true)
		return
	}
	if c.isClosing() {
		return // read on only to see the close handshake through
	}
	f, err := DecodeFrame(b)
	if err != nil {
		var fe *FrameError
		errors.As(err, &fe)
		c.badFrame(fe.Ref, fe.Code, fe.Msg)
		return
	}
	if !c.welcomed.Load() && f.Op != opHello {
		c.replyError(f.Ref, codeBadRequest, "the first frame must be hello", "")
		c.closeWith(closeBadFrame, "the first frame must be hello", reasonBadFrame, true)
		return
	}
	c.handle(f)
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// badFrame answers a frame that could not be read and closes the
// connection after too many.
func (c *conn) badFrame(ref, code, msg string) {
	c.replyError(ref, code, msg, "")
	c.badFrames++
	switch {
	case !c.welcomed.Load():
		c.closeWith(closeBadFrame, "the first frame must be hello", reasonBadFrame, true)
	case c.badFrames >= maxBadFrames:
		c.closeWith(closeBadFrame, "too many bad frames", reasonBadFrame, true)
	}
}

func (c *conn) readFailed(err error) {
	switch {
	case errors.Is(err, websocket.ErrMessageTooBig):
		c.s.m.RejectedFrames.WithLabelValues(codeTooLarge).Inc()
		c.markClosed(reasonBadFrame) // coder/websocket closed it with 1009
	default:
		c.markClosed(reasonClient)
	}
}

// handle runs one command; every command gets exactly one answer.
func (c *conn) handle(f Frame) {
	if f.Op != opSend && !c.commands.allow(time.Now()) {
		c.rateLimited(f.Ref, "too many commands", f.Room)
		return
	}
	var err *protoError
	switch f.Op {
	case opHello:
		err = c.hello(f)
	case opJoin:
		err = c.join(f)
	case opLeave:
		err = c.leave(f)
	case opSend:
		err = c.send(f)
	case opPing:
		c.reply(pongFrame{Op: "pong", Ref: f.Ref})
	}
	if err != nil {
		c.replyError(f.Ref, err.code, err.msg, f.Room)
	}
}

func (c *conn) hello(f Frame) *protoError {
	if !slices.Contains(f.Versions, ProtocolVersion) {
		c.s.m.RejectedFrames.WithLabelValues(codeUnsupportedVersion).Inc()
		c.enqueue(outItem{frame: mustJSON(errorFrame{Op: "error", Ref: f.Ref, Code: codeUnsupportedVersion,
			Message: "no common protocol version", Supported: supportedVersions})}, true)
		c.closeWith(closeBadFrame, "no common protocol version", reasonBadFrame, true)
		return nil
	}
	token := f.Token
	if token == "" {
		token = c.headerToken
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	id, err := c.s.verify(ctx, token)
	cancel()
	if err == nil && c.welcomed.Load() && id.UserID != c.id.UserID {
		return fail(codeBadRequest, "a new token must be for the same user")
	}
	if err != nil {
		perr := authError(err)
		c.replyError(f.Ref, perr.code, perr.msg, "")
		c.closeWith(closeUnauthorized, perr.msg, reasonUnauthorized, true)
		return nil
	}
	// A later hello refreshes the token: the session lasts as long as the
	// newest token, and rooms it no longer allows are left.
	c.id = id
	if d := time.Until(id.Expires); c.timers[1] == nil {
		c.timers[1] = time.AfterFunc(d, c.expired)
	} else {
		c.timers[1].Reset(d)
	}
	if !c.welcomed.Swap(true) {
		c.timers[0].Stop()
		c.timers[0] = nil
		c.timers[2] = time.AfterFunc(c.s.cfg.PingInterval, c.ping)
	}
	for _, rs := range c.joined() {
		if !id.MayJoin(rs.name) {
			c.dropRoom(rs)
			c.replyError("", codeForbidden, "your new token does not allow this room", rs.name)
		}
	}
	name := id.Name
	if name == "" {
		name = id.UserID
	}
	c.reply(welcomeFrame{Op: "welcome", Ref: f.Ref, Version: ProtocolVersion, User: user{ID: id.UserID, Name: name}, Limits: c.s.cfg.Limits})
	return nil
}

func (c *conn) expired() {
	c.replyError("", codeUnauthorized, "the token expired", "")
	c.closeWith(closeUnauthorized, "token expired", reasonUnauthorized, true)
}

// ping sends a WebSocket ping; no pong within an interval ends the
// connection.
func (c *conn) ping() {
	ctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.PingInterval)
	err := c.ws.Ping(ctx)
	cancel()
	if err != nil {
		if c.ctx.Err() == nil {
			c.closeWith(websocket.StatusPolicyViolation, "no pong", reasonClient, false)
		}
		return
	}
	c.mu.Lock()
	if !c.closing {
		c.timers[2].Reset(c.s.cfg.PingInterval)
	}
	c.mu.Unlock()
}

func (c *conn) join(f Frame) *protoError {
	info, perr := c.s.authorize(c.id, f.Room)
	if perr != nil {
		return perr
	}
	req := roomhub.JoinRequest{Last: f.Last}
	switch {
	case f.Last < 0 || f.Last > roomhub.MaxLast:
		return fail(codeBadRequest, fmt.Sprintf("last must be between 0 and %d", roomhub.MaxLast))
	case f.Cursor != "" && f.Last > 0:
		return fail(codeBadRequest, "join with a cursor or with last, not both")
	case f.Cursor != "":
		cur, err := cursor.Parse(f.Cursor)
		if err != nil {
			return fail(codeBadRequest, "malformed cursor")
		}
		req.Resume, req.Cursor = true, cur
	}
	c.mu.Lock()
	rs, joined := c.rooms[f.Room]
	n := len(c.rooms)
	c.mu.Unlock()
	if joined {
		c.reply(joinedFrame{Op: "joined", Ref: f.Ref, Room: f.Room, Cursor: rs.sub.Cursor().String()})
		return nil
	}
	if n >= c.s.cfg.MaxRooms {
		return fail(codeBadRequest, fmt.Sprintf("at most %d rooms per connection", c.s.cfg.MaxRooms))
	}
	rs = &roomSub{c: c, name: f.Room, delivered: c.s.m.MessagesDelivered.WithLabelValues(f.Room)}
	ctx, cancel := context.WithTimeout(c.ctx, joinTimeout)
	sub, err := c.s.hub.Join(ctx, info, rs, req)
	cancel()
	if errors.Is(err, roomhub.ErrBadCursor) {
		return fail(codeBadRequest, "the cursor is not a position in this room (another room's, or a partition the room does not have)")
	}
	if err != nil {
		c.s.log.Warn("gateway: join failed", "room", f.Room, "err", err)
		return fail(codeUnavailable, "the room cannot be read now; retry")
	}
	rs.sub = sub
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		sub.Leave()
		return nil
	}
	if c.rooms == nil {
		c.rooms = map[string]*roomSub{}
	}
	c.rooms[f.Room] = rs
	c.mu.Unlock()
	c.s.m.Joins.Inc()
	c.reply(joinedFrame{Op: "joined", Ref: f.Ref, Room: f.Room, Cursor: sub.Cursor().String(), Recovering: sub.Recovering(), Reset: sub.Reset()})
	sub.Start()
	return nil
}

func (c *conn) leave(f Frame) *protoError {
	if perr := validRoom(f.Room); perr != nil {
		return perr
	}
	c.mu.Lock()
	rs := c.rooms[f.Room]
	c.mu.Unlock()
	if rs == nil {
		return fail(codeNotJoined, "not in this room")
	}
	c.dropRoom(rs)
	c.reply(leftFrame{Op: "left", Ref: f.Ref, Room: f.Room})
	return nil
}

func (c *conn) dropRoom(rs *roomSub) {
	c.mu.Lock()
	if c.rooms[rs.name] == rs {
		delete(c.rooms, rs.name)
	}
	c.mu.Unlock()
	rs.sub.Leave()
}

func (c *conn) joined() []*roomSub {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*roomSub, 0, len(c.rooms))
	for _, rs := range c.rooms {
		out = append(out, rs)
	}
	return out
}

func (c *conn) send(f Frame) *protoError {
	if !c.sends.allow(time.Now()) {
		c.rateLimited(f.Ref, fmt.Sprintf("over %g sends per second", c.s.cfg.Limits.SendsPerSecond), f.Room)
		return nil
	}
	if perr := validRoom(f.Room); perr != nil {
		return perr
	}
	c.mu.Lock()
	rs := c.rooms[f.Room]
	c.mu.Unlock()
	if rs == nil {
		return fail(codeNotJoined, "join the room before sending to it")
	}
	env, perr := c.s.envelope(c.id, f.Room, f.ID, f.Text, f.ClientTime)
	if perr != nil {
		return perr
	}
	if c.s.draining.Load() {
		return fail(codeUnavailable, "the gateway is shutting down; send again with the same id after reconnecting")
	}
	info, err := c.s.rooms.Get(f.Room)
	if err != nil {
		return lookupError(err)
	}
	select {
	case c.sem <- struct{}{}:
	case <-c.ctx.Done():
		return nil
	}
	ref := f.Ref
	c.s.prod.submit(info.Topic, env, func(r sendResult) {
		<-c.sem
		if r.err != nil {
			if !errors.Is(r.err, errSendTimeout) {
				c.s.log.Warn("gateway: send failed", "room", env.Room, "err", r.err)
			}
			c.replyError(ref, codeUnavailable, "Kafka did not acknowledge the message; send it again with the same id", env.Room)
			return
		}
		c.reply(ackFrame(ref, env, r))
	})
	return nil
}

func ackFrame(ref string, env *message.Envelope, r sendResult) AckFrame {
	return AckFrame{Op: "ack", Ref: ref, Room: env.Room, ID: env.ID, Partition: r.pos.Partition, Offset: r.pos.Offset,
		Time: Time{r.pos.Time}, Duplicate: r.duplicate}
}

// rateLimited answers a command over the limit; a client that keeps
// flooding exhausts its patience and is closed with 4429.
func (c *conn) rateLimited(ref, msg, room string) {
	c.replyError(ref, codeRateLimited, msg, room)
	if !c.patience.allow(time.Now()) {
		c.closeWith(closeRateLimited, "rate limited", reasonRateLimited, true)
	}
}

// reply queues an answer.
func (c *conn) reply(v any) { c.enqueue(outItem{frame: mustJSON(v)}, true) }

func (c *conn) replyError(ref, code, msg, room string) {
	c.s.m.RejectedFrames.WithLabelValues(code).Inc()
	c.reply(errorFrame{Op: "error", Ref: ref, Code: code, Message: msg, Room: room})
}

// enqueue queues a frame without blocking. Answers (reply) may use some
// headroom over the queue size; a connection over it is a slow consumer.
func (c *conn) enqueue(it outItem, answer bool) bool {
	limit := c.s.cfg.QueueSize
	if answer {
		limit += replyHeadroom
	}
	c.mu.Lock()
	if c.final || c.closing && !answer {
		c.mu.Unlock()
		return false
	}
	if c.queued >= limit {
		c.mu.Unlock()
		if answer {
			c.closeWith(closeSlowConsumer, "slow consumer: reconnect and rejoin with your cursors", reasonSlowConsumer, false)
		}
		return false
	}
	c.pushLocked(it)
	c.mu.Unlock()
	return true
}

func (c *conn) pushLocked(it outItem) {
	c.q = append(c.q, it)
	c.queued++
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
}

// pushWait queues a recovery frame, waiting while the queue is over half
// full, so live messages of other rooms keep their room.
func (c *conn) pushWait(ctx context.Context, it outItem) error {
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return errClosing
		}
		if c.queued < c.s.cfg.QueueSize/2 {
			c.pushLocked(it)
			c.mu.Unlock()
			return nil
		}
		if c.space == nil {
			c.space = make(chan struct{})
		}
		space := c.space
		c.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errClosing is pushWait's refusal on a closing connection.
var errClosing = errors.New("gateway: connection closing")

// writeLoop writes queued frames until the queue is empty, then either
// exits or, when the connection is closing, closes the socket.
func (c *conn) writeLoop() {
	for {
		c.mu.Lock()
		if len(c.q) == 0 || c.abort {
			c.writing = false
			final, abort := c.final, c.abort
			if cap(c.spare) > 16 {
				c.spare = nil // an idle connection keeps no big queue
			}
			c.mu.Unlock()
			if final && !abort {
				_ = c.ws.Close(c.code, c.reason)
			}
			return
		}
		batch := c.q
		c.q = c.spare[:0]
		c.spare = nil
		c.mu.Unlock()

		if !c.writeBatch(batch) {
			c.mu.Lock()
			c.abort = true
			c.mu.Unlock()
			_ = c.ws.CloseNow()
		}
		clear(batch)
		c.mu.Lock()
		c.spare = batch[:0]
		c.mu.Unlock()
	}
}

// writeBatch writes queued frames, as many per system call as fit in
// maxBatchBytes, under one write deadline; false when the socket failed.
func (c *conn) writeBatch(batch []outItem) bool {
	bp := batchBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxBatchBytes*2 {
			*bp = (*bp)[:0]
			batchBufs.Put(bp)
		}
	}()
	// The server's write watchdog ends a batch stuck past the write
	// timeout; a deadline or a context per write would cost timer updates
	// per frame.
	c.writeSince.Store(time.Now().UnixNano())
	defer c.writeSince.Store(0)
	for start := 0; start < len(batch); {
		c.mu.Lock()
		abort := c.abort
		c.mu.Unlock()
		if abort {
			return false
		}
		buf := (*bp)[:0]
		end := start
		for ; end < len(batch) && (end == start || len(buf) < maxBatchBytes); end++ {
			b := batch[end].frame
			if batch[end].d != nil {
				b = batch[end].d.Frame()
			}
			buf = appendTextFrame(buf, b)
		}
		*bp = buf
		if _, err := c.sock.Write(buf); err != nil {
			return false
		}
		now := time.Now()
		for _, it := range batch[start:end] {
			if it.rs != nil {
				it.rs.delivered.Inc()
				if it.live {
					c.s.m.DeliveryLatency.Observe(now.Sub(it.d.Msg.Time).Seconds())
				}
			}
		}
		c.mu.Lock()
		c.queued -= end - start
		if c.space != nil {
			close(c.space)
			c.space = nil
		}
		c.mu.Unlock()
		start = end
	}
	return true
}

// closeWith closes the connection with a protocol close code, once. The
// connection takes no more commands. With flush, the sends in flight get
// their answers and every frame queued is written before the close frame
// (so the error explaining a close arrives first); without, the close is
// immediate.
func (c *conn) closeWith(code websocket.StatusCode, reason, metric string, flush bool) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing, c.code, c.reason = true, code, reason
	if !flush {
		c.abort, c.final = true, true
		c.q = nil
	}
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
	c.mu.Unlock()
	c.s.m.Disconnects.WithLabelValues(metric).Inc()
	if !flush {
		go func() { _ = c.ws.Close(code, reason) }()
		return
	}
	go func() {
		deadline := time.Now().Add(c.s.cfg.SendTimeout + time.Second)
		for c.inFlight() > 0 && c.ctx.Err() == nil && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		c.mu.Lock()
		c.final = true
		start := !c.writing
		c.writing = true
		c.mu.Unlock()
		if start {
			c.writeLoop() // finds what is left, writes it and closes
		}
	}()
}

// markClosed records the end of a connection the peer or the network
// closed.
func (c *conn) markClosed(metric string) {
	c.mu.Lock()
	already := c.closing
	c.closing, c.abort, c.final = true, true, true
	c.q = nil
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
	c.mu.Unlock()
	if !already {
		c.s.m.Disconnects.WithLabelValues(metric).Inc()
	}
}

// finish runs when the reader stops: it leaves every room and releases
// the connection.
func (c *conn) finish() {
	c.markClosed(reasonClient)
	for _, t := range c.timers {
		if t != nil {
			t.Stop()
		}
	}
	c.mu.Lock()
	rooms := c.rooms
	c.rooms = nil
	c.mu.Unlock()
	for _, rs := range rooms {
		rs.sub.Leave()
	}
	go func() {
		// Let a close handshake in progress finish, then make sure.
		_ = c.ws.CloseNow()
		c.cancel()
		c.s.removeConn(c)
	}()
}

// goAway is the graceful close at shutdown: in-flight sends get their
// answers, then 1001.
func (c *conn) goAway() {
	c.closeWith(closeGoingAway, "gateway shutting down: reconnect and rejoin with your cursors", reasonGoingAway, true)
}

// inFlight is the number of sends waiting for Kafka.
func (c *conn) inFlight() int { return len(c.sem) }

// roomSub is a connection's membership of a room: the hub's Sink.
type roomSub struct {
	c         *conn
	name      string
	sub       *roomhub.Subscription
	delivered prometheus.Counter
}

func (rs *roomSub) Push(d *roomhub.Delivery) bool {
	return rs.c.enqueue(outItem{d: d, rs: rs, live: true}, false)
}

func (rs *roomSub) PushWait(ctx context.Context, d *roomhub.Delivery) error {
	return rs.c.pushWait(ctx, outItem{d: d, rs: rs})
}

func (rs *roomSub) Dropped(err error) {
	c := rs.c
	if errors.Is(err, roomhub.ErrSlowConsumer) {
		c.closeWith(closeSlowConsumer, "slow consumer: reconnect and rejoin with your cursors", reasonSlowConsumer, false)
		return
	}
	c.mu.Lock()
	if c.rooms[rs.name] == rs {
		delete(c.rooms, rs.name)
	}
	c.mu.Unlock()
	if errors.Is(err, roomhub.ErrRoomGone) {
		c.replyError("", codeNotFound, "the room was deleted; you are no longer a member", rs.name)
		return
	}
	if errors.Is(err, roomhub.ErrTopicReplaced) {
		c.replyError("", codeUnavailable, "the room's topic was replaced; join again with your cursor, which will be reset", rs.name)
		return
	}
	c.replyError("", codeUnavailable, "the room's missed messages cannot be read now; join again with your cursor", rs.name)
}

// envelope validates a send into the envelope to store; clientTime is
// the optional RFC 3339 time the sender gave.
func (s *Server) envelope(id auth.Identity, room, msgID, text, clientTime string) (*message.Envelope, *protoError) {
	switch {
	case msgID == "" || len(msgID) > message.MaxIDBytes:
		return nil, fail(codeBadRequest, fmt.Sprintf("id must be 1 to %d bytes", message.MaxIDBytes))
	case text == "":
		return nil, fail(codeBadRequest, "empty text")
	case len(text) > s.cfg.Limits.MaxTextBytes:
		return nil, fail(codeTooLarge, fmt.Sprintf("text is %d bytes, limit %d", len(text), s.cfg.Limits.MaxTextBytes))
	}
	var ct time.Time
	if clientTime != "" {
		var err error
		if ct, err = time.Parse(time.RFC3339Nano, clientTime); err != nil || len(clientTime) > 64 {
			return nil, fail(codeBadRequest, "client_time must be an RFC 3339 time")
		}
		ct = ct.UTC().Truncate(time.Millisecond)
	}
	name := id.Name
	if len(name) > message.MaxSenderNameBytes {
		name = name[:message.MaxSenderNameBytes]
		for !utf8.ValidString(name) {
			name = name[:len(name)-1]
		}
	}
	env := &message.Envelope{V: message.Version, ID: msgID, Room: room, SenderID: id.UserID, SenderName: name, Text: text, ClientTime: ct}
	if err := env.Validate(); err != nil {
		switch {
		case errors.Is(err, message.ErrInvalidUTF8):
			return nil, fail(codeInvalidUTF8, "text and id must be valid UTF-8")
		case errors.Is(err, message.ErrTooLarge):
			return nil, fail(codeTooLarge, "a field is too long")
		default:
			return nil, fail(codeBadRequest, "invalid message")
		}
	}
	return env, nil
}

func validRoom(name string) *protoError {
	if err := message.ValidateRoom(name); err != nil {
		return fail(codeBadRequest, "invalid room name")
	}
	return nil
}
