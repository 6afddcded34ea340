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
		{"truncated epoch", enc([]byte{2, 1, 2, 3, 4, 5}), ErrMalformed},
		{"zero epoch", enc(append([]byte{2}, make([]byte, 21)...)), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.token); !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%q) = %v, want %v", tt.token, err, tt.want)
			}
		})
	}
}

// TestEpochRoundTrip: a cursor carries its epoch through a token; tokens
// made before epochs existed (version 1) still parse, with no epoch.
func TestEpochRoundTrip(t *testing.T) {
	e := NewEpoch("lobby", [16]byte{0: 0xaa, 15: 0x01})
	var c Cursor
	c.SetEpoch(e)
	c.Advance(0, 41)
	c.Advance(3, 7)
	got, err := Parse(c.String())
	if err != nil {
		t.Fatal(err)
	}
	if got.Epoch() != e || got.String() != c.String() {
		t.Fatalf("round trip: epoch %+v, token %q; want %+v, %q", got.Epoch(), got.String(), e, c.String())
	}
	if next, _ := got.Next(3); next != 8 {
		t.Fatalf("partition 3 next = %d", next)
	}
	if got := c.Clone(); got.Epoch() != e {
		t.Fatal("Clone lost the epoch")
	}
	if NewEpoch("lobby", e.Topic) == NewEpoch("random", e.Topic) || NewEpoch("lobby", [16]byte{1}) == e {
		t.Fatal("epochs of other rooms or topics compare equal")
	}

	old, err := Parse("AQEAKg") // version 1: partition 0, next offset 42
	if err != nil {
		t.Fatal(err)
	}
	if next, _ := old.Next(0); next != 42 || !old.Epoch().IsZero() {
		t.Fatalf("version 1 token: next %d, epoch %+v", next, old.Epoch())
	}
	if old.String() != "AQEAKg" {
		t.Fatalf("a cursor without epoch encodes as %q, want the version 1 token", old.String())
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
	c.SetEpoch(NewEpoch("lobby", [16]byte{7}))
	f.Add(c.String())
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
