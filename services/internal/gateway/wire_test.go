package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/gobwas/ws"

	"palaver.dev/services/internal/protocol"
)

// TestFrameEnd: for every point a write can stop at in a batch of frames
// of every length encoding, frameEnd finds the end of the frame cut there.
func TestFrameEnd(t *testing.T) {
	var buf []byte
	var ends []int
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		buf = appendTextFrame(buf, bytes.Repeat([]byte("a"), n))
		ends = append(ends, len(buf))
	}
	buf = appendCloseFrame(buf, protocol.CloseSlowConsumer, "slow")
	ends = append(ends, len(buf))
	if got := frameEnd(buf, 0); got != 0 {
		t.Fatalf("frameEnd(0) = %d", got)
	}
	prev := 0
	for _, end := range ends {
		for n := prev + 1; n <= end; n++ {
			if got := frameEnd(buf, n); got != end {
				t.Fatalf("frameEnd(%d) = %d, want %d", n, got, end)
			}
		}
		prev = end
	}
}

// TestAppendFrame: the frames the gateway writes, as gobwas/ws reads them.
func TestAppendFrame(t *testing.T) {
	for _, n := range []int{0, 2, 125, 126, 65535, 65536} {
		p := bytes.Repeat([]byte("b"), n)
		f, err := readServerFrame(appendTextFrame(nil, p))
		if err != nil || !f.Header.Fin || f.Header.OpCode != ws.OpText || f.Header.Masked || f.Header.Rsv != 0 || !bytes.Equal(f.Payload, p) {
			t.Fatalf("%d bytes: %+v, %v", n, f.Header, err)
		}
	}
	long := strings.Repeat("r", 200)
	f, err := readServerFrame(appendCloseFrame(nil, protocol.CloseSlowConsumer, long))
	if err != nil || f.Header.OpCode != ws.OpClose || len(f.Payload) != ws.MaxControlFramePayloadSize {
		t.Fatalf("close frame: %+v, %v", f.Header, err)
	}
	if code, reason := ws.ParseCloseFrameData(f.Payload); code != protocol.CloseSlowConsumer || reason != long[:123] {
		t.Fatalf("close frame: %d %q", code, reason)
	}
}

// readServerFrame reads one frame with gobwas/ws, which must find all of b
// in it.
func readServerFrame(b []byte) (ws.Frame, error) {
	r := bytes.NewReader(b)
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length != int64(r.Len()) {
		return ws.Frame{}, fmt.Errorf("header says %d bytes, %d follow", h.Length, r.Len())
	}
	p, err := io.ReadAll(r)
	return ws.Frame{Header: h, Payload: p}, err
}

