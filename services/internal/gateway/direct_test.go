package gateway

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"palaver.dev/services/internal/protocol"
)

// tcpPair returns the two ends of a loopback TCP connection, the server's
// send buffer and the far end's receive buffer small so that a few frames
// fill them.
func tcpPair(t *testing.T) (srv, far *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	srv, far = sc.(*net.TCPConn), fc.(*net.TCPConn)
	_ = srv.SetWriteBuffer(4096)
	_ = far.SetReadBuffer(4096)
	t.Cleanup(func() { _ = srv.Close(); _ = far.Close() })
	return srv, far
}

// directConn is a connection on a TCP socket, as serveWS makes it, with
// one room membership.
func directConn(t *testing.T, nc *net.TCPConn) (*conn, *roomSub) {
	t.Helper()
	s := &Server{cfg: Config{QueueSize: 1000, SocketSendBuffer: 4096}.withDefaults(), m: NewMetrics(prometheus.NewRegistry())}
	c := &conn{s: s, nc: nc, raw: rawConn(nc), closed: make(chan struct{})}
	if c.raw == nil {
		t.Fatal("no raw socket for a TCP connection")
	}
	return c, &roomSub{c: c, name: "r", delivered: s.m.MessagesDelivered.WithLabelValues("r")}
}

// numbered is frame i's payload: its number, then filler to size bytes.
func numbered(i, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, uint32(i))
	for j := 4; j < size; j++ {
		b[j] = byte('a' + (i+j)%26)
	}
	return b
}

// readFrames reads a server's frames from r until the end of the stream:
// the payloads of its text frames, then the close frame's code if one
// came. Any frame after the close frame, or a frame cut short, is an
// error.
func readFrames(r io.Reader) (texts [][]byte, closeCode ws.StatusCode, err error) {
	br := bufio.NewReader(r)
	for {
		h, err := ws.ReadHeader(br)
		if errors.Is(err, io.EOF) {
			return texts, closeCode, nil
		}
		if err != nil {
			return texts, closeCode, fmt.Errorf("header after %d frames: %w", len(texts), err)
		}
		if closeCode != 0 {
			return texts, closeCode, fmt.Errorf("a %v frame after the close frame", h.OpCode)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			return texts, closeCode, fmt.Errorf("frame %d cut short: %w", len(texts), err)
		}
		switch h.OpCode {
		case ws.OpText:
			texts = append(texts, p)
		case ws.OpClose:
			closeCode = ws.StatusCode(binary.BigEndian.Uint16(p))
		case ws.OpPing, ws.OpPong:
		default:
			return texts, closeCode, fmt.Errorf("unexpected %v frame", h.OpCode)
		}
	}
}

// checkNumbered checks that texts are frames 0, 1, ... of size bytes,
// whole and in order.
func checkNumbered(t *testing.T, texts [][]byte, size int) {
	t.Helper()
	for i, p := range texts {
		if !bytes.Equal(p, numbered(i, size)) {
			t.Fatalf("frame %d of %d is not the %dth frame queued (starts %q)", i, len(texts), i, p[:min(len(p), 8)])
		}
	}
}

// A flush writes to a socket that has room itself; what the socket does
// not take goes, the rest of a frame cut short first, to the writer, and
// frames queued after the handover follow in order.
func TestDirectWriteHandsOverToWriter(t *testing.T) {
	const size, first, later = 1999, holdFrames - 4, 16 // fewer than holdFrames: held for the flush
	srv, far := tcpPair(t)
	c, rs := directConn(t, srv)
	// A writer lingers: a flush writes directly anyway, and wakes it
	// when the socket is full. The test plays that writer's part, so the
	// state after the flush holds still.
	c.mu.Lock()
	c.writing, c.waiting, c.wake = true, true, make(chan struct{}, 1)
	c.mu.Unlock()
	for i := range first {
		if !c.queue(outItem{frame: numbered(i, size), rs: rs}, false, true) {
			t.Fatal("queue refused a frame")
		}
	}
	rs.Flush()
	waitFlushed(t, c)

	c.mu.Lock()
	left, queued, woken, rest := len(c.q), c.queued, len(c.wake), c.q != nil && c.q[0].rest != nil
	direct := c.direct
	c.mu.Unlock()
	switch {
	case direct:
		t.Fatal("the direct write is still marked in progress")
	case left == first:
		t.Fatal("the flush wrote nothing to a socket with room")
	case left == 0:
		t.Fatalf("a socket of a few KiB took %d frames of %d bytes at once", first, size)
	case queued != left:
		t.Fatalf("%d frames queued but %d counted", left, queued)
	case woken != 1:
		t.Fatal("the flush left frames unwritten without waking the writer")
	}
	t.Logf("the direct write left %d of %d frames to the writer (a frame cut short: %v)", left, first, rest)

	done := make(chan struct{})
	var texts [][]byte
	var code ws.StatusCode
	var rerr error
	go func() {
		defer close(done)
		texts, code, rerr = readFrames(far)
	}()
	go c.writeLoop() // the writer, woken
	for i := first; i < first+later; i++ {
		if !c.queue(outItem{frame: numbered(i, size), rs: rs}, false, true) {
			t.Fatal("queue refused a frame")
		}
		if i%4 == 0 {
			rs.Flush() // by the writer or directly, as it happens
		}
	}
	rs.Flush()
	c.closeWith(protocol.CloseNormal, "", reasonClient, true)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the frames and the close frame did not arrive within 30 s")
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(texts) != first+later {
		t.Fatalf("%d frames arrived, want %d", len(texts), first+later)
	}
	checkNumbered(t, texts, size)
	if code != protocol.CloseNormal {
		t.Fatalf("close code %d, want %d", code, protocol.CloseNormal)
	}
}

