// Package proxy is the sidecar's data plane: the inbound and outbound
// listeners, the request stack between them (stack.go), the upstream
// connection pools, the admin API, and the sidecar's lifecycle.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/causeway-mesh/causeway/control/identity"
	"github.com/causeway-mesh/causeway/control/xdsclient"
	"github.com/causeway-mesh/causeway/discovery"
	"github.com/causeway-mesh/causeway/proxy/cluster"
	"github.com/causeway-mesh/causeway/proxy/config"
	"github.com/causeway-mesh/causeway/proxy/fencing"
	"github.com/causeway-mesh/causeway/proxy/h1client"
	"github.com/causeway-mesh/causeway/resilience"
	"github.com/causeway-mesh/causeway/tracing"
	"github.com/causeway-mesh/causeway/tracing/clock"
)

// Sidecar is one running proxy. Create it with New, bind with Listen, then
// Serve; or Run for both.
//
// Concurrency: configuration and the routing table are immutable snapshots
// behind atomic pointers, replaced whole by Reload; the request path only
// loads them.
type Sidecar struct {
	cfg      atomic.Pointer[config.Config]
	table    atomic.Pointer[cluster.Table]
	service  string
	file     string
	log      *slog.Logger
	m        *metrics
	started  time.Time
	loadedAt atomic.Value // time.Time
	// generation counts configurations applied: 1 at start, +1 per reload.
	generation atomic.Int64

	meshTransport http.RoundTripper
	appTransport  http.RoundTripper
	meshDialer    *dialer

	serving  atomic.Bool // listeners are up
	draining atomic.Bool // shutting down or POST /drain: not ready
	quit     chan struct{}
	quitOnce sync.Once

	inbound, outbound *httpListener
	tcp               []*tcpProxy
	admin, health     *http.Server
	adminLn, healthLn net.Listener
	reloadMu          sync.Mutex

	// Membership (nil agent: gossip off).
	agent           *discovery.Agent
	discovered      atomic.Pointer[discovery.Snapshot]
	gossipTransport memberlist.NodeAwareTransport // tests inject faults
	lastReloadErr   atomic.Value                  // string: why the last reload was refused, or ""

	// Fencing: whether writes may pass, and which requests are writes.
	fence       *fencing.Fence
	writes      atomic.Pointer[fencing.Policy]
	fenceDomain atomic.Pointer[fenceDomain]

	// Tracing (nil tracer: off) and this node's logical clocks.
	tracer *tracing.Provider
	clock  *clock.Clock

	// Resilience: per-service policies of the current configuration,
	// endpoint health (breakers, outlier detection: endpoints), per-service budgets
	// and limits (service → *upstreamState), inbound rate limiters.
	pols        atomic.Pointer[policies]
	endpoints   *resilience.Registry
	upstreams   sync.Map
	limiters    sync.Map // model version + route → *resilience.RateLimiter
	fileLimiter atomic.Pointer[resilience.RateLimiter]

	// Mutual TLS on the mesh hop (nil meshCreds: plaintext), with
	// certificates from the control plane's CA (idm) or given directly.
	meshCreds *identity.Credentials
	mtlsMode  identity.Mode
	idm       *identity.Manager

	// Control plane (nil xds: none configured); model is the applied
	// configuration, nil before the first.
	xds   *xdsclient.Client
	model atomic.Pointer[xdsclient.Model]
}

// Option adjusts a Sidecar at construction.
type Option func(*Sidecar)

// WithGossipTransport replaces the gossip network transport (tests).
func WithGossipTransport(t memberlist.NodeAwareTransport) Option {
	return func(s *Sidecar) { s.gossipTransport = t }
}

// WithConfigFile records the file the configuration came from (shown in
// /config_dump).
func WithConfigFile(path string) Option { return func(s *Sidecar) { s.file = path } }

