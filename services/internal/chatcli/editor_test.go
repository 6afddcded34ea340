package chatcli

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"palaver.dev/services/internal/testio"
)

// startEditor runs ReadLine in a loop on keys written to the returned pipe.
func startEditor(t *testing.T) (keys *io.PipeWriter, screen *testio.SyncBuffer, ed *Editor, lines <-chan lineOrErr) {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	screen = &testio.SyncBuffer{}
	ed = NewEditor(pr, screen, "lobby> ", func() int { return 40 })
	return pw, screen, ed, readLines(ed)
}

// next returns the next line read, failing the test after 5 s.
func next(t *testing.T, lines <-chan lineOrErr) (lineOrErr, bool) {
	t.Helper()
	select {
	case l, ok := <-lines:
		return l, ok
	case <-time.After(5 * time.Second):
		t.Fatal("no line read within 5 s")
		return lineOrErr{}, false
	}
}

func TestEditorKeepsTheLineBeingTypedBelowTheRoom(t *testing.T) {
	keys, screen, ed, lines := startEditor(t)
	io.WriteString(keys, "hel")
	waitFor(t, "the typed text", func() bool { return strings.HasSuffix(screen.String(), "lobby> hel\x1b[K\r\x1b[10C") })

	// A message arrives while typing: it is printed above, and the prompt
	// and the text typed so far are drawn again below it.
	before := len(screen.String())
	ed.Write([]byte("12:00:00 <Grace> hi\nsecond line\n"))
	if got, want := screen.String()[before:], "\r\x1b[K12:00:00 <Grace> hi\r\nsecond line\r\nlobby> hel\x1b[K\r\x1b[10C"; got != want {
		t.Fatalf("drawn %q, want %q", got, want)
	}

	// Enter returns the line and takes it off the screen: the room prints
	// it once, when it comes back stored.
	io.WriteString(keys, "lo\r")
	if l, _ := next(t, lines); l.line != "hello" || l.err != nil {
		t.Fatalf("line %+v", l)
	}
	if !strings.Contains(screen.String(), "lobby> hello\x1b[K\r\x1b[12C\r\x1b[K") {
		t.Fatalf("screen after Enter: %q", screen.String())
	}
}

func TestEditorKeys(t *testing.T) {
	keys, _, _, lines := startEditor(t)
	for _, tt := range []struct{ typed, want string }{
		{"abc\x1b[D\x1b[DX\x1b[HY\x1b[F\x7f\r", "YaXb"},             // arrows, Home, End, Backspace
		{"one two\x17three\r", "one three"},                         // Ctrl-W
		{"abc\x01\x0b\x05z\r", "z"},                                 // Ctrl-A, Ctrl-K, Ctrl-E
		{"abc\x15d\r", "d"},                                         // Ctrl-U
		{"\x1b[A\x1b[A\r", "z"},                                     // Up twice: the line before the last
		{"ab\x1b[D\x1b[3~\r", "a"},                                  // Delete
		{"héllo wörld\r", "héllo wörld"},                            // UTF-8
		{"\x1b[1;5Cx\x07\r", "x"},                                   // unknown sequence and control ignored
		{strings.Repeat("x", 100) + "\r", strings.Repeat("x", 100)}, // longer than the screen
	} {
		io.WriteString(keys, tt.typed)
		if l, _ := next(t, lines); l.line != tt.want || l.err != nil {
			t.Errorf("typed %q: line %q, %v; want %q", tt.typed, l.line, l.err, tt.want)
		}
	}
	io.WriteString(keys, "x\x01\x04\x04") // Ctrl-D deletes, then ends the input on an empty line
	if l, ok := next(t, lines); ok {
		t.Fatalf("after Ctrl-D on an empty line: %+v, want the end of input", l)
	}
}

func TestEditorCtrlC(t *testing.T) {
	keys, _, _, lines := startEditor(t)
	io.WriteString(keys, "half a line\x03")
	if l, _ := next(t, lines); !errors.Is(l.err, errInterrupted) {
		t.Fatalf("Ctrl-C: %+v", l)
	}
}
