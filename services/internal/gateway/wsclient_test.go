package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"palaver.dev/services/internal/protocol"
	"palaver.dev/services/room"
)

// strictClient is a WebSocket client written from RFC 6455 alone, with no
// code of the gateway's and no library: it checks every byte the gateway
// sends. It answers the server's pings, checks the server's pongs against
// its own pings, and answers a close frame with its own.
type strictClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader

	wmu        sync.Mutex // writes
	closedSent bool       // a close frame was sent (under wmu)

	mu          sync.Mutex
	pingsSent   int // pings sent, payloads "p1", "p2", ...
	pongsSeen   int // highest ping answered
	serverPings int

	fragOp byte
	msg    []byte
}

// Opcodes and close codes, from RFC 6455 5.2 and 7.4.
const (
	wsCont, wsText, wsBinary, wsClose, wsPing, wsPong = 0x0, 0x1, 0x2, 0x8, 0x9, 0xa
)

func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// dialStrict opens a connection to gw's /v1/ws, offering permessage-deflate
// (the gateway must not accept it), with a receive buffer of rcvBuf bytes
// when positive.
func dialStrict(t testing.TB, gw *testServer, rcvBuf int) *strictClient {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	addr := strings.TrimPrefix(gw.url, "http://")
	nc, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	req := "GET /v1/ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + k + "\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, permessage-deflate\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	c := &strictClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	switch {
	case resp.StatusCode != http.StatusSwitchingProtocols:
		t.Fatalf("handshake answered %s", resp.Status)
	case !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade"):
		t.Fatalf("handshake headers %v", resp.Header)
	case resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]):
		t.Fatalf("Sec-WebSocket-Accept %q", resp.Header.Get("Sec-WebSocket-Accept"))
	case len(resp.Header.Values("Sec-WebSocket-Extensions")) > 0:
		// The gateway writes frames that are never compressed.
		t.Fatalf("the gateway accepted extensions %q", resp.Header.Values("Sec-WebSocket-Extensions"))
	case len(resp.Header.Values("Sec-WebSocket-Protocol")) > 0:
		t.Fatalf("the gateway chose a subprotocol nobody offered: %q", resp.Header.Values("Sec-WebSocket-Protocol"))
	}
	return c
}

// errAfterClose: the client sent its close frame and sends nothing more.
var errAfterClose = errors.New("write after the close frame")

// write sends one final, masked frame.
func (c *strictClient) write(op byte, payload []byte) error {
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, mask[:]...)
	for i, x := range payload {
		b = append(b, x^mask[i%4])
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closedSent {
		return errAfterClose
	}
	c.closedSent = op == wsClose
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

func (c *strictClient) writeJSON(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.write(wsText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *strictClient) serverPingCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.serverPings
}

// ping sends a ping with the next payload.
func (c *strictClient) ping() error {
	c.mu.Lock()
	c.pingsSent++
	p := fmt.Sprintf("p%d", c.pingsSent)
	c.mu.Unlock()
	return c.write(wsPing, []byte(p))
}

// closeCode is the server's close frame, as next returns it.
type closeCode struct {
	code   int
	reason string
}

// next reads frames until a whole text message (returned) or the server's
// close frame (returned as a *closeCode, after answering it), checking
// each against RFC 6455; any violation is an error.
func (c *strictClient) next() ([]byte, *closeCode, error) {
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return nil, nil, fmt.Errorf("read: %w", err)
		}
		fin, rsv, op := h[0]&0x80 != 0, h[0]&0x70, h[0]&0x0f
		if rsv != 0 {
			return nil, nil, fmt.Errorf("RSV bits %#x set with no extension negotiated", rsv)
		}
		if h[1]&0x80 != 0 {
			return nil, nil, errors.New("a server frame is masked")
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(c.br, b[:]); err != nil {
				return nil, nil, err
			}
			if n = uint64(binary.BigEndian.Uint16(b[:])); n < 126 {
				return nil, nil, fmt.Errorf("length %d not in its minimal encoding", n)
			}
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(c.br, b[:]); err != nil {
				return nil, nil, err
			}
			if n = binary.BigEndian.Uint64(b[:]); n <= 0xffff || n>>63 != 0 {
				return nil, nil, fmt.Errorf("length %d not in its minimal encoding", n)
			}
		}
		if n > 1<<20 {
			return nil, nil, fmt.Errorf("frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return nil, nil, fmt.Errorf("frame payload: %w", err)
		}
		switch op {
		case wsPing, wsPong, wsClose:
			if !fin || n > 125 {
				return nil, nil, fmt.Errorf("control frame %#x: fin %v, %d bytes", op, fin, n)
			}
		case wsText, wsCont:
		default:
			return nil, nil, fmt.Errorf("opcode %#x", op)
		}
		switch op {
		case wsPing:
			c.mu.Lock()
			c.serverPings++
			c.mu.Unlock()
			// A ping that crossed the client's close goes unanswered.
			if err := c.write(wsPong, p); err != nil && !errors.Is(err, errAfterClose) {
				return nil, nil, err
			}
		case wsPong:
			var k int
			if _, err := fmt.Sscanf(string(p), "p%d", &k); err != nil {
				return nil, nil, fmt.Errorf("pong %q answers no ping", p)
			}
			c.mu.Lock()
			ok := k > c.pongsSeen && k <= c.pingsSent
			c.pongsSeen = k
			c.mu.Unlock()
			if !ok {
				return nil, nil, fmt.Errorf("pong %q out of order or for no ping", p)
			}
		case wsClose:
			if c.fragOp != 0 {
				return nil, nil, errors.New("close frame inside a fragmented message")
			}
			cc := &closeCode{code: 1005}
			if n == 1 {
				return nil, nil, errors.New("close frame of 1 byte")
			}
			if n >= 2 {
				cc.code, cc.reason = int(binary.BigEndian.Uint16(p)), string(p[2:])
				if !validCloseCode(cc.code) || !utf8.ValidString(cc.reason) {
					return nil, nil, fmt.Errorf("close frame %d %q", cc.code, cc.reason)
				}
			}
			_ = c.write(wsClose, p[:min(n, 2)]) // unless sent first; the server may be gone already
			return nil, cc, nil
		case wsText, wsCont:
			if (op == wsCont) != (c.fragOp != 0) {
				return nil, nil, fmt.Errorf("opcode %#x in the middle of a message: %v", op, c.fragOp != 0)
			}
			if op == wsText {
				c.fragOp = op
			}
			c.msg = append(c.msg, p...)
			if !fin {
				continue
			}
			msg := c.msg
			c.msg, c.fragOp = nil, 0
			if !utf8.Valid(msg) {
				return nil, nil, errors.New("text message that is not UTF-8")
			}
			return msg, nil, nil
		}
	}
}

