// Package protocol is Palaver's client protocol, version 1, in Go: the
// frames a client and the gateway exchange over the WebSocket, their ops,
// the error codes of error frames and the HTTP API, and the close codes.
// It is the Go form of docs/protocol.md, which stays the contract (a test
// holds the two to the same ops and codes); the gateway, chatclient (and
// its fake gateway) and loadgen all speak it through this package. The
// web UI's JavaScript is the other implementation.
//
// The package declares the wire format only: what a frame means, and what
// a server or a client does about it, is the business of its users.
package protocol

import "net/http"

// Version is the protocol version this package describes.
const Version = 1

// MaxRefBytes bounds a command's ref, which the server copies into its
// answer.
const MaxRefBytes = 64

// Ops a client sends (docs/protocol.md, "Client frames").
const (
	OpHello  = "hello"
	OpJoin   = "join"
	OpLeave  = "leave"
	OpSend   = "send"
	OpTyping = "typing"
	OpPing   = "ping"
)

// Ops the server sends: the answers to the commands, then the frames it
// sends by itself (docs/protocol.md, "Server frames").
const (
	OpWelcome      = "welcome" // answers hello
	OpJoined       = "joined"  // answers join
	OpLeft         = "left"    // answers leave
	OpAck          = "ack"     // answers send
	OpTyped        = "typed"   // answers typing
	OpPong         = "pong"    // answers ping
	OpMessage      = "message"
	OpPresence     = "presence"
	OpPresenceDiff = "presence_diff"
	OpError        = "error" // answers any command, or tells of the connection or a room
)

// IsCommand reports whether op is one of version 1's client ops.
func IsCommand(op string) bool {
	switch op {
	case OpHello, OpJoin, OpLeave, OpSend, OpTyping, OpPing:
		return true
	}
	return false
}

// Error codes of error frames and of the HTTP API's error bodies; stable,
// clients switch on them (docs/protocol.md, "error").
const (
	CodeBadFrame           = "bad_frame"
	CodeUnknownOp          = "unknown_op"
	CodeUnsupportedVersion = "unsupported_version"
	CodeUnauthorized       = "unauthorized"
	CodeForbidden          = "forbidden"
	CodeNotFound           = "not_found"
	CodeNotJoined          = "not_joined"
	CodeBadRequest         = "bad_request"
	CodeTooLarge           = "too_large"
	CodeInvalidUTF8        = "invalid_utf8"
	CodeRateLimited        = "rate_limited"
	CodeUnavailable        = "unavailable"
	CodeInternal           = "internal"
)

// HTTPStatus is the HTTP API's status for an error code.
func HTTPStatus(code string) int {
	switch code {
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeInternal:
		return http.StatusInternalServerError
	default:
		return http.StatusBadRequest
	}
}

// WebSocket close codes the gateway closes with (docs/protocol.md, "Close
// codes"): RFC 6455's, then the protocol's own (4xxx). They are untyped,
// to go with any WebSocket library's status type.
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001
	CloseProtocolError = 1002
	CloseInvalidData   = 1007
	ClosePolicy        = 1008
	CloseTooBig        = 1009
	CloseBadFrame      = 4400
	CloseUnauthorized  = 4401
	CloseSlowConsumer  = 4408
	CloseRateLimited   = 4429
)

// CloseName is the name docs/protocol.md gives a close code, or "" for a
// code the protocol does not use.
func CloseName(code int) string {
	switch code {
	case CloseNormal:
		return "normal"
	case CloseGoingAway:
		return "going away"
	case CloseProtocolError:
		return "protocol error"
	case CloseInvalidData:
		return "invalid data"
	case ClosePolicy:
		return "policy"
	case CloseTooBig:
		return "too big"
	case CloseBadFrame:
		return "bad frame"
	case CloseUnauthorized:
		return "unauthorized"
	case CloseSlowConsumer:
		return "slow consumer"
	case CloseRateLimited:
		return "rate limited"
	}
	return ""
}
