package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/gobwas/ws"
)

// The gateway owns its WebSocket connections frame by frame: gobwas/ws
// validates the upgrade and parses frame headers, and everything else is
// here and in conn.go. One goroutine at a time writes to a socket: the
// connection's writer (conn.writeLoop), which writes text frames in batches,
// many per system call, and the control frames (pong, ping, close) between
// them, or, when no writer writes, a flush worker, which writes the frames
// queued once without waiting and leaves what the socket did not take to
// the writer (conn.flush, flusher.go, direct.go). Owning the write path is what lets the gateway batch frames without
// racing a library's own writes, and deliver a close frame after a stalled
// socket (see conn.sendClose).

// appendTextFrame appends a final, unmasked text frame (RFC 6455 5.2: a
// server's frames are not masked) holding payload.
func appendTextFrame(dst, payload []byte) []byte {
	return appendFrame(dst, ws.OpText, payload)
}

// appendFrame appends a final, unmasked frame.
func appendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	fin := 0x80 | byte(op)
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, fin, byte(n))
	case n <= 0xffff:
		dst = append(dst, fin, 126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, fin, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// appendCloseFrame appends a close frame with code and reason, the reason
// cut to fit a control frame (125 bytes with the code).
func appendCloseFrame(dst []byte, code ws.StatusCode, reason string) []byte {
	const maxReason = ws.MaxControlFramePayloadSize - 2
	if len(reason) > maxReason {
		reason = reason[:maxReason] // the gateway's reasons are ASCII
	}
	var p [ws.MaxControlFramePayloadSize]byte
	binary.BigEndian.PutUint16(p[:], uint16(code))
	n := 2 + copy(p[2:], reason)
	return appendFrame(dst, ws.OpClose, p[:n])
}

// frameEnd returns the end of the frame of buf (a sequence of frames built
// by appendFrame) that holds byte n-1: where a write that stopped after n
// bytes must resume so that the client's stream stays whole frames. It
// returns n when n is at a frame boundary.
func frameEnd(buf []byte, n int) int {
	at := 0
	for at < n {
		l, hdr := int(buf[at+1]&0x7f), 2
		switch l {
		case 126:
			l, hdr = int(binary.BigEndian.Uint16(buf[at+2:])), 4
		case 127:
			l, hdr = int(binary.BigEndian.Uint64(buf[at+2:])), 10
		}
		at += hdr + l
	}
	return at
}

// frameLen returns the length of the frame buf starts with (built by
// appendFrame, so its header is whole).
func frameLen(buf []byte) int {
	switch l := int(buf[1] & 0x7f); l {
	case 126:
		return 4 + int(binary.BigEndian.Uint16(buf[2:]))
	case 127:
		return 10 + int(binary.BigEndian.Uint64(buf[2:]))
	default:
		return 2 + l
	}
}

// frameEndAfter is frameEnd for a buf whose first lead bytes are the end
// of a frame (what an earlier write left of it), whole frames after them.
func frameEndAfter(buf []byte, lead, n int) int {
	if n <= lead {
		return lead
	}
	return lead + frameEnd(buf[lead:], n-lead)
}

// batchBufs recycles the buffers batches of frames are built in, so an
// idle connection holds none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxBatchBytes bounds one write: past it the batch is written in parts.
const maxBatchBytes = 64 << 10

// closeError is a reason to close the connection found while reading: a
// violation of RFC 6455 by the client, or the client's own close frame
// (peer true).
type closeError struct {
	code   ws.StatusCode
	reason string
	peer   bool
}

func (e *closeError) Error() string {
	if e.peer {
		return fmt.Sprintf("gateway: the client closed the connection (%d %q)", e.code, e.reason)
	}
	return fmt.Sprintf("gateway: websocket: %s (close %d)", e.reason, e.code)
}

func protocolError(code ws.StatusCode, reason string) error {
	return &closeError{code: code, reason: reason}
}

// errMessageTooBig: a client message over the read limit (closed with 1009).
var errMessageTooBig = errors.New("gateway: message too big")

// wsReader reads a client's frames (RFC 6455 5): masked, no extension
// (none is negotiated: RSV bits must be 0), control frames final and at
// most 125 bytes, fragmented messages reassembled up to limit.
type wsReader struct {
	br    *sockReader
	limit int
	ctl   controlHandler
	hdr   [ws.MaxHeaderSize - 2]byte
}

// controlBufs holds the payloads of control frames while they are read
// and handled, so that a connection keeps no room for one.
var controlBufs = sync.Pool{New: func() any { return new([ws.MaxControlFramePayloadSize]byte) }}

// sockReader reads a socket through a buffer it holds only while it has
// bytes in it: an idle connection, its reader blocked until the client's
// next frame, holds none. That wait is a read straight into the caller's
// slice (the first bytes of a frame header); what follows is read through
// a buffer from bufs, which release gives back once it is empty.
type sockReader struct {
	src  io.Reader
	bufs *sync.Pool // of *[]byte, all of one length
	buf  *[]byte    // nil while nothing is buffered
	r, w int        // the buffered bytes are (*buf)[r:w]
	err  error      // the error that came with the last bytes buffered
}

func newSockReader(src io.Reader, bufs *sync.Pool) *sockReader {
	return &sockReader{src: src, bufs: bufs}
}

// newReadBufs makes the pool of read buffers of size bytes.
func newReadBufs(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
}

func (s *sockReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.r == s.w {
		if err := s.err; err != nil {
			s.err = nil
			return 0, err
		}
		if s.buf == nil {
			n, err := s.src.Read(p)
			if n > 0 && err == nil {
				s.buf = s.bufs.Get().(*[]byte) // the rest of the frame is coming
			}
			return n, err
		}
		if len(p) >= len(*s.buf) {
			return s.src.Read(p)
		}
		n, err := s.src.Read(*s.buf)
		s.r, s.w = 0, n
		if n == 0 {
			return 0, err
		}
		s.err = err
	}
	n := copy(p, (*s.buf)[s.r:s.w])
	s.r += n
	return n, nil
}

// release gives the buffer back if it holds nothing.
func (s *sockReader) release() {
	if s.buf != nil && s.r == s.w {
		s.bufs.Put(s.buf)
		s.buf, s.r, s.w = nil, 0, 0
	}
}

// controlHandler takes the pings and pongs a client sends; the payload is
// valid until the call returns.
type controlHandler interface {
	onPing(payload []byte)
	onPong(payload []byte)
}

// next returns the next data message (ws.OpText or ws.OpBinary). Control
// frames in between go to r.ctl; a close frame from the client
// is returned as a *closeError with peer set, a protocol violation as a
// *closeError to close with; anything else is the socket's error.
func (r *wsReader) next() (ws.OpCode, []byte, error) {
	var (
		op  ws.OpCode
		msg []byte
	)
	st := ws.StateServerSide
	for {
		if op == 0 {
			r.br.release() // between messages: the wait for the next one holds no buffer
		}
		h, err := ws.ReadHeaderBuffer(r.br, r.hdr[:])
		if err != nil {
			if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
				return 0, nil, protocolError(ws.StatusProtocolError, "malformed frame header")
			}
			return 0, nil, err
		}
		if err := ws.CheckHeader(h, st); err != nil {
			return 0, nil, protocolError(ws.StatusProtocolError, err.Error())
		}
		if h.OpCode.IsControl() {
			if err := r.control(h); err != nil {
				return 0, nil, err
			}
			continue
		}
		if h.Length > int64(r.limit-len(msg)) {
			return 0, nil, errMessageTooBig
		}
		if op == 0 {
			op = h.OpCode
		}
		at := len(msg)
		msg = slices.Grow(msg, int(h.Length))[:at+int(h.Length)]
		if _, err := io.ReadFull(r.br, msg[at:]); err != nil {
			return 0, nil, err
		}
		ws.Cipher(msg[at:], h.Mask, 0)
		if h.Fin {
			return op, msg, nil
		}
		st = st.Set(ws.StateFragmented)
	}
}