// New builds a sidecar from a validated configuration. It binds nothing.
func New(cfg *config.Config, logger *slog.Logger, opts ...Option) (*Sidecar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sidecar{
		service: cfg.Service,
		log:     logger.With("service", cfg.Service),
		m:       newMetrics(),
		started: time.Now(),
		quit:    make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	s.cfg.Store(cfg)
	s.endpoints = resilience.NewRegistry(s.healthHooks())
	s.fileLimiter.Store(fileRateLimiter(cfg))
	s.publishTable(buildTable(cfg, nil, nil, nil))
	ck, err := clock.New(clock.Config{NodeID: cfg.NodeID, DataDir: cfg.DataDir})
	if err != nil {
		return nil, fmt.Errorf("logical clock: %w", err)
	}
	s.clock = ck
	if cfg.ControlPlane != "" {
		c, err := s.newXDSClient(cfg)
		if err != nil {
			return nil, err
		}
		s.xds = c
	}
	// Fencing: with a control plane and gossip, writes need the lease its
	// verdicts renew (and its policy may switch fencing off); without
	// gossip there is no view to report, so only the gossip-less sources
	// apply; without a control plane, only fencing.mode on fences.
	mode := cfg.Fencing.Mode
	s.fence = fencing.New(cfg.ControlPlane != "" && cfg.Gossip.Enabled() && mode != config.FencingOff)
	s.fence.SetEnabled(mode == config.FencingOn || (cfg.ControlPlane != "" && mode != config.FencingOff))
	s.writes.Store(&fencing.Policy{})
	s.fence.OnChange(func(_, to *fencing.State) {
		if to.Fenced {
			s.log.Warn("fenced: writes are refused", "source", to.Source, "reason", to.Reason, "epoch", to.Epoch,
				"reachable", to.Quorum.Reachable, "expected", to.Quorum.Expected)
		} else {
			s.log.Info("unfenced: writes are accepted", "epoch", to.Epoch)
		}
	})
	s.m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mesh_fenced", Help: "1 while this sidecar refuses writes (its side of a split lacks the quorum).",
		}, func() float64 {
			if s.fence.Fenced() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mesh_fencing_epoch", Help: "The newest fencing epoch this sidecar knows.",
		}, func() float64 { return float64(s.fence.Epoch()) }),
	)
	s.loadedAt.Store(time.Now())
	s.generation.Store(1)
	s.lastReloadErr.Store("")

	lim := cfg.Limits
	s.meshDialer = &dialer{pool: "mesh", timeout: lim.ConnectTimeout.Duration, m: s.m, creds: s.meshCreds}
	if s.meshCreds != nil {
		s.meshDialer.expect = s.expectedPeer
	}
	s.meshDialer.slot = s.connectionSlot
	s.meshTransport = &splitTransport{
		h2: newH2CTransport(s.meshDialer, lim.MaxHeaderBytes),
		h1: newH1Transport(s.upgradeDialer(), 16, 0, lim.MaxHeaderBytes),
	}
	appDialer := &dialer{pool: "app", timeout: lim.ConnectTimeout.Duration, m: s.m}
	h1 := newH1Transport(appDialer, lim.AppMaxIdleConns, lim.AppMaxConns, lim.MaxHeaderBytes)
	if cfg.AppProtocol.IsHTTP2() {
		s.appTransport = &splitTransport{h2: newH2CTransport(appDialer, lim.MaxHeaderBytes), h1: h1}
	} else {
		// Requests without a body take the synchronous fast path; the
		// rest (bodies, upgrades, Expect) the regular keep-alive pool.
		s.appTransport = &h1client.Transport{
			Dial:                   appDialer.dial,
			Fallback:               h1,
			MaxIdle:                lim.AppMaxIdleConns,
			MaxConns:               lim.AppMaxConns,
			IdleTimeout:            90 * time.Second,
			MaxResponseHeaderBytes: lim.MaxHeaderBytes,
		}
	}
	return s, nil
}

