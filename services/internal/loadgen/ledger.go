package loadgen

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Ledger is the books of a run of many people in many rooms: what was
// sent and acknowledged, and what each person read. It checks the
// protocol's promises from the outside: every acknowledged message reaches
// every member once, in order per partition, and nothing is stored twice.
// Message ids carry their first send's time, so a delivery is timed
// without a shared table.
type Ledger struct {
	id    string    // prefixes the ids of this run's messages
	clock time.Time // origin of the times in the ids

	seq atomic.Int64

	// Counters for the progress line.
	Connected    atomic.Int64 // open connections
	Sent         atomic.Int64 // sends written, retries excluded
	Retried      atomic.Int64 // sends written again with the same id
	AckedN       atomic.Int64 // sends acknowledged (first acks only)
	Delivered    atomic.Int64 // this run's messages read, every person together
	ErrorsN      atomic.Int64 // error frames
	Disconnects  atomic.Int64 // connections lost and resumed
	TypingOff    atomic.Bool  // the gateway answered typing with unknown_op
	TypingSent   atomic.Int64 // typing commands written
	TypingAnswer atomic.Int64 // typing commands the gateway answered without error

	mu       sync.Mutex
	acked    map[string]map[string]Position // room -> id -> where it was stored
	retried  map[string]bool                // ids written more than once
	errs     map[string]int                 // error frames by code
	closes   map[string]int                 // connections lost, by reason
	inboxes  []*Inbox
	window   []time.Duration // delivery times since the last Window call
	ackTimes []time.Duration
}

// Position is where Kafka stored a message.
type Position struct {
	Partition int
	Offset    int64
}

// NewLedger starts the books of a run.
func NewLedger() *Ledger {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Ledger{
		id: "sim-" + hex.EncodeToString(b[:]), clock: time.Now(),
		acked: map[string]map[string]Position{}, errs: map[string]int{}, closes: map[string]int{}, retried: map[string]bool{},
	}
}

// NewID returns a fresh client message id for a send made now by person;
// the id carries the time (person must not contain '@').
func (l *Ledger) NewID(person string) string {
	return l.id + "." + person + "." + strconv.FormatInt(l.seq.Add(1), 36) + "@" + strconv.FormatInt(int64(time.Since(l.clock)), 36)
}

// sentAt returns when a send of this run was first made, from its id.
func (l *Ledger) sentAt(id string) (time.Duration, bool) {
	if !strings.HasPrefix(id, l.id) {
		return 0, false
	}
	i := strings.LastIndexByte(id, '@')
	if i < 0 {
		return 0, false
	}
	ns, err := strconv.ParseInt(id[i+1:], 36, 64)
	return time.Duration(ns), err == nil
}

func (l *Ledger) since() time.Duration { return time.Since(l.clock) }

// Ack records the acknowledgement of a send (Person does it for its own).
func (l *Ledger) Ack(room, id string, pos Position) {
	at, ok := l.sentAt(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.acked[room]
	if r == nil {
		r = map[string]Position{}
		l.acked[room] = r
	}
	if _, dup := r[id]; dup {
		return
	}
	r[id] = pos
	l.AckedN.Add(1)
	if ok {
		l.ackTimes = append(l.ackTimes, l.since()-at)
	}
}

// Error counts an error frame (Person does it for its own).
func (l *Ledger) Error(code string) {
	l.ErrorsN.Add(1)
	l.mu.Lock()
	l.errs[code]++
	l.mu.Unlock()
}

// closed counts a connection lost for reason.
func (l *Ledger) closed(reason string) {
	l.Disconnects.Add(1)
	l.mu.Lock()
	l.closes[reason]++
	l.mu.Unlock()
}

// retry records that the send id was written again.
func (l *Ledger) retry(id string) {
	l.Retried.Add(1)
	l.mu.Lock()
	l.retried[id] = true
	l.mu.Unlock()
}

// Closes returns the connections lost so far, by reason.
func (l *Ledger) Closes() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.closes)
}

// Acked returns the ids acknowledged in room and where they were stored.
func (l *Ledger) Acked(room string) map[string]Position {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.acked[room])
}

// maxWindow bounds the delivery times kept for Window, for runs that
// never call it.
const maxWindow = 1 << 16

// Window returns the delivery times recorded since its last call (up to
// the first 65,536 of them).
func (l *Ledger) Window() Percentiles {
	l.mu.Lock()
	w := l.window
	l.window = nil
	l.mu.Unlock()
	return percentiles(w)
}

// Inbox is what one person read: its reading goroutine records, the
// checks run once it stopped.
type Inbox struct {
	Person string
	l      *Ledger
	rooms  map[string]*roomLog
	lat    []time.Duration
	foreign,
	// redelivered counts messages read again at a position already read;
	// stored twice those read once more under the same id at a new
	// position (a second stored copy shown to the reader); disorder those
	// read at a position before one read earlier.
	redelivered, storedTwice, disorder int
	firstDisorder, firstTwice string
}

type roomLog struct {
	ids  map[string]Position
	last map[int]int64 // partition -> latest offset read
}

// NewInbox returns the inbox of person, checked with the others by Verify.
func (l *Ledger) NewInbox(person string) *Inbox {
	in := &Inbox{Person: person, l: l, rooms: map[string]*roomLog{}}
	l.mu.Lock()
	l.inboxes = append(l.inboxes, in)
	l.mu.Unlock()
	return in
}