// clientFrame is a frame as a client sends it: masked, with any header.
func clientFrame(fin bool, rsv byte, op ws.OpCode, payload []byte) []byte {
	b0 := byte(op) | rsv<<4
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	n := len(payload)
	switch {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xffff:
		out = append(out, 0x80|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	out = append(out, mask[:]...)
	p := bytes.Clone(payload)
	ws.Cipher(p, mask, 0)
	return append(out, p...)
}

type recordedControl struct{ pings, pongs []string }

func (r *recordedControl) onPing(p []byte) { r.pings = append(r.pings, string(p)) }
func (r *recordedControl) onPong(p []byte) { r.pongs = append(r.pongs, string(p)) }

func closeBody(code ws.StatusCode) []byte { return binary.BigEndian.AppendUint16(nil, uint16(code)) }

// TestReader: what a client may send is read, every violation of RFC 6455
// is refused with the close code to answer it with.
func TestReader(t *testing.T) {
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	text := func(s string) []byte { return clientFrame(true, 0, ws.OpText, []byte(s)) }
	closeWith := func(code ws.StatusCode, reason string) []byte {
		return clientFrame(true, 0, ws.OpClose, append(closeBody(code), reason...))
	}
	unmasked := appendTextFrame(nil, []byte("hi"))
	for _, tt := range []struct {
		name      string
		in        []byte
		msg       string // the message read, if any
		code      ws.StatusCode
		peer      bool
		tooBig    bool
		pings     int
		fatalRead bool // the socket's error (EOF)
	}{
		{name: "text", in: text(`{"op":"ping"}`), msg: `{"op":"ping"}`},
		{name: "fragments around a ping", in: cat(
			clientFrame(false, 0, ws.OpText, []byte("ab")),
			clientFrame(true, 0, ws.OpPing, []byte("p")),
			clientFrame(false, 0, ws.OpContinuation, []byte("cd")),
			clientFrame(true, 0, ws.OpContinuation, []byte("ef"))), msg: "abcdef", pings: 1},
		{name: "at the limit", in: text(strings.Repeat("x", 1000)), msg: strings.Repeat("x", 1000)},
		{name: "over the limit", in: text(strings.Repeat("x", 1001)), tooBig: true},
		{name: "fragments over the limit", in: cat(
			clientFrame(false, 0, ws.OpText, bytes.Repeat([]byte("x"), 600)),
			clientFrame(true, 0, ws.OpContinuation, bytes.Repeat([]byte("x"), 600))), tooBig: true},
		{name: "declared 2^62 bytes", in: []byte{0x81, 0x80 | 127, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, tooBig: true},
		{name: "length MSB set", in: []byte{0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, code: ws.StatusProtocolError},
		{name: "unmasked", in: unmasked, code: ws.StatusProtocolError},
		{name: "rsv1 (no compression negotiated)", in: clientFrame(true, 4, ws.OpText, []byte("x")), code: ws.StatusProtocolError},
		{name: "reserved opcode", in: clientFrame(true, 0, 3, nil), code: ws.StatusProtocolError},
		{name: "control frame of 126 bytes", in: clientFrame(true, 0, ws.OpPing, bytes.Repeat([]byte("p"), 126)), code: ws.StatusProtocolError},
		{name: "fragmented control frame", in: clientFrame(false, 0, ws.OpPing, nil), code: ws.StatusProtocolError},
		{name: "continuation first", in: clientFrame(true, 0, ws.OpContinuation, []byte("x")), code: ws.StatusProtocolError},
		{name: "new message inside a fragmented one", in: cat(
			clientFrame(false, 0, ws.OpText, []byte("a")), text("b")), code: ws.StatusProtocolError},
		{name: "close", in: closeWith(ws.StatusNormalClosure, "bye"), code: ws.StatusNormalClosure, peer: true},
		{name: "close without a code", in: clientFrame(true, 0, ws.OpClose, nil), code: ws.StatusNoStatusRcvd, peer: true},
		{name: "close of 1 byte", in: clientFrame(true, 0, ws.OpClose, []byte{3}), code: ws.StatusProtocolError},
		{name: "close with 1005", in: closeWith(ws.StatusNoStatusRcvd, ""), code: ws.StatusProtocolError},
		{name: "close with 999", in: closeWith(999, ""), code: ws.StatusProtocolError},
		{name: "close reason not UTF-8", in: closeWith(ws.StatusNormalClosure, "\xff"), code: ws.StatusInvalidFramePayloadData},
		{name: "cut short", in: text("abc")[:5], fatalRead: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctl := &recordedControl{}
			r := wsReader{br: newSockReader(bytes.NewReader(tt.in), newReadBufs(256)), limit: 1000, ctl: ctl}
			op, msg, err := r.next()
			var ce *closeError
			switch {
			case tt.msg != "":
				if err != nil || op != ws.OpText || string(msg) != tt.msg {
					t.Fatalf("got %v %q %v, want %q", op, msg, err, tt.msg)
				}
			case tt.tooBig:
				if !errors.Is(err, errMessageTooBig) {
					t.Fatalf("got %v, want errMessageTooBig", err)
				}
			case tt.fatalRead:
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("got %v, want unexpected EOF", err)
				}
			default:
				if !errors.As(err, &ce) || ce.code != tt.code || ce.peer != tt.peer {
					t.Fatalf("got %v, want close %d (peer %v)", err, tt.code, tt.peer)
				}
			}
			if len(ctl.pings) != tt.pings {
				t.Fatalf("pings %q, want %d", ctl.pings, tt.pings)
			}
		})
	}
}

// FuzzReader: any bytes from a client end in a message within the limit,
// a close or an error; never a panic or a message over the limit.
func FuzzReader(f *testing.F) {
	f.Add(clientFrame(true, 0, ws.OpText, []byte(`{"op":"hello"}`)))
	f.Add(append(clientFrame(false, 0, ws.OpText, []byte("a")), clientFrame(true, 0, ws.OpContinuation, []byte("b"))...))
	f.Add(clientFrame(true, 0, ws.OpClose, []byte{3, 232, 'x'}))
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := wsReader{br: newSockReader(bytes.NewReader(in), newReadBufs(256)), limit: 512, ctl: &recordedControl{}}
		for {
			_, msg, err := r.next()
			if err != nil {
				return
			}
			if len(msg) > 512 {
				t.Fatalf("message of %d bytes over the limit", len(msg))
			}
		}
	})
}