// Listen binds every listener. After it returns nil, Addrs reports the
// bound addresses (useful with port 0).
func (s *Sidecar) Listen() (err error) {
	cfg := s.cfg.Load()
	var opened []net.Listener
	defer func() {
		if err != nil {
			for _, l := range opened {
				l.Close()
			}
		}
	}()
	listen := func(what, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener: %w", what, err)
		}
		opened = append(opened, ln)
		return ln, nil
	}
	errLog := log.New(slogWriter{s.log}, "", 0)
	lim := cfg.Limits
	opts := func(name string, maxFields int) listenerOptions {
		return listenerOptions{name: name, maxConns: lim.MaxConnections, maxHeaderBytes: lim.MaxHeaderBytes,
			maxHeaderCount: maxFields, readHeaderTimeout: lim.ReadHeaderTimeout.Duration,
			idleTimeout: lim.IdleTimeout.Duration, maxStreams: lim.MaxConcurrentStreams}
	}

	inLn, err := listen("inbound", cfg.Listeners.Inbound)
	if err != nil {
		return err
	}
	if cfg.AppProtocol == config.ProtocolTCP {
		app := cfg.App
		s.tcp = append(s.tcp, &tcpProxy{direction: "inbound", ln: inLn, m: s.m, log: s.log,
			dial:   &dialer{pool: "app", timeout: lim.ConnectTimeout.Duration, m: s.m},
			target: func() (string, error) { return app, nil }})
	} else {
		s.inbound = newHTTPListener(inLn, s.inboundStack(), opts("inbound", lim.MaxHeaderCount+meshHeaderAllowance), s.m, errLog, s.log)
		if s.meshCreds != nil {
			s.inbound.mtls = &meshTLS{creds: s.meshCreds, mode: s.mtlsMode}
		}
	}
	outLn, err := listen("outbound", cfg.Listeners.Outbound)
	if err != nil {
		return err
	}
	s.outbound = newHTTPListener(outLn, s.outboundStack(), opts("outbound", lim.MaxHeaderCount), s.m, errLog, s.log)
	for i, r := range cfg.TCPOutbound {
		ln, err := listen(fmt.Sprintf("tcpOutbound[%d]", i), r.Listen)
		if err != nil {
			return err
		}
		svc := r.Service
		s.tcp = append(s.tcp, &tcpProxy{direction: "outbound", ln: ln, m: s.m, log: s.log, dial: s.meshDialer,
			target: func() (string, error) {
				sv := s.table.Load().Lookup(svc)
				if sv == nil {
					return "", errUnknownService(svc)
				}
				ep := sv.Pick(nil, nil)
				if ep == nil {
					return "", errNoEndpoints(svc)
				}
				return ep.Addr, nil
			}})
	}
	if s.adminLn, err = listen("admin", cfg.Listeners.Admin); err != nil {
		return err
	}
	if s.healthLn, err = listen("health", cfg.Listeners.Health); err != nil {
		return err
	}
	s.admin = &http.Server{Handler: s.adminMux(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: errLog}
	s.health = &http.Server{Handler: s.healthMux(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: errLog}
	for _, p := range s.tcp {
		p.conns = map[net.Conn]struct{}{}
	}
	if cfg.Gossip.Enabled() {
		if err := s.startAgent(); err != nil {
			return fmt.Errorf("gossip: %w", err)
		}
		s.registerGossipMetrics()
	}
	return nil
}

// Addrs returns the bound address of each listener by name.
func (s *Sidecar) Addrs() map[string]string {
	out := map[string]string{}
	if s.inbound != nil {
		out["inbound"] = s.inbound.ln.Addr().String()
	}
	if s.outbound != nil {
		out["outbound"] = s.outbound.ln.Addr().String()
	}
	if s.adminLn != nil {
		out["admin"] = s.adminLn.Addr().String()
	}
	if s.healthLn != nil {
		out["health"] = s.healthLn.Addr().String()
	}
	for i, p := range s.tcp {
		if p.direction == "inbound" {
			out["inbound"] = p.ln.Addr().String()
		} else {
			out[fmt.Sprintf("tcpOutbound[%d]", i)] = p.ln.Addr().String()
		}
	}
	return out
}

// Run binds and serves until ctx is cancelled, then shuts down gracefully.
func (s *Sidecar) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Serve serves on the bound listeners until ctx is cancelled, POST
// /quitquitquit is called, or a listener fails. Shutdown then runs in three
// phases: report not ready while still serving for the drain period; stop
// accepting and wait for in-flight requests up to the drain timeout; close
// what remains.
func (s *Sidecar) Serve(ctx context.Context) error {
	cfg := s.cfg.Load()
	errc := make(chan error, 8)
	var wg sync.WaitGroup
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	if s.inbound != nil {
		run("inbound", s.inbound.serve)
	}
	run("outbound", s.outbound.serve)
	for _, p := range s.tcp {
		run("tcp "+p.direction, p.serve)
	}
	run("admin", func() error { return s.admin.Serve(s.adminLn) })
	run("health", func() error { return s.health.Serve(s.healthLn) })
	agentCtx, stopAgent := context.WithCancel(context.Background())
	defer stopAgent()
	agentDone := make(chan struct{})
	if s.agent != nil {
		go s.runAgent(agentCtx, agentDone)
	} else {
		close(agentDone)
	}
	reportDone := make(chan struct{})
	if r, err := s.newFenceReporter(); err != nil {
		s.log.Error("fencing reporter", "error", err)
		close(reportDone)
	} else if r != nil {
		go s.runFenceReporter(agentCtx, r, reportDone)
	} else {
		close(reportDone)
	}
	idDone := make(chan struct{})
	if s.idm != nil {
		go func() {
			defer close(idDone)
			if err := s.idm.Run(agentCtx); err != nil {
				s.log.Error("mesh certificate manager stopped", "error", err)
			}
		}()
		go func() {
			select {
			case <-s.idm.Ready():
				s.log.Info("mesh certificate obtained", "id", s.idm.ID().String())
				s.advertiseIfReady()
			case <-agentCtx.Done():
			}
		}()
	} else {
		close(idDone)
	}
	xdsDone := make(chan struct{})
	if s.xds != nil {
		go func() {
			defer close(xdsDone)
			// With a mesh identity, the control plane serves only a caller
			// that presents its certificate: wait for the first one.
			if s.idm != nil {
				select {
				case <-s.idm.Ready():
				case <-agentCtx.Done():
					return
				}
			}
			_ = s.xds.Run(agentCtx)
		}()
	} else {
		close(xdsDone)
	}
	s.serving.Store(true)
	s.advertiseIfReady()
	s.log.Info("sidecar serving", "node", cfg.NodeID, "listeners", s.Addrs(), "app", cfg.App, "appProtocol", cfg.AppProtocol)

	var runErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutdown requested")
	case <-s.quit:
		s.log.Info("shutdown requested through the admin API")
	case runErr = <-errc:
		s.log.Error("listener failed; shutting down", "error", runErr)
	}

	// Phase 1: not ready, still serving; peers learn now that this member
	// is leaving, so its departure is recorded as left, not failed.
	s.StartDrain()
	if s.agent != nil {
		go s.agent.AnnounceLeaving()
	}
	if runErr == nil && cfg.Drain.Period.Duration > 0 {
		s.log.Info("draining", "period", cfg.Drain.Period.Duration)
		t := time.NewTimer(cfg.Drain.Period.Duration)
		select {
		case <-t.C:
		case runErr = <-errc:
			t.Stop()
		}
	}
	// Phase 2: stop accepting; let in-flight requests finish.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Drain.Timeout.Duration)
	defer cancel()
	var sw sync.WaitGroup
	shut := func(f func(context.Context) error) {
		sw.Add(1)
		go func() {
			defer sw.Done()
			if err := f(sctx); err != nil {
				s.log.Warn("drain deadline reached; closing remaining connections", "error", err)
			}
		}()
	}
	if s.inbound != nil {
		shut(s.inbound.shutdown)
	}
	shut(s.outbound.shutdown)
	for _, p := range s.tcp {
		shut(p.shutdown)
	}
	sw.Wait()
	// Leave the gossip pool: every other member drops this one at once.
	stopAgent()
	<-agentDone
	<-xdsDone
	<-reportDone
	<-idDone
	// Phase 3: the admin and health listeners go last, so /ready keeps
	// answering 503 throughout the drain.
	_ = s.health.Shutdown(sctx)
	_ = s.admin.Shutdown(sctx)
	wg.Wait()
	s.closeIdle()
	s.serving.Store(false)
	s.log.Info("sidecar stopped")
	return runErr
}

