package gateway

import (
	"encoding/binary"
	"net"
	"sync"
)

// sockWriter serialises writes to a connection's socket. coder/websocket
// writes its control frames (pong, ping, close) through a small bufio
// writer on top of it, each frame in one Write; the gateway writes its
// text frames itself, many per Write (see appendTextFrame), because
// coder/websocket flushes every message: a room of 100 members at 1,000
// messages a second would be 100,000 write system calls a second, and a
// connection that falls behind would stay behind.
type sockWriter struct {
	mu sync.Mutex
	nc net.Conn
}

func (w *sockWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nc.Write(p)
}

// appendTextFrame appends a final, unmasked text frame (RFC 6455 5.2: a
// server's frames are not masked) holding payload.
func appendTextFrame(dst, payload []byte) []byte {
	const finText = 0x80 | 0x1
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, finText, byte(n))
	case n <= 0xffff:
		dst = append(dst, finText, 126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, finText, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// batchBufs recycles the buffers batches of frames are built in, so an
// idle connection holds none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxBatchBytes bounds one write: past it the batch is written in parts.
const maxBatchBytes = 64 << 10
