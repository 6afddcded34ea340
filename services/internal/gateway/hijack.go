package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
)

// smallBuffers hands coder/websocket a hijacked connection with small
// bufio buffers instead of net/http's 4 KiB reader and writer, which would
// stay with every idle connection for its lifetime.
// It also sets the kernel send buffer (sndbuf > 0), see
// Config.SocketSendBuffer.
//
// coder/websocket's writes go through sock, which the gateway also uses to
// write its text frames in batches (see sockWriter).
type smallBuffers struct {
	http.ResponseWriter
	read, write, sndbuf int
	sock                *sockWriter // set by Hijack
}

func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok && w.sndbuf > 0 {
		_ = tc.SetWriteBuffer(w.sndbuf) // best effort: the kernel may round it
	}
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent after its request, already read: serve
		// them first.
		b, _ := brw.Peek(n)
		nc = &prefixConn{Conn: nc, r: io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc)}
	}
	w.sock = &sockWriter{nc: nc}
	return nc, bufio.NewReadWriter(bufio.NewReaderSize(nc, w.read), bufio.NewWriterSize(w.sock, w.write)), nil
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *smallBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }
