package history

import (
	"slices"
	"testing"
	"time"
)

// TestQueryKeepsCombiningAccents: a word typed with combining accents is
// one word, as the index keeps it, not two cut at the accents.
func TestQueryKeepsCombiningAccents(t *testing.T) {
	terms, err := parseQuery("de\u0301ja\u0300 vu")
	if err != nil {
		t.Fatal(err)
	}
	if got := matchExpr(terms); got != "\"de\u0301ja\u0300\" \"vu\"" {
		t.Fatalf("matchExpr = %q", got)
	}
}

func TestHighlightIsAccentBlind(t *testing.T) {
	terms, err := parseQuery("deja ecole*")
	if err != nil {
		t.Fatal(err)
	}
	got := highlight("Déjà vu à l'École; DÉJÀ, de\u0301ja\u0300!", terms)
	want := []Segment{{Text: "Déjà", Mark: true}, {Text: " vu à l'"}, {Text: "École", Mark: true}, {Text: "; "}, {Text: "DÉJÀ", Mark: true}, {Text: ", "}, {Text: "de\u0301ja\u0300", Mark: true}, {Text: "!"}}
	if !slices.Equal(got, want) {
		t.Fatalf("highlight = %+v", got)
	}
}

// TestHighlightMarksWhatTheIndexMatches: for every pair of a query word and
// a message word, the index finds the message exactly when highlight marks
// the word in it.
func TestHighlightMarksWhatTheIndexMatches(t *testing.T) {
	words := []string{
		"deja", "déjà", "DÉJÀ", "de\u0301ja\u0300", "Ecole", "école", "ÉCOLE", "naïve", "NAIVE",
		"Straße", "strasse", "Øre", "ore", "Łódź", "lodz", "ǅemal", "dzemal", "Ωmega", "ωmega",
		"Ǘber", "uber", "ȘTIR", "stir", "Ĳssel", "ijssel", "Ωhm", "ohm", "ﬁle", "file", "日本語",
		"𐐀bc", "𐐨bc", "x\u0301", "x",
	}
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx := t.Context()
	tag, err := st.AddRoom(ctx, "hl", "t")
	if err != nil {
		t.Fatal(err)
	}
	ops := make([]op, len(words))
	for i, w := range words {
		ops[i] = op{Room: "hl", Tag: tag, Offset: int64(i), Msg: stored("hl", 0, int64(i), time.Now(), "u", "<"+w+">")}
	}
	if _, _, err := st.Apply(ctx, ops); err != nil {
		t.Fatal(err)
	}
	for _, q := range words {
		for _, prefix := range []bool{false, true} {
			query := q
			if prefix {
				query += "*"
			}
			terms, err := parseQuery(query)
			if err != nil || len(terms) != 1 {
				continue // a word the query cuts in two: not a single term
			}
			rows, _, err := st.search(ctx, tag, 1, terms, "", nil, len(words))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range words {
				found := slices.Contains(texts(rows), "<"+w+">")
				marked := slices.ContainsFunc(highlight("<"+w+">", terms), func(s Segment) bool { return s.Mark })
				if found != marked {
					t.Errorf("query %q, message %q: index finds it %v, highlight marks it %v", query, w, found, marked)
				}
			}
		}
	}
}
