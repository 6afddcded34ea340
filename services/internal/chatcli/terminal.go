package chatcli

import (
	"os"

	"golang.org/x/term"
)

// UseTerminal makes the chat interactive when stdin and stdout are both a
// terminal: the terminal goes into raw mode and the line editor reads the
// lines typed and prints the room above them (stderr too, when it is the
// terminal). It returns the function that restores the terminal; it does
// nothing when stdin or stdout is a pipe or a file.
func UseTerminal(o *ChatOptions, stdin, stdout, stderr *os.File) (restore func()) {
	in, out := int(stdin.Fd()), int(stdout.Fd())
	if !term.IsTerminal(in) || !term.IsTerminal(out) {
		return func() {}
	}
	state, err := term.MakeRaw(in)
	if err != nil {
		return func() {}
	}
	width := func() int {
		if w, _, err := term.GetSize(out); err == nil && w > 0 {
			return w
		}
		return 80
	}
	ed := NewEditor(stdin, stdout, o.Room+"> ", width)
	o.Editor, o.Out = ed, ed
	if term.IsTerminal(int(stderr.Fd())) {
		o.Err = ed
	}
	return func() { _ = term.Restore(in, state) }
}