// waitReader serves chunks, one per Read, and calls before first on each.
type waitReader struct {
	chunks [][]byte
	before func()
}

func (w *waitReader) Read(p []byte) (int, error) {
	if len(w.chunks) == 0 {
		return 0, io.EOF
	}
	w.before()
	n := copy(p, w.chunks[0])
	if w.chunks[0] = w.chunks[0][n:]; len(w.chunks[0]) == 0 {
		w.chunks = w.chunks[1:]
	}
	return n, nil
}

// TestReaderIdleHoldsNoBuffer: a connection waiting for its client's next
// message holds no read buffer; one reading a message does, and messages
// over the buffer's size or cut anywhere read whole.
func TestReaderIdleHoldsNoBuffer(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 700)
	first, second := clientFrame(true, 0, ws.OpText, []byte("first")), clientFrame(true, 0, ws.OpText, long)
	src := &waitReader{chunks: [][]byte{first, second[:3], second[3:9], second[9:]}}
	r := wsReader{br: newSockReader(src, newReadBufs(256)), limit: 1000, ctl: &recordedControl{}}
	var waits []bool // whether a buffer was held at each read of the socket
	src.before = func() { waits = append(waits, r.br.buf != nil) }
	for _, want := range [][]byte{[]byte("first"), long} {
		op, msg, err := r.next()
		if err != nil || op != ws.OpText || !bytes.Equal(msg, want) {
			t.Fatalf("got %v %q %v, want %q", op, msg, err, want)
		}
	}
	// The first read of each message (its header's first 2 bytes) waits
	// without a buffer; the rest of a message is read through one.
	if want := []bool{false, true, false, true, true, true}; !slices.Equal(waits, want) {
		t.Fatalf("buffer held at the socket's reads: %v, want %v", waits, want)
	}
	if _, _, err := r.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want EOF", err)
	}
	if r.br.buf != nil {
		t.Fatal("a buffer is held after the stream ended")
	}
}

// TestReaderByteByByte: frames that arrive a byte at a time, or with the
// socket's error alongside the last bytes, read whole.
func TestReaderByteByByte(t *testing.T) {
	in := bytes.Join([][]byte{clientFrame(true, 0, ws.OpText, []byte("hello")), clientFrame(true, 0, ws.OpPing, []byte("p")),
		clientFrame(true, 0, ws.OpText, []byte("world"))}, nil)
	for name, src := range map[string]io.Reader{
		"one byte":     iotest.OneByteReader(bytes.NewReader(in)),
		"data and EOF": iotest.DataErrReader(bytes.NewReader(in)),
	} {
		t.Run(name, func(t *testing.T) {
			ctl := &recordedControl{}
			r := wsReader{br: newSockReader(src, newReadBufs(256)), limit: 1000, ctl: ctl}
			for _, want := range []string{"hello", "world"} {
				if _, msg, err := r.next(); err != nil || string(msg) != want {
					t.Fatalf("got %q %v, want %q", msg, err, want)
				}
			}
			if len(ctl.pings) != 1 {
				t.Fatalf("pings %q, want 1", ctl.pings)
			}
			if _, _, err := r.next(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the last message: %v, want EOF", err)
			}
		})
	}
}
