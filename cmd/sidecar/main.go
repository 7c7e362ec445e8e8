// Command sidecar is Causeway's data-plane proxy: it runs beside one
// service instance and carries all of its traffic.
//
//	sidecar --service orders --app 127.0.0.1:8080 [flags]
//	sidecar validate --config FILE
//	sidecar healthcheck [--health HOST:PORT]
//
// Flags, MESH_* environment variables and a YAML file (--config) set the
// configuration, in that order of precedence; see `sidecar --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/causeway-mesh/causeway/internal/healthprobe"
	"github.com/causeway-mesh/causeway/proxy"
	"github.com/causeway-mesh/causeway/proxy/config"
	"github.com/causeway-mesh/causeway/tracing"
)

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

func run(args []string, env func(string) (string, bool), stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "validate":
			return validate(args[1:], stderr, stdout)
		case "healthcheck":
			return healthcheck(args[1:], env, stderr)
		case "version":
			fmt.Fprintln(stdout, "sidecar", version())
			return 0
		}
	}
	loaded, err := config.Load(args, env, stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sidecar: invalid configuration:", err)
		return 2
	}
	cfg := loaded.Config
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Log.Level))
	logger := newLogger(stderr, cfg.Log.Format, level)

	// Tracing is configured by the standard OTEL_* variables; without an
	// exporter endpoint it is off.
	tcfg, err := tracing.ConfigFromEnv(tracing.LookupFunc(env))
	if err != nil {
		fmt.Fprintln(stderr, "sidecar: invalid OpenTelemetry configuration:", err)
		return 2
	}
	tracer, err := tracing.New(context.Background(), tcfg, tracing.Options{DefaultServiceName: cfg.Service, NodeID: cfg.NodeID})
	if err != nil {
		fmt.Fprintln(stderr, "sidecar: tracing:", err)
		return 2
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tracer.Shutdown(sctx) // flushes the spans still queued
	}()
	if tracer.Enabled() {
		logger.Info("tracing on", "endpoint", tcfg.Endpoint, "protocol", tcfg.Protocol)
	}

	idm, mode, err := proxy.NewIdentityManager(cfg, env, logger)
	if err != nil {
		fmt.Fprintln(stderr, "sidecar: mutual TLS:", err)
		return 2
	}
	s, err := proxy.New(cfg, logger, proxy.WithConfigFile(loaded.File), proxy.WithTracing(tracer), proxy.WithIdentityManager(idm, mode))
	if err != nil {
		logger.Error("cannot build sidecar", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			next, err := loaded.Reload()
			if err != nil {
				s.ReloadFailed(err)
				continue
			}
			if err := s.Reload(next); err != nil {
				continue // recorded and logged by Reload
			}
			level.Set(parseLevel(next.Log.Level))
		}
	}()
	if err := s.Run(ctx); err != nil {
		logger.Error("sidecar failed", "error", err)
		return 1
	}
	return 0
}

// validate checks a configuration file (with MESH_* variables ignored) and
// prints every problem.
func validate(args []string, stderr, stdout io.Writer) int {
	fs := pflag.NewFlagSet("validate", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file to check (required)")
	if err := fs.Parse(args); err != nil {
		if !errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintln(stderr, "sidecar validate:", err)
		}
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "sidecar validate: --config FILE is required")
		return 2
	}
	cfg, err := config.LoadFile(*file)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintf(stderr, "%s: %v\n", *file, e)
			}
		} else {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid\n", *file)
	return 0
}

// healthcheck exits 0 when the local sidecar reports ready (for container
// HEALTHCHECKs and startup probes).
func healthcheck(args []string, env func(string) (string, bool), stderr io.Writer) int {
	def := config.Default().Listeners.Health
	if v, ok := env(config.EnvName("health")); ok {
		def = v
	}
	fs := pflag.NewFlagSet("healthcheck", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("health", def, "the sidecar's health listener")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if !errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintln(stderr, "sidecar healthcheck:", err)
		}
		return 2
	}
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 2
	}
	if err := healthprobe.Get(*addr, "/ready", *timeout); err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	return 0
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}

func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func version() string {
	return "dev"
}
