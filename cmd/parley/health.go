package main

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"
)

// health serves the probes of orchestrators: /healthz (live: the process
// answers HTTP) and /readyz (ready: it takes clients, and its NATS and
// store answer; not while it shuts down).
type health struct {
	ready    func(context.Context) error // nil: always ready (alone, in memory)
	stopping atomic.Bool
}

// readyTimeout bounds a readiness check.
const readyTimeout = 2 * time.Second

func (h *health) live(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (h *health) readyz(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if h.stopping.Load() {
		http.Error(w, "503 not ready: shutting down", http.StatusServiceUnavailable)
		return
	}
	if h.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := h.ready(ctx); err != nil {
			http.Error(w, "503 not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ready\n"))
}

// getOnly answers 405 to a request that is not a GET or HEAD.
func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
	return false
}

// handle mounts the probes on mux-like registration fn.
func (h *health) handle(register func(path string, handler http.Handler) error) error {
	if err := register("/healthz", http.HandlerFunc(h.live)); err != nil {
		return err
	}
	return register("/readyz", http.HandlerFunc(h.readyz))
}
