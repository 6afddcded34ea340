package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Client ops of protocol version 1.
const (
	opHello  = "hello"
	opJoin   = "join"
	opLeave  = "leave"
	opSend   = "send"
	opPing   = "ping"
	opTyping = "typing"
)

// MaxRefBytes bounds a frame's ref, which the server copies into its answer.
const MaxRefBytes = 64

// Frame is a decoded client frame: every op's fields, flattened; each op
// uses some.
type Frame struct {
	Op         string `json:"op"`
	Ref        string `json:"ref"`
	Versions   []int  `json:"versions"`    // hello
	Token      string `json:"token"`       // hello
	Room       string `json:"room"`        // join, leave, send, typing
	Cursor     string `json:"cursor"`      // join
	Last       int    `json:"last"`        // join
	ID         string `json:"id"`          // send
	Text       string `json:"text"`        // send
	ClientTime string `json:"client_time"` // send
}

// FrameError is why a frame was refused: a protocol error code, and the
// frame's ref when it could be read, so the answer still matches.
type FrameError struct {
	Code string
	Ref  string
	Msg  string
}

func (e *FrameError) Error() string { return "gateway: " + e.Code + ": " + e.Msg }

// DecodeFrame parses one client text frame. Its errors are *FrameError with
// code bad_frame (not a JSON object, a field of the wrong type, no op, a
// ref over 64 bytes), invalid_utf8 or unknown_op. It checks the shape of a
// frame only; what the fields mean is the command's business.
func DecodeFrame(b []byte) (Frame, error) {
	var f Frame
	if !utf8.Valid(b) {
		// encoding/json would replace the bad bytes; parse anyway, only to
		// find the ref to answer with.
		_ = json.Unmarshal(b, &f)
		ref := safeRef(f.Ref)
		if strings.ContainsRune(ref, utf8.RuneError) {
			ref = "" // the bad bytes may be in the ref itself
		}
		return Frame{}, &FrameError{Code: codeInvalidUTF8, Ref: ref, Msg: "the frame is not valid UTF-8"}
	}
	if len(b) == 0 || b[firstNonSpace(b)] != '{' {
		return Frame{}, &FrameError{Code: codeBadFrame, Msg: "a frame is one JSON object"}
	}
	if err := json.Unmarshal(b, &f); err != nil {
		var ref struct {
			Ref string `json:"ref"`
		}
		_ = json.Unmarshal(b, &ref)
		return Frame{}, &FrameError{Code: codeBadFrame, Ref: safeRef(ref.Ref), Msg: describe(err)}
	}
	if len(f.Ref) > MaxRefBytes {
		return Frame{}, &FrameError{Code: codeBadFrame, Msg: fmt.Sprintf("ref is %d bytes, limit %d", len(f.Ref), MaxRefBytes)}
	}
	switch f.Op {
	case opHello, opJoin, opLeave, opSend, opPing, opTyping:
		return f, nil
	case "":
		return Frame{}, &FrameError{Code: codeBadFrame, Ref: f.Ref, Msg: "the frame has no op"}
	default:
		return Frame{}, &FrameError{Code: codeUnknownOp, Ref: f.Ref, Msg: fmt.Sprintf("unknown op %.32q", f.Op)}
	}
}

func firstNonSpace(b []byte) int {
	for i, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return i
		}
	}
	return 0
}

// safeRef returns ref if it may be echoed.
func safeRef(ref string) string {
	if len(ref) > MaxRefBytes || !utf8.ValidString(ref) {
		return ""
	}
	return ref
}

// describe turns a JSON error into a message for the client, without
// echoing what it sent.
func describe(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("field %q must be a %s", te.Field, kind(te.Field))
	}
	return "malformed JSON"
}

func kind(field string) string {
	switch field {
	case "versions":
		return "list of integers"
	case "last":
		return "integer"
	default:
		return "string"
	}
}
