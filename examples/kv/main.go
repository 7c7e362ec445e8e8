// Command kv is the Causeway key-value example: an in-memory store over
// HTTP that records, for every write it accepts, the fencing epoch the
// mesh admitted it under and which instance accepted it. With --peers and
// --mesh it is a replica: it accepts writes and replicates them to its
// peers through its sidecar (package replication), and applies theirs
// with a last-writer-wins rule so that all replicas converge (package
// kvstore). Without them it is a single instance, as before replication.
// See test/netns for the partition tests that use it.
//
// Usage:
//
//	kv [--listen 127.0.0.1:8080] [--name HOSTNAME]
//	   [--peers HOST:PORT,... --mesh HOST:PORT [--service kv] [--queue-limit 1024]]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
	"github.com/causeway-mesh/causeway/examples/kv/replication"
)

// shutdownTimeout bounds how long in-flight requests may run after a signal.
const shutdownTimeout = 10 * time.Second

// options are the command line.
type options struct {
	listen, name string
	peers        []string
	mesh         string
	service      string
	queueLimit   int
}

func main() {
	var o options
	var peers string
	flag.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&o.name, "name", defaultName(), "instance name recorded with every accepted write; defaults to the hostname")
	flag.StringVar(&peers, "peers", "", "peers' mesh endpoints (their sidecars' inbound HOST:PORT), comma-separated; with --mesh, makes this instance a replica")
	flag.StringVar(&o.mesh, "mesh", "", "this instance's sidecar outbound HOST:PORT, through which writes are replicated; needs --peers")
	flag.StringVar(&o.service, "service", replication.DefaultService, "the mesh service name of the replicas")
	flag.IntVar(&o.queueLimit, "queue-limit", replication.DefaultQueueLimit, "most writes queued per peer; past it the peer gets a full sync")
	flag.Parse()
	o.peers = splitList(peers)

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "kv", "instance", o.name)
	slog.SetDefault(logger)
	if err := run(o); err != nil {
		logger.Error("kv server failed", "err", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if (len(o.peers) == 0) != (o.mesh == "") {
		return errors.New("--peers and --mesh go together: give both (a replica) or neither (a single instance)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var (
		store *kvstore.Store
		rep   *replication.Replicator
	)
	if len(o.peers) == 0 {
		store = kvstore.New(o.name)
	} else {
		store = kvstore.New(o.name, kvstore.WithLastWriterWins())
		var err error
		rep, err = replication.New(store, replication.Config{
			Peers: o.peers, Mesh: o.mesh, Service: o.service, QueueLimit: o.queueLimit,
		})
		if err != nil {
			return err
		}
		defer rep.Close()
		slog.Info("replicating", "peers", o.peers, "mesh", o.mesh, "service", o.service, "queueLimit", o.queueLimit)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /replication", replication.StatusHandler(rep, o.name))
	mux.Handle("/", kvstore.Handler(store))

	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.listen, err)
	}
	slog.Info("listening", "addr", ln.Addr().String())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	stop()
	slog.Info("shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	if rep != nil {
		// No client write can arrive any more: stop the senders and say
		// what they leave undelivered.
		rep.Close()
		for _, p := range rep.Status().Peers {
			if !p.Idle() {
				slog.Warn("undelivered writes dropped at shutdown", "peer", p.Peer, "queued", p.Queued, "needsSync", p.NeedsSync)
			}
		}
	}
	slog.Info("stopped")
	return nil
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func defaultName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "kv"
}
