package cursor

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		advance [][2]int64 // partition, offset
	}{
		{"empty", nil},
		{"one partition", [][2]int64{{0, 0}}},
		{"several", [][2]int64{{2, 7}, {0, 41}, {1, 1 << 40}}},
		{"only moves forward", [][2]int64{{0, 10}, {0, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Cursor
			for _, a := range tt.advance {
				c.Advance(int(a[0]), a[1])
			}
			got, err := Parse(c.String())
			if err != nil {
				t.Fatalf("Parse(%q): %v", c.String(), err)
			}
			if got.String() != c.String() || !slices.Equal(got.Partitions(), c.Partitions()) {
				t.Fatalf("round trip %v -> %v", c.next, got.next)
			}
			for _, p := range c.Partitions() {
				want, _ := c.Next(p)
				if o, ok := got.Next(p); !ok || o != want {
					t.Fatalf("partition %d: got %d, want %d", p, o, want)
				}
			}
		})
	}
}

func TestAdvanceAndCovers(t *testing.T) {
	var c Cursor
	if c.Covers(0, 0) || !c.IsZero() {
		t.Fatal("empty cursor covers nothing")
	}
	c.Advance(0, 5)
	c.Advance(0, 2)
	if next, _ := c.Next(0); next != 6 {
		t.Fatalf("next = %d, want 6", next)
	}
	if !c.Covers(0, 5) || c.Covers(0, 6) || c.Covers(1, 0) {
		t.Fatal("Covers disagrees with Advance")
	}
	clone := c.Clone()
	clone.Advance(0, 100)
	if next, _ := c.Next(0); next != 6 {
		t.Fatal("Clone shares state with the original")
	}
}

func TestParseErrors(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"not base64", "!!!", ErrMalformed},
		{"padded", "AQA=", ErrMalformed},
		{"future version", enc([]byte{9, 0}), ErrUnsupportedVersion},
		{"truncated count", enc([]byte{1}), ErrMalformed},
		{"truncated pair", enc([]byte{1, 1, 0}), ErrMalformed},
		{"duplicate partition", enc([]byte{1, 2, 0, 1, 0, 2}), ErrMalformed},
		{"trailing bytes", enc([]byte{1, 0, 7}), ErrMalformed},
		{"too many partitions", enc([]byte{1, 0xff, 0xff, 0x03}), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.token); !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%q) = %v, want %v", tt.token, err, tt.want)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	var c Cursor
	c.Advance(3, 9)
	b, err := json.Marshal(struct{ Cursor Cursor }{c})
	if err != nil {
		t.Fatal(err)
	}
	var back struct{ Cursor Cursor }
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if next, _ := back.Cursor.Next(3); next != 10 {
		t.Fatalf("JSON round trip lost the position: %s", b)
	}
}

func FuzzParse(f *testing.F) {
	var c Cursor
	c.Advance(0, 10)
	c.Advance(4, 1<<33)
	f.Add(c.String())
	f.Add("")
	f.Add("AQA")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := Parse(token)
		if err != nil {
			return
		}
		// A token that parses re-encodes to a token that parses to the same positions.
		again, err := Parse(c.String())
		if err != nil || again.String() != c.String() {
			t.Fatalf("re-encoding %q changed the cursor (%v)", token, err)
		}
	})
}
