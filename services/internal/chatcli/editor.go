package chatcli

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// errInterrupted is what the line editor returns for Ctrl-C.
var errInterrupted = errors.New("interrupted")

// Editor is the line editor of an interactive `palaver chat`: it reads the
// line being typed from a terminal in raw mode and keeps it, with its prompt,
// on the last row of the screen. Everything written to the Editor (the room's
// messages, notices) is printed above that row, and the prompt and the line
// being typed are redrawn below it, so an incoming message never breaks the
// line being typed. A line is cleared from the screen when Enter sends it:
// the room shows it once, when it comes back stored.
//
// Keys: printable text, Backspace, Delete, Left/Right, Home/End (and Ctrl-A,
// Ctrl-E), Ctrl-U (erase to the start), Ctrl-K (erase to the end), Ctrl-W
// (erase a word), Up/Down (earlier lines), Enter, Ctrl-D (end of input on an
// empty line), Ctrl-C (interrupt). A line longer than the screen scrolls
// sideways.
type Editor struct {
	in    *bufio.Reader
	width func() int

	mu      sync.Mutex
	out     io.Writer
	prompt  []rune
	line    []rune
	pos     int
	reading bool // the prompt is on screen
	history []string
	hpos    int    // index into history while browsing with Up/Down
	pending string // the line being typed before browsing
}

// maxEditorLine bounds the line being typed, as the gateway bounds a message.
const maxEditorLine = 64 << 10

// NewEditor returns an editor reading keys from in (a terminal in raw mode)
// and drawing on out (the same terminal). width reports the terminal's
// width in columns; nil means 80.
func NewEditor(in io.Reader, out io.Writer, prompt string, width func() int) *Editor {
	if width == nil {
		width = func() int { return 80 }
	}
	return &Editor{in: bufio.NewReader(in), out: out, prompt: []rune(prompt), width: width}
}

// Write prints p above the line being typed. In raw mode the terminal does
// not turn "\n" into a new line at column 0, so it writes "\r\n".
func (e *Editor) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	if e.reading {
		b.WriteString("\r\x1b[K")
	}
	b.WriteString(strings.ReplaceAll(string(p), "\n", "\r\n"))
	if e.reading {
		e.render(&b)
	}
	if _, err := io.WriteString(e.out, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// SetPrompt changes the prompt.
func (e *Editor) SetPrompt(prompt string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.prompt = []rune(prompt)
	e.redraw()
}

// ReadLine reads the next line. It returns io.EOF for Ctrl-D on an empty
// line or at the end of in, and errInterrupted for Ctrl-C.
func (e *Editor) ReadLine() (string, error) {
	e.mu.Lock()
	e.reading, e.line, e.pos, e.hpos = true, e.line[:0], 0, len(e.history)
	e.redraw()
	e.mu.Unlock()
	for {
		r, _, err := e.in.ReadRune()
		if err != nil {
			e.finish()
			return "", err
		}
		if r == '\x1b' {
			e.escape()
			continue
		}
		e.mu.Lock()
		line, done, err := e.key(r)
		if done || err != nil {
			e.reading = false
			io.WriteString(e.out, "\r\x1b[K")
			e.mu.Unlock()
			return line, err
		}
		e.redraw()
		e.mu.Unlock()
	}
}

// finish takes the prompt off the screen.
func (e *Editor) finish() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reading {
		e.reading = false
		io.WriteString(e.out, "\r\x1b[K")
	}
}

