package protocol

import "time"

// Command is a client frame: every command's fields, flattened; each op
// uses some, and the ones it does not use are left out when encoding.
type Command struct {
	Op         string `json:"op"`
	Ref        string `json:"ref,omitempty"`
	Versions   []int  `json:"versions,omitempty"`    // hello
	Token      string `json:"token,omitempty"`       // hello
	Room       string `json:"room,omitempty"`        // join, leave, send, typing
	Cursor     string `json:"cursor,omitempty"`      // join
	Last       int    `json:"last,omitempty"`        // join
	ID         string `json:"id,omitempty"`          // send
	Text       string `json:"text,omitempty"`        // send
	ClientTime string `json:"client_time,omitempty"` // send, a Time as text
}

// User is a user as frames show it.
type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Limits are the server's limits, announced in welcome.
type Limits struct {
	MaxTextBytes   int     `json:"max_text_bytes"`
	MaxFrameBytes  int     `json:"max_frame_bytes"`
	SendsPerSecond float64 `json:"sends_per_second"`
	SendBurst      int     `json:"send_burst"`
}

// The server's frames, one type per op; Op is the op's constant.

// WelcomeFrame answers hello.
type WelcomeFrame struct {
	Op      string `json:"op"`
	Ref     string `json:"ref,omitempty"`
	Version int    `json:"version"`
	User    User   `json:"user"`
	Limits  Limits `json:"limits"`
}

// JoinedFrame answers join, before any message of the join.
type JoinedFrame struct {
	Op         string `json:"op"`
	Ref        string `json:"ref,omitempty"`
	Room       string `json:"room"`
	Cursor     string `json:"cursor"`
	Recovering bool   `json:"recovering"`
	Reset      bool   `json:"reset"`
}

// LeftFrame answers leave.
type LeftFrame struct {
	Op   string `json:"op"`
	Ref  string `json:"ref,omitempty"`
	Room string `json:"room"`
}

// TypedFrame answers typing.
type TypedFrame struct {
	Op   string `json:"op"`
	Ref  string `json:"ref,omitempty"`
	Room string `json:"room"`
}

// PongFrame answers ping.
type PongFrame struct {
	Op  string `json:"op"`
	Ref string `json:"ref,omitempty"`
}

// AckFrame answers send; the HTTP API answers POST messages with it too.
type AckFrame struct {
	Op        string `json:"op"`
	Ref       string `json:"ref,omitempty"`
	Room      string `json:"room"`
	ID        string `json:"id"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Time      Time   `json:"time"`
	Duplicate bool   `json:"duplicate"`
}

// MessageFrame is a stored message, as frames and the HTTP API's pages
// show it.
type MessageFrame struct {
	Op        string `json:"op"`
	Room      string `json:"room"`
	ID        string `json:"id"`
	Sender    User   `json:"sender"`
	Text      string `json:"text"`
	Time      Time   `json:"time"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Cursor    string `json:"cursor"`
	// ClientTime is the sender's clock at the send, as it said; absent
	// when it did not say.
	ClientTime Time `json:"client_time,omitzero"`
}

// PresenceFrame is a snapshot of who is online in a room.
type PresenceFrame struct {
	Op        string `json:"op"`
	Room      string `json:"room"`
	Count     int    `json:"count"`
	Users     []User `json:"users"`
	Truncated bool   `json:"truncated"`
	Typing    []User `json:"typing"`
}

// PresenceDiffFrame is a change of a room's presence since the previous
// presence frame.
type PresenceDiffFrame struct {
	Op     string `json:"op"`
	Room   string `json:"room"`
	Count  int    `json:"count"`
	Joined []User `json:"joined,omitempty"`
	Left   []User `json:"left,omitempty"`
	// Typing is present when it changed: everyone typing now.
	Typing *[]User `json:"typing,omitempty"`
}

// ErrorFrame answers a command that failed (Ref set), or tells of the
// connection or of a room (no Ref).
type ErrorFrame struct {
	Op        string `json:"op"`
	Ref       string `json:"ref,omitempty"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	Room      string `json:"room,omitempty"`
	Supported []int  `json:"supported,omitempty"` // unsupported_version
}

// ServerFrame is any server frame, flattened, for clients to decode: the
// fields of every op's frame, each op using some.
type ServerFrame struct {
	Op  string `json:"op"`
	Ref string `json:"ref"`
	// welcome
	Version int    `json:"version"`
	User    User   `json:"user"`
	Limits  Limits `json:"limits"`
	// joined, left, typed, ack, message, presence, presence_diff, error
	Room       string `json:"room"`
	Cursor     string `json:"cursor"`
	Recovering bool   `json:"recovering"`
	Reset      bool   `json:"reset"`
	ID         string `json:"id"`
	Sender     User   `json:"sender"`
	Text       string `json:"text"`
	Time       Time   `json:"time"`
	Partition  int    `json:"partition"`
	Offset     int64  `json:"offset"`
	Duplicate  bool   `json:"duplicate"`
	ClientTime Time   `json:"client_time"`
	// presence, presence_diff
	Count     int     `json:"count"`
	Users     []User  `json:"users"`
	Truncated bool    `json:"truncated"`
	Joined    []User  `json:"joined"`
	Left      []User  `json:"left"`
	Typing    *[]User `json:"typing"` // nil when a presence_diff has none
	// error
	Code      string `json:"code"`
	Message   string `json:"message"`
	Supported []int  `json:"supported"`
}

// HTTPError is the HTTP API's error body.
type HTTPError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Time is a time in frames and HTTP bodies: RFC 3339 in UTC with exactly
// three fraction digits ("2026-11-24T12:00:00.120Z"), so that times sort
// as strings too. It decodes any RFC 3339 time.
type Time struct{ time.Time }

// TimeLayout is the layout of Time.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(TimeLayout)+2)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, TimeLayout)
	return append(b, '"'), nil
}
