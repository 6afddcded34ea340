package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// HTTPServer is a Part that serves srv on ln until the context is done, then
// stops accepting and waits up to Grace for in-flight requests.
type HTTPServer struct {
	Server   *http.Server
	Listener net.Listener
	Grace    time.Duration
}

// Listen binds addr now, so a port conflict fails at start-up and the real
// address (for ":0") is known before Run.
func Listen(addr string, srv *http.Server, grace time.Duration) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if srv.ReadHeaderTimeout == 0 {
		srv.ReadHeaderTimeout = 10 * time.Second
	}
	return &HTTPServer{Server: srv, Listener: ln, Grace: grace}, nil
}

// Addr is the bound address.
func (h *HTTPServer) Addr() net.Addr { return h.Listener.Addr() }

// Run implements Part.
func (h *HTTPServer) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- h.Server.Serve(h.Listener) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", h.Listener.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.Grace)
	defer cancel()
	err := h.Server.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
