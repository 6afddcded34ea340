package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/envflag"
	"palaver.dev/services/internal/presence"
	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/kafkabus"
)

// PresenceConfig is the gateway's side of presence (docs/presence.md).
type PresenceConfig struct {
	// Enabled publishes connection events and pushes presence to members.
	// Off, the gateway sends no presence frames and answers the presence
	// API with unavailable.
	Enabled bool
	// GatewayID names this gateway process in events: unique per process
	// (hostname and a random suffix by default), so a restarted gateway's
	// old connections expire with the old id.
	GatewayID   string
	EventsTopic string
	StateTopic  string
	// Heartbeat is the period of the gateway's heartbeat (5 s); keep it
	// under a third of the presence service's gateway timeout.
	Heartbeat time.Duration
	// MembersCap bounds the members listed in a presence snapshot (100).
	MembersCap int
	// FrameInterval is the least time between two presence frames of one
	// room to one connection (250 ms: at most 4 a second); in rooms of
	// LargeRoom users or more, LargeFrameInterval (1 s, for 1,000): there
	// the count matters more than each face, and every frame goes to
	// every member.
	FrameInterval      time.Duration
	LargeRoom          int
	LargeFrameInterval time.Duration
	// RoomFrameRate bounds the presence frames a second this gateway
	// sends one room's local members, all together (3,000): a room with
	// more local members than that a second gets its frames further
	// apart (10,000 members: every 3.3 s). Each frame is a socket write
	// per member, which is what presence costs a gateway.
	RoomFrameRate int
	// TypingInterval is the least time between two typing events of one
	// connection in one room that are relayed (2 s); the rest are
	// coalesced.
	TypingInterval time.Duration
}

// DefaultPresenceConfig returns the defaults (disabled).
func DefaultPresenceConfig() PresenceConfig {
	return PresenceConfig{
		EventsTopic: presence.EventsTopic, StateTopic: presence.StateTopic,
		Heartbeat: 5 * time.Second, MembersCap: 100, FrameInterval: 250 * time.Millisecond, TypingInterval: 2 * time.Second,
		LargeRoom: 1000, LargeFrameInterval: time.Second, RoomFrameRate: 3000,
	}
}

func (c PresenceConfig) withDefaults() PresenceConfig {
	d := DefaultPresenceConfig()
	if c.EventsTopic == "" {
		c.EventsTopic = d.EventsTopic
	}
	if c.StateTopic == "" {
		c.StateTopic = d.StateTopic
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = d.Heartbeat
	}
	if c.MembersCap <= 0 {
		c.MembersCap = d.MembersCap
	}
	if c.FrameInterval <= 0 {
		c.FrameInterval = d.FrameInterval
	}
	if c.TypingInterval <= 0 {
		c.TypingInterval = d.TypingInterval
	}
	if c.LargeRoom <= 0 {
		c.LargeRoom = d.LargeRoom
	}
	if c.LargeFrameInterval <= 0 {
		c.LargeFrameInterval = d.LargeFrameInterval
	}
	if c.RoomFrameRate <= 0 {
		c.RoomFrameRate = d.RoomFrameRate
	}
	if c.GatewayID == "" {
		c.GatewayID = defaultGatewayID()
	}
	return c
}

func (c PresenceConfig) validate() error {
	if c.GatewayID != "" {
		if err := presence.ValidGatewayID(c.GatewayID); err != nil {
			return fmt.Errorf("%w: --gateway-id: %w", ErrConfig, err)
		}
	}
	return nil
}

// defaultGatewayID is the host name (as far as it is a valid id) and a
// random suffix.
func defaultGatewayID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return -1
	}, host)
	if len(host) > 40 {
		host = host[:40]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	if host == "" {
		host = "gateway"
	}
	return host + "-" + hex.EncodeToString(b[:])
}

