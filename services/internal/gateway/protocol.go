package gateway

import (
	"encoding/json"
	"net/http"
	"time"

	"palaver.dev/services/internal/gateway/roomhub"
)

// ProtocolVersion is the client protocol this gateway speaks
// (docs/protocol.md).
const ProtocolVersion = 1

// supportedVersions are listed in unsupported_version errors.
var supportedVersions = []int{ProtocolVersion}

// Error codes of the protocol; stable, clients switch on them.
const (
	codeBadFrame           = "bad_frame"
	codeUnknownOp          = "unknown_op"
	codeUnsupportedVersion = "unsupported_version"
	codeUnauthorized       = "unauthorized"
	codeForbidden          = "forbidden"
	codeNotFound           = "not_found"
	codeNotJoined          = "not_joined"
	codeBadRequest         = "bad_request"
	codeTooLarge           = "too_large"
	codeInvalidUTF8        = "invalid_utf8"
	codeRateLimited        = "rate_limited"
	codeUnavailable        = "unavailable"
	codeInternal           = "internal"
)

// httpStatus maps an error code to the HTTP API's status.
func httpStatus(code string) int {
	switch code {
	case codeUnauthorized:
		return http.StatusUnauthorized
	case codeForbidden:
		return http.StatusForbidden
	case codeNotFound:
		return http.StatusNotFound
	case codeTooLarge:
		return http.StatusRequestEntityTooLarge
	case codeRateLimited:
		return http.StatusTooManyRequests
	case codeUnavailable:
		return http.StatusServiceUnavailable
	case codeInternal:
		return http.StatusInternalServerError
	default:
		return http.StatusBadRequest
	}
}

// Close codes of the protocol.
const (
	closeGoingAway    = 1001
	closeTooBig       = 1009
	closeBadFrame     = 4400
	closeUnauthorized = 4401
	closeSlowConsumer = 4408
	closeRateLimited  = 4429
)

// user is a user as frames show it.
type user struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Limits are announced in welcome.
type Limits struct {
	MaxTextBytes   int     `json:"max_text_bytes"`
	MaxFrameBytes  int     `json:"max_frame_bytes"`
	SendsPerSecond float64 `json:"sends_per_second"`
	SendBurst      int     `json:"send_burst"`
}

type welcomeFrame struct {
	Op      string `json:"op"`
	Ref     string `json:"ref,omitempty"`
	Version int    `json:"version"`
	User    user   `json:"user"`
	Limits  Limits `json:"limits"`
}

type joinedFrame struct {
	Op         string `json:"op"`
	Ref        string `json:"ref,omitempty"`
	Room       string `json:"room"`
	Cursor     string `json:"cursor"`
	Recovering bool   `json:"recovering"`
	Reset      bool   `json:"reset"`
}

type leftFrame struct {
	Op   string `json:"op"`
	Ref  string `json:"ref,omitempty"`
	Room string `json:"room"`
}

type pongFrame struct {
	Op  string `json:"op"`
	Ref string `json:"ref,omitempty"`
}

// AckFrame answers a send; the HTTP API answers POST messages with it too.
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

// MessageFrame is a stored message as clients receive it.
type MessageFrame struct {
	Op        string `json:"op"`
	Room      string `json:"room"`
	ID        string `json:"id"`
	Sender    user   `json:"sender"`
	Text      string `json:"text"`
	Time      Time   `json:"time"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Cursor    string `json:"cursor"`
	// ClientTime is the sender's clock at the send, as it said; absent
	// when it did not say.
	ClientTime Time `json:"client_time,omitzero"`
}

// Time is a time in frames and HTTP bodies: RFC 3339 in UTC with exactly
// three fraction digits ("2026-11-24T12:00:00.120Z"), so that times sort
// as strings too.
type Time struct{ time.Time }

// TimeLayout is the layout of Time.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(TimeLayout) + `"`), nil
}

type errorFrame struct {
	Op        string `json:"op"`
	Ref       string `json:"ref,omitempty"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	Room      string `json:"room,omitempty"`
	Supported []int  `json:"supported,omitempty"`
}

// apiError is the HTTP API's error body.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// protoError is a command's failure: the code and message of its answer.
type protoError struct {
	code, msg string
}

func (e *protoError) Error() string { return e.code + ": " + e.msg }

func fail(code, msg string) *protoError { return &protoError{code: code, msg: msg} }

func messageFrame(d *roomhub.Delivery) MessageFrame {
	m := d.Msg
	name := m.SenderName
	if name == "" {
		name = m.SenderID
	}
	return MessageFrame{
		Op: "message", Room: d.Room, ID: m.ID, Sender: user{ID: m.SenderID, Name: name}, Text: m.Text,
		Time: Time{m.Time}, Partition: m.Partition, Offset: m.Offset, Cursor: d.Cursor.String(),
		ClientTime: Time{m.ClientTime},
	}
}

// encodeDelivery is the hub's frame encoder.
func encodeDelivery(d *roomhub.Delivery) []byte {
	return mustJSON(messageFrame(d))
}

// mustJSON encodes frames, which are plain structs of strings and numbers.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("gateway: encode frame: " + err.Error())
	}
	return b
}