// untilClose reads every message to the server's close frame, then
// checks that the stream ends there.
func (c *strictClient) untilClose(each func(msg []byte)) (*closeCode, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		msg, cc, err := c.next()
		if err != nil {
			return nil, err
		}
		if cc != nil {
			if b, err := c.br.ReadByte(); err == nil {
				return cc, fmt.Errorf("byte %#x after the close frame", b)
			} else if !errors.Is(err, io.EOF) {
				return cc, fmt.Errorf("after the close frame: %w, want the end of the stream", err)
			}
			return cc, nil
		}
		each(msg)
	}
}

// offsets checks message frames: every message's offset follows the
// previous one's (no gap, no repeat).
type offsets struct {
	n    int
	last int64
}

func (o *offsets) add(t testing.TB, msg []byte) {
	t.Helper()
	var f frame
	if err := json.Unmarshal(msg, &f); err != nil {
		t.Fatalf("not JSON: %q", msg)
	}
	if f.Op != "message" {
		return
	}
	if o.n > 0 && f.Offset != o.last+1 {
		t.Fatalf("message at offset %d after %d", f.Offset, o.last)
	}
	o.n++
	o.last = f.Offset
}

// helloJoin says hello and joins room without reading the answers.
func (c *strictClient) helloJoin(user, roomName string) {
	c.t.Helper()
	c.writeJSON(map[string]any{"op": "hello", "ref": "h", "versions": []int{1}, "token": token(c.t, user, nil, time.Hour)})
	c.writeJSON(map[string]any{"op": "join", "ref": "j", "room": roomName})
}