func (c *PresenceConfig) registerFlags(fs *flag.FlagSet, env *envflag.Vars, def PresenceConfig) {
	fs.BoolVar(&c.Enabled, "presence", envflag.Bool("PALAVER_PRESENCE", def.Enabled), "publish connection events to the presence service and push presence to members ($PALAVER_PRESENCE)")
	fs.StringVar(&c.GatewayID, "gateway-id", envflag.String("PALAVER_GATEWAY_ID", def.GatewayID), "this gateway's id in presence events, unique per process (default: host name and a random suffix) ($PALAVER_GATEWAY_ID)")
	fs.StringVar(&c.EventsTopic, "presence-events-topic", envflag.String("PALAVER_PRESENCE_EVENTS_TOPIC", cmp.Or(def.EventsTopic, presence.EventsTopic)), "topic of presence events ($PALAVER_PRESENCE_EVENTS_TOPIC)")
	fs.StringVar(&c.StateTopic, "presence-state-topic", envflag.String("PALAVER_PRESENCE_STATE_TOPIC", cmp.Or(def.StateTopic, presence.StateTopic)), "compacted topic of room presence ($PALAVER_PRESENCE_STATE_TOPIC)")
	env.Duration(fs, &c.Heartbeat, "presence-heartbeat", "PALAVER_PRESENCE_HEARTBEAT", def.Heartbeat, "period of this gateway's heartbeat; keep it under a third of the presence service's --gateway-timeout")
	env.Duration(fs, &c.TypingInterval, "presence-typing-interval", "PALAVER_PRESENCE_TYPING_INTERVAL", def.TypingInterval, "least time between two typing events of one connection in one room relayed to the presence service; the rest are coalesced")
	env.Int(fs, &c.MembersCap, "presence-members-cap", "PALAVER_PRESENCE_MEMBERS_CAP", def.MembersCap, "most members listed in a presence snapshot")
}

// presenceMetrics are the gateway's presence instruments.
type presenceMetrics struct {
	Frames       *prometheus.CounterVec // kind: snapshot, diff
	Coalesced    prometheus.Counter     // state changes folded into a later frame
	Typing       *prometheus.CounterVec // result: relayed, coalesced
	Events       *prometheus.CounterVec // type: events written
	EventErrors  prometheus.Counter
	StateUpdates prometheus.Counter
}

func newPresenceMetrics(reg prometheus.Registerer) *presenceMetrics {
	const ns, sub = "palaver", "gateway"
	m := &presenceMetrics{
		Frames: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "presence_frames_total",
			Help: "Presence frames queued to connections, by kind (snapshot, diff)."}, []string{"kind"}),
		Coalesced: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "presence_coalesced_total",
			Help: "Room presence changes folded into a later presence frame instead of a frame of their own."}),
		Typing: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "typing_total",
			Help: "Typing commands, by result (relayed to the presence service, or coalesced with an earlier one)."}, []string{"result"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "presence_events_total",
			Help: "Presence events written, by type."}, []string{"type"}),
		EventErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "presence_event_errors_total",
			Help: "Presence events Kafka did not store."}),
		StateUpdates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "presence_state_updates_total",
			Help: "Room states read from the presence state topic."}),
	}
	for _, k := range []string{"snapshot", "diff"} {
		m.Frames.WithLabelValues(k)
	}
	for _, r := range []string{"relayed", "coalesced"} {
		m.Typing.WithLabelValues(r)
	}
	for _, t := range []string{presence.TypeJoin, presence.TypeLeave, presence.TypeTyping, presence.TypeHeartbeat, presence.TypeShutdown} {
		m.Events.WithLabelValues(t)
	}
	if reg != nil {
		reg.MustRegister(m.Frames, m.Coalesced, m.Typing, m.Events, m.EventErrors, m.StateUpdates)
	}
	return m
}

// presenceHub is the gateway's presence: it writes this gateway's events
// and pushes the presence of its members' rooms to them.
type presenceHub struct {
	cfg  PresenceConfig
	log  *slog.Logger
	m    *presenceMetrics
	view *presence.View
	w    *kafka.Writer
	adm  *kafka.Client

	parts    atomic.Int32 // partitions of the events topic
	outMu    sync.RWMutex
	closed   bool // out is closed: the gateway stopped
	out      chan []kafka.Message
	lastWarn time.Time     // of the heartbeat loop's warning
	pumped   chan struct{} // closed when the pump has written everything
	stopping atomic.Bool   // shutting down: the shutdown event replaces the leaves
	nextConn atomic.Uint64

	mu    sync.Mutex
	rooms map[string]*presRoom
	conns map[*conn]*presConn
}

// presConn is a connection's presence: its id in events, its rooms, and
// when it last relayed typing in each.
type presConn struct {
	id    string
	rooms map[string]time.Time // room -> last typing relayed
}

// presRoom is a room with local members: changes waiting for the next
// frame, and the snapshot frame of its current state.
type presRoom struct {
	name    string
	mu      sync.Mutex
	members map[*conn]bool // true: owes a snapshot (a frame was dropped)
	joined  map[string]string
	left    map[string]string
	count   int
	typing  []protocol.User
	typed   bool // typing changed since the last frame
	changed bool // the next frame has a change to tell (not only snapshots owed)
	pending bool // a frame waits for its time
	last    time.Time
	timer   *time.Timer
	snap    []byte // snapshot frame of the current state, built on demand
}

