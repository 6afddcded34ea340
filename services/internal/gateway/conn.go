package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"palaver.dev/services/internal/auth"
	"palaver.dev/services/internal/cursor"
	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/message"
	"palaver.dev/services/internal/protocol"
)

// Per-connection limits that are not worth a flag.
const (
	maxBadFrames  = 10 // errors for bad frames before the connection is closed with 4400
	replyHeadroom = 32 // answers may exceed the queue size by this much
	joinTimeout   = 30 * time.Second
)

// conn is one WebSocket client. Its reader goroutine runs the commands; a
// writer goroutine, started when frames are queued and gone writerLinger
// after the queue emptied, writes them, so an idle connection costs one
// goroutine. A room's flush has a flush worker write a connection's
// frames when no writer writes and the socket takes them at once (see
// flush); otherwise the writer writes them. One of the two at a time
// writes to the socket (see wire.go).
type conn struct {
	s           *Server
	nc          net.Conn
	raw         syscall.RawConn // nc's, for the flush workers' direct writes; nil when nc is not a TCP socket (TLS, a test's pipe)
	flusher     uint32          // which flush worker writes for it (flusherOf), 0 until its first flush
	rd          wsReader
	headerToken string // from the upgrade's Authorization header

	// Owned by the reader goroutine.
	id        auth.Identity
	sends     bucket // the announced send rate
	commands  bucket // every command: 5 times the send rate
	patience  bucket // rate_limited answers a flooder gets before 4429
	badFrames int
	inFlights atomic.Int32 // sends waiting for Kafka: taken by the reader's commands alone, given back by their answers

	welcomed   atomic.Bool
	finished   atomic.Bool    // the reader ended and the connection was released
	writeSince atomic.Int64   // when the batch being written started (unix ns), 0 when not writing
	timers     [3]*time.Timer // hello deadline, token expiry, ping
	pingOut    atomic.Bool    // a ping was sent and no pong came since
	closed     chan struct{}  // closed when the writer is done: close frame written, or the socket failed

	mu       sync.Mutex
	rooms    map[string]*roomSub
	q, spare []outItem
	queued   int           // frames queued and not yet written
	writing  bool          // a writer goroutine runs
	direct   bool          // a flush worker writes the socket (see flush): no writer may start until it is done
	kick     bool          // a writer was asked for during a direct write: start it after
	flushing bool          // handed to a flush worker, which has not taken it yet
	waiting  bool          // the writer waits for frames (lingers): wake it
	wake     chan struct{} // the lingering writer's signal; nil when no writer runs
	closing  bool          // no more commands or live messages; answers still queue until final
	final    bool          // nothing more is queued: the close frame is next
	abort    bool          // closing without flushing (slow consumer): writes stop, the close frame is next
	dead     bool          // the socket failed or the reader ended: nothing more is written
	sending  bool          // the close frame is being written
	code     ws.StatusCode
	reason   string
	space    chan struct{} // closed when a queued frame is written, for PushWait
	pingDue  bool          // a ping to write
	pongDue  bool          // a pong to write, answering the latest ping
	pong     []byte        // its payload
	partial  []byte        // the rest of a frame a write interrupted by a close left unwritten
}

// outItem is one queued frame: bytes, or a delivery encoded on write.
type outItem struct {
	frame []byte
	d     *roomhub.Delivery
	rs    *roomSub
	live  bool
	rest  []byte // the end of this item's frame, as on the wire, that a direct write left unwritten: written before anything else
}

