// Package message defines the chat message envelope: the JSON value of every
// record on a room topic. It is versioned, readable with any Kafka console
// consumer, and validated the same way wherever it is produced or consumed.
package message

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Version is the envelope version this package writes.
const Version = 1

// Limits on envelope fields. MaxTextBytes bounds what a user may type;
// MaxEncodedBytes bounds a whole record value, leaving room for the other
// fields and JSON escaping.
const (
	MaxIDBytes         = 64
	MaxRoomBytes       = 63
	MaxSenderIDBytes   = 128
	MaxSenderNameBytes = 64
	MaxTextBytes       = 4096
	MaxEncodedBytes    = 32 << 10
)

// Errors returned by Validate and Decode; test them with errors.Is.
var (
	ErrMalformed          = errors.New("message: malformed envelope")
	ErrUnsupportedVersion = errors.New("message: unsupported envelope version")
	ErrMissingField       = errors.New("message: missing required field")
	ErrTooLarge           = errors.New("message: too large")
	ErrInvalidUTF8        = errors.New("message: invalid UTF-8")
	ErrInvalidRoom        = errors.New("message: invalid room name")
	ErrOtherRoom          = errors.New("message: envelope of another room")
)

// Envelope is what a client sends, as stored on the room topic. The broker's
// log-append time and the record's (partition, offset) become its identity
// once stored; see Stored.
type Envelope struct {
	V          int       `json:"v"`
	ID         string    `json:"id"`
	Room       string    `json:"room"`
	SenderID   string    `json:"sender_id"`
	SenderName string    `json:"sender_name,omitempty"`
	Text       string    `json:"text"`
	ClientTime time.Time `json:"client_time,omitzero"`
}

// Stored is an envelope as read back from Kafka, with its position and the
// broker's timestamp.
type Stored struct {
	Envelope
	Partition int
	Offset    int64
	Time      time.Time
}

// Validate checks required fields, sizes and UTF-8. It reports the first
// problem found, wrapping one of the package's errors.
func (e *Envelope) Validate() error {
	if e.V != Version {
		return fmt.Errorf("%w: %d", ErrUnsupportedVersion, e.V)
	}
	if err := ValidateRoom(e.Room); err != nil {
		return err
	}
	fields := []struct {
		name     string
		value    string
		max      int
		required bool
	}{
		{"id", e.ID, MaxIDBytes, true},
		{"sender_id", e.SenderID, MaxSenderIDBytes, true},
		{"sender_name", e.SenderName, MaxSenderNameBytes, false},
		{"text", e.Text, MaxTextBytes, true},
	}
	for _, f := range fields {
		switch {
		case f.required && f.value == "":
			return fmt.Errorf("%w: %s", ErrMissingField, f.name)
		case len(f.value) > f.max:
			return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, f.name, len(f.value), f.max)
		case !utf8.ValidString(f.value):
			return fmt.Errorf("%w: %s", ErrInvalidUTF8, f.name)
		}
	}
	return nil
}

// ValidateRoom checks a room name: 1 to 63 bytes of lowercase letters, digits,
// '-' and '.', starting and ending with a letter or digit (a Kubernetes
// object name that is also a legal Kafka topic fragment).
func ValidateRoom(room string) error {
	if room == "" {
		return fmt.Errorf("%w: room", ErrMissingField)
	}
	if len(room) > MaxRoomBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidRoom, len(room), MaxRoomBytes)
	}
	for i := 0; i < len(room); i++ {
		c := room[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		edge := i == 0 || i == len(room)-1
		if !alnum && (edge || c != '-' && c != '.') {
			return fmt.Errorf("%w: %q", ErrInvalidRoom, room)
		}
	}
	return nil
}

// Encode validates e and returns its JSON form.
func Encode(e *Envelope) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(b) > MaxEncodedBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrTooLarge, len(b), MaxEncodedBytes)
	}
	return b, nil
}

// Decode parses and validates a record value. Invalid UTF-8 is rejected
// before parsing, because encoding/json would silently replace it.
func Decode(b []byte) (Envelope, error) {
	var e Envelope
	if len(b) > MaxEncodedBytes {
		return e, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxEncodedBytes)
	}
	if !utf8.Valid(b) {
		return e, ErrInvalidUTF8
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return Envelope{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// DecodeRoom is Decode for a record read from room's topic: an envelope
// naming another room (written there by mistake, or by something other
// than a gateway) is refused with ErrOtherRoom, never delivered as room's.
func DecodeRoom(b []byte, room string) (Envelope, error) {
	e, err := Decode(b)
	if err != nil {
		return e, err
	}
	if e.Room != room {
		return Envelope{}, fmt.Errorf("%w: %q in %q", ErrOtherRoom, e.Room, room)
	}
	return e, nil
}
