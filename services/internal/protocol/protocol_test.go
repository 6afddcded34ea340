package protocol

import (
	"bufio"
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// docPath is the contract this package is the Go form of.
const docPath = "../../../docs/protocol.md"

// declared returns the constants protocol.go declares whose names start
// with prefix, by value.
func declared(t *testing.T, prefix string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "protocol.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, prefix) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("%s is not a literal", name.Name)
				}
				v := lit.Value
				if lit.Kind == token.STRING {
					v, _ = strconv.Unquote(v)
				}
				out[v] = name.Name
			}
		}
	}
	return out
}

// doc is docs/protocol.md cut into its sections ("## ..." and "### ..."
// headings), each section's lines under its heading.
type doc struct {
	text     string
	sections map[string][]string
	order    []string
}

func readDoc(t *testing.T) doc {
	t.Helper()
	b, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	d := doc{text: string(b), sections: map[string][]string{}}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") || strings.HasPrefix(line, "### ") {
			cur = line
			d.order = append(d.order, cur)
			continue
		}
		d.sections[cur] = append(d.sections[cur], line)
	}
	return d
}

// subsections returns the "### " headings under the "## " heading h.
func (d doc) subsections(h string) []string {
	var out []string
	in := false
	for _, s := range d.order {
		switch {
		case s == h:
			in = true
		case strings.HasPrefix(s, "## "):
			in = false
		case in:
			out = append(out, strings.TrimPrefix(s, "### "))
		}
	}
	return out
}

func sameSet(t *testing.T, what string, declared, documented []string) {
	t.Helper()
	slices.Sort(declared)
	slices.Sort(documented)
	documented = slices.Compact(documented)
	if !slices.Equal(declared, documented) {
		t.Errorf("%s: the package declares %q, docs/protocol.md documents %q", what, declared, documented)
	}
}

// TestOpsAreDocumented: the ops the package declares are the ops of
// docs/protocol.md: its commands are the headings of "Client frames", and
// every op is the op of a frame shown there (and no other is).
func TestOpsAreDocumented(t *testing.T) {
	d := readDoc(t)
	ops := slices.Collect(maps.Keys(declared(t, "Op")))
	var commands []string
	for _, op := range ops {
		if IsCommand(op) {
			commands = append(commands, op)
		}
	}
	sameSet(t, "commands", commands, d.subsections("## Client frames"))
	var shown []string
	for _, m := range regexp.MustCompile(`"op":"([^"]*)"`).FindAllStringSubmatch(d.text, -1) {
		shown = append(shown, m[1])
	}
	sameSet(t, "ops", ops, shown)
	if IsCommand(OpWelcome) || IsCommand("") {
		t.Error("IsCommand takes a server op or nothing for a command")
	}
}

// TestErrorCodesAreDocumented: the error codes are the rows of the error
// table.
func TestErrorCodesAreDocumented(t *testing.T) {
	d := readDoc(t)
	row := regexp.MustCompile("^\\| `([a-z0-9_]+)` \\|")
	var rows []string
	for _, line := range d.sections["### error"] {
		if m := row.FindStringSubmatch(line); m != nil {
			rows = append(rows, m[1])
		}
	}
	sameSet(t, "error codes", slices.Collect(maps.Keys(declared(t, "Code"))), rows)
}

// TestCloseCodesAreDocumented: the close codes and their names are the
// rows of the close code table.
func TestCloseCodesAreDocumented(t *testing.T) {
	d := readDoc(t)
	row := regexp.MustCompile(`^\| (\d+) \| ([a-z ]+) \|`)
	var rows []string
	for _, line := range d.sections["## Close codes"] {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rows = append(rows, m[1])
		code, _ := strconv.Atoi(m[1])
		if got := CloseName(code); got != m[2] {
			t.Errorf("CloseName(%d) = %q, docs/protocol.md names it %q", code, got, m[2])
		}
	}
	sameSet(t, "close codes", slices.Collect(maps.Keys(declared(t, "Close"))), rows)
}

// frameTypes is the Go type of each op's frame.
var frameTypes = map[string]any{
	OpHello: Command{}, OpJoin: Command{}, OpLeave: Command{}, OpSend: Command{}, OpTyping: Command{}, OpPing: Command{},
	OpWelcome: WelcomeFrame{}, OpJoined: JoinedFrame{}, OpLeft: LeftFrame{}, OpAck: AckFrame{}, OpTyped: TypedFrame{},
	OpPong: PongFrame{}, OpMessage: MessageFrame{}, OpPresence: PresenceFrame{}, OpPresenceDiff: PresenceDiffFrame{},
	OpError: ErrorFrame{},
}

