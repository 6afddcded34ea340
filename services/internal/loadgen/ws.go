package loadgen

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"palaver.dev/services/internal/chatclient"
	"palaver.dev/services/internal/protocol"
)

// wsConn is a lean WebSocket client (RFC 6455): the load generator holds
// a hundred of them on the machine it measures, so each is a socket, a
// read buffer, and one goroutine that reads. Frames are written whole in
// one call; server frames are read into a reused buffer.
type wsConn struct {
	nc net.Conn
	br *bufio.Reader
	in *socketReader // under br: counts the socket reads

	wmu  sync.Mutex
	wbuf []byte
	// writeTimeout, if set, bounds every frame's write, pongs included
	// (a deadline set for one write would otherwise expire under the
	// next).
	writeTimeout time.Duration

	payload []byte // the last fragmented message read; valid until the next read
}

// socketReader counts the reads from the socket under a connection's
// buffer, so that a reader can tell which frames came in one read and
// take the time once for all of them (they arrived together).
type socketReader struct {
	r     io.Reader
	reads int
}

func (s *socketReader) Read(p []byte) (int, error) {
	s.reads++
	return s.r.Read(p)
}

// websocketGUID is the key-hashing constant of RFC 6455 1.3.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// dialWS opens a WebSocket to the gateway's /v1/ws at base (http:// or
// https://), sending token as a bearer token on the upgrade.
func dialWS(ctx context.Context, base, token string, tlsConf *tls.Config) (*wsConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("gateway URL: %w", err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	var d net.Dialer
	var nc net.Conn
	switch u.Scheme {
	case "http":
		nc, err = d.DialContext(ctx, "tcp", host)
	case "https":
		conf := tlsConf.Clone()
		if conf == nil {
			conf = &tls.Config{}
		}
		if conf.ServerName == "" {
			conf.ServerName = u.Hostname()
		}
		td := tls.Dialer{NetDialer: &d, Config: conf}
		nc, err = td.DialContext(ctx, "tcp", host)
	default:
		return nil, fmt.Errorf("gateway URL %q: the scheme must be http or https", base)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", host, err)
	}
	c, err := handshake(ctx, nc, u, token)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

func handshake(ctx context.Context, nc net.Conn, u *url.URL, token string) (*wsConn, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
		defer func() { _ = nc.SetDeadline(time.Time{}) }()
	}
	var keyBytes [16]byte
	_, _ = rand.Read(keyBytes[:])
	key := base64.StdEncoding.EncodeToString(keyBytes[:])
	path := strings.TrimSuffix(u.Path, "/") + "/v1/ws"
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", path, u.Host, key, token)
	if _, err := io.WriteString(nc, req); err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	in := &socketReader{r: nc}
	br := bufio.NewReaderSize(in, 32<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("upgrade refused: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	sum := sha1.Sum([]byte(key + websocketGUID))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, errors.New("upgrade: the server's Sec-WebSocket-Accept does not match the key")
	}
	return &wsConn{nc: nc, br: br, in: in}, nil
}

// Opcodes of RFC 6455 5.2.
const (
	opContinuation = 0x0
	opText         = 0x1
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// maxPayload bounds a frame from the gateway (its frames are a few hundred
// bytes; a recovery batch is many frames, not one large one).
const maxPayload = 1 << 20

// writeFrame writes one final frame, masked with a fresh key as a client
// must (RFC 6455 5.3).
func (c *wsConn) writeFrame(opcode byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], 0x80|opcode)
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], mrand.Uint32())
	b = append(b, mask[:]...)
	for i, x := range p {
		b = append(b, x^mask[i&3])
	}
	c.wbuf = b
	if c.writeTimeout > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	_, err := c.nc.Write(b)
	return err
}

// writeText writes one text frame.
func (c *wsConn) writeText(p []byte) error { return c.writeFrame(opText, p) }

// reads returns how many reads from the socket were made so far: frames
// returned by next between two changes of it came in one read.
func (c *wsConn) reads() int { return c.in.reads }

// next returns the payload of the next text message, answering pings on
// the way. A close frame from the gateway is answered and returned as a
// *chatclient.CloseError. The payload is valid until the next call: an
// unfragmented message that fits the read buffer (every message frame) is
// returned where it lies in the buffer, without a copy.
func (c *wsConn) next() ([]byte, error) {
	c.payload = c.payload[:0]
	for {
		h, err := c.take(2)
		if err != nil {
			return nil, err
		}
		fin, opcode := h[0]&0x80 != 0, h[0]&0x0f
		if h[1]&0x80 != 0 {
			return nil, errors.New("the gateway sent a masked frame")
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			ext, err := c.take(2)
			if err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(ext))
		case 127:
			ext, err := c.take(8)
			if err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(ext)
		}
		if n+uint64(len(c.payload)) > maxPayload {
			return nil, fmt.Errorf("a frame of %d bytes from the gateway", n)
		}
		if opcode >= opClose { // control frames interleave with a fragmented message
			ctl := make([]byte, n)
			if _, err := io.ReadFull(c.br, ctl); err != nil {
				return nil, err
			}
			switch opcode {
			case opPing:
				if err := c.writeFrame(opPong, ctl); err != nil {
					return nil, err
				}
			case opClose:
				ce := &chatclient.CloseError{Code: 1005}
				if len(ctl) >= 2 {
					ce.Code, ce.Reason = int(binary.BigEndian.Uint16(ctl)), string(ctl[2:])
				}
				_ = c.writeFrame(opClose, ctl[:min(len(ctl), 2)])
				return nil, ce
			}
			continue
		}
		if fin && len(c.payload) == 0 && n <= uint64(c.br.Size()) {
			p, err := c.br.Peek(int(n))
			if err != nil {
				return nil, err
			}
			_, _ = c.br.Discard(int(n)) // p stays valid until the next read from br
			if opcode == opText || opcode == opContinuation {
				return p, nil
			}
			continue // binary: not part of the protocol, skipped
		}
		start := len(c.payload)
		c.payload = slices.Grow(c.payload, int(n))[:start+int(n)]
		if _, err := io.ReadFull(c.br, c.payload[start:]); err != nil {
			return nil, err
		}
		if !fin {
			continue
		}
		if opcode == opText || opcode == opContinuation {
			return c.payload, nil
		}
		c.payload = c.payload[:0] // binary: not part of the protocol, skipped
	}
}

// take returns the next k bytes read, where they lie in the read buffer
// (k at most its size): valid until the next read.
func (c *wsConn) take(k int) ([]byte, error) {
	b, err := c.br.Peek(k)
	if err != nil {
		if errors.Is(err, io.EOF) && len(b) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	_, _ = c.br.Discard(k)
	return b, nil
}

// close says goodbye with a normal close (1000) and closes the socket.
func (c *wsConn) close() {
	_ = c.writeFrame(opClose, binary.BigEndian.AppendUint16(nil, protocol.CloseNormal))
	_ = c.nc.Close()
}