// control reads and handles a control frame whose header is h: its error
// is the socket's, or the client's close.
func (r *wsReader) control(h ws.Header) error {
	buf := controlBufs.Get().(*[ws.MaxControlFramePayloadSize]byte)
	defer controlBufs.Put(buf)
	p := buf[:h.Length]
	if _, err := io.ReadFull(r.br, p); err != nil {
		return err
	}
	ws.Cipher(p, h.Mask, 0)
	switch h.OpCode {
	case ws.OpPing:
		r.ctl.onPing(p)
	case ws.OpPong:
		r.ctl.onPong(p)
	case ws.OpClose:
		return peerClose(p)
	}
	return nil
}

// peerClose reads a client's close frame payload (RFC 6455 5.5.1, 7.4).
func peerClose(p []byte) error {
	switch {
	case len(p) == 0:
		return &closeError{code: ws.StatusNoStatusRcvd, peer: true}
	case len(p) == 1:
		return protocolError(ws.StatusProtocolError, "close frame of 1 byte")
	}
	code, reason := ws.ParseCloseFrameData(p)
	if err := ws.CheckCloseFrameData(code, reason); err != nil {
		if errors.Is(err, ws.ErrProtocolInvalidUTF8) {
			return protocolError(ws.StatusInvalidFramePayloadData, "close reason is not UTF-8")
		}
		return protocolError(ws.StatusProtocolError, "invalid close code")
	}
	return &closeError{code: code, reason: reason, peer: true}
}
