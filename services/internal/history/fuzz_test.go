package history

import (
	"strings"
	"testing"
	"time"
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
