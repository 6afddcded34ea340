package history

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// highlight cuts text into segments, marking the words that match a term
// as the index matches them: case- and accent-blind ("deja" marks "Déjà"),
// a prefix term marking the words it starts. Words are folded as the
// index's tokenizer folds them (see fold); the segments keep the text's
// own characters.
func highlight(text string, terms []term) []Segment {
	folded := make([]term, len(terms))
	for i, t := range terms {
		folded[i] = term{word: foldWord(t.word), prefix: t.prefix}
	}
	var out []Segment
	add := func(s string, mark bool) {
		if s == "" {
			return
		}
		if n := len(out); n > 0 && out[n-1].Mark == mark {
			out[n-1].Text += s
			return
		}
		out = append(out, Segment{Text: s, Mark: mark})
	}
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		if !isTokenRune(r) {
			add(text[i:i+size], false)
			i += size
			continue
		}
		j := i
		for j < len(text) {
			r, size := utf8.DecodeRuneInString(text[j:])
			if !isTokenRune(r) {
				break
			}
			j += size
		}
		word := foldWord(text[i:j])
		add(text[i:j], word != "" && slices.ContainsFunc(folded, func(t term) bool {
			return word == t.word || t.prefix && strings.HasPrefix(word, t.word)
		}))
		i = j
	}
	return out
}

// isTokenRune matches the characters the index's tokenizer puts in a
// token: word characters and, with remove_diacritics, the combining
// diacritics it then drops.
func isTokenRune(r rune) bool {
	return isWordRune(r) || isDiacritic(r)
}

// foldWord is word as the index stores it: every character folded, the
// ones that fold to nothing dropped.
func foldWord(word string) string {
	var b strings.Builder
	b.Grow(len(word))
	for _, r := range word {
		if f := fold(r); f != 0 {
			b.WriteRune(f)
		}
	}
	return b.String()
}

// fold is c as the index's tokenizer (unicode61, remove_diacritics 2)
// stores it: lower case, and a letter that decomposes into an ASCII letter
// and combining diacritics becomes that ASCII letter; 0 for a combining
// diacritic, which the tokenizer drops.
func fold(c rune) rune {
	if isDiacritic(c) {
		return 0
	}
	c = unicode.ToLower(c)
	if c < utf8.RuneSelf {
		return c
	}
	var buf [utf8.UTFMax]byte
	d := norm.NFD.Bytes(buf[:utf8.EncodeRune(buf[:], c)])
	if len(d) < 2 || d[0] >= utf8.RuneSelf {
		return c
	}
	for _, r := range string(d[1:]) {
		if !isDiacritic(r) {
			return c
		}
	}
	return rune(d[0])
}

// isDiacritic reports the combining diacritics (U+0300 to U+0331) that the
// tokenizer's remove_diacritics drops.
func isDiacritic(c rune) bool {
	return 0x300 <= c && c <= 0x331 && unicode.Is(unicode.Mn, c)
}