// serveWS upgrades GET /v1/ws.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "gateway shutting down", http.StatusServiceUnavailable)
		return
	}
	nc, br, err := s.upgrade(w, r)
	if err != nil {
		s.log.Debug("gateway: upgrade refused", "err", err, "origin", r.Header.Get("Origin"))
		return
	}
	c := &conn{s: s, headerToken: auth.BearerToken(r), nc: nc, raw: rawConn(nc), closed: make(chan struct{})}
	c.rd = wsReader{br: br, limit: s.cfg.Limits.MaxFrameBytes, ctl: c}
	lim := s.cfg.Limits
	c.sends = newBucket(lim.SendsPerSecond, lim.SendBurst)
	c.commands = newBucket(5*lim.SendsPerSecond, 5*lim.SendBurst)
	c.patience = newBucket(lim.SendsPerSecond/2, 2*lim.SendBurst)
	if !s.addConn(c) {
		_ = nc.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
		_, _ = nc.Write(appendCloseFrame(nil, protocol.CloseGoingAway, "gateway shutting down"))
		_ = nc.Close()
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
			c.closeWith(protocol.CloseUnauthorized, "no hello in time", reasonUnauthorized, false)
		}
	})
	for {
		// No deadline: closing the connection ends the read (the writer
		// sets one once the close frame is written).
		typ, b, err := c.rd.next()
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
func (c *conn) frame(typ ws.OpCode, b []byte) {
	if typ != ws.OpText {
		c.s.m.RejectedFrames.WithLabelValues(protocol.CodeBadFrame).Inc()
		c.closeWith(protocol.CloseBadFrame, "binary frames are not part of the protocol", reasonBadFrame, true)
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
	if !c.welcomed.Load() && f.Op != protocol.OpHello {
		c.replyError(f.Ref, protocol.CodeBadRequest, "the first frame must be hello", "")
		c.closeWith(protocol.CloseBadFrame, "the first frame must be hello", reasonBadFrame, true)
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
		c.closeWith(protocol.CloseBadFrame, "the first frame must be hello", reasonBadFrame, true)
	case c.badFrames >= maxBadFrames:
		c.closeWith(protocol.CloseBadFrame, "too many bad frames", reasonBadFrame, true)
	}
}

// readFailed ends a connection whose reader stopped: the client closed it
// (answered with its own code, RFC 6455 5.5.1), broke the protocol (closed
// with 1002, 1007 or 1009), or the socket ended.
func (c *conn) readFailed(err error) {
	var ce *closeError
	switch {
	case errors.As(err, &ce) && ce.peer:
		code := ce.code
		if code == ws.StatusNoStatusRcvd {
			code = protocol.CloseNormal
		}
		c.closeWith(code, "", reasonClient, false)
	case errors.As(err, &ce):
		c.s.m.RejectedFrames.WithLabelValues(protocol.CodeBadFrame).Inc()
		c.closeWith(ce.code, ce.reason, reasonBadFrame, false)
	case errors.Is(err, errMessageTooBig):
		c.s.m.RejectedFrames.WithLabelValues(protocol.CodeTooLarge).Inc()
		c.closeWith(protocol.CloseTooBig, "message too big", reasonBadFrame, false)
	default:
		c.markClosed(reasonClient)
		return
	}
	// Let the writer put the close frame on the wire before the socket is
	// closed.
	select {
	case <-c.closed:
	case <-time.After(closeWriteTimeout + time.Second):
	}
	if ce == nil || !ce.peer {
		c.drain()
	}
}

// closeDrainBytes bounds what drain discards.
const closeDrainBytes = 1 << 20

// drain reads and discards what a client the reader closed on is still
// sending (the rest of an oversized message, then its close frame) until
// it closes its side, closeHandshakeTimeout passes or closeDrainBytes were
// read. Closing a socket with bytes unread makes the kernel send a reset
// instead of the end of the stream: the client's write in progress fails
// and its stack may drop the close frame before the client reads it.
func (c *conn) drain() {
	_ = c.nc.SetReadDeadline(time.Now().Add(closeHandshakeTimeout))
	_, _ = io.CopyN(io.Discard, c.rd.br, closeDrainBytes)
}

// handle runs one command; every command gets exactly one answer.
func (c *conn) handle(f protocol.Command) {
	if f.Op != protocol.OpSend && !c.commands.allow(time.Now()) {
		c.rateLimited(f.Ref, "too many commands", f.Room)
		return
	}
	start := time.Now()
	defer c.creditWait(start)
	var err *protoError
	switch f.Op {
	case protocol.OpHello:
		err = c.hello(f)
	case protocol.OpJoin:
		err = c.join(f)
	case protocol.OpLeave:
		err = c.leave(f)
	case protocol.OpSend:
		err = c.send(f)
	case protocol.OpPing:
		c.reply(protocol.PongFrame{Op: protocol.OpPong, Ref: f.Ref})
	case protocol.OpTyping:
		err = c.s.presence.typing(c, f)
	}
	if err != nil {
		c.replyError(f.Ref, err.code, err.msg, f.Room)
	}
}

func (c *conn) hello(f protocol.Command) *protoError {
	if !slices.Contains(f.Versions, protocol.Version) {
		c.s.m.RejectedFrames.WithLabelValues(protocol.CodeUnsupportedVersion).Inc()
		c.enqueue(outItem{frame: mustJSON(protocol.ErrorFrame{Op: protocol.OpError, Ref: f.Ref, Code: protocol.CodeUnsupportedVersion,
			Message: "no common protocol version", Supported: supportedVersions})}, true)
		c.closeWith(protocol.CloseBadFrame, "no common protocol version", reasonBadFrame, true)
		return nil
	}
	token := f.Token
	if token == "" {
		token = c.headerToken
	}
	// The reader waits for every command it runs, so a connection never
	// ends under one: commands need no context of the connection's (one
	// would keep a map of its children for the connection's lifetime).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	id, err := c.s.verify(ctx, token)
	cancel()
	if err == nil && c.welcomed.Load() && id.UserID != c.id.UserID {
		return fail(protocol.CodeBadRequest, "a new token must be for the same user")
	}
	if err != nil {
		perr := authError(err)
		c.replyError(f.Ref, perr.code, perr.msg, "")
		c.closeWith(protocol.CloseUnauthorized, perr.msg, reasonUnauthorized, true)
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
			c.replyError("", protocol.CodeForbidden, "your new token does not allow this room", rs.name)
		}
	}
	name := id.Name
	if name == "" {
		name = id.UserID
	}
	c.reply(protocol.WelcomeFrame{Op: protocol.OpWelcome, Ref: f.Ref, Version: protocol.Version, User: protocol.User{ID: id.UserID, Name: name}, Limits: c.s.cfg.Limits})
	return nil
}

func (c *conn) expired() {
	c.replyError("", protocol.CodeUnauthorized, "the token expired", "")
	c.closeWith(protocol.CloseUnauthorized, "token expired", reasonUnauthorized, true)
}

// ping sends a WebSocket ping every interval; a ping not answered by the
// next ends the connection.
func (c *conn) ping() {
	if c.pingOut.Swap(true) {
		c.closeWith(protocol.ClosePolicy, "no pong", reasonClient, false)
		return
	}
	c.mu.Lock()
	if !c.closing {
		c.pingDue = true
		c.startWriterLocked()
		c.timers[2].Reset(c.s.cfg.PingInterval)
	}
	c.mu.Unlock()
}

// onPing queues the answer to a client's ping (only the latest one's, as
// RFC 6455 5.5.3 allows), unless the close frame is on its way.
func (c *conn) onPing(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.abort || c.sending {
		return
	}
	c.pong = append(c.pong[:0], p...)
	c.pongDue = true
	c.startWriterLocked()
}

func (c *conn) onPong([]byte) { c.pingOut.Store(false) }

func (c *conn) join(f protocol.Command) *protoError {
	info, perr := c.s.authorize(c.id, f.Room)
	if perr != nil {
		return perr
	}
	req := roomhub.JoinRequest{Last: f.Last}
	switch {
	case f.Last < 0 || f.Last > roomhub.MaxLast:
		return fail(protocol.CodeBadRequest, fmt.Sprintf("last must be between 0 and %d", roomhub.MaxLast))
	case f.Cursor != "" && f.Last > 0:
		return fail(protocol.CodeBadRequest, "join with a cursor or with last, not both")
	case f.Cursor != "":
		cur, err := cursor.Parse(f.Cursor)
		if err != nil {
			return fail(protocol.CodeBadRequest, "malformed cursor")
		}
		req.Resume, req.Cursor = true, cur
	}
	c.mu.Lock()
	rs, joined := c.rooms[f.Room]
	n := len(c.rooms)
	c.mu.Unlock()
	if joined {
		c.reply(protocol.JoinedFrame{Op: protocol.OpJoined, Ref: f.Ref, Room: f.Room, Cursor: rs.sub.Cursor().String()})
		return nil
	}
	if n >= c.s.cfg.MaxRooms {
		return fail(protocol.CodeBadRequest, fmt.Sprintf("at most %d rooms per connection", c.s.cfg.MaxRooms))
	}
	rs = &roomSub{c: c, name: f.Room, delivered: c.s.m.MessagesDelivered.WithLabelValues(f.Room)}
	ctx, cancel := context.WithTimeout(context.Background(), joinTimeout) // see hello
	sub, err := c.s.hub.Join(ctx, info, rs, req)
	cancel()
	if errors.Is(err, roomhub.ErrBadCursor) {
		return fail(protocol.CodeBadRequest, "the cursor is not a position in this room (another room's, or a partition the room does not have)")
	}
	if err != nil {
		c.s.log.Warn("gateway: join failed", "room", f.Room, "err", err)
		return fail(protocol.CodeUnavailable, "the room cannot be read now; retry")
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
	c.reply(protocol.JoinedFrame{Op: protocol.OpJoined, Ref: f.Ref, Room: f.Room, Cursor: sub.Cursor().String(), Recovering: sub.Recovering(), Reset: sub.Reset()})
	sub.Start()
	c.s.presence.joined(c, f.Room)
	return nil
}

func (c *conn) leave(f protocol.Command) *protoError {
	if perr := validRoom(f.Room); perr != nil {
		return perr
	}
	c.mu.Lock()
	rs := c.rooms[f.Room]
	c.mu.Unlock()
	if rs == nil {
		return fail(protocol.CodeNotJoined, "not in this room")
	}
	c.dropRoom(rs)
	c.reply(protocol.LeftFrame{Op: protocol.OpLeft, Ref: f.Ref, Room: f.Room})
	return nil
}

func (c *conn) dropRoom(rs *roomSub) {
	c.mu.Lock()
	if c.rooms[rs.name] == rs {
		delete(c.rooms, rs.name)
	}
	c.mu.Unlock()
	rs.sub.Leave()
	c.s.presence.left(c, rs.name)
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

// creditWait gives the rate limits back what a command that waited (a
// join reading its room from Kafka) cost the client: the reader did not
// read meanwhile, and what the client sent at its rate queued in the
// socket, to be read at once. Commands that only compute are not credited.
func (c *conn) creditWait(start time.Time) {
	now := time.Now()
	if d := now.Sub(start); d >= minCreditedWait {
		c.sends.credit(now, d)
		c.commands.credit(now, d)
	}
}

// minCreditedWait tells a command that waited from one that computed.
const minCreditedWait = 10 * time.Millisecond

func (c *conn) send(f protocol.Command) *protoError {
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
		return fail(protocol.CodeNotJoined, "join the room before sending to it")
	}
	env, perr := c.s.envelope(c.id, f.Room, f.ID, f.Text, f.ClientTime)
	if perr != nil {
		return perr
	}
	if c.s.draining.Load() {
		return fail(protocol.CodeUnavailable, "the gateway is shutting down; send again with the same id after reconnecting")
	}
	info, err := c.s.rooms.Get(f.Room)
	if err != nil {
		return lookupError(err)
	}
	// The reader does not wait for a slot: frames the client sent at its
	// rate meanwhile would queue in the socket and then read as a flood.
	// Commands run one at a time, so no other send takes a slot between
	// the check and the count.
	if limit := c.s.cfg.MaxInFlight; c.inFlight() >= limit {
		return fail(protocol.CodeUnavailable, fmt.Sprintf("%d sends of this connection await Kafka; send again with the same id", limit))
	}
	c.inFlights.Add(1)
	ref := f.Ref
	c.s.prod.submit(info.Topic, env, func(r sendResult) {
		c.inFlights.Add(-1)
		if r.err != nil {
			if !errors.Is(r.err, errSendTimeout) {
				c.s.log.Warn("gateway: send failed", "room", env.Room, "err", r.err)
			}
			c.replyError(ref, protocol.CodeUnavailable, "Kafka did not acknowledge the message; send it again with the same id", env.Room)
			return
		}
		c.reply(ackFrame(ref, env, r))
	})
	return nil
}

func ackFrame(ref string, env *message.Envelope, r sendResult) protocol.AckFrame {
	return protocol.AckFrame{Op: protocol.OpAck, Ref: ref, Room: env.Room, ID: env.ID, Partition: r.pos.Partition, Offset: r.pos.Offset,
		Time: protocol.Time{Time: r.pos.Time}, Duplicate: r.duplicate}
}

// rateLimited answers a command over the limit; a client that keeps
// flooding exhausts its patience and is closed with 4429.
func (c *conn) rateLimited(ref, msg, room string) {
	c.replyError(ref, protocol.CodeRateLimited, msg, room)
	if !c.patience.allow(time.Now()) {
		c.closeWith(protocol.CloseRateLimited, "rate limited", reasonRateLimited, true)
	}
}

// reply queues an answer.
func (c *conn) reply(v any) { c.enqueue(outItem{frame: mustJSON(v)}, true) }

func (c *conn) replyError(ref, code, msg, room string) {
	c.s.m.RejectedFrames.WithLabelValues(code).Inc()
	c.reply(protocol.ErrorFrame{Op: protocol.OpError, Ref: ref, Code: code, Message: msg, Room: room})
}

// enqueue queues a frame without blocking and has it written. Answers
// (reply) may use some headroom over the queue size; a connection over it
// is a slow consumer.
func (c *conn) enqueue(it outItem, answer bool) bool {
	return c.queue(it, answer, false)
}

// queue queues a frame without blocking; with hold, a writer is only
// started once holdFrames are queued, else by flush.
func (c *conn) queue(it outItem, answer, hold bool) bool {
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
			c.closeWith(protocol.CloseSlowConsumer, "slow consumer: reconnect and rejoin with your cursors", reasonSlowConsumer, false)
		}
		return false
	}
	c.pushLocked(it, hold)
	c.mu.Unlock()
	return true
}