func (s *Sidecar) closeIdle() {
	type idleCloser interface{ CloseIdleConnections() }
	for _, t := range []http.RoundTripper{s.meshTransport, s.appTransport} {
		if st, ok := t.(*splitTransport); ok {
			st.h1.(idleCloser).CloseIdleConnections()
			st.h2.(idleCloser).CloseIdleConnections()
		} else if ic, ok := t.(idleCloser); ok {
			ic.CloseIdleConnections()
		}
	}
}

// StartDrain makes /ready answer 503 and asks HTTP/1 clients to close
// their connections after each response, while serving continues.
func (s *Sidecar) StartDrain() {
	if s.draining.CompareAndSwap(false, true) {
		s.log.Info("draining: reporting not ready")
		// Peers stop routing here within a gossip round or two, well
		// inside the drain period.
		s.setAdvertisedReady(false)
	}
}

// Quit starts a graceful shutdown, as SIGTERM does.
func (s *Sidecar) Quit() { s.quitOnce.Do(func() { close(s.quit) }) }

// ReloadFailed records a reload that was refused before reaching Reload
// (the file did not load or validate); the running configuration stays.
func (s *Sidecar) ReloadFailed(err error) {
	s.m.reloads.WithLabelValues("error").Inc()
	s.lastReloadErr.Store(err.Error())
	s.log.Error("reload refused; keeping the running configuration", "error", err)
}

