package chatclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// clientFrame is every frame the client sends; unused fields are omitted.
type clientFrame struct {
	Op         string `json:"op"`
	Ref        string `json:"ref,omitempty"`
	Versions   []int  `json:"versions,omitempty"`
	Token      string `json:"token,omitempty"`
	Room       string `json:"room,omitempty"`
	Cursor     string `json:"cursor,omitempty"`
	Last       int    `json:"last,omitempty"`
	ID         string `json:"id,omitempty"`
	Text       string `json:"text,omitempty"`
	ClientTime string `json:"client_time,omitempty"`
}

// frame is every frame the server sends, flattened: each op uses some fields.
type frame struct {
	Op  string `json:"op"`
	Ref string `json:"ref"`
	// welcome
	Version int    `json:"version"`
	User    User   `json:"user"`
	Limits  Limits `json:"limits"`
	// joined, left, message, presence, ack, error
	Room       string    `json:"room"`
	Cursor     string    `json:"cursor"`
	Recovering bool      `json:"recovering"`
	Reset      bool      `json:"reset"`
	ID         string    `json:"id"`
	Sender     User      `json:"sender"`
	Text       string    `json:"text"`
	Time       time.Time `json:"time"`
	Partition  int       `json:"partition"`
	Offset     int64     `json:"offset"`
	Duplicate  bool      `json:"duplicate"`
	Users      []User    `json:"users"`
	ClientTime time.Time `json:"client_time"`
	// presence, presence_diff
	Count     int     `json:"count"`
	Truncated bool    `json:"truncated"`
	Joined    []User  `json:"joined"`
	Left      []User  `json:"left"`
	Typing    *[]User `json:"typing"`
	// error
	Code      string `json:"code"`
	Message   string `json:"message"`
	Supported []int  `json:"supported"`
}

var errBadFrame = errors.New("chatclient: bad frame")

// decodeFrame parses one server frame. Invalid UTF-8 is refused rather than
// silently replaced, and a frame must be an object with an op.
func decodeFrame(b []byte) (frame, error) {
	var f frame
	if !utf8.Valid(b) {
		return frame{}, fmt.Errorf("%w: invalid UTF-8", errBadFrame)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, fmt.Errorf("%w: %w", errBadFrame, err)
	}
	if f.Op == "" {
		return frame{}, fmt.Errorf("%w: no op", errBadFrame)
	}
	return f, nil
}

func (f *frame) message() Message {
	return Message{Room: f.Room, ID: f.ID, Sender: f.Sender, Text: f.Text, Time: f.Time,
		Partition: f.Partition, Offset: f.Offset, Cursor: f.Cursor, ClientTime: f.ClientTime}
}

func (f *frame) err() *Error {
	code := f.Code
	if code == "" {
		code = CodeInternal
	}
	return &Error{Code: code, Message: f.Message, Room: f.Room, Supported: f.Supported}
}
