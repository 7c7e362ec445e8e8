// Package plane composes the control plane: the policy store, the gossip
// watcher, the xDS server, the HTTP API and the embedded trace receiver,
// with their listeners and a graceful stop.
//
// The trace receiver takes OTLP/HTTP on the API listener (POST /v1/traces,
// open, because sidecars export without the API token) and OTLP/gRPC on the
// xDS listener (opentelemetry.proto.collector.trace.v1.TraceService), so a
// sidecar's OTEL_EXPORTER_OTLP_ENDPOINT can name either port. Queries are
// API paths under /api/v1/traces and need the token.
//
// Seams for later work: tracing wraps the API handler (Plane.Handler) and
// the gRPC server options (Option WithGRPCOptions); fencing decisions read
// membership from Plane.Mesh and publish through the "fencing" keys of
// the causeway.mesh extension (package translate).
package plane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/causeway-mesh/causeway/control/api"
	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
	"github.com/causeway-mesh/causeway/control/ca/issuer"
	"github.com/causeway-mesh/causeway/control/ca/ledger"
	"github.com/causeway-mesh/causeway/control/ca/rotation"
	"github.com/causeway-mesh/causeway/control/fencing"
	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/policy"
	"github.com/causeway-mesh/causeway/control/store"
	"github.com/causeway-mesh/causeway/control/translate"
	"github.com/causeway-mesh/causeway/control/xds"
	"github.com/causeway-mesh/causeway/tracing/receiver"
)

// Plane is a running control plane's parts.
type Plane struct {
	cfg     Config
	log     *slog.Logger
	store   *store.Store
	mesh    membership.Source
	watcher *membership.Watcher
	xds     *xds.Server
	api     *api.Handler
	traces  *receiver.Receiver
	fence   *fencing.Service

	// With TLS: the mesh's CA, bootstrap tokens, the Identity service and
	// the serving configuration of both listeners.
	ca       *ca.CA
	tokens   *bootstrap.Store
	issuer   *issuer.Server
	serveTLS *tls.Config
	leaves   *ledger.Ledger
	rotator  *rotation.Rotator
	token    string
	grpcOpt  []grpc.ServerOption

	xdsLis, apiLis net.Listener
}

// Option configures New.
type Option func(*Plane)

// WithMembership replaces gossip with a fixed source of instances (tests,
// and a control plane run without gossip that is told its endpoints).
func WithMembership(src membership.Source) Option { return func(p *Plane) { p.mesh = src } }

// WithGRPCOptions adds options to the xDS gRPC server (interceptors,
// credentials).
func WithGRPCOptions(opts ...grpc.ServerOption) Option {
	return func(p *Plane) { p.grpcOpt = append(p.grpcOpt, opts...) }
}

