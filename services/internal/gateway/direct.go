package gateway

import (
	"net"
	"sync"
	"syscall"
)

// rawConn returns the raw socket of a plain TCP connection, for a flush's
// direct writes, or nil: other connections (TLS, pipes) are written by
// their writer alone.
func rawConn(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// directWriter is a flush's write to a socket: one write(2), never waiting
// for room (the callback reports the socket done whatever happened, so the
// runtime never parks the flushing goroutine). Pooled, with its callback
// made once, so that a write allocates nothing.
type directWriter struct {
	buf []byte
	p   []byte // what the callback writes
	n   int    // what it wrote
	fn  func(fd uintptr) bool
}

var directWriters = sync.Pool{New: func() any {
	dw := &directWriter{buf: make([]byte, 0, 16<<10)}
	dw.fn = func(fd uintptr) bool {
		n, err := syscall.Write(int(fd), dw.p)
		if err != nil || n < 0 {
			n = 0 // EAGAIN (the socket is full), EINTR, or a failure the writer will meet and handle
		}
		dw.n = n
		return true
	}
	return dw
}}

// write writes what p the socket takes at once and returns how many bytes
// that was; 0 also when the socket is closed or past a write deadline.
func (dw *directWriter) write(raw syscall.RawConn, p []byte) int {
	dw.p, dw.n = p, 0
	if err := raw.Write(dw.fn); err != nil {
		dw.n = 0
	}
	dw.p = nil
	return dw.n
}