// The end of a frame a direct write cut short goes first, before the
// control frames due and the frames after it.
func TestWriterSendsRestFirst(t *testing.T) {
	const size = 300
	srv, far := tcpPair(t)
	c, rs := directConn(t, srv)
	var wire []byte
	wire = appendTextFrame(wire, numbered(0, size))
	cut := 7 // a direct write took wire[:cut]
	if _, err := srv.Write(wire[:cut]); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.q = append(c.q, outItem{frame: numbered(0, size), rs: rs, rest: bytes.Clone(wire[cut:])})
	for i := 1; i < 4; i++ {
		c.q = append(c.q, outItem{frame: numbered(i, size), rs: rs})
	}
	c.queued = len(c.q)
	c.pongDue, c.pong = true, []byte("p")
	c.startWriterLocked()
	c.mu.Unlock()
	c.closeWith(protocol.CloseNormal, "", reasonClient, true)
	texts, code, err := readFrames(far)
	if err != nil {
		t.Fatal(err)
	}
	if len(texts) != 4 {
		t.Fatalf("%d frames arrived, want 4", len(texts))
	}
	checkNumbered(t, texts, size)
	if code != protocol.CloseNormal {
		t.Fatalf("close code %d, want %d", code, protocol.CloseNormal)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.queued != 0 {
		t.Fatalf("%d frames still counted as queued", c.queued)
	}
}

// A close without flush that comes while a flush writes directly: the
// client reads whole frames, in order, then the close frame, then the end
// of the stream, whichever of the two went first.
func TestCloseRacesDirectWrite(t *testing.T) {
	const size, frames = 1999, 40
	for round := range 20 {
		srv, far := tcpPair(t)
		c, rs := directConn(t, srv)
		for i := range frames {
			if !c.queue(outItem{frame: numbered(i, size), rs: rs}, false, true) {
				t.Fatal("queue refused a frame")
			}
		}
		done := make(chan struct{})
		var texts [][]byte
		var code ws.StatusCode
		var rerr error
		go func() { // a slow client
			defer close(done)
			texts, code, rerr = readFrames(&slowReader{r: far})
		}()
		flushed := make(chan struct{})
		go func() {
			defer close(flushed)
			rs.Flush()
		}()
		time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		c.closeWith(protocol.CloseSlowConsumer, "slow", reasonSlowConsumer, false)
		<-flushed
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the close did not arrive within 30 s", round)
		}
		select {
		case <-c.closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the writer did not end", round)
		}
		if rerr != nil {
			t.Fatalf("round %d: %v", round, rerr)
		}
		if code != protocol.CloseSlowConsumer {
			t.Fatalf("round %d: close code %d after %d frames, want %d", round, code, len(texts), protocol.CloseSlowConsumer)
		}
		checkNumbered(t, texts, size)
	}
}

// slowReader reads in small pieces with pauses, like a client that falls
// behind.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(200 * time.Microsecond)
	return s.r.Read(p[:min(len(p), 1024)])
}

// waitFlushed waits until c's flush worker wrote what c's flush handed it.
func waitFlushed(t *testing.T, c *conn) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		done := !c.flushing && !c.direct
		c.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the flush worker did not get to the connection within 30 s")
		}
	}
}

// A connection that is not a TCP socket (TLS, a pipe) has its frames
// written by its writer alone.
func TestNoDirectWriteWithoutTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if rawConn(a) != nil {
		t.Fatal("a pipe got a raw socket")
	}
	s := &Server{cfg: Config{QueueSize: 10}.withDefaults(), m: NewMetrics(prometheus.NewRegistry())}
	c := &conn{s: s, nc: a, raw: rawConn(a), closed: make(chan struct{})}
	rs := &roomSub{c: c, name: "r", delivered: s.m.MessagesDelivered.WithLabelValues("r")}
	c.queue(outItem{frame: numbered(0, 10), rs: rs}, false, true)
	rs.Flush() // would block on the pipe if it wrote itself
	c.mu.Lock()
	writing := c.writing
	c.mu.Unlock()
	if !writing {
		t.Fatal("no writer started")
	}
	texts, _, err := readFrames(io.LimitReader(b, 12))
	if err != nil {
		t.Fatal(err)
	}
	if len(texts) != 1 {
		t.Fatalf("%d frames, want 1", len(texts))
	}
	checkNumbered(t, texts, 10)
}