// TestDocumentedFramesDecode: every frame docs/protocol.md shows decodes
// into its op's type with no field left over, and into ServerFrame or
// Command; re-encoded, it keeps every field it had.
func TestDocumentedFramesDecode(t *testing.T) {
	d := readDoc(t)
	if ops := slices.Sorted(maps.Keys(declared(t, "Op"))); !slices.Equal(ops, slices.Sorted(maps.Keys(frameTypes))) {
		t.Fatalf("frameTypes has %q, the package declares %q", slices.Sorted(maps.Keys(frameTypes)), ops)
	}
	var frames []string
	// Whole frames in the json blocks, and inline in backquotes.
	for _, block := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(d.text, -1) {
		dec := json.NewDecoder(strings.NewReader(block[1]))
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				break
			}
			frames = append(frames, string(raw))
		}
	}
	for _, m := range regexp.MustCompile("`(\\{\"op\":[^`]*\\})`").FindAllStringSubmatch(d.text, -1) {
		frames = append(frames, m[1])
	}
	if len(frames) < len(frameTypes) {
		t.Fatalf("found %d frames in docs/protocol.md, fewer than the ops", len(frames))
	}
	seen := map[string]bool{}
	for _, f := range frames {
		var head struct{ Op string }
		if err := json.Unmarshal([]byte(f), &head); err != nil {
			t.Errorf("docs/protocol.md shows %s: %v", f, err)
			continue
		}
		typ, ok := frameTypes[head.Op]
		if !ok {
			t.Errorf("docs/protocol.md shows %s: no such op", f)
			continue
		}
		seen[head.Op] = true
		v := reflect.New(reflect.TypeOf(typ))
		dec := json.NewDecoder(strings.NewReader(f))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v.Interface()); err != nil {
			t.Errorf("%s into %T: %v", f, typ, err)
			continue
		}
		union := any(&ServerFrame{})
		if IsCommand(head.Op) {
			union = &Command{}
		}
		dec = json.NewDecoder(strings.NewReader(f))
		dec.DisallowUnknownFields()
		if err := dec.Decode(union); err != nil {
			t.Errorf("%s into %T: %v", f, union, err)
		}
		back, err := json.Marshal(v.Interface())
		if err != nil {
			t.Fatal(err)
		}
		var want, got map[string]any
		_ = json.Unmarshal([]byte(f), &want)
		_ = json.Unmarshal(back, &got)
		for k := range want {
			if _, ok := got[k]; !ok {
				t.Errorf("%s encoded as %T loses %q: %s", f, typ, k, back)
			}
		}
	}
	for op := range frameTypes {
		if !seen[op] {
			t.Errorf("docs/protocol.md shows no %s frame", op)
		}
	}
}

// TestServerFrameHoldsEveryFrame: a client decoding into ServerFrame gets
// every field of every server frame.
func TestServerFrameHoldsEveryFrame(t *testing.T) {
	union := map[string]reflect.Type{}
	st := reflect.TypeFor[ServerFrame]()
	for i := range st.NumField() {
		union[jsonName(st.Field(i))] = st.Field(i).Type
	}
	for op, v := range frameTypes {
		if IsCommand(op) {
			continue
		}
		ft := reflect.TypeOf(v)
		for i := range ft.NumField() {
			f := ft.Field(i)
			u, ok := union[jsonName(f)]
			if !ok || (u != f.Type && u != reflect.PointerTo(f.Type)) {
				t.Errorf("%s's %s %s is not in ServerFrame (%v)", ft.Name(), jsonName(f), f.Type, u)
			}
		}
	}
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// TestTimesHaveThreeFractionDigits: times always have three fraction
// digits in UTC, so that they sort as strings, and read back; a message
// without a client time shows none.
func TestTimesHaveThreeFractionDigits(t *testing.T) {
	for _, tt := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC), `"2026-11-24T12:00:00.000Z"`},
		{time.Date(2026, 11, 24, 12, 0, 0, 100e6, time.UTC), `"2026-11-24T12:00:00.100Z"`},
		{time.Date(2026, 11, 24, 13, 0, 0, 123456789, time.FixedZone("CET", 3600)), `"2026-11-24T12:00:00.123Z"`},
	} {
		b, err := json.Marshal(Time{tt.at})
		if err != nil || string(b) != tt.want {
			t.Errorf("%v: %s, %v; want %s", tt.at, b, err, tt.want)
		}
		var back Time
		if err := json.Unmarshal(b, &back); err != nil || !back.Equal(tt.at.Truncate(time.Millisecond)) {
			t.Errorf("round trip of %s: %v, %v", b, back, err)
		}
	}
	if b, _ := json.Marshal(MessageFrame{}); strings.Contains(string(b), "client_time") {
		t.Errorf("a message without client time shows one: %s", b)
	}
}

func TestHTTPStatus(t *testing.T) {
	for code, want := range map[string]int{
		CodeBadRequest: 400, CodeBadFrame: 400, CodeUnauthorized: 401, CodeForbidden: 403, CodeNotFound: 404,
		CodeTooLarge: 413, CodeRateLimited: 429, CodeUnavailable: 503, CodeInternal: 500,
	} {
		if got := HTTPStatus(code); got != want {
			t.Errorf("HTTPStatus(%s) = %d, want %d", code, got, want)
		}
	}
}