// TestSlowConsumerGetsItsCloseFrame: a client with a 4 KiB receive buffer
// that stops reading while 200 messages of 4,000 bytes arrive is closed
// with 4408, and the close frame is there when it reads again, after its
// last whole frames, every time: whether the write watchdog or the queue
// cuts it.
func TestSlowConsumerGetsItsCloseFrame(t *testing.T) {
	e := sharedEnv(t)
	const runs = 8
	for _, tt := range []struct {
		name   string
		adjust func(*Config)
	}{
		{"write timeout", func(c *Config) { c.WriteTimeout = 300 * time.Millisecond }},
		{"queue overflow", func(c *Config) { c.QueueSize, c.RingSize = 32, 64 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			info := e.newRoom(t, 1)
			gw := startServer(t, e, tt.adjust)
			for i := range runs {
				c := dialStrict(t, gw, 4096)
				c.helloJoin("ada", info.Name)
				waitFor(t, "the join", func() bool { return testutil.ToFloat64(gw.metrics.Joins) == float64(i+1) })
				e.produceDirect(t, info, "carol", 200, 4000)
				waitFor(t, "the slow consumer's disconnect", func() bool {
					return testutil.ToFloat64(gw.metrics.Disconnects.WithLabelValues(reasonSlowConsumer)) == float64(i+1)
				})
				if i%4 == 3 {
					// Read only once the gateway has closed the socket (the
					// client's close did not come within the handshake
					// timeout): the kernel still holds the frames, the close
					// frame and the end of the stream for it.
					waitFor(t, "the socket's close", func() bool { return gw.Connections() == 0 })
				}
				var got offsets
				cc, err := c.untilClose(func(msg []byte) { got.add(t, msg) })
				if err != nil || cc.code != protocol.CloseSlowConsumer {
					t.Fatalf("run %d: after %d messages: close %+v, %v; want 4408", i, got.n, cc, err)
				}
				if got.n == 0 || got.n >= 200 {
					t.Fatalf("run %d: %d messages before the close", i, got.n)
				}
			}
		})
	}
}

// TestOversizedMessageGetsItsCloseFrame: a client still writing a message
// over max_frame_bytes when the gateway closes with 1009 finishes its
// write, reads the close frame, and sees the stream end cleanly, not reset:
// the gateway reads and discards the rest instead of closing the socket on
// unread bytes.
func TestOversizedMessageGetsItsCloseFrame(t *testing.T) {
	e := sharedEnv(t)
	gw := startServer(t, e, nil)
	const size = 512 << 10 // over max_frame_bytes, under what the gateway discards
	for i := range 4 {
		c := dialStrict(t, gw, 0)
		var mask [4]byte
		hdr := []byte{0x80 | wsText, 0x80 | 127}
		hdr = binary.BigEndian.AppendUint64(hdr, size)
		hdr = append(hdr, mask[:]...) // a zero mask: the payload is sent as is
		_ = c.nc.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.nc.Write(append(hdr, make([]byte, 1<<10)...)); err != nil {
			t.Fatalf("run %d: write: %v", i, err)
		}
		// The close frame comes once the header is read, with the message
		// still being written.
		var h [4]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			t.Fatalf("run %d: read the close frame: %v", i, err)
		}
		if h[0] != 0x80|wsClose || h[1] < 2 || binary.BigEndian.Uint16(h[2:]) != uint16(websocket.StatusMessageTooBig) {
			t.Fatalf("run %d: frame % x, want a close frame with 1009", i, h)
		}
		if _, err := c.br.Discard(int(h[1]) - 2); err != nil {
			t.Fatalf("run %d: read the close reason: %v", i, err)
		}
		for sent := 1 << 10; sent < size; sent += 16 << 10 {
			if _, err := c.nc.Write(make([]byte, min(16<<10, size-sent))); err != nil {
				t.Fatalf("run %d: write after %d of %d bytes: %v", i, sent, size, err)
			}
		}
		if err := c.write(wsClose, closeBody(protocol.CloseTooBig)); err != nil {
			t.Fatalf("run %d: write the close frame: %v", i, err)
		}
		_ = c.nc.(*net.TCPConn).CloseWrite()
		if n, err := io.Copy(io.Discard, c.br); n != 0 || err != nil {
			t.Fatalf("run %d: after the close frame: %d bytes, %v; want the end of the stream", i, n, err)
		}
	}
	if n := testutil.ToFloat64(gw.metrics.RejectedFrames.WithLabelValues(protocol.CodeTooLarge)); n != 4 {
		t.Fatalf("%v messages rejected as too large, want 4", n)
	}
}

// produceVaried writes n envelopes with texts of varied lengths and
// scripts to a room's topic.
func (e *kafkaEnv) produceVaried(t testing.TB, info room.Info, seq, n int) error {
	words := []string{"a", "é", "€", "😀", "x\"y", "\\", "\u2028", "<p>"}
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		var sb strings.Builder
		for k := 0; sb.Len() < (seq+i)*37%1500+1; k++ {
			sb.WriteString(words[(seq+i+k)%len(words)])
		}
		b, err := json.Marshal(map[string]any{"v": 1, "id": fmt.Sprintf("v%d-%d", seq, i), "room": info.Name,
			"sender_id": "carol", "text": sb.String()})
		if err != nil {
			return err
		}
		msgs[i] = kafka.Message{Topic: info.Topic, Key: []byte("carol"), Value: b}
	}
	return e.writer.WriteMessages(t.Context(), msgs...)
}

