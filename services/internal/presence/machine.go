package presence

import (
	"maps"
	"slices"
	"strings"
	"time"
)

// Reasons an event is dropped: the values of
// palaver_presence_events_dropped_total's reason label.
const (
	DropMalformed    = "malformed"
	DropUnknownType  = "unknown_type"
	DropVersion      = "version"
	DropUnknownRoom  = "unknown_room"
	DropTypingFlood  = "typing_flood"
	DropNotPresent   = "not_present" // typing from a connection not in the room
	DropAlreadyIn    = "duplicate"   // a join already applied, a leave of a connection not there
	DropBeforeResume = "replayed"    // an event already included in a restored room state
)

// Timing is the state machine's clock settings.
type Timing struct {
	// GatewayTimeout: the connections of a gateway not heard from for this
	// long are expired (15 s).
	GatewayTimeout time.Duration
	// TypingTTL: a typing indicator lasts this long after the user's last
	// typing event (6 s).
	TypingTTL time.Duration
	// TypingMinGap: typing events of one user in one room closer than this
	// are a flood and dropped (1 s); gateways send at most one per 2 s.
	TypingMinGap time.Duration
}

// DefaultTiming returns the defaults.
func DefaultTiming() Timing {
	return Timing{GatewayTimeout: 15 * time.Second, TypingTTL: 6 * time.Second, TypingMinGap: time.Second}
}

// machine is the presence of one partition of the events topic: which
// connections are in which rooms, whose they are, which gateways are
// alive. It is driven by one goroutine and knows nothing of Kafka.
type machine struct {
	timing   Timing
	rooms    map[string]*roomState
	gateways map[string]time.Time // last heard from (record time of its latest event)
	applied  int64                // last offset applied; -1 before any
	typists  map[*roomState]struct{}
}

type roomState struct {
	name   string
	offset int64             // restored from this state: events up to it are already included
	conns  map[string]string // connKey -> user id
	users  map[string]*userState

	dirty      bool
	dirtyFrom  int64     // first event offset not yet published
	dirtySince time.Time // record time of the first change not yet published
	lastPub    time.Time
}

type userState struct {
	name        string
	conns       int
	typingUntil time.Time // zero: not typing
	lastTyping  time.Time
}

func newMachine(t Timing) *machine {
	return &machine{timing: t, rooms: map[string]*roomState{}, gateways: map[string]time.Time{}, applied: -1, typists: map[*roomState]struct{}{}}
}

func (m *machine) room(name string) *roomState {
	r := m.rooms[name]
	if r == nil {
		r = &roomState{name: name, offset: -1, conns: map[string]string{}, users: map[string]*userState{}}
		m.rooms[name] = r
	}
	return r
}

// restore loads the partition's state records and checkpoint.
func (m *machine) restore(states []State, cp *Checkpoint) {
	if cp != nil {
		m.applied = cp.Offset
		maps.Copy(m.gateways, cp.Gateways)
	}
	for _, s := range states {
		r := m.room(s.Room)
		r.offset = s.Offset
		r.lastPub = s.Time
		for _, u := range s.Users {
			us := &userState{name: u.Name}
			for _, k := range u.Conns {
				r.conns[k] = u.ID
				us.conns++
				// A gateway with connections but no checkpoint entry was
				// expired before the checkpoint (or is heard from in the
				// replay, which sets its time).
				if _, ok := m.gateways[connGateway(k)]; !ok {
					m.gateways[connGateway(k)] = time.Time{}
				}
			}
			if us.conns > 0 {
				r.users[u.ID] = us
			}
		}
		for _, id := range s.Typing {
			if u := r.users[id]; u != nil {
				u.typingUntil = s.Time.Add(m.timing.TypingTTL)
				m.typists[r] = struct{}{}
			}
		}
	}
}

func (m *machine) markDirty(r *roomState, offset int64, at time.Time) {
	if !r.dirty {
		r.dirty, r.dirtyFrom, r.dirtySince = true, offset, at
	}
}

