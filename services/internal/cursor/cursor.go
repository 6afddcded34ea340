// Package cursor implements the opaque resume token that clients hand back
// to continue a room with no gap and no duplicate. A cursor holds, for each
// partition of the room's topic, the offset of the next message to deliver,
// and the epoch those offsets belong to: the room and the identity of its
// topic, so that a cursor of another room, of a topic deleted and created
// again, or of a wiped broker is recognised rather than trusted.
package cursor

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
)

// The first byte of every encoded cursor is its format version: 1 holds
// positions only (cursors made before epochs, and cursors without one); 2
// holds the epoch, then the positions.
const (
	versionPlain = 1
	versionEpoch = 2
)

// MaxPartitions bounds what a token may carry, so a hostile token cannot make
// a decoder allocate without limit.
const MaxPartitions = 1024

// Errors returned by Parse; test them with errors.Is.
var (
	ErrMalformed          = errors.New("cursor: malformed token")
	ErrUnsupportedVersion = errors.New("cursor: unsupported token version")
)

// Epoch identifies the log a cursor's offsets point into: a room (by a
// hash of its name) and one incarnation of its topic (the topic's id, which
// Kafka assigns anew when a topic is created, so a topic deleted and created
// again under the same name, or one on a wiped broker, has another). The
// zero Epoch means unknown.
type Epoch struct {
	Room  uint32
	Topic [16]byte
}

// NewEpoch returns the epoch of room's topic whose id is topicID.
func NewEpoch(room string, topicID [16]byte) Epoch {
	return Epoch{Room: RoomHash(room), Topic: topicID}
}

// RoomHash is the room part of an epoch: FNV-1a of the room's name.
func RoomHash(room string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(room))
	return h.Sum32()
}

// IsZero reports whether the epoch is unknown.
func (e Epoch) IsZero() bool { return e == Epoch{} }

// Cursor maps partition to the next offset to deliver, within an epoch. The
// zero value is an empty cursor: no position in any partition, no epoch.
type Cursor struct {
	next  map[int]int64
	epoch Epoch
}

// Epoch returns the epoch the cursor's positions belong to; zero for a
// cursor that has none (made before epochs existed).
func (c Cursor) Epoch() Epoch { return c.epoch }

// SetEpoch records the epoch the cursor's positions belong to.
func (c *Cursor) SetEpoch(e Epoch) { c.epoch = e }

// Next returns the next offset to deliver in partition p, and whether the
// cursor has a position there.
func (c Cursor) Next(p int) (int64, bool) {
	o, ok := c.next[p]
	return o, ok
}

// Advance records that the message at offset in partition p was delivered.
// Positions only move forward, so replays and out-of-order calls are harmless.
func (c *Cursor) Advance(p int, offset int64) {
	if c.next == nil {
		c.next = make(map[int]int64)
	}
	if cur, ok := c.next[p]; !ok || offset+1 > cur {
		c.next[p] = offset + 1
	}
}

// Covers reports whether the message at offset in partition p was already
// delivered according to the cursor.
func (c Cursor) Covers(p int, offset int64) bool {
	next, ok := c.next[p]
	return ok && offset < next
}

// Partitions returns the partitions the cursor has positions for, ascending.
func (c Cursor) Partitions() []int {
	return slices.Sorted(maps.Keys(c.next))
}

// IsZero reports whether the cursor holds no position.
func (c Cursor) IsZero() bool { return len(c.next) == 0 }

// Clone returns an independent copy.
func (c Cursor) Clone() Cursor { return Cursor{next: maps.Clone(c.next), epoch: c.epoch} }

// epochBytes is the size of an encoded epoch.
const epochBytes = 4 + 16

// String encodes the cursor as an opaque, URL-safe token.
func (c Cursor) String() string {
	parts := c.Partitions()
	b := make([]byte, 0, 2+epochBytes+len(parts)*6)
	if c.epoch.IsZero() {
		b = append(b, versionPlain)
	} else {
		b = append(b, versionEpoch)
		b = binary.BigEndian.AppendUint32(b, c.epoch.Room)
		b = append(b, c.epoch.Topic[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(parts)))
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(p))
		b = binary.AppendUvarint(b, uint64(c.next[p]))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// MarshalText implements encoding.TextMarshaler, so a Cursor is a JSON string.
func (c Cursor) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (c *Cursor) UnmarshalText(b []byte) error {
	parsed, err := Parse(string(b))
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

// Parse decodes a token made by String. The empty string is the empty cursor.
func Parse(token string) (Cursor, error) {
	if token == "" {
		return Cursor{}, nil
	}
	if len(token) > base64.RawURLEncoding.EncodedLen(2+epochBytes+MaxPartitions*20) || strings.ContainsAny(token, "=") {
		return Cursor{}, ErrMalformed
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) == 0 {
		return Cursor{}, ErrMalformed
	}
	var epoch Epoch
	switch b[0] {
	case versionPlain:
		b = b[1:]
	case versionEpoch:
		if len(b) < 1+epochBytes {
			return Cursor{}, ErrMalformed
		}
		epoch.Room = binary.BigEndian.Uint32(b[1:5])
		copy(epoch.Topic[:], b[5:1+epochBytes])
		if epoch.IsZero() {
			return Cursor{}, fmt.Errorf("%w: zero epoch", ErrMalformed) // String never writes one
		}
		b = b[1+epochBytes:]
	default:
		return Cursor{}, fmt.Errorf("%w: %d", ErrUnsupportedVersion, b[0])
	}
	n, b, err := uvarint(b)
	if err != nil || n > MaxPartitions {
		return Cursor{}, ErrMalformed
	}
	c := Cursor{next: make(map[int]int64, n), epoch: epoch}
	for range n {
		var p, o uint64
		if p, b, err = uvarint(b); err != nil || p > 1<<31-1 {
			return Cursor{}, ErrMalformed
		}
		if o, b, err = uvarint(b); err != nil || o > 1<<63-1 {
			return Cursor{}, ErrMalformed
		}
		if _, dup := c.next[int(p)]; dup {
			return Cursor{}, fmt.Errorf("%w: partition %d twice", ErrMalformed, p)
		}
		c.next[int(p)] = int64(o)
	}
	if len(b) != 0 {
		return Cursor{}, fmt.Errorf("%w: trailing bytes", ErrMalformed)
	}
	return c, nil
}

func uvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, ErrMalformed
	}
	return v, b[n:], nil
}
