package chatclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"palaver.dev/services/internal/protocol"
)

var errBadFrame = errors.New("chatclient: bad frame")

// decodeFrame parses one server frame. Invalid UTF-8 is refused rather than
// silently replaced, and a frame must be an object with an op.
func decodeFrame(b []byte) (protocol.ServerFrame, error) {
	var f protocol.ServerFrame
	if !utf8.Valid(b) {
		return protocol.ServerFrame{}, fmt.Errorf("%w: invalid UTF-8", errBadFrame)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return protocol.ServerFrame{}, fmt.Errorf("%w: %w", errBadFrame, err)
	}
	if f.Op == "" {
		return protocol.ServerFrame{}, fmt.Errorf("%w: no op", errBadFrame)
	}
	return f, nil
}

// messageOf is the Message of a message frame.
func messageOf(f *protocol.ServerFrame) Message {
	return Message{Room: f.Room, ID: f.ID, Sender: f.Sender, Text: f.Text, Time: f.Time.Time,
		Partition: f.Partition, Offset: f.Offset, Cursor: f.Cursor, ClientTime: f.ClientTime.Time}
}

// errorOf is the *Error of an error frame.
func errorOf(f *protocol.ServerFrame) *Error {
	code := f.Code
	if code == "" {
		code = protocol.CodeInternal
	}
	return &Error{Code: code, Message: f.Message, Room: f.Room, Supported: f.Supported}
}