// holdFrames bounds the live messages a connection holds for a room's
// flush before writing them anyway (a connection in several busy rooms).
const holdFrames = 64

func (c *conn) pushLocked(it outItem, hold bool) {
	c.q = append(c.q, it)
	c.queued++
	if !hold || len(c.q) >= holdFrames {
		c.startWriterLocked()
	}
}

// flush writes the frames queued and held. When no writer writes (none
// runs, or it lingers for frames) and nothing but frames is due, the
// connection is handed to a flush worker (flusher.go), which writes them
// to the socket once and without waiting (writeDirect): a busy room's
// flush then wakes one or two goroutines, not one per member, and a
// lingering writer that finds a direct write under way exits. What the
// socket does not take at once goes to the writer.
func (c *conn) flush() {
	c.mu.Lock()
	if len(c.q) == 0 || c.flushing {
		c.mu.Unlock()
		return
	}
	if !c.directLocked() {
		c.startWriterLocked()
		c.mu.Unlock()
		return
	}
	if flushInline {
		c.writeDirectLocked()
		return
	}
	c.flushing = true
	if c.flusher == 0 {
		c.flusher = flusherNext.Add(1)
	}
	f := flusherOf(c.flusher)
	c.mu.Unlock()
	f.add(c)
}

// directLocked reports whether the frames queued may be written directly.
func (c *conn) directLocked() bool {
	return directFlush && c.raw != nil && (!c.writing || c.waiting) && !c.direct && !c.closing && !c.pingDue && !c.pongDue &&
		len(c.q) > 0 && c.q[0].rest == nil
}

