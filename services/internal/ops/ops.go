// Package ops serves what operators and Kubernetes ask of every Palaver
// process: Prometheus metrics from a non-global registry, a liveness probe
// and a readiness probe made of named checks. It also sets up logging.
package ops

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process collectors,
// so every service exports them without touching the global registry.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Check reports whether a dependency is usable; nil means ready.
type Check func(ctx context.Context) error

// Handler serves /metrics, /healthz and /readyz.
type Handler struct {
	mux          *http.ServeMux
	checkTimeout time.Duration

	mu     sync.RWMutex
	checks map[string]Check
}

// NewHandler serves the metrics of reg.
func NewHandler(reg *prometheus.Registry) *Handler {
	h := &Handler{mux: http.NewServeMux(), checkTimeout: 2 * time.Second, checks: map[string]Check{}}
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	h.mux.HandleFunc("GET /readyz", h.ready)
	return h
}

// AddReadiness adds a named check to /readyz. A process is ready when every
// check passes.
func (h *Handler) AddReadiness(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = c
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// ready runs the checks concurrently with a timeout, so one hung dependency
// cannot hang the probe.
func (h *Handler) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.checkTimeout)
	defer cancel()

	h.mu.RLock()
	checks := make(map[string]Check, len(h.checks))
	for n, c := range h.checks {
		checks[n] = c
	}
	h.mu.RUnlock()

	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		failing = map[string]string{}
	)
	for name, check := range checks {
		wg.Go(func() {
			if err := check(ctx); err != nil {
				mu.Lock()
				failing[name] = err.Error()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failing) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "failing": failing})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
