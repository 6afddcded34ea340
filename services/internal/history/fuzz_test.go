package history

import (
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/message"
)

// FuzzSearchQuery: whatever a user types, a query either is refused as a
// bad query or runs in the index without error; highlighting never changes
// the text.
func FuzzSearchQuery(f *testing.F) {
	for _, s := range []string{"hello", `"`, `a" OR "b`, "NEAR(a b)", "a:b", "*", "x*", "-x", "^x", "(((", "é*", "日本語", "a\x00b", `") OR rowid>0 --`, "a AND b OR c NOT d"} {
		f.Add(s, "hello wörld, a b: c")
	}
	st, err := OpenStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	tag, err := st.AddRoom(f.Context(), "r", "t")
	if err != nil {
		f.Fatal(err)
	}
	if _, _, err := st.Apply(f.Context(), []op{{Room: "r", Tag: tag, Msg: stored("r", 0, 0, time.Now(), "u", "hello wörld")}}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, q, text string) {
		terms, err := parseQuery(q)
		if err != nil {
			return
		}
		if _, _, err := st.search(t.Context(), tag, 1, terms, "", nil, 5); err != nil {
			t.Fatalf("query %q (%s) failed in the index: %v", q, matchExpr(terms), err)
		}
		var joined strings.Builder
		for _, s := range highlight(text, terms) {
			joined.WriteString(s.Text)
		}
		if joined.String() != text {
			t.Fatalf("highlight of %q changed it to %q", text, joined.String())
		}
	})
}

// FuzzDecodeEnvelope: the ingest path's decoder gives exactly what
// message.Decode gives, envelope or error, for any record value.
func FuzzDecodeEnvelope(f *testing.F) {
	at := time.Date(2026, 11, 1, 12, 0, 0, 123456789, time.FixedZone("", 3600))
	for _, e := range []message.Envelope{
		{V: 1, ID: "m-1", Room: "lobby", SenderID: "u-1", SenderName: "Ada", Text: "hello wörld", ClientTime: at},
		{V: 1, ID: "m-2", Room: "lobby", SenderID: "u-1", Text: "<b>&\"quoted\"\n\ttabbed</b>"},
		{V: 1, ID: "m-3", Room: "a.b-c", SenderID: "u-2", SenderName: "日本", Text: "x", ClientTime: at.UTC()},
	} {
		b, err := message.Encode(&e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{"", "{}", "null", `{"v":1,"id":"x","room":"lobby","sender_id":"u","text":"t"} `,
		`{"v":1,"id":"x","room":"lobby","sender_id":"u","text":"t","text":"u"}`, `{"v":2,"id":"x","room":"lobby","sender_id":"u","text":"t"}`,
		`{"v":1,"id":"x","room":"Lobby","sender_id":"u","text":"t"}`, `{"v":1,"id":"","room":"lobby","sender_id":"u","text":"t"}`,
		`{"v":1,"id":"x","room":"lobby","sender_id":"u","text":"t","client_time":"2026-11-01T12:00:00Z"}`,
		`{"v":1,"id":"x","room":"lobby","sender_id":"u","text":"t","client_time":"0001-01-01T00:00:00Z"}`,
		`{"v":1,"id":"x","room":"lobby","sender_id":"u","text":"t","client_time":"2026-11-01 12:00:00"}`,
		`{"v":1,"id":"x","room":"lobby","sender_id":"u","sender_name":"","text":"t"}`, "{\"v\":1,\"id\":\"x\xff\"}",
		"{\"v\":1,\"id\":\"x\",\"room\":\"lobby\",\"sender_id\":\"u\",\"text\":\"a\x01b\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, wantErr := message.Decode(b)
		got, gotErr := decodeEnvelope(b)
		if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
			t.Fatalf("%q: error %v, message.Decode's %v", b, gotErr, wantErr)
		}
		// Times compare by instant and offset (the zone of a decoded
		// offset is a new value each time).
		same := got.ClientTime.Format(time.RFC3339Nano) == want.ClientTime.Format(time.RFC3339Nano)
		got.ClientTime, want.ClientTime = time.Time{}, time.Time{}
		if wantErr == nil && (got != want || !same) {
			t.Fatalf("%q: %+v, message.Decode's %+v", b, got, want)
		}
	})
}