// Reload applies a new configuration: the routing table is rebuilt off the
// request path and swapped atomically; requests in flight finish on the
// table they started with. Settings that need new listeners or
// connection pools (listeners, app, limits) are reported and kept until a
// restart.
func (s *Sidecar) Reload(next *config.Config) error {
	if err := next.Validate(); err != nil {
		s.ReloadFailed(err)
		return err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cur := s.cfg.Load()
	var restart []string
	if next.Service != cur.Service {
		restart = append(restart, "service")
	}
	if next.App != cur.App || next.AppProtocol != cur.AppProtocol {
		restart = append(restart, "app")
	}
	if next.Listeners != cur.Listeners {
		restart = append(restart, "listeners")
	}
	if next.Limits != cur.Limits {
		restart = append(restart, "limits")
	}
	if fmt.Sprint(next.TCPOutbound) != fmt.Sprint(cur.TCPOutbound) {
		restart = append(restart, "tcpOutbound")
	}
	if fmt.Sprint(next.Gossip) != fmt.Sprint(cur.Gossip) || next.Zone != cur.Zone || next.AppVersion != cur.AppVersion || next.Weight != cur.Weight {
		restart = append(restart, "gossip")
	}
	applied := *next
	if len(restart) > 0 {
		s.log.Warn("reload: these settings need a restart and keep their running values", "fields", restart)
		applied.Service, applied.NodeID, applied.App, applied.AppProtocol = cur.Service, cur.NodeID, cur.App, cur.AppProtocol
		applied.Listeners, applied.Limits, applied.TCPOutbound = cur.Listeners, cur.Limits, cur.TCPOutbound
		applied.Gossip, applied.Zone, applied.AppVersion, applied.Weight = cur.Gossip, cur.Zone, cur.AppVersion, cur.Weight
	}
	s.cfg.Store(&applied)
	s.fileLimiter.Store(fileRateLimiter(&applied))
	s.publishTable(buildTable(&applied, s.discovered.Load(), s.model.Load(), s.table.Load()))
	s.loadedAt.Store(time.Now())
	gen := s.generation.Add(1)
	s.m.reloads.WithLabelValues("ok").Inc()
	s.lastReloadErr.Store("")
	s.log.Info("configuration reloaded", "generation", gen, "services", s.table.Load().Names())
	return nil
}

// Ready reports whether the sidecar answers /ready with 200.
func (s *Sidecar) Ready() bool { return s.readiness() == "" }

// upgradeDialer is the mesh dialer of HTTP/1.1 upgrade connections
// (WebSocket): with mutual TLS they negotiate ALPN http/1.1.
func (s *Sidecar) upgradeDialer() *dialer {
	d := *s.meshDialer
	d.upgrade = true
	return &d
}
