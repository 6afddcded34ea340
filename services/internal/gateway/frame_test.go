package gateway

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"palaver.dev/services/internal/protocol"
)

func TestDecodeFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    protocol.Command
		code    string // expected error code; "" for success
		wantRef string // ref carried by the error
	}{
		{name: "hello", in: `{"op":"hello","ref":"h1","versions":[1,2],"token":"abc"}`,
			want: protocol.Command{Op: "hello", Ref: "h1", Versions: []int{1, 2}, Token: "abc"}},
		{name: "join with cursor", in: `{"op":"join","ref":"j","room":"lobby","cursor":"AQEAKg"}`,
			want: protocol.Command{Op: "join", Ref: "j", Room: "lobby", Cursor: "AQEAKg"}},
		{name: "join with last", in: ` {"op":"join","room":"lobby","last":50}`, want: protocol.Command{Op: "join", Room: "lobby", Last: 50}},
		{name: "send", in: `{"op":"send","ref":"s1","room":"lobby","id":"c-1","text":"héllo \u263a"}`,
			want: protocol.Command{Op: "send", Ref: "s1", Room: "lobby", ID: "c-1", Text: "héllo ☺"}},
		{name: "ping without ref", in: `{"op":"ping"}`, want: protocol.Command{Op: "ping"}},
		{name: "unknown fields are ignored", in: `{"op":"leave","room":"x","future":{"a":[1]}}`, want: protocol.Command{Op: "leave", Room: "x"}},

		{name: "empty", in: ``, code: protocol.CodeBadFrame},
		{name: "not an object", in: `[{"op":"ping"}]`, code: protocol.CodeBadFrame},
		{name: "null", in: `null`, code: protocol.CodeBadFrame},
		{name: "string", in: `"ping"`, code: protocol.CodeBadFrame},
		{name: "truncated", in: `{"op":"ping","ref":"p1"`, code: protocol.CodeBadFrame},
		{name: "trailing garbage", in: `{"op":"ping"} {}`, code: protocol.CodeBadFrame},
		{name: "no op", in: `{"ref":"x"}`, code: protocol.CodeBadFrame, wantRef: "x"},
		{name: "op not a string", in: `{"op":1,"ref":"x"}`, code: protocol.CodeBadFrame, wantRef: "x"},
		{name: "text not a string", in: `{"op":"send","ref":"s","text":42}`, code: protocol.CodeBadFrame, wantRef: "s"},
		{name: "versions not numbers", in: `{"op":"hello","versions":["1"]}`, code: protocol.CodeBadFrame},
		{name: "last not an integer", in: `{"op":"join","room":"r","last":1.5}`, code: protocol.CodeBadFrame},
		{name: "ref too long", in: `{"op":"ping","ref":"` + strings.Repeat("r", protocol.MaxRefBytes+1) + `"}`, code: protocol.CodeBadFrame},
		{name: "unknown op", in: `{"op":"subscribe","ref":"u"}`, code: protocol.CodeUnknownOp, wantRef: "u"},
		{name: "op is case-sensitive", in: `{"op":"PING"}`, code: protocol.CodeUnknownOp},
		{name: "invalid UTF-8", in: "{\"op\":\"send\",\"ref\":\"s9\",\"text\":\"\xff\xfe\"}", code: protocol.CodeInvalidUTF8, wantRef: "s9"},
		{name: "invalid UTF-8 in ref", in: "{\"op\":\"ping\",\"ref\":\"\xc3\"}", code: protocol.CodeInvalidUTF8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := DecodeFrame([]byte(tt.in))
			if tt.code == "" {
				if err != nil {
					t.Fatalf("DecodeFrame = %v", err)
				}
				if f.Op != tt.want.Op || f.Ref != tt.want.Ref || f.Room != tt.want.Room || f.Cursor != tt.want.Cursor ||
					f.Last != tt.want.Last || f.ID != tt.want.ID || f.Text != tt.want.Text || f.Token != tt.want.Token ||
					!slices.Equal(f.Versions, tt.want.Versions) {
					t.Fatalf("DecodeFrame = %+v, want %+v", f, tt.want)
				}
				return
			}
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("DecodeFrame = %+v, %v; want a FrameError %s", f, err, tt.code)
			}
			if fe.Code != tt.code || fe.Ref != tt.wantRef {
				t.Fatalf("error code %q ref %q, want %q ref %q (%s)", fe.Code, fe.Ref, tt.code, tt.wantRef, fe.Msg)
			}
		})
	}
}

// FuzzDecodeFrame: whatever a client sends, DecodeFrame answers without
// panicking, with a known op or a protocol error whose ref can be echoed.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"op":"hello","ref":"h1","versions":[1],"token":"eyJ"}`,
		`{"op":"join","ref":"j1","room":"lobby","cursor":"AQEAKg"}`,
		`{"op":"join","room":"lobby","last":500}`,
		`{"op":"send","ref":"s1","room":"lobby","id":"c-7f3a","text":"hello, world"}`,
		`{"op":"leave","room":"lobby"}`, `{"op":"ping","ref":"p"}`,
		`{"op":"nope"}`, `[]`, `{`, `{"op":null}`, "{\"op\":\"ping\",\"ref\":\"\xff\"}", `{"text":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a FrameError", err)
			}
			switch fe.Code {
			case protocol.CodeBadFrame, protocol.CodeUnknownOp, protocol.CodeInvalidUTF8:
			default:
				t.Fatalf("unexpected code %q", fe.Code)
			}
			if len(fe.Ref) > protocol.MaxRefBytes || !utf8.ValidString(fe.Ref) {
				t.Fatalf("error carries a ref that cannot be echoed: %q", fe.Ref)
			}
			return
		}
		switch fr.Op {
		case protocol.OpHello, protocol.OpJoin, protocol.OpLeave, protocol.OpSend, protocol.OpPing:
		default:
			t.Fatalf("decoded unknown op %q", fr.Op)
		}
		if !utf8.Valid(b) || len(fr.Ref) > protocol.MaxRefBytes {
			t.Fatalf("accepted %q", b)
		}
	})
}