// key applies one key; done reports a finished line. e.mu is held.
func (e *Editor) key(r rune) (line string, done bool, err error) {
	switch r {
	case '\r', '\n':
		line = string(e.line)
		if strings.TrimSpace(line) != "" && (len(e.history) == 0 || e.history[len(e.history)-1] != line) {
			e.history = append(e.history, line)
		}
		return line, true, nil
	case 3: // Ctrl-C
		return "", false, errInterrupted
	case 4: // Ctrl-D: end of input on an empty line, else delete
		if len(e.line) == 0 {
			return "", false, io.EOF
		}
		e.deleteAt(e.pos)
	case 1: // Ctrl-A
		e.pos = 0
	case 5: // Ctrl-E
		e.pos = len(e.line)
	case 2: // Ctrl-B
		e.pos = max(e.pos-1, 0)
	case 6: // Ctrl-F
		e.pos = min(e.pos+1, len(e.line))
	case 8, 127: // Backspace
		if e.pos > 0 {
			e.pos--
			e.deleteAt(e.pos)
		}
	case 11: // Ctrl-K
		e.line = e.line[:e.pos]
	case 21: // Ctrl-U
		e.line = append(e.line[:0], e.line[e.pos:]...)
		e.pos = 0
	case 23: // Ctrl-W
		start := e.pos
		for start > 0 && unicode.IsSpace(e.line[start-1]) {
			start--
		}
		for start > 0 && !unicode.IsSpace(e.line[start-1]) {
			start--
		}
		e.line = append(e.line[:start], e.line[e.pos:]...)
		e.pos = start
	default:
		if r == utf8.RuneError || unicode.IsControl(r) || len(e.line) >= maxEditorLine {
			return "", false, nil
		}
		e.line = append(e.line, 0)
		copy(e.line[e.pos+1:], e.line[e.pos:])
		e.line[e.pos] = r
		e.pos++
	}
	return "", false, nil
}

func (e *Editor) deleteAt(i int) {
	if i < len(e.line) {
		e.line = append(e.line[:i], e.line[i+1:]...)
	}
}

// escape reads the rest of an escape sequence (ESC [ ... final, or ESC O x)
// and applies the keys it knows.
func (e *Editor) escape() {
	b, err := e.in.ReadByte()
	if err != nil || (b != '[' && b != 'O') {
		return
	}
	var params []byte
	var final byte
	for {
		c, err := e.in.ReadByte()
		if err != nil {
			return
		}
		if c >= 0x40 && c <= 0x7e {
			final = c
			break
		}
		if len(params) < 16 {
			params = append(params, c)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case final == 'D':
		e.pos = max(e.pos-1, 0)
	case final == 'C':
		e.pos = min(e.pos+1, len(e.line))
	case final == 'H', final == '~' && (string(params) == "1" || string(params) == "7"):
		e.pos = 0
	case final == 'F', final == '~' && (string(params) == "4" || string(params) == "8"):
		e.pos = len(e.line)
	case final == '~' && string(params) == "3":
		e.deleteAt(e.pos)
	case final == 'A':
		e.browse(-1)
	case final == 'B':
		e.browse(+1)
	default:
		return
	}
	e.redraw()
}

// browse moves through the lines typed before.
func (e *Editor) browse(step int) {
	next := e.hpos + step
	if next < 0 || next > len(e.history) {
		return
	}
	if e.hpos == len(e.history) {
		e.pending = string(e.line)
	}
	e.hpos = next
	text := e.pending
	if next < len(e.history) {
		text = e.history[next]
	}
	e.line = []rune(text)
	e.pos = len(e.line)
}

// redraw draws the prompt and the line on the current row. e.mu is held.
func (e *Editor) redraw() {
	if !e.reading {
		return
	}
	var b strings.Builder
	b.WriteString("\r")
	e.render(&b)
	io.WriteString(e.out, b.String())
}

// render appends the prompt and the visible part of the line, then puts the
// cursor in place. The line scrolls sideways to keep the cursor on screen.
func (e *Editor) render(b *strings.Builder) {
	avail := max(e.width()-len(e.prompt)-1, 8)
	start := 0
	if e.pos > avail {
		start = e.pos - avail
	}
	end := min(len(e.line), start+avail)
	b.WriteString(string(e.prompt))
	b.WriteString(clean(string(e.line[start:end])))
	b.WriteString("\x1b[K\r")
	if col := len(e.prompt) + e.pos - start; col > 0 {
		b.WriteString("\x1b[" + strconv.Itoa(col) + "C")
	}
}
