// Command controlplane is Causeway's control plane: it serves policy to
// the sidecars over xDS, keeps policy in an embedded store and answers
// the HTTP API that meshctl uses.
//
//	controlplane [--xds :18000] [--api :18080] [--data-dir ./causeway-data]
//	             [--gossip HOST:PORT --join HOST:PORT,...] [--config FILE]
//	             [--trace-buffer-spans 100000] [--trace-forward URL]
//	             [--tls [--trust-domain causeway.local] [--tls-host NAME,...]
//	              [--ca-renew-window 2m]
//	              [--k8s-issuer URL --k8s-jwks FILE [--k8s-audience causeway]]]
//	controlplane version
//	controlplane healthcheck [--api HOST:PORT] [--tls [--data-dir DIR] [--ca-file FILE]] [--timeout 2s]
//
// Flags, MESH_* environment variables and a YAML file (--config) set the
// configuration, in that order of precedence; see `controlplane --help`.
// The first start creates the API token in DATA_DIR/api-token (mode 0600)
// and logs where it is; the token itself is never logged.
//
// With --tls it is the mesh's certificate authority (see control/plane's
// tls.go): sidecars obtain certificates with a bootstrap token or, given
// --k8s-issuer and --k8s-jwks, a Kubernetes service-account token; the root
// rotates in stages with `meshctl ca rotate`. `controlplane healthcheck`
// reads the same flags, MESH_* variables and file as the server, so with
// --tls (or MESH_TLS=true) it speaks HTTPS and verifies the server against
// DATA_DIR/ca-bundle.pem (or --ca-file).
//
// The control plane also receives OpenTelemetry traces, so a demo needs no
// collector: OTLP/HTTP at POST /v1/traces on the API port (no token: the
// sidecars export there) and OTLP/gRPC on the xDS port. `meshctl trace`
// reads them back through the API (token required); --trace-forward also
// sends every span on to a real collector.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/causeway-mesh/causeway/control/plane"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, "controlplane", version())
			return 0
		case "healthcheck":
			return healthcheck(args[1:], env, stderr)
		}
	}
	cfg, err := plane.Load(args, env, stderr)
	if errors.Is(err, plane.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "controlplane: invalid configuration:", err)
		return 2
	}
	logger := newLogger(stderr, cfg.Log.Format, parseLevel(cfg.Log.Level))
	p, err := plane.New(*cfg, logger)
	if err != nil {
		logger.Error("cannot start the control plane", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := p.Run(ctx); err != nil {
		logger.Error("control plane failed", "error", err)
		return 1
	}
	return 0
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}

func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func version() string { return "dev" }