func newPresenceHub(cfg PresenceConfig, cluster *kafkabus.Cluster, m *presenceMetrics, log *slog.Logger) *presenceHub {
	h := &presenceHub{cfg: cfg, log: log, m: m, view: presence.NewView(cluster, cfg.StateTopic, log),
		adm: cluster.Admin(), rooms: map[string]*presRoom{}, conns: map[*conn]*presConn{},
		out: make(chan []kafka.Message, outboxSize), pumped: make(chan struct{})}
	h.view.OnChange = h.changed
	w := cluster.Writer()
	w.Balancer = &presence.EventBalancer{}
	w.Async = true
	w.BatchTimeout = 2 * time.Millisecond
	w.BatchSize = 256
	w.Completion = func(msgs []kafka.Message, err error) {
		if err != nil {
			h.m.EventErrors.Add(float64(len(msgs)))
			h.log.Warn("gateway: presence events not stored", "events", len(msgs), "err", err)
		}
	}
	h.w = w
	go h.pump()
	return h
}

// outboxSize bounds the batches of events waiting to be handed to the
// writer (while the events topic is unknown to it, say).
const outboxSize = 16384

// pump hands events to the writer in order. The writer refuses a write at
// once while it cannot find the topic's partitions (the topic was just
// created, or the presence service is not running yet): such a write is
// retried, and the events after it wait, so a leave never overtakes its
// join.
func (h *presenceHub) pump() {
	defer close(h.pumped)
	for msgs := range h.out {
		for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
			err := h.w.WriteMessages(context.Background(), msgs...)
			if err == nil {
				break
			}
			if h.stopping.Load() && len(h.out) == 0 && backoff >= time.Second {
				h.m.EventErrors.Add(float64(len(msgs)))
				break // shutting down: do not hold the drain for long
			}
			h.log.Warn("gateway: presence events not accepted by the writer; retrying", "events", len(msgs), "err", err, "in", backoff)
			time.Sleep(backoff)
		}
	}
}

// send queues events for the pump; when the outbox is full they are
// dropped and counted.
func (h *presenceHub) send(msgs ...kafka.Message) {
	h.outMu.RLock()
	defer h.outMu.RUnlock()
	if h.closed {
		return
	}
	select {
	case h.out <- msgs:
	default:
		h.m.EventErrors.Add(float64(len(msgs)))
	}
}

