// Package chatclient is a Go client of Palaver's client protocol, version 1
// (docs/protocol.md): the WebSocket session (hello, join, leave, send, live
// messages) and the HTTP API (rooms, scroll-back, dev login). `palaver chat`
// and the integration tests use it.
//
// Errors the server answers with are *Error values carrying the protocol's
// stable code; a connection the server closed ends with a *CloseError
// carrying the close code. The codes, and the frames on the wire, are
// package protocol's.
package chatclient

import (
	"errors"
	"fmt"
	"time"

	"palaver.dev/services/internal/protocol"
)

// ErrClosed is returned by commands on a client that Close closed.
var ErrClosed = errors.New("chatclient: client closed")

// Error is an error the server answered with: an `error` frame, or an HTTP
// error body.
type Error struct {
	Code    string // stable code, one of package protocol's Code constants
	Message string // human-readable detail; may change between releases
	Room    string // the room the command named, if any
	// Supported lists the server's protocol versions (unsupported_version).
	Supported []int
	// Status is the HTTP status for errors of the HTTP API; 0 on the WebSocket.
	Status int
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Code returns the protocol error code carried by err (an *Error anywhere in
// its chain), or "" if there is none.
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// CloseError reports that the server closed the connection, with the close
// code and reason it sent. A connection lost without a close frame ends
// with another error (a network error).
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	name := protocol.CloseName(e.Code)
	if name == "" {
		name = "closed"
	}
	s := fmt.Sprintf("connection closed: %d %s", e.Code, name)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// CloseCode returns the close code carried by err (a *CloseError anywhere in
// its chain), or 0 if there is none.
func CloseCode(err error) int {
	var e *CloseError
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// User is who a token names.
type User = protocol.User

// Limits are the server's limits announced in welcome.
type Limits = protocol.Limits

// Welcome is the server's answer to hello.
type Welcome struct {
	Version int    `json:"version"`
	User    User   `json:"user"`
	Limits  Limits `json:"limits"`
}

// Joined is the answer to join.
type Joined struct {
	Room string `json:"room"`
	// Cursor is the position delivery starts from.
	Cursor string `json:"cursor"`
	// Recovering is true when the join carried a cursor and the server first
	// delivers what was stored after it.
	Recovering bool `json:"recovering"`
	// Reset is true when the join's cursor was not a position in the room
	// as it is now (its topic was created again, or its broker wiped):
	// delivery starts at Cursor, the room's oldest message, and what the
	// caller holds of the room's earlier messages belongs to history that
	// was cut. The client forgets the old positions itself.
	Reset bool `json:"reset"`
}

// Ack is the answer to send: where Kafka stored the message.
type Ack struct {
	Room      string    `json:"room"`
	ID        string    `json:"id"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Time      time.Time `json:"time"`
	// Duplicate is true when a message with the same id was already stored;
	// the position is the first one's.
	Duplicate bool `json:"duplicate"`
}

// Message is a stored chat message.
type Message struct {
	Room      string    `json:"room"`
	ID        string    `json:"id"`
	Sender    User      `json:"sender"`
	Text      string    `json:"text"`
	Time      time.Time `json:"time"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	// Cursor is the position just after this message.
	Cursor string `json:"cursor"`
	// ClientTime is the sender's clock when it sent the message, as its
	// send said; zero when it did not say.
	ClientTime time.Time `json:"client_time,omitzero"`
}

// Presence is a presence frame of a room: a snapshot (op presence: Users
// is who is online, up to the server's cap) or, with Diff, a change (op
// presence_diff: Joined and Left; Typing is set when TypingChanged).
type Presence struct {
	Room          string `json:"room"`
	Diff          bool   `json:"-"`
	Count         int    `json:"count"`
	Users         []User `json:"users,omitempty"`
	Truncated     bool   `json:"truncated,omitempty"`
	Joined        []User `json:"joined,omitempty"`
	Left          []User `json:"left,omitempty"`
	Typing        []User `json:"typing,omitempty"`
	TypingChanged bool   `json:"-"`
}

// Online is a page of GET /v1/rooms/{room}/presence.
type Online struct {
	Room   string `json:"room"`
	Count  int    `json:"count"`
	Users  []User `json:"users"`
	Typing []User `json:"typing"`
	Next   string `json:"next,omitempty"`
}

// Room is an entry of GET /v1/rooms.
type Room struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name,omitempty"`
	Description string `json:"description,omitempty"`
	Online      *int   `json:"online,omitempty"` // users online; nil when the gateway runs without presence
}

// Page is a page of scroll-back: Messages oldest first, and the cursor to
// ask for the page before it.
type Page struct {
	Messages []Message `json:"messages"`
	Before   string    `json:"before"`
}
