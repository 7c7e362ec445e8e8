// Command echo is an HTTP/1.1 and cleartext HTTP/2 (h2c) echo server that
// reports which instance answered. It is a Causeway example service used by
// the demo and the end-to-end tests; see examples/README.md and package
// echoserver for the endpoints.
//
// Usage:
//
//	echo [--listen 127.0.0.1:8080] [--name HOSTNAME] [--h2c=true] [--fail-rate 0]
//
// --fail-rate R answers 503 to the share R of requests (deterministically
// spread; see echoserver.Failures); PUT /fail-rate changes it while the
// server runs.
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

	"github.com/causeway-mesh/causeway/examples/echo/echoserver"
)

// shutdownTimeout bounds how long in-flight requests may run after a signal.
const shutdownTimeout = 10 * time.Second

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	name := flag.String("name", defaultName(), "instance name reported in responses; defaults to the hostname")
	h2c := flag.Bool("h2c", true, "also accept cleartext HTTP/2 with prior knowledge on the same port")
	failRate := flag.String("fail-rate", "0", "share of requests (0 to 1) answered 503 on purpose, spread evenly; PUT /fail-rate changes it")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "echo", "instance", *name)
	slog.SetDefault(logger)

	rate, err := echoserver.ParseRate(*failRate)
	if err != nil {
		logger.Error("bad --fail-rate", "err", err)
		os.Exit(2)
	}
	failures, err := echoserver.NewFailures(rate)
	if err != nil {
		logger.Error("bad --fail-rate", "err", err)
		os.Exit(2)
	}
	if err := run(*listen, *name, *h2c, failures); err != nil {
		logger.Error("echo server failed", "err", err)
		os.Exit(1)
	}
}

func run(listen, name string, h2c bool, failures *echoserver.Failures) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(h2c)

	srv := &http.Server{
		Handler:           echoserver.HandlerWithFailures(name, failures),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	slog.Info("listening", "addr", ln.Addr().String(), "h2c", h2c, "failRate", failures.Rate())

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
	return "echo"
}