// apply applies one event at offset with its record time; it returns the
// reason it was dropped, or "".
func (m *machine) apply(e Event, offset int64, at time.Time) string {
	m.applied = max(m.applied, offset)
	if e.Type == TypeShutdown {
		m.expireGateway(e.Gateway, offset, at)
		delete(m.gateways, e.Gateway)
		return ""
	}
	if seen, ok := m.gateways[e.Gateway]; !ok || at.After(seen) {
		m.gateways[e.Gateway] = at
	}
	if e.Type == TypeHeartbeat {
		return ""
	}
	r := m.room(e.Room)
	if offset <= r.offset {
		return DropBeforeResume
	}
	key := connKey(e.Gateway, e.Conn)
	switch e.Type {
	case TypeJoin:
		if _, ok := r.conns[key]; ok {
			return DropAlreadyIn
		}
		r.conns[key] = e.User
		u := r.users[e.User]
		if u == nil {
			u = &userState{name: e.Name}
			r.users[e.User] = u
		}
		u.name = e.Name
		u.conns++
		// A new tab changes no one's view, but the published state must
		// hold every connection: a replica taking over resumes from it.
		m.markDirty(r, offset, at)
	case TypeLeave:
		id, ok := r.conns[key]
		if !ok || id != e.User {
			return DropAlreadyIn
		}
		m.dropConn(r, key, offset, at)
	case TypeTyping:
		u := r.users[e.User]
		if _, ok := r.conns[key]; !ok || u == nil {
			return DropNotPresent
		}
		if !u.lastTyping.IsZero() && at.Sub(u.lastTyping) < m.timing.TypingMinGap {
			return DropTypingFlood
		}
		u.lastTyping = at
		if u.typingUntil.IsZero() {
			m.markDirty(r, offset, at)
		}
		u.typingUntil = at.Add(m.timing.TypingTTL)
		m.typists[r] = struct{}{}
	}
	return ""
}

func (m *machine) dropConn(r *roomState, key string, offset int64, at time.Time) {
	id := r.conns[key]
	delete(r.conns, key)
	m.markDirty(r, offset, at)
	if u := r.users[id]; u != nil {
		u.conns--
		if u.conns <= 0 {
			delete(r.users, id)
		}
	}
}

// expireGateway removes every connection of a gateway; it returns how many.
func (m *machine) expireGateway(gw string, offset int64, at time.Time) int {
	n := 0
	prefix := gw + "/"
	for _, r := range m.rooms {
		for key := range r.conns {
			if strings.HasPrefix(key, prefix) {
				m.dropConn(r, key, offset, at)
				n++
			}
		}
	}
	return n
}

// expire removes the connections of gateways not heard from within the
// timeout, and typing indicators past their time. Call it only while the
// partition is read to its end: a replica behind would take the heartbeats
// it has not read yet for silence. It returns the gateways and connections
// expired.
func (m *machine) expire(now time.Time) (gateways, conns int) {
	for gw, seen := range m.gateways {
		if now.Sub(seen) > m.timing.GatewayTimeout {
			conns += m.expireGateway(gw, m.applied+1, now)
			delete(m.gateways, gw)
			gateways++
		}
	}
	for r := range m.typists {
		typing := false
		for _, u := range r.users {
			if u.typingUntil.IsZero() {
				continue
			}
			if now.After(u.typingUntil) {
				u.typingUntil = time.Time{}
				m.markDirty(r, m.applied+1, now)
			} else {
				typing = true
			}
		}
		if !typing {
			delete(m.typists, r)
		}
	}
	return gateways, conns
}

// due returns the dirty rooms whose last publication is at least the
// publication interval old (longer for big rooms), sorted by name.
func (m *machine) due(now time.Time, interval func(users int) time.Duration) []*roomState {
	var out []*roomState
	for _, r := range m.rooms {
		if r.dirty && now.Sub(r.lastPub) >= interval(len(r.users)) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *roomState) int { return strings.Compare(a.name, b.name) })
	return out
}

// snapshot is a room's state record as of now.
func (m *machine) snapshot(r *roomState, now time.Time) State {
	s := State{V: StateVersion, Room: r.name, Offset: max(m.applied, r.offset), Time: now, Count: len(r.users), Conns: len(r.conns),
		Users: make([]Member, 0, len(r.users))}
	byUser := make(map[string][]string, len(r.users))
	for k, id := range r.conns {
		byUser[id] = append(byUser[id], k)
	}
	for id, u := range r.users {
		cs := byUser[id]
		slices.Sort(cs)
		s.Users = append(s.Users, Member{ID: id, Name: u.name, Conns: cs})
		if !u.typingUntil.IsZero() {
			s.Typing = append(s.Typing, id)
		}
	}
	slices.SortFunc(s.Users, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	slices.Sort(s.Typing)
	return s
}

// published marks rooms clean after their states were stored.
func (m *machine) published(rs []*roomState, now time.Time) {
	for _, r := range rs {
		r.dirty, r.lastPub = false, now
	}
}

// checkpointAfter is the partition's checkpoint once the states of due
// are stored: its offset is the last event every stored state includes
// (rooms still dirty and not in due hold it back).
func (m *machine) checkpointAfter(partition int, due []*roomState) Checkpoint {
	off := m.applied
	for _, r := range m.rooms {
		if r.dirty && !slices.Contains(due, r) {
			off = min(off, r.dirtyFrom-1)
		}
	}
	return Checkpoint{V: StateVersion, Partition: partition, Offset: off, Gateways: maps.Clone(m.gateways)}
}

// counts returns users and connections of a room.
func (m *machine) counts(name string) (users, conns int) {
	if r := m.rooms[name]; r != nil {
		return len(r.users), len(r.conns)
	}
	return 0, 0
}
