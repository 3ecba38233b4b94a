package worker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/metrics"
)

// probes serves /healthz (the process is alive), /readyz (it polls Temporal
// and is not draining) and /metrics.
type probes struct {
	ready atomic.Bool
}

func (p *probes) setReady(ready bool) {
	if p != nil {
		p.ready.Store(ready)
	}
}

// serveProbes starts the HTTP server on addr until ctx ends; an empty addr
// serves nothing.
func serveProbes(ctx context.Context, addr string, c client.Client, m *metrics.Metrics, logger *zap.Logger) *probes {
	p := &probes{}
	if addr == "" {
		return p
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !p.ready.Load() {
			http.Error(w, "not ready: starting or draining", http.StatusServiceUnavailable)
			return
		}
		check, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := c.CheckHealth(check, &client.CheckHealthRequest{}); err != nil {
			http.Error(w, "not ready: Temporal does not answer: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Error("health and metrics endpoints not served", zap.String("addr", addr), zap.Error(err))
		return p
	}
	go func() {
		if err := srv.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("health and metrics server stopped", zap.Error(err))
		}
	}()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	logger.Info("serving /healthz, /readyz and /metrics", zap.String("addr", listener.Addr().String()))
	return p
}