// Deliver records a message frame just read.
func (in *Inbox) Deliver(f *Frame) {
	now := in.l.since()
	at, mine := in.l.sentAt(f.ID)
	if !mine {
		in.foreign++
		return
	}
	r := in.rooms[f.Room]
	if r == nil {
		r = &roomLog{ids: map[string]Position{}, last: map[int]int64{}}
		in.rooms[f.Room] = r
	}
	pos := Position{Partition: f.Partition, Offset: f.Offset}
	if last, ok := r.last[f.Partition]; ok && f.Offset <= last {
		if prev, ok := r.ids[f.ID]; ok && prev == pos {
			in.redelivered++
		} else {
			in.disorder++
			if in.firstDisorder == "" {
				in.firstDisorder = fmt.Sprintf("%s read %s/%d@%d after @%d", in.Person, f.Room, f.Partition, f.Offset, last)
			}
		}
		return
	}
	r.last[f.Partition] = f.Offset
	if prev, ok := r.ids[f.ID]; ok {
		in.storedTwice++
		if in.firstTwice == "" {
			in.firstTwice = fmt.Sprintf("%s stored at %s/%d@%d and @%d", f.ID, f.Room, prev.Partition, prev.Offset, f.Offset)
		}
		return
	}
	r.ids[f.ID] = pos
	d := now - at
	in.lat = append(in.lat, d)
	in.l.Delivered.Add(1)
	in.l.mu.Lock()
	if len(in.l.window) < maxWindow {
		in.l.window = append(in.l.window, d)
	}
	in.l.mu.Unlock()
}

// Got returns the ids of this run's messages in room that the inbox read.
func (in *Inbox) Got(room string) map[string]Position {
	if r := in.rooms[room]; r != nil {
		return r.ids
	}
	return nil
}

// Verdict is what Verify found.
type Verdict struct {
	Acked       int `json:"acked"`        // sends acknowledged
	Deliveries  int `json:"deliveries"`   // this run's messages read, every person together
	Expected    int `json:"expected"`     // deliveries the checked memberships call for
	Missing     int `json:"missing"`      // acknowledged messages a checked member never read
	Unacked     int `json:"unacked"`      // messages read that were never acknowledged
	Redelivered int `json:"redelivered"`  // a message read twice at the same position
	StoredTwice int `json:"stored_twice"` // a message read again under its id at another position: a second stored copy shown
	Disorder    int `json:"disorder"`     // a message read before one stored earlier
	Foreign     int `json:"foreign"`      // messages not of this run, ignored
	// Errors are the error frames by code; Closes the connections lost
	// by reason.
	Errors map[string]int `json:"errors,omitempty"`
	Closes map[string]int `json:"closes,omitempty"`
	// Delivery is the time from the first send of a message to each read
	// of it; Ack from the first send to its acknowledgement.
	Delivery Percentiles `json:"delivery"`
	Ack      Percentiles `json:"ack"`

	examples []string
}

// Verify checks every inbox: member(person, room) says whether the person
// was a member of room for the whole run, so must have read every message
// acknowledged there. Call it once the people stopped reading.
func (l *Ledger) Verify(member func(person, room string) bool) Verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := Verdict{Errors: maps.Clone(l.errs), Closes: maps.Clone(l.closes)}
	acked := map[string]bool{}
	var lat []time.Duration
	for room, ids := range l.acked {
		v.Acked += len(ids)
		for id := range ids {
			acked[room+"\x00"+id] = true
		}
	}
	for _, in := range l.inboxes {
		v.Redelivered += in.redelivered
		v.StoredTwice += in.storedTwice
		v.Disorder += in.disorder
		v.Foreign += in.foreign
		if in.firstTwice != "" && !l.retried[strings.SplitN(in.firstTwice, " ", 2)[0]] {
			in.firstTwice += " (its sender wrote it once)"
		}
		for _, e := range []string{in.firstDisorder, in.firstTwice} {
			if e != "" && !slices.Contains(v.examples, e) {
				v.examples = append(v.examples, e)
			}
		}
		lat = append(lat, in.lat...)
		for room, r := range in.rooms {
			v.Deliveries += len(r.ids)
			for id := range r.ids {
				if !acked[room+"\x00"+id] {
					v.Unacked++
				}
			}
		}
		for _, room := range slices.Sorted(maps.Keys(l.acked)) {
			if member == nil || !member(in.Person, room) {
				continue
			}
			v.Expected += len(l.acked[room])
			got := in.Got(room)
			for id := range l.acked[room] {
				if _, ok := got[id]; !ok {
					v.Missing++
					if v.Missing <= 3 {
						v.examples = append(v.examples, fmt.Sprintf("%s never read %s in %s", in.Person, id, room))
					}
				}
			}
		}
	}
	v.Delivery, v.Ack = percentiles(lat), percentiles(slices.Clone(l.ackTimes))
	return v
}

// Problems lists what broke a promise: lost, repeated or reordered
// messages. Refused sends and lost connections are not problems here: a
// drill provokes them on purpose.
func (v Verdict) Problems() []string {
	var p []string
	add := func(n int, what string) {
		if n > 0 {
			p = append(p, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(v.Missing, "acknowledged messages never read by a member")
	add(v.Redelivered, "messages read twice")
	add(v.StoredTwice, "messages read twice under one id (a second stored copy shown)")
	add(v.Disorder, "messages read out of order")
	if len(p) > 0 && len(v.examples) > 0 {
		p = append(p, "e.g. "+strings.Join(v.examples[:min(5, len(v.examples))], "; "))
	}
	return p
}
