// Package httpserve runs an HTTP server for as long as a context lives, with
// the timeouts every civicwifi listener wants and a graceful shutdown.
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeout bounds the graceful shutdown.
const ShutdownTimeout = 3 * time.Second

// Serve serves h on ln until ctx ends, then shuts down gracefully (on a
// context detached from ctx, bounded by ShutdownTimeout). It returns nil
// on a clean stop. Each option adjusts the server before it starts (for
// example its ConnState hook).
func Serve(ctx context.Context, ln net.Listener, h http.Handler, opts ...func(*http.Server)) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	for _, o := range opts {
		o(srv)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
		defer cancel()
		srv.Shutdown(sctx)
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}
