// Command orders is an HTTP service that calls the Inventory gRPC service
// through its local Causeway sidecar. It is a Causeway example used by the
// demo and the end-to-end tests; see examples/README.md.
//
// Usage:
//
//	orders [--listen 127.0.0.1:8081] [--name HOSTNAME]
//	       [--inventory 127.0.0.1:15001] [--inventory-authority inventory]
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
	"github.com/causeway-mesh/causeway/examples/orders/ordersserver"
)

// shutdownTimeout bounds how long in-flight requests may run after a signal.
const shutdownTimeout = 10 * time.Second

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to listen on")
	name := flag.String("name", defaultName(), "instance name reported in responses; defaults to the hostname")
	inventory := flag.String("inventory", "127.0.0.1:15001", "address to dial for the inventory service (the local sidecar's outbound port)")
	authority := flag.String("inventory-authority", "inventory", "HTTP/2 :authority sent to inventory, naming the target service for the sidecar")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "orders", "instance", *name)
	slog.SetDefault(logger)

	if err := run(*listen, *name, *inventory, *authority); err != nil {
		logger.Error("orders server failed", "err", err)
		os.Exit(1)
	}
}

func run(listen, name, inventory, authority string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	conn, err := grpc.NewClient(inventory,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority),
	)
	if err != nil {
		return err
	}
	defer conn.Close()

	srv := &http.Server{
		Handler:           ordersserver.New(name, inventorypb.NewInventoryClient(conn)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	slog.Info("listening", "addr", ln.Addr().String(), "inventory", inventory, "authority", authority)

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
	return "orders"
}
