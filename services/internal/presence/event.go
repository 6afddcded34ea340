// Package presence is Palaver's presence service: who is in each room and
// who is typing. Gateways publish connection events (joins, leaves, typing,
// and one heartbeat per gateway) to the events topic; a consumer group of
// presence replicas turns them into users per room, expires every
// connection of a gateway whose heartbeats stopped, and publishes each
// room's snapshot to the compacted state topic, which gateways read to tell
// their members. The wire formats of both topics are defined here, once,
// for the service and the gateways. docs/presence.md describes the topics
// and the guarantees.
package presence

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"palaver.dev/services/internal/message"
)

// Default topic names. Both have the same number of partitions: a room's
// events and its state live in partitions of the same number.
const (
	EventsTopic = "palaver.presence.events"
	StateTopic  = "palaver.presence.state"
)

// EventVersion is the version of the events this package writes.
const EventVersion = 1

// Event types.
const (
	TypeJoin      = "join"      // a connection joined a room
	TypeLeave     = "leave"     // a connection left a room
	TypeTyping    = "typing"    // a connection's user is typing in a room
	TypeHeartbeat = "heartbeat" // the gateway is alive (one per partition, not per connection)
	TypeShutdown  = "shutdown"  // the gateway stopped cleanly: every connection it had is gone
)

// Limits on event fields.
const (
	MaxGatewayBytes = 64
	MaxConnBytes    = 32
)

// Errors of DecodeEvent; test them with errors.Is.
var (
	ErrMalformed   = errors.New("presence: malformed event")
	ErrUnknownType = errors.New("presence: unknown event type")
	ErrVersion     = errors.New("presence: unsupported event version")
)

// Event is the JSON value of a record on the events topic. Join, leave and
// typing events are keyed by room; heartbeats and shutdowns have no key and
// are written to every partition. The record's timestamp is the gateway's
// clock when it wrote the event.
type Event struct {
	V       int    `json:"v"`
	Type    string `json:"type"`
	Gateway string `json:"gateway"`
	Room    string `json:"room,omitempty"`
	Conn    string `json:"conn,omitempty"`
	User    string `json:"user,omitempty"`
	Name    string `json:"name,omitempty"`
}

// Encode returns the event's JSON.
func (e Event) Encode() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic("presence: encode event: " + err.Error()) // strings only
	}
	return b
}

// DecodeEvent parses and validates an event. Its errors wrap ErrMalformed,
// ErrUnknownType or ErrVersion.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	if !utf8.Valid(b) {
		return Event{}, fmt.Errorf("%w: not UTF-8", ErrMalformed)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if e.V != EventVersion {
		return Event{}, fmt.Errorf("%w: %d", ErrVersion, e.V)
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Validate checks the fields an event of its type needs.
func (e Event) Validate() error {
	if err := validToken("gateway", e.Gateway, MaxGatewayBytes); err != nil {
		return err
	}
	switch e.Type {
	case TypeHeartbeat, TypeShutdown:
		return nil
	case TypeJoin, TypeLeave, TypeTyping:
	default:
		return fmt.Errorf("%w: %.32q", ErrUnknownType, e.Type)
	}
	if err := message.ValidateRoom(e.Room); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := validToken("conn", e.Conn, MaxConnBytes); err != nil {
		return err
	}
	if e.User == "" || len(e.User) > message.MaxSenderIDBytes {
		return fmt.Errorf("%w: user must be 1 to %d bytes", ErrMalformed, message.MaxSenderIDBytes)
	}
	if len(e.Name) > message.MaxSenderNameBytes {
		return fmt.Errorf("%w: name over %d bytes", ErrMalformed, message.MaxSenderNameBytes)
	}
	return nil
}

// validToken checks gateway and connection ids: 1 to max bytes of letters,
// digits, '.', '_', ':' and '-' (so "gateway/conn" is unambiguous).
func validToken(field, s string, maxLen int) error {
	if s == "" || len(s) > maxLen {
		return fmt.Errorf("%w: %s must be 1 to %d bytes", ErrMalformed, field, maxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
		if !ok {
			return fmt.Errorf("%w: %s has a character other than letters, digits and . _ : -", ErrMalformed, field)
		}
	}
	return nil
}

// ValidGatewayID reports whether id may name a gateway in events.
func ValidGatewayID(id string) error { return validToken("gateway id", id, MaxGatewayBytes) }