// flushNow is a flush worker's turn at c: it writes what c queued
// directly, or leaves it to the writer if one writes by now.
func (c *conn) flushNow() {
	c.mu.Lock()
	c.flushing = false
	switch {
	case len(c.q) == 0:
		c.mu.Unlock()
	case !c.directLocked():
		c.startWriterLocked()
		c.mu.Unlock()
	default:
		c.writeDirectLocked()
	}
}

// writeDirectLocked takes the queue for writeDirect and unlocks c.mu.
func (c *conn) writeDirectLocked() {
	c.direct, c.kick = true, false
	batch := c.q
	c.q = c.spare[:0]
	c.spare = nil
	c.mu.Unlock()
	c.writeDirect(batch)
}

// directFlush lets flush write directly, and flushInline has the flushing
// goroutine write itself rather than a flush worker. Variables for
// BenchmarkRoomWrites' comparison.
var directFlush, flushInline = true, false

// writeDirect writes batch (taken from the queue by flush) with one
// non-blocking system call, then puts back at the head of the queue, for
// the writer, what the socket did not take: the rest of a frame cut short
// (outItem.rest) and the frames after it. Frames keep their order: nothing
// queued meanwhile is written before them, and no writer starts until they
// are back in the queue.
func (c *conn) writeDirect(batch []outItem) {
	dw := directWriters.Get().(*directWriter)
	buf := dw.buf[:0]
	k := 0 // batch[:k] is in buf
	for ; k < len(batch) && (k == 0 || len(buf) < maxBatchBytes); k++ {
		b := batch[k].frame
		if batch[k].d != nil {
			b = batch[k].d.Frame()
		}
		buf = appendTextFrame(buf, b)
	}
	n := dw.write(c.raw, buf)
	whole, at := 0, 0 // batch[:whole], buf[:at], were written
	for whole < k {
		e := at + frameLen(buf[at:])
		if e > n {
			break
		}
		whole, at = whole+1, e
	}
	if whole > 0 {
		c.delivered(batch[:whole], time.Now())
	}
	c.mu.Lock()
	c.direct = false
	c.queued -= whole
	if whole > 0 && c.space != nil {
		close(c.space)
		c.space = nil
	}
	switch {
	case c.abort:
		// closeWith (without flush) or the reader's end came meanwhile and
		// dropped the queue: the close frame follows the rest of the frame
		// cut short, as after the writer's interrupted write.
		if n > at {
			c.partial = append(c.partial[:0], buf[n:at+frameLen(buf[at:])]...)
		}
		clear(batch)
	case whole < len(batch):
		if n > at {
			batch[whole].rest = slices.Clone(buf[n : at+frameLen(buf[at:])])
		}
		q := append(batch[:0], batch[whole:]...) // the unwritten frames, then what was queued meanwhile
		clear(batch[len(q):])
		q = append(q, c.q...)
		clear(c.q)
		c.spare = c.q[:0]
		c.q = q
		c.kick = true
	default:
		clear(batch)
		if c.spare == nil && cap(batch) <= 16 { // an idle connection keeps no big queue
			c.spare = batch[:0]
		}
	}
	if c.kick || c.abort || c.final || c.pingDue || c.pongDue {
		c.startWriterLocked()
	}
	c.mu.Unlock()
	dw.buf = buf[:0]
	if cap(buf) <= maxBatchBytes*2 {
		directWriters.Put(dw)
	}
}

