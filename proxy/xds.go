package proxy

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"

	"github.com/causeway-mesh/causeway/control/xdsclient"
	"github.com/causeway-mesh/causeway/discovery"
	"github.com/causeway-mesh/causeway/proxy/cluster"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// Control-plane configuration.
//
// With --control-plane the sidecar runs an ADS client (control/xdsclient).
// Each complete, consistent configuration is decoded into a Model, checked
// (a configuration this sidecar cannot run faithfully is NACKed and the
// previous one keeps serving), and applied by swapping the model and a
// rebuilt routing table atomically. While the control plane is away the
// last applied configuration stays; /ready waits for the first one.
//
// Which view of endpoints wins, per service: static upstreams (flags or
// file) first; then this sidecar's own gossip view, which decides liveness
// for every service it knows; then the control plane's endpoints (HEALTHY
// only), which fill in services the gossip view does not know (gossip off,
// or a service in another pool).

// newXDSClient builds the client for cfg.ControlPlane.
func (s *Sidecar) newXDSClient(cfg *config.Config) (*xdsclient.Client, error) {
	applied := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mesh_xds_updates_applied_total", Help: "Control-plane configurations applied.",
	})
	nacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_xds_nacks_total", Help: "Control-plane configurations rejected (NACK messages), by resource type.",
	}, []string{"type"})
	reconnects := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mesh_xds_reconnects_total", Help: "xDS streams opened after the first.",
	})
	s.m.reg.MustRegister(applied, nacks, reconnects, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mesh_xds_connected", Help: "1 while the ADS stream to the control plane is open.",
	}, func() float64 {
		if s.xds != nil && s.xds.Status().Connected {
			return 1
		}
		return 0
	}))
	return xdsclient.New(xdsclient.Config{
		ServerAddr:  cfg.ControlPlane,
		NodeID:      cfg.NodeID,
		ServiceName: cfg.Service,
		Zone:        cfg.Zone,
		Version:     cfg.AppVersion,
		Apply:       xdsclient.ModelApplier(s.applyModel),
		Credentials: s.controlPlaneCredentials(),
		Logger:      s.log.With("component", "xds"),
		Metrics: xdsclient.Metrics{
			UpdateApplied: func(string) { applied.Inc() },
			NACKSent:      func(t string) { nacks.WithLabelValues(shortType(t)).Inc() },
			Reconnect:     reconnects.Inc,
		},
	})
}

// applyModel installs a configuration from the control plane. An error
// rejects it (NACK) and keeps the running one.
func (s *Sidecar) applyModel(_ context.Context, m *xdsclient.Model) error {
	if err := s.checkModel(m); err != nil {
		s.log.Warn("control-plane configuration rejected", "version", m.Version, "error", err)
		return err
	}
	s.reloadMu.Lock()
	first := s.model.Load() == nil
	s.model.Store(m)
	s.publishTable(buildTable(s.cfg.Load(), s.discovered.Load(), m, s.table.Load()))
	if s.cfg.Load().Fencing.Mode != config.FencingOff {
		s.applyFencingPolicy(m)
	}
	s.reloadMu.Unlock()
	s.log.Info("control-plane configuration applied", "version", m.Version, "services", len(m.Services))
	if first {
		s.advertiseIfReady()
	}
	return nil
}

// checkModel refuses what this sidecar would not run as written.
func (s *Sidecar) checkModel(m *xdsclient.Model) error {
	for name, svc := range m.Services {
		for _, rt := range svc.Routes {
			for _, b := range rt.Backends {
				if _, ok := m.Services[b.Service]; !ok {
					return fmt.Errorf("service %q route %q: backend %q is not a service of this configuration", name, rt.Name, b.Service)
				}
			}
		}
	}
	return nil
}

// controlPlanePending reports whether a control plane is configured and no
// configuration from it has been applied yet.
func (s *Sidecar) controlPlanePending() bool {
	return s.xds != nil && s.model.Load() == nil
}

// modelSpecs returns the control plane's endpoints for the services that
// neither static upstreams nor the gossip view provide.
func modelSpecs(cfg *config.Config, snap *discovery.Snapshot, m *xdsclient.Model, have map[string]bool) []cluster.Spec {
	if m == nil {
		return nil
	}
	var specs []cluster.Spec
	for name, svc := range m.Services {
		if have[name] {
			continue
		}
		var addrs []string
		for _, e := range svc.Endpoints {
			if e.Health == xdsclient.HealthHealthy {
				addrs = append(addrs, e.Addr)
			}
		}
		specs = append(specs, cluster.Spec{Name: name, Policy: modelLB(cfg, m, name), Endpoints: addrs})
	}
	return specs
}

// modelLB is the balancer for service name: the control plane's choice
// when it configures the service, else the configuration file's.
func modelLB(cfg *config.Config, m *xdsclient.Model, name string) cluster.Policy {
	if m != nil {
		if svc, ok := m.Services[name]; ok && svc.LB != "" {
			return cluster.Policy(svc.LB)
		}
	}
	return cluster.Policy(cfg.EffectiveLB(name))
}

// xdsView is the control-plane part of /config_dump.
func (s *Sidecar) xdsView() any {
	if s.xds == nil {
		return nil
	}
	v := map[string]any{"status": s.xds.Status()}
	if m := s.model.Load(); m != nil {
		v["version"] = m.Version
		names := make([]string, 0, len(m.Services))
		for n := range m.Services {
			names = append(names, n)
		}
		v["services"] = names
	}
	return v
}

// shortType turns a type URL into its message name for metric labels.
func shortType(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '.' || typeURL[i] == '/' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}

// controlPlaneCredentials secure the xDS connection when the sidecar has a
// mesh identity (nil: plaintext).
func (s *Sidecar) controlPlaneCredentials() credentials.TransportCredentials {
	if s.idm == nil {
		return nil
	}
	return s.idm.ControlPlaneCredentials()
}

// certificatePending reports whether mutual TLS is on and no certificate
// has been obtained yet.
func (s *Sidecar) certificatePending() bool {
	if s.idm == nil {
		return false
	}
	select {
	case <-s.idm.Ready():
		return false
	default:
		return true
	}
}

// advertiseIfReady gossips this instance as ready once everything /ready
// waits for is there.
func (s *Sidecar) advertiseIfReady() {
	if s.serving.Load() && !s.draining.Load() && !s.controlPlanePending() && !s.certificatePending() {
		s.setAdvertisedReady(true)
	}
}