// run follows the presence state and sends the heartbeats until ctx ends.
func (h *presenceHub) run(ctx context.Context) {
	go func() { _ = h.view.Run(ctx) }()
	t := time.NewTicker(h.cfg.Heartbeat)
	defer t.Stop()
	for i := 0; ; i++ {
		if i%12 == 0 || h.parts.Load() == 0 {
			h.refreshPartitions(ctx)
		}
		if h.parts.Load() == 0 {
			// The topic is not there yet: look again soon.
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		h.broadcast(presence.TypeHeartbeat)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *presenceHub) refreshPartitions(ctx context.Context) {
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	md, err := h.adm.Metadata(mctx, &kafka.MetadataRequest{Topics: []string{h.cfg.EventsTopic}})
	if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil {
		if ctx.Err() == nil && time.Since(h.lastWarn) > time.Minute {
			h.lastWarn = time.Now()
			h.log.Warn("gateway: the presence events topic cannot be described (is the presence service running?)", "topic", h.cfg.EventsTopic, "err", err)
		}
		return
	}
	h.parts.Store(int32(len(md.Topics[0].Partitions)))
}

// broadcast writes a gateway event to every partition: each presence
// replica hears from every gateway.
func (h *presenceHub) broadcast(typ string) {
	n := int(h.parts.Load())
	if n == 0 {
		return
	}
	v := presence.Event{V: presence.EventVersion, Type: typ, Gateway: h.cfg.GatewayID}.Encode()
	msgs := make([]kafka.Message, n)
	now := time.Now()
	for p := range msgs {
		msgs[p] = kafka.Message{Topic: h.cfg.EventsTopic, Partition: p, Value: v, Time: now}
	}
	h.send(msgs...)
	h.m.Events.WithLabelValues(typ).Add(float64(n))
}

func (h *presenceHub) event(typ, room, connID string, id protocol.User) {
	e := presence.Event{V: presence.EventVersion, Type: typ, Gateway: h.cfg.GatewayID, Room: room, Conn: connID, User: id.ID, Name: id.Name}
	h.send(kafka.Message{Topic: h.cfg.EventsTopic, Key: []byte(room), Value: e.Encode(), Time: time.Now()})
	h.m.Events.WithLabelValues(typ).Inc()
}

// drain stops the leave events: connections closed by the shutdown are
// removed by its shutdown event.
func (h *presenceHub) drain() {
	if h != nil {
		h.stopping.Store(true)
	}
}

// shutdown tells the presence service this gateway is gone (instead of a
// leave per connection) and flushes the writer.
func (h *presenceHub) shutdown() error {
	if h == nil {
		return nil
	}
	h.stopping.Store(true)
	h.broadcast(presence.TypeShutdown)
	h.outMu.Lock()
	h.closed = true
	close(h.out)
	h.outMu.Unlock()
	<-h.pumped
	return h.w.Close()
}

func connUser(c *conn) protocol.User {
	name := c.id.Name
	if name == "" {
		name = c.id.UserID
	}
	return protocol.User{ID: c.id.UserID, Name: name}
}

// joined records a connection's join: the event out, the connection a
// member of the room's presence, and its snapshot queued.
func (h *presenceHub) joined(c *conn, room string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	pc := h.conns[c]
	if pc == nil {
		pc = &presConn{id: strconv.FormatUint(h.nextConn.Add(1), 36), rooms: map[string]time.Time{}}
		h.conns[c] = pc
	}
	if _, ok := pc.rooms[room]; ok {
		h.mu.Unlock()
		return
	}
	pc.rooms[room] = time.Time{}
	r := h.rooms[room]
	if r == nil {
		r = &presRoom{name: room, members: map[*conn]bool{}}
		h.rooms[room] = r
	}
	r.mu.Lock()
	r.members[c] = false
	snap := h.snapshotLocked(r)
	r.mu.Unlock()
	id := pc.id
	h.mu.Unlock()
	h.event(presence.TypeJoin, room, id, connUser(c))
	if c.enqueue(outItem{frame: snap}, false) {
		h.m.Frames.WithLabelValues("snapshot").Inc()
	}
}

// left records a connection leaving a room (idempotent).
func (h *presenceHub) left(c *conn, room string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	pc := h.conns[c]
	if pc == nil {
		h.mu.Unlock()
		return
	}
	if _, ok := pc.rooms[room]; !ok {
		h.mu.Unlock()
		return
	}
	delete(pc.rooms, room)
	h.dropMemberLocked(c, room)
	id := pc.id
	h.mu.Unlock()
	if !h.stopping.Load() {
		h.event(presence.TypeLeave, room, id, connUser(c))
	}
}

// gone records the end of a connection: it leaves every room.
func (h *presenceHub) gone(c *conn) {
	if h == nil {
		return
	}
	h.mu.Lock()
	pc := h.conns[c]
	delete(h.conns, c)
	if pc == nil {
		h.mu.Unlock()
		return
	}
	for room := range pc.rooms {
		h.dropMemberLocked(c, room)
	}
	h.mu.Unlock()
	if h.stopping.Load() {
		return
	}
	for room := range pc.rooms {
		h.event(presence.TypeLeave, room, pc.id, connUser(c))
	}
}

func (h *presenceHub) dropMemberLocked(c *conn, room string) {
	r := h.rooms[room]
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.members, c)
	empty := len(r.members) == 0
	if empty && r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	if empty {
		delete(h.rooms, room)
	}
}

// typing relays a typing command: at most one per connection and room per
// typing interval reaches the presence service, the rest are coalesced.
func (h *presenceHub) typing(c *conn, f protocol.Command) *protoError {
	if perr := validRoom(f.Room); perr != nil {
		return perr
	}
	if h == nil {
		return fail(protocol.CodeUnavailable, "presence is not enabled on this gateway")
	}
	now := time.Now()
	h.mu.Lock()
	pc := h.conns[c]
	var last time.Time
	var joined bool
	if pc != nil {
		last, joined = pc.rooms[f.Room]
	}
	if !joined {
		h.mu.Unlock()
		return fail(protocol.CodeNotJoined, "join the room before typing in it")
	}
	relay := now.Sub(last) >= h.cfg.TypingInterval
	if relay {
		pc.rooms[f.Room] = now
	}
	id := pc.id
	h.mu.Unlock()
	if relay {
		h.m.Typing.WithLabelValues("relayed").Inc()
		h.event(presence.TypeTyping, f.Room, id, connUser(c))
	} else {
		h.m.Typing.WithLabelValues("coalesced").Inc()
	}
	c.reply(protocol.TypedFrame{Op: protocol.OpTyped, Ref: f.Ref, Room: f.Room})
	return nil
}

// changed is the view's OnChange: the difference goes into the room's
// pending change, sent at once or at the room's next frame time.
func (h *presenceHub) changed(prev, next *presence.Room) {
	h.m.StateUpdates.Inc()
	h.mu.Lock()
	r := h.rooms[next.Name]
	h.mu.Unlock()
	if r == nil {
		return // no local member
	}
	var before []presence.User
	var typingBefore []string
	if prev != nil {
		before, typingBefore = prev.Users, prev.Typing
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snap = nil
	if r.joined == nil {
		r.joined, r.left = map[string]string{}, map[string]string{}
	}
	// Both lists are sorted by id: one merge pass.
	i, j := 0, 0
	for i < len(before) || j < len(next.Users) {
		switch {
		case j == len(next.Users) || i < len(before) && before[i].ID < next.Users[j].ID:
			u := before[i]
			if _, ok := r.joined[u.ID]; ok {
				delete(r.joined, u.ID)
			} else {
				r.left[u.ID] = u.Name
			}
			i++
		case i == len(before) || next.Users[j].ID < before[i].ID:
			u := next.Users[j]
			if _, ok := r.left[u.ID]; ok {
				delete(r.left, u.ID)
			} else {
				r.joined[u.ID] = u.Name
			}
			j++
		default:
			i++
			j++
		}
	}
	if !slices.Equal(typingBefore, next.Typing) {
		r.typed = true
	}
	r.typing = typists(next)
	if r.count == next.Count && len(r.joined) == 0 && len(r.left) == 0 && !r.typed {
		return // another tab of someone already here: nothing to tell
	}
	r.count = next.Count
	if r.changed {
		h.m.Coalesced.Inc()
		return
	}
	r.changed = true
	if r.pending {
		return // snapshots owed wait for the next frame: the change goes with them
	}
	r.pending = true
	wait := h.frameIntervalLocked(r) - time.Since(r.last)
	if wait <= 0 {
		go h.flush(r)
		return
	}
	r.timer = time.AfterFunc(wait, func() { h.flush(r) })
}

// frameIntervalLocked is the least time between two frames of a room: 250
// ms, a second in large rooms, and longer when the room's local members
// would otherwise get more than RoomFrameRate frames a second together.
func (h *presenceHub) frameIntervalLocked(r *presRoom) time.Duration {
	interval := h.cfg.FrameInterval
	if r.count >= h.cfg.LargeRoom {
		interval = h.cfg.LargeFrameInterval
	}
	return max(interval, time.Duration(len(r.members))*time.Second/time.Duration(h.cfg.RoomFrameRate))
}

func typists(r *presence.Room) []protocol.User {
	out := make([]protocol.User, 0, len(r.Typing))
	for _, id := range r.Typing {
		if i, ok := slices.BinarySearchFunc(r.Users, id, func(u presence.User, id string) int { return strings.Compare(u.ID, id) }); ok {
			out = append(out, protocol.User{ID: id, Name: r.Users[i].Name})
		}
	}
	return out
}

// flush sends a room's pending change to its members: one frame, encoded
// once; members that missed a frame get a snapshot instead.
func (h *presenceHub) flush(r *presRoom) {
	r.mu.Lock()
	if !r.pending {
		r.mu.Unlock()
		return
	}
	r.pending, r.last = false, time.Now()
	var diff []byte
	if r.changed {
		f := protocol.PresenceDiffFrame{Op: protocol.OpPresenceDiff, Room: r.name, Count: r.count, Joined: usersOf(r.joined), Left: usersOf(r.left)}
		if r.typed {
			t := r.typing
			f.Typing = &t
		}
		clear(r.joined)
		clear(r.left)
		r.typed, r.changed = false, false
		diff = mustJSON(f)
	}
	var snap []byte
	members := make([]*conn, 0, len(r.members))
	owed := 0
	for c, owes := range r.members {
		members = append(members, c)
		if owes {
			owed++
		}
	}
	if owed > 0 {
		snap = h.snapshotLocked(r)
	}
	states := make([]bool, len(members))
	for i, c := range members {
		states[i] = r.members[c]
	}
	r.mu.Unlock()

	var missed []*conn
	for i, c := range members {
		frame, kind := diff, "diff"
		if states[i] {
			frame, kind = snap, "snapshot"
		}
		if frame == nil {
			continue // nothing changed: the frame is for the members owed a snapshot
		}
		if c.enqueue(outItem{frame: frame}, false) {
			h.m.Frames.WithLabelValues(kind).Inc()
			if states[i] {
				r.mu.Lock()
				if _, ok := r.members[c]; ok {
					r.members[c] = false
				}
				r.mu.Unlock()
			}
		} else {
			missed = append(missed, c)
		}
	}
	if len(missed) > 0 {
		r.mu.Lock()
		for _, c := range missed {
			if _, ok := r.members[c]; ok {
				r.members[c] = true
			}
		}
		if !r.pending {
			r.pending = true
			r.timer = time.AfterFunc(h.frameIntervalLocked(r), func() { h.flush(r) })
		}
		r.mu.Unlock()
	}
}

func usersOf(m map[string]string) []protocol.User {
	out := make([]protocol.User, 0, len(m))
	for id, name := range m {
		out = append(out, protocol.User{ID: id, Name: name})
	}
	slices.SortFunc(out, func(a, b protocol.User) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// snapshotLocked returns the room's snapshot frame: count, the first
// members by name up to the cap, and who is typing. Built once per state.
func (h *presenceHub) snapshotLocked(r *presRoom) []byte {
	if r.snap != nil {
		return r.snap
	}
	f := protocol.PresenceFrame{Op: protocol.OpPresence, Room: r.name, Users: []protocol.User{}, Typing: []protocol.User{}}
	if st := h.view.Get(r.name); st != nil {
		f.Count = st.Count
		f.Truncated = len(st.Users) > h.cfg.MembersCap
		us := make([]protocol.User, len(st.Users))
		for i, u := range st.Users {
			us[i] = protocol.User{ID: u.ID, Name: u.Name}
		}
		slices.SortFunc(us, func(a, b protocol.User) int {
			return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
		})
		f.Users = us[:min(len(us), h.cfg.MembersCap)]
		f.Typing = typists(st)
	}
	r.snap = mustJSON(f)
	return r.snap
}

// count is a room's online users, for the room list.
func (h *presenceHub) count(room string) *int {
	if h == nil {
		return nil
	}
	n := h.view.Count(room)
	return &n
}

// Presence API limits.
const (
	defaultPresencePage = 100
	maxPresencePage     = 1000
)

// getPresence serves GET /v1/rooms/{room}/presence?after=<user id>&limit=100:
// the count and the members, by id, a page at a time.
func (s *Server) getPresence(w http.ResponseWriter, r *http.Request) {
	id, perr := s.identify(r)
	if perr != nil {
		writeError(w, perr)
		return
	}
	info, perr := s.authorize(id, r.PathValue("room"))
	if perr != nil {
		writeError(w, perr)
		return
	}
	if s.presence == nil {
		writeError(w, fail(protocol.CodeUnavailable, "presence is not enabled on this gateway"))
		return
	}
	q := r.URL.Query()
	limit := defaultPresencePage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPresencePage {
			writeError(w, fail(protocol.CodeBadRequest, fmt.Sprintf("limit must be between 1 and %d", maxPresencePage)))
			return
		}
		limit = n
	}
	after := q.Get("after")
	body := struct {
		Room   string          `json:"room"`
		Count  int             `json:"count"`
		Users  []protocol.User `json:"users"`
		Typing []protocol.User `json:"typing"`
		Next   string          `json:"next,omitempty"`
	}{Room: info.Name, Users: []protocol.User{}, Typing: []protocol.User{}}
	if st := s.presence.view.Get(info.Name); st != nil {
		body.Count = st.Count
		body.Typing = typists(st)
		i := 0
		if after != "" {
			i, _ = slices.BinarySearchFunc(st.Users, after, func(u presence.User, id string) int { return strings.Compare(u.ID, id) })
			if i < len(st.Users) && st.Users[i].ID == after {
				i++
			}
		}
		end := min(len(st.Users), i+limit)
		for _, u := range st.Users[i:end] {
			body.Users = append(body.Users, protocol.User{ID: u.ID, Name: u.Name})
		}
		if end < len(st.Users) && end > i {
			body.Next = st.Users[end-1].ID
		}
	}
	writeJSON(w, http.StatusOK, body)
}