// TestFramesUnderStress floods connections with messages while the
// client's pings and the server's pings and their pongs cross them, and
// then a close, from either side, crosses the flood; a strict client
// checks every frame (RFC 6455 framing, no masking, control frame sizes,
// UTF-8, close codes, nothing after the close) and that no message is
// lost or repeated.
func TestFramesUnderStress(t *testing.T) {
	e := sharedEnv(t)
	for _, closer := range []string{"client", "server"} {
		t.Run(closer+" closes", func(t *testing.T) {
			info := e.newRoom(t, 1)
			gw := startServer(t, e, func(c *Config) { c.PingInterval = 2 * time.Second })
			c := dialStrict(t, gw, 0)
			c.helloJoin("ada", info.Name)
			waitFor(t, "the join", func() bool { return testutil.ToFloat64(gw.metrics.Joins) == 1 })

			done := make(chan struct{})
			var read atomic.Int64       // messages read
			var produceErr atomic.Value // string: the flood's last error
			var wg sync.WaitGroup
			wg.Go(func() { // the flood, at most 200 messages ahead of the reader
				for seq := 0; ; seq += 50 {
					for int64(seq)-read.Load() > 200 {
						select {
						case <-done:
							return
						case <-time.After(time.Millisecond):
						}
					}
					select {
					case <-done:
						return
					default:
					}
					for err := e.produceVaried(t, info, seq, 50); err != nil; err = e.produceVaried(t, info, seq, 50) {
						// A new topic: the writer's metadata catches up
						// within a second.
						produceErr.Store(err.Error())
						select {
						case <-done:
							return
						case <-time.After(50 * time.Millisecond):
						}
					}
				}
			})
			wg.Go(func() { // pings and commands
				tick := time.NewTicker(2 * time.Millisecond)
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-done:
						return
					case <-tick.C:
					}
					var err error
					if i%25 == 0 {
						err = c.write(wsText, []byte(`{"op":"ping","ref":"q"}`))
					} else {
						err = c.ping()
					}
					if err != nil {
						return // closed
					}
				}
			})
			var got offsets
			var answers int
			_ = c.nc.SetReadDeadline(time.Now().Add(60 * time.Second))
			// At least 3,000 messages, and two of the server's pings
			// answered in the flood.
			for got.n < 3000 || c.serverPingCount() < 3 {
				msg, cc, err := c.next()
				if err != nil || cc != nil {
					t.Fatalf("after %d messages: close %+v, %v (last error of the flood: %v)", got.n, cc, err, produceErr.Load())
				}
				if strings.Contains(string(msg), `"op":"pong"`) {
					answers++
				}
				got.add(t, msg)
				read.Store(int64(got.n))
			}
			want := ws1000
			if closer == "client" {
				if err := c.write(wsClose, []byte{0x03, 0xe8}); err != nil {
					t.Fatal(err)
				}
			} else {
				want = protocol.CloseGoingAway
				gw.stop()
			}
			cc, err := c.untilClose(func(msg []byte) { got.add(t, msg) })
			close(done)
			wg.Wait()
			if err != nil || cc.code != want {
				t.Fatalf("close %+v, %v; want %d", cc, err, want)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.pongsSeen == 0 || c.serverPings == 0 || answers == 0 {
				t.Fatalf("%d pings answered of %d sent, %d server pings, %d protocol pongs", c.pongsSeen, c.pingsSent, c.serverPings, answers)
			}
			t.Logf("%d messages, %d of %d pings answered, %d server pings, %d protocol pongs", got.n, c.pongsSeen, c.pingsSent, c.serverPings, answers)
		})
	}
}

const ws1000 = 1000 // normal closure

// TestNoCompressionNegotiated: the gateway writes its frames uncompressed,
// so it must never accept permessage-deflate, whichever way a client offers
// it; this fails if a change of library or default starts negotiating it.
func TestNoCompressionNegotiated(t *testing.T) {
	e := sharedEnv(t)
	gw := startServer(t, e, nil)
	for _, mode := range []websocket.CompressionMode{websocket.CompressionContextTakeover, websocket.CompressionNoContextTakeover} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(gw.url, "http")+"/v1/ws", &websocket.DialOptions{CompressionMode: mode})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		_ = c.CloseNow()
		if x := resp.Header.Values("Sec-WebSocket-Extensions"); len(x) > 0 {
			t.Fatalf("compression mode %d: the gateway accepted %q", mode, x)
		}
	}
	dialStrict(t, gw, 0) // offers permessage-deflate with parameters, checks the answer
}
