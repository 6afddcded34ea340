package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

// handshakeTimeout bounds writing the upgrade's answer.
const handshakeTimeout = 10 * time.Second

// upgrade checks a WebSocket request's origin and answers its handshake
// (gobwas/ws validates it and negotiates no extension: the gateway's frames
// are never compressed). It returns the hijacked connection, with its kernel
// send buffer set (Config.SocketSendBuffer), and a reader for it that holds
// a buffer (Config.ReadBufferBytes) only while a frame is being read:
// net/http's 4 KiB reader and writer would stay with every idle connection
// for its lifetime.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) (net.Conn, *sockReader, error) {
	if !s.anyOrigin {
		if err := checkOrigin(r, s.origins); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return nil, nil, err
		}
	}
	u := ws.HTTPUpgrader{Timeout: handshakeTimeout}
	nc, brw, _, err := u.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			_ = nc.Close() // the refusal was written
		}
		return nil, nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok && s.cfg.SocketSendBuffer > 0 {
		_ = tc.SetWriteBuffer(s.cfg.SocketSendBuffer) // best effort: the kernel may round it
	}
	var src io.Reader = nc
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent after its request, already read: serve
		// them first.
		b, _ := brw.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc)
	}
	return nc, newSockReader(src, s.readBufs), nil
}

// checkOrigin lets through requests without an Origin (not browsers), from
// the gateway's own host, or from an origin matching one of patterns: host
// patterns (chat.example.com, *.example.com) or scheme://host patterns, as
// path.Match patterns, case-insensitive.
func checkOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil {
		return fmt.Errorf("request Origin %q is not a URL", origin)
	}
	if strings.EqualFold(r.Host, u.Host) {
		return nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return nil
		}
	}
	return fmt.Errorf("request Origin %q is not allowed for Host %q", u.Host, r.Host)
}
