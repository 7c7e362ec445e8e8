// Command inventory serves the Inventory gRPC example service
// (causeway.examples.inventory.v1.Inventory) and the standard gRPC health
// service. It is a Causeway example used by the demo and the end-to-end
// tests; see examples/README.md.
//
// Usage:
//
//	inventory [--listen 127.0.0.1:9090] [--name HOSTNAME]
package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
	"github.com/causeway-mesh/causeway/examples/inventory/inventoryserver"
)

// shutdownTimeout bounds how long in-flight RPCs may run after a signal.
const shutdownTimeout = 10 * time.Second

func main() {
	listen := flag.String("listen", "127.0.0.1:9090", "address to listen on")
	name := flag.String("name", defaultName(), "instance name reported in responses; defaults to the hostname")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "inventory", "instance", *name)
	slog.SetDefault(logger)

	if err := run(*listen, *name); err != nil {
		logger.Error("inventory server failed", "err", err)
		os.Exit(1)
	}
}

func run(listen, name string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv := grpc.NewServer()
	inventoryserver.New(name).Register(srv)
	hs := health.NewServer()
	hs.SetServingStatus(inventorypb.Inventory_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)

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

	// Report NOT_SERVING to health checkers while in-flight RPCs finish.
	hs.Shutdown()
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownTimeout):
		slog.Warn("graceful stop timed out; closing remaining RPCs")
		srv.Stop()
		<-done
	}
	if err := <-errc; err != nil {
		return err
	}
	slog.Info("stopped")
	return nil
}

func defaultName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "inventory"
}