// delivered counts frames written: the rooms' delivery counters, and the
// delivery latency of live messages.
func (c *conn) delivered(items []outItem, now time.Time) {
	var rs *roomSub // counted per run of one room's frames: one shared counter update, not one per frame
	n := 0
	for _, it := range items {
		if it.rs != rs {
			if n > 0 {
				rs.delivered.Add(float64(n))
			}
			rs, n = it.rs, 0
		}
		if it.rs != nil {
			n++
			if it.live {
				c.s.m.DeliveryLatency.Observe(now.Sub(it.d.Msg.Time).Seconds())
			}
		}
	}
	if n > 0 {
		rs.delivered.Add(float64(n))
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
			c.pushLocked(it, false)
			c.mu.Unlock()
			return nil
		}
		if len(c.q) > 0 {
			c.startWriterLocked() // what a room holds for its flush frees space too
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

// Bounds of the close: the close frame (with the rest of a frame a stalled
// write left unfinished) must be taken by the socket within
// closeWriteTimeout; then the client has closeHandshakeTimeout to answer
// with its own close frame before the socket is closed.
const (
	closeWriteTimeout     = 2 * time.Second
	closeHandshakeTimeout = 5 * time.Second
)

// closeRoom is what the close of a slow consumer adds to the socket's send
// buffer, over twice its size: room for the rest of the frame in progress
// and the close frame, whatever the client left unread (see sendClose).
const closeRoom = 64 << 10

// writerLinger is how long a writer whose queue emptied waits for more
// frames before it exits: a connection in a busy room gets its next flush
// within it and keeps its writer (and the writer's grown stack) rather
// than starting one a flush; an idle connection holds no goroutine once it
// passed. A variable for BenchmarkRoomWrites' comparison: zero exits at
// once.
var writerLinger = 5 * time.Millisecond

// lingerTimers recycles the writers' linger timers (stopped): an idle
// connection holds none.
var lingerTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// linger waits writerLinger for a wake; false when none came.
func linger(wake <-chan struct{}) bool {
	t := lingerTimers.Get().(*time.Timer)
	t.Reset(writerLinger)
	defer func() {
		t.Stop() // no stale tick after Stop (Go 1.23 timers)
		lingerTimers.Put(t)
	}()
	select {
	case <-wake:
		return true
	case <-t.C:
		return false
	}
}

// writeLoop writes queued frames (and due pings and pongs) until there are
// none for writerLinger, then exits; on a closing connection it ends with
// the close frame.
func (c *conn) writeLoop() {
	var ctlBuf [2 * (2 + ws.MaxControlFramePayloadSize)]byte
	lingered := false // the last wait for frames ran out
	for {
		c.mu.Lock()
		c.waiting = false
		if c.direct {
			// A flush writes the socket (it found this writer lingering):
			// it starts a writer when it is done if one is needed.
			c.writing = false
			c.wake = nil
			c.mu.Unlock()
			return
		}
		if c.abort {
			c.mu.Unlock()
			c.sendClose()
			return
		}
		ctl := ctlBuf[:0]
		if c.pongDue {
			ctl = appendFrame(ctl, ws.OpPong, c.pong)
			c.pongDue = false
		}
		if c.pingDue {
			ctl = appendFrame(ctl, ws.OpPing, nil)
			c.pingDue = false
		}
		if len(c.q) == 0 && len(ctl) == 0 {
			if c.final {
				c.mu.Unlock()
				c.sendClose()
				return
			}
			if !lingered && writerLinger > 0 {
				if c.wake == nil {
					c.wake = make(chan struct{}, 1)
				}
				c.waiting = true
				wake := c.wake
				c.mu.Unlock()
				lingered = !linger(wake)
				continue
			}
			c.writing = false
			c.wake = nil
			if cap(c.spare) > 16 {
				c.spare = nil // an idle connection keeps no big queue
			}
			c.mu.Unlock()
			return
		}
		lingered = false
		batch := c.q
		c.q = c.spare[:0]
		c.spare = nil
		c.mu.Unlock()

		ok := c.writeBatch(ctl, batch)
		clear(batch)
		c.mu.Lock()
		c.spare = batch[:0]
		if !ok && !c.abort {
			c.abort, c.dead = true, true // the socket failed by itself
		}
		c.mu.Unlock()
	}
}

// writeBatch writes control frames ctl, then queued frames, as many per
// system call as fit in maxBatchBytes, under one write deadline; false
// when the socket failed or the connection is being closed without flush.
func (c *conn) writeBatch(ctl []byte, batch []outItem) bool {
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
	buf := (*bp)[:0]
	lead := 0 // buf[:lead] is the end of a frame a direct write cut short: it goes first, before control frames
	if len(batch) > 0 && batch[0].rest != nil {
		buf = append(buf, batch[0].rest...)
		lead = len(buf)
	}
	buf = append(buf, ctl...)
	for start := 0; start < len(batch) || len(buf) > 0; {
		c.mu.Lock()
		abort := c.abort
		if abort && lead > 0 {
			c.partial = append(c.partial[:0], buf[:lead]...) // the close frame must follow it
		}
		c.mu.Unlock()
		if abort {
			return false
		}
		end := start
		if end < len(batch) && batch[end].rest != nil {
			end++ // in buf already
		}
		for ; end < len(batch) && (end == start || len(buf) < maxBatchBytes); end++ {
			b := batch[end].frame
			if batch[end].d != nil {
				b = batch[end].d.Frame()
			}
			buf = appendTextFrame(buf, b)
		}
		*bp = buf
		if n, err := c.nc.Write(buf); err != nil {
			c.mu.Lock()
			if c.abort {
				// Interrupted by closeWith: the close frame must follow the
				// rest of the frame cut short.
				if e := frameEndAfter(buf, lead, n); e > n {
					c.partial = append(c.partial[:0], buf[n:e]...)
				}
			}
			c.mu.Unlock()
			return false
		}
		c.delivered(batch[start:end], time.Now())
		c.mu.Lock()
		c.queued -= end - start
		if c.space != nil {
			close(c.space)
			c.space = nil
		}
		c.mu.Unlock()
		start, lead = end, 0
		buf = (*bp)[:0]
	}
	return true
}

// sendClose ends the writer: it writes the close frame, after the rest of
// a frame a stalled write left unfinished, and closes the socket's write
// side; the reader then has closeHandshakeTimeout to see the client's
// close. A slow consumer's socket is full of frames its client has not
// read, so the close frame could not get in: the send buffer is first
// raised by closeRoom, so that a client that reads again finds its last
// whole frames, then the close frame, then the end of the stream. If the
// socket takes nothing within closeWriteTimeout it is closed without the
// close frame.
func (c *conn) sendClose() {
	defer close(c.closed)
	c.mu.Lock()
	c.sending = true
	dead, slow, code, reason, partial := c.dead, c.abort, c.code, c.reason, c.partial
	c.partial = nil
	if !dead {
		_ = c.nc.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
	}
	c.mu.Unlock()
	if dead {
		_ = c.nc.Close() // the reader ends too
		return
	}
	if tc, ok := c.nc.(*net.TCPConn); ok && slow && c.s.cfg.SocketSendBuffer > 0 {
		_ = tc.SetWriteBuffer(2*c.s.cfg.SocketSendBuffer + closeRoom)
	}
	if _, err := c.nc.Write(appendCloseFrame(partial, code, reason)); err != nil {
		_ = c.nc.Close()
		return
	}
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(closeHandshakeTimeout))
}

// startWriterLocked starts the writer unless it runs, and wakes it if it
// lingers; during a direct write, the writer starts once it is done.
func (c *conn) startWriterLocked() {
	if c.direct {
		c.kick = true
		return
	}
	if !c.writing {
		c.writing = true
		go c.writeLoop()
		return
	}
	c.wakeWriterLocked()
}

// wakeWriterLocked ends the writer's wait for frames, if it waits.
func (c *conn) wakeWriterLocked() {
	if c.waiting {
		c.waiting = false
		select {
		case c.wake <- struct{}{}:
		default: // a wake is pending already
		}
	}
}

// closeWith closes the connection with a protocol close code, once. The
// connection takes no more commands. With flush, the sends in flight get
// their answers and every frame queued is written before the close frame
// (so the error explaining a close arrives first); without, queued frames
// are dropped, a write in progress is interrupted, and the close frame is
// written next. A flushing close that a stalled client holds up is turned
// into an immediate one by a later call without flush (the write
// watchdog's), keeping its code.
func (c *conn) closeWith(code ws.StatusCode, reason, metric string, flush bool) {
	c.mu.Lock()
	if c.closing {
		if !flush && !c.abort && !c.sending {
			c.abortLocked()
		}
		c.mu.Unlock()
		return
	}
	c.closing, c.code, c.reason = true, code, reason
	if !flush {
		c.abortLocked()
		c.final = true
		c.startWriterLocked()
	}
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
	c.mu.Unlock()
	c.s.m.Disconnects.WithLabelValues(metric).Inc()
	if !flush {
		return
	}
	go func() {
		deadline := time.Now().Add(c.s.cfg.SendTimeout + time.Second)
		for c.inFlight() > 0 && !c.finished.Load() && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		c.mu.Lock()
		c.final = true
		c.startWriterLocked()
		c.mu.Unlock()
	}()
}

// abortLocked drops the queue (but for the rest of a frame a direct write
// cut short) and interrupts a write in progress (a past deadline), so that
// the writer goes on to the close frame. Under c.mu,
// like the writer's reading of abort before it sets its own deadline.
func (c *conn) abortLocked() {
	c.abort = true
	if len(c.q) > 0 && c.q[0].rest != nil {
		c.partial = append(c.partial[:0], c.q[0].rest...) // the rest of a frame a direct write cut short
	}
	c.q = nil
	if c.writing {
		_ = c.nc.SetWriteDeadline(time.Unix(1, 0))
	}
	c.wakeWriterLocked()
}

// markClosed records the end of a connection the peer or the network
// closed.
func (c *conn) markClosed(metric string) {
	c.mu.Lock()
	already := c.closing
	c.closing, c.abort, c.final, c.dead = true, true, true, true
	c.q = nil
	c.wakeWriterLocked() // to close the socket and end
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
	c.s.presence.gone(c)
	_ = c.nc.Close()
	c.finished.Store(true)
	c.s.removeConn(c)
}

// goAway is the graceful close at shutdown: in-flight sends get their
// answers, then 1001.
func (c *conn) goAway() {
	c.closeWith(protocol.CloseGoingAway, "gateway shutting down: reconnect and rejoin with your cursors", reasonGoingAway, true)
}

// inFlight is the number of sends waiting for Kafka.
func (c *conn) inFlight() int { return int(c.inFlights.Load()) }

// roomSub is a connection's membership of a room: the hub's Sink.
type roomSub struct {
	c         *conn
	name      string
	sub       *roomhub.Subscription
	delivered prometheus.Counter
}

func (rs *roomSub) Push(d *roomhub.Delivery) bool {
	return rs.c.queue(outItem{d: d, rs: rs, live: true}, false, true)
}

func (rs *roomSub) Flush() { rs.c.flush() }

func (rs *roomSub) PushWait(ctx context.Context, d *roomhub.Delivery) error {
	return rs.c.pushWait(ctx, outItem{d: d, rs: rs})
}

func (rs *roomSub) Dropped(err error) {
	c := rs.c
	if errors.Is(err, roomhub.ErrSlowConsumer) {
		c.closeWith(protocol.CloseSlowConsumer, "slow consumer: reconnect and rejoin with your cursors", reasonSlowConsumer, false)
		return
	}
	c.mu.Lock()
	if c.rooms[rs.name] == rs {
		delete(c.rooms, rs.name)
	}
	c.mu.Unlock()
	c.s.presence.left(c, rs.name)
	if errors.Is(err, roomhub.ErrRoomGone) {
		c.replyError("", protocol.CodeNotFound, "the room was deleted; you are no longer a member", rs.name)
		return
	}
	if errors.Is(err, roomhub.ErrTopicReplaced) {
		c.replyError("", protocol.CodeUnavailable, "the room's topic was replaced; join again with your cursor, which will be reset", rs.name)
		return
	}
	c.replyError("", protocol.CodeUnavailable, "the room's missed messages cannot be read now; join again with your cursor", rs.name)
}

// envelope validates a send into the envelope to store; clientTime is
// the optional RFC 3339 time the sender gave.
func (s *Server) envelope(id auth.Identity, room, msgID, text, clientTime string) (*message.Envelope, *protoError) {
	switch {
	case msgID == "" || len(msgID) > message.MaxIDBytes:
		return nil, fail(protocol.CodeBadRequest, fmt.Sprintf("id must be 1 to %d bytes", message.MaxIDBytes))
	case text == "":
		return nil, fail(protocol.CodeBadRequest, "empty text")
	case len(text) > s.cfg.Limits.MaxTextBytes:
		return nil, fail(protocol.CodeTooLarge, fmt.Sprintf("text is %d bytes, limit %d", len(text), s.cfg.Limits.MaxTextBytes))
	}
	var ct time.Time
	if clientTime != "" {
		var err error
		if ct, err = time.Parse(time.RFC3339Nano, clientTime); err != nil || len(clientTime) > 64 {
			return nil, fail(protocol.CodeBadRequest, "client_time must be an RFC 3339 time")
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
			return nil, fail(protocol.CodeInvalidUTF8, "text and id must be valid UTF-8")
		case errors.Is(err, message.ErrTooLarge):
			return nil, fail(protocol.CodeTooLarge, "a field is too long")
		default:
			return nil, fail(protocol.CodeBadRequest, "invalid message")
		}
	}
	return env, nil
}

func validRoom(name string) *protoError {
	if err := message.ValidateRoom(name); err != nil {
		return fail(protocol.CodeBadRequest, "invalid room name")
	}
	return nil
}
