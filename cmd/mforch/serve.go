package main

import (
	"context"
	"errors"
	"flag"
	"net/http"
	"time"
)

func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mforch serve", flag.ContinueOnError)
	var c clusterFlags
	c.register(fs)
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP API address (POST /invoke/{function}, GET /status)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := c.start(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	srv := &http.Server{Addr: *httpAddr, Handler: r.orch.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	r.log.Info("HTTP API listening", "addr", *httpAddr)
	select {
	case <-ctx.Done():
		r.log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
