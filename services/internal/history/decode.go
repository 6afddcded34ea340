package history

import (
	"bytes"
	"time"
	"unicode/utf8"

	"palaver.dev/services/internal/message"
)

// decodeEnvelope is message.Decode, faster on the envelopes message.Encode
// writes: its fields in its order, no whitespace, strings without escapes.
// Anything else (another writer's JSON, an escaped character) goes to
// message.Decode, so the result is always Decode's: FuzzDecodeEnvelope
// holds the two to it. Decoding with encoding/json was most of the
// consumers' CPU during a rebuild.
func decodeEnvelope(b []byte) (message.Envelope, error) {
	if e, ok := decodeCanonical(b); ok {
		return e, e.Validate()
	}
	return message.Decode(b)
}

// decodeCanonical reads b as message.Encode writes an envelope, or says it
// cannot. It accepts only what encoding/json would decode to the same
// envelope.
func decodeCanonical(b []byte) (message.Envelope, bool) {
	var e message.Envelope
	if len(b) > message.MaxEncodedBytes || !utf8.Valid(b) {
		return e, false
	}
	rest, ok := bytes.CutPrefix(b, []byte(`{"v":1,"id":`))
	if !ok {
		return e, false
	}
	e.V = 1
	if e.ID, rest, ok = canonicalString(rest); !ok {
		return e, false
	}
	if e.Room, rest, ok = canonicalField(rest, `,"room":`); !ok {
		return e, false
	}
	if e.SenderID, rest, ok = canonicalField(rest, `,"sender_id":`); !ok {
		return e, false
	}
	if bytes.HasPrefix(rest, []byte(`,"sender_name":`)) {
		if e.SenderName, rest, ok = canonicalField(rest, `,"sender_name":`); !ok {
			return e, false
		}
	}
	if e.Text, rest, ok = canonicalField(rest, `,"text":`); !ok {
		return e, false
	}
	if bytes.HasPrefix(rest, []byte(`,"client_time":`)) {
		var at string
		if at, rest, ok = canonicalField(rest, `,"client_time":`); !ok {
			return e, false
		}
		// What encoding/json does with it, through time.Time's own decoder.
		var t time.Time
		if t.UnmarshalJSON([]byte(`"`+at+`"`)) != nil || t.IsZero() {
			return e, false
		}
		e.ClientTime = t
	}
	return e, string(rest) == "}"
}

// canonicalField reads name, then a string.
func canonicalField(b []byte, name string) (string, []byte, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(name))
	if !ok {
		return "", b, false
	}
	return canonicalString(rest)
}

// canonicalString reads a JSON string with no escapes and no control
// characters (which encoding/json refuses unescaped), and what follows it.
func canonicalString(b []byte) (string, []byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", b, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return string(b[1:i]), b[i+1:], true
		case c == '\\' || c < 0x20:
			return "", b, false
		}
	}
	return "", b, false
}
