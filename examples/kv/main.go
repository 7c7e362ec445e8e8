// Command kv is the Causeway key-value example: an in-memory store over
// HTTP that records, for every write it accepts, the fencing epoch the
// mesh admitted it under and which instance accepted it. It does not
// replicate; clients write through the mesh and the history shows where
// each write landed. See package kvstore for the endpoints and
// test/netns for the partition tests that use it.
//
// Usage:
//
//	kv [--listen 127.0.0.1:8080] [--name HOSTNAME]
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

// shutdownTimeout bounds how long in-flight requests may run after a signal.
const shutdownTimeout = 10 * time.Second

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	name := flag.String("name", defaultName(), "instance name recorded with every accepted write; defaults to the hostname")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "kv", "instance", *name)
	slog.SetDefault(logger)
	if err := run(*listen, *name); err != nil {
		logger.Error("kv server failed", "err", err)
		os.Exit(1)
	}
}

func run(listen, name string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv := &http.Server{
		Handler:           kvstore.Handler(kvstore.New(name)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	slog.Info("listening", "addr", ln.Addr().String())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stop()
	slog.Info("shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	slog.Info("stopped")
	return nil
}

func defaultName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "kv"
}