// New opens the store, makes or reads the token, binds both listeners and
// the gossip listener. Run serves.
func New(cfg Config, logger *slog.Logger, opts ...Option) (_ *Plane, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Plane{cfg: cfg, log: logger}
	for _, o := range opts {
		o(p)
	}
	closers := []func(){}
	defer func() {
		if err != nil {
			for _, c := range closers {
				c()
			}
		}
	}()
	token, created, err := LoadOrCreateToken(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	p.token = token
	if created {
		logger.Info("created the API token; meshctl reads it with --token or MESH_TOKEN", "file", TokenPath(cfg.DataDir))
	} else {
		logger.Info("API token", "file", TokenPath(cfg.DataDir))
	}

	if p.mesh == nil && cfg.Gossip != GossipOff {
		w, err := membership.NewWatcher(membership.WatcherConfig{
			NodeName: cfg.NodeName, Bind: cfg.Gossip, Join: cfg.Join, Label: cfg.GossipLabel,
			Logger: logger.With("component", "gossip"),
			OnChange: func() {
				if p.xds != nil {
					p.xds.Trigger()
				}
			},
		})
		if err != nil {
			return nil, err
		}
		p.watcher, p.mesh = w, w
	}
	if p.mesh == nil {
		p.mesh = membership.NewStatic(nil)
	}

	xs, err := xds.New(xds.Config{
		Build: p.build, Debounce: cfg.Debounce.Duration, DebounceMax: cfg.DebounceMax.Duration,
		Logger: logger.With("component", "xds"), Authorize: p.authorizeNode,
	})
	if err != nil {
		return nil, err
	}
	p.xds = xs

	p.fence, err = fencing.New(fencing.Config{DataDir: cfg.DataDir, Members: p.mesh, Logger: logger.With("component", "fencing")})
	if err != nil {
		return nil, err
	}

	st, err := store.Open(cfg.DataDir,
		store.WithAdmission(p.admit),
		store.WithCommitHook(func(uint64) { xs.Trigger(); p.updateFencing() }))
	if err != nil {
		return nil, err
	}
	p.store = st
	closers = append(closers, func() { _ = st.Close() })
	p.updateFencing()

	p.traces, err = receiver.New(receiver.Config{MaxSpans: cfg.Trace.BufferSpans, ForwardURL: cfg.Trace.ForwardURL()})
	if err != nil {
		return nil, fmt.Errorf("trace receiver: %w", err)
	}
	closers = append(closers, func() { _ = p.traces.Close() })

	if cfg.TLS.Enabled {
		if err := p.setUpTLS(); err != nil {
			return nil, err
		}
		closers = append(closers, func() { _ = p.leaves.Close() })
	}
	apiCfg := api.Config{Store: st, Proxies: xs, Mesh: p.mesh, Token: token, Traces: p.traces,
		Fencing: p.fence.Handler(), Logger: logger.With("component", "api")}
	if p.rotator != nil {
		apiCfg.CA = p.rotator
	}
	p.api, err = api.New(apiCfg)
	if err != nil {
		return nil, err
	}
	if p.xdsLis, err = net.Listen("tcp", cfg.XDS); err != nil {
		return nil, fmt.Errorf("xds listener: %w", err)
	}
	closers = append(closers, func() { _ = p.xdsLis.Close() })
	if p.apiLis, err = net.Listen("tcp", cfg.API); err != nil {
		return nil, fmt.Errorf("api listener: %w", err)
	}
	return p, nil
}

// build is the xDS server's BuildFunc.
func (p *Plane) build(services []string) (*translate.Output, error) {
	rs, err := p.store.List("", "")
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return translate.Translate(translate.Input{Policies: rs, Instances: p.mesh.Instances(), Services: services})
}

// admit is the store's admission check: cross-resource rules, then the
// translation of the resulting set must validate.
func (p *Plane) admit(next []*policy.Resource) error {
	if errs := policy.CheckSet(next); len(errs) > 0 {
		return errs
	}
	out, err := translate.Translate(translate.Input{Policies: next, Instances: p.mesh.Instances()})
	if err == nil {
		err = translate.Validate(out)
	}
	if err != nil {
		return fmt.Errorf("%w: the policy would produce an invalid xDS configuration: %w", api.ErrRejected, err)
	}
	return nil
}

// XDSAddr and APIAddr are the bound listener addresses.
func (p *Plane) XDSAddr() string { return p.xdsLis.Addr().String() }

// APIAddr is the API listener's address.
func (p *Plane) APIAddr() string { return p.apiLis.Addr().String() }

// Token is the API bearer token.
func (p *Plane) Token() string { return p.token }

// XDS is the xDS server (status, triggers).
func (p *Plane) XDS() *xds.Server { return p.xds }

// Store is the policy store.
func (p *Plane) Store() *store.Store { return p.store }

// Mesh is the membership source.
func (p *Plane) Mesh() membership.Source { return p.mesh }

// updateFencing hands the stored FencingPolicies to the fencing service.
func (p *Plane) updateFencing() {
	rs, err := p.store.List(policy.KindFencingPolicy, "")
	if err != nil {
		p.log.Error("read fencing policies", "error", err)
		return
	}
	specs := make([]*policy.FencingPolicySpec, 0, len(rs))
	for _, r := range rs {
		if r.FencingPolicy != nil {
			specs = append(specs, r.FencingPolicy)
		}
	}
	p.fence.SetPolicies(specs)
}

// Fencing is the partition detection and fencing service.
func (p *Plane) Fencing() *fencing.Service { return p.fence }

// Traces is the embedded trace receiver (OTLP ingest and the span store).
func (p *Plane) Traces() *receiver.Receiver { return p.traces }

// Handler is the API handler (to wrap with middleware).
func (p *Plane) Handler() http.Handler { return p.api }

// Run serves until ctx ends, then stops gracefully: the API and xDS
// servers stop accepting and finish in-flight work within
// ShutdownTimeout, xDS streams are closed (sidecars keep their last
// configuration and reconnect), the gossip watcher leaves, and the store
// is closed.
func (p *Plane) Run(ctx context.Context) error {
	// The first generation exists before any sidecar can connect.
	if err := p.xds.Rebuild(); err != nil {
		p.log.Error("the first xDS build failed; sidecars get configuration once a build succeeds", "error", err)
	}
	opts := p.grpcOpt
	if p.serveTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(p.serveTLS)))
	}
	gs := grpc.NewServer(opts...)
	if p.issuer != nil {
		p.issuer.Register(gs)
	}
	p.xds.Register(gs)
	p.traces.RegisterGRPC(gs)
	p.fence.Register(gs)
	hs := &http.Server{Handler: p.httpHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, TLSConfig: p.serveTLS,
		// net/http's own messages (TLS handshake errors from scanners and
		// misconfigured clients) at debug level, through slog.
		ErrorLog: slog.NewLogLogger(p.log.With("component", "api").Handler(), slog.LevelDebug)}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = p.xds.Run(runCtx) }()
	go func() {
		defer wg.Done()
		if err := gs.Serve(p.xdsLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("xds server: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		serve := func() error { return hs.Serve(p.apiLis) }
		if p.serveTLS != nil {
			serve = func() error { return hs.ServeTLS(p.apiLis, "", "") }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("api server: %w", err)
		}
	}()
	if p.watcher != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.watcher.Run(runCtx); err != nil {
				p.log.Warn("gossip leave", "error", err)
			}
		}()
	}
	p.log.Info("control plane serving", "xds", p.XDSAddr(), "api", p.APIAddr(), "data_dir", p.cfg.DataDir, "gossip", p.cfg.Gossip)
	p.log.Info("trace receiver: OTLP/HTTP on the API listener (POST /v1/traces, no token), OTLP/gRPC on the xDS listener",
		"buffer_spans", p.cfg.Trace.BufferSpans, "forward", redactedURL(p.cfg.Trace.ForwardURL()))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	p.log.Info("control plane stopping")
	sctx, scancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout.Duration)
	defer scancel()
	_ = hs.Shutdown(sctx)
	// xDS streams never end on their own, so GracefulStop would always
	// wait out the deadline: close them. Sidecars keep their last
	// configuration and reconnect.
	gs.Stop()
	cancel()
	wg.Wait()
	_ = p.traces.Close()
	if p.leaves != nil {
		_ = p.leaves.Close()
	}
	if err := p.store.Close(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// redactedURL hides a password in a URL for the log.
func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}
