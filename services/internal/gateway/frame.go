package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"palaver.dev/services/internal/protocol"
)

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
func DecodeFrame(b []byte) (protocol.Command, error) {
	var f protocol.Command
	if !utf8.Valid(b) {
		// encoding/json would replace the bad bytes; parse anyway, only to
		// find the ref to answer with.
		_ = json.Unmarshal(b, &f)
		ref := safeRef(f.Ref)
		if strings.ContainsRune(ref, utf8.RuneError) {
			ref = "" // the bad bytes may be in the ref itself
		}
		return protocol.Command{}, &FrameError{Code: protocol.CodeInvalidUTF8, Ref: ref, Msg: "the frame is not valid UTF-8"}
	}
	if len(b) == 0 || b[firstNonSpace(b)] != '{' {
		return protocol.Command{}, &FrameError{Code: protocol.CodeBadFrame, Msg: "a frame is one JSON object"}
	}
	if err := json.Unmarshal(b, &f); err != nil {
		var ref struct {
			Ref string `json:"ref"`
		}
		_ = json.Unmarshal(b, &ref)
		return protocol.Command{}, &FrameError{Code: protocol.CodeBadFrame, Ref: safeRef(ref.Ref), Msg: describe(err)}
	}
	if len(f.Ref) > protocol.MaxRefBytes {
		return protocol.Command{}, &FrameError{Code: protocol.CodeBadFrame, Msg: fmt.Sprintf("ref is %d bytes, limit %d", len(f.Ref), protocol.MaxRefBytes)}
	}
	switch {
	case protocol.IsCommand(f.Op):
		return f, nil
	case f.Op == "":
		return protocol.Command{}, &FrameError{Code: protocol.CodeBadFrame, Ref: f.Ref, Msg: "the frame has no op"}
	default:
		return protocol.Command{}, &FrameError{Code: protocol.CodeUnknownOp, Ref: f.Ref, Msg: fmt.Sprintf("unknown op %.32q", f.Op)}
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
	if len(ref) > protocol.MaxRefBytes || !utf8.ValidString(ref) {
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
