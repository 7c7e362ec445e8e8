package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causeway-mesh/causeway/control/xdsclient"
	"github.com/causeway-mesh/causeway/discovery"
	"github.com/causeway-mesh/causeway/proxy/cluster"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// Membership: the sidecar is a gossip member (package discovery) that
// advertises its service and inbound address, and routes by what the
// other members advertise. Static upstreams override discovery per
// service.

// gossipKeys returns the keyring from the key file or MESH_GOSSIP_KEY.
func gossipKeys(cfg *config.Config) ([][]byte, error) {
	if cfg.Gossip.KeyFile != "" {
		return discovery.LoadKeyFile(cfg.Gossip.KeyFile)
	}
	if v := os.Getenv(config.EnvPrefix + "GOSSIP_KEY"); v != "" {
		k, err := discovery.ParseKey(v)
		if err != nil {
			return nil, fmt.Errorf("MESH_GOSSIP_KEY: %w", err)
		}
		return [][]byte{k}, nil
	}
	return nil, nil
}

// startAgent creates the gossip member once the inbound listener is bound
// (its address is what the member advertises).
func (s *Sidecar) startAgent() error {
	cfg := s.cfg.Load()
	keys, err := gossipKeys(cfg)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		s.log.Warn("gossip is not encrypted: set gossip.keyFile or MESH_GOSSIP_KEY")
	}
	agent, err := discovery.New(discovery.Config{
		NodeName:          cfg.NodeID,
		Bind:              cfg.Gossip.Bind,
		Advertise:         cfg.Gossip.Advertise,
		Join:              cfg.Gossip.Join,
		Keys:              keys,
		Label:             cfg.Gossip.Label,
		ReapAfter:         cfg.Gossip.ReapAfter.Duration,
		ReconnectInterval: cfg.Gossip.ReconnectInterval.Duration,
		Logger:            s.log.With("component", "discovery"),
		OnChange:          s.onMembership,
		Transport:         s.gossipTransport,
	}, s.meta(false))
	if err != nil {
		return err
	}
	s.agent = agent
	// Now that the advertised host is known, advertise the inbound address
	// with it (still not ready: Serve flips that).
	return agent.UpdateMeta(s.meta(false))
}

// advertisedInbound is the inbound address other sidecars dial.
func (s *Sidecar) advertisedInbound() string {
	addr := s.Addrs()["inbound"]
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = s.cfg.Load().Gossip.Advertise
		if host == "" && s.agent != nil {
			host, _, _ = net.SplitHostPort(s.agent.Addr())
		}
	}
	return net.JoinHostPort(host, port)
}

func (s *Sidecar) meta(ready bool) discovery.Meta {
	cfg := s.cfg.Load()
	return discovery.Meta{
		Service: cfg.Service, Inbound: s.advertisedInbound(), Protocol: string(cfg.AppProtocol),
		Zone: cfg.Zone, Version: cfg.AppVersion, Weight: cfg.Weight, Ready: ready,
		Incarnation: uint64(s.started.UnixMilli()),
	}
}

// setAdvertisedReady tells the mesh whether to route to this sidecar.
// It runs in the background: gossiping may wait on the network.
func (s *Sidecar) setAdvertisedReady(ready bool) {
	if s.agent == nil {
		return
	}
	go func() {
		if err := s.agent.UpdateMeta(s.meta(ready)); err != nil {
			s.log.Warn("could not gossip readiness", "ready", ready, "error", err)
		}
	}()
}

// onMembership rebuilds the routing table from a new membership snapshot.
// Called on the discovery agent's loop goroutine.
func (s *Sidecar) onMembership(snap *discovery.Snapshot) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.discovered.Store(snap)
	s.fence.SetLocal(s.gossipVerdict(snap))
	s.publishTable(buildTable(s.cfg.Load(), snap, s.model.Load(), s.table.Load()))
}

// buildTable makes the routing table: static upstreams, then the gossip
// view, then the control plane's endpoints, each for the services the ones
// before it do not name (see xds.go).
func buildTable(cfg *config.Config, snap *discovery.Snapshot, m *xdsclient.Model, prev *cluster.Table) *cluster.Table {
	specs := make([]cluster.Spec, 0, len(cfg.Upstreams))
	have := make(map[string]bool, len(cfg.Upstreams))
	for name, u := range cfg.Upstreams {
		specs = append(specs, cluster.Spec{Name: name, Policy: cluster.Policy(cfg.EffectiveLB(name)), Endpoints: u.Endpoints})
		have[name] = true
	}
	if snap != nil {
		for name, eps := range snap.Services {
			if have[name] {
				continue
			}
			have[name] = true
			addrs := make([]string, len(eps))
			for i, e := range eps {
				addrs[i] = e.Addr
			}
			specs = append(specs, cluster.Spec{Name: name, Policy: modelLB(cfg, m, name), Endpoints: addrs})
		}
	}
	specs = append(specs, modelSpecs(cfg, snap, m, have)...)
	return cluster.Build(specs, prev)
}

// runAgent runs the gossip member until ctx ends, then leaves.
func (s *Sidecar) runAgent(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	if err := s.agent.Run(ctx); err != nil {
		s.log.Warn("gossip leave", "error", err)
	}
}

// memberView is one member in /members.
type memberView struct {
	Node          string `json:"node"`
	Service       string `json:"service,omitempty"`
	Address       string `json:"address,omitempty"`
	GossipAddress string `json:"gossipAddress"`
	State         string `json:"state"`
	Ready         bool   `json:"ready"`
	Incarnation   uint64 `json:"incarnation"`
	Zone          string `json:"zone,omitempty"`
	Version       string `json:"version,omitempty"`
	Since         string `json:"since"`
	Error         string `json:"metadataError,omitempty"`
}

func (s *Sidecar) handleMembers(w http.ResponseWriter, r *http.Request) {
	if s.agent == nil {
		writeJSON(w, http.StatusOK, map[string]any{"gossip": "off", "members": []memberView{}})
		return
	}
	ms := s.agent.Members()
	out := make([]memberView, 0, len(ms))
	for _, m := range ms {
		out = append(out, memberView{Node: m.Name, Service: m.Meta.Service, Address: m.Meta.Inbound, GossipAddress: m.GossipAddr,
			State: string(m.State), Ready: m.Meta.Ready, Incarnation: m.Meta.Incarnation, Zone: m.Meta.Zone,
			Version: m.Meta.Version, Since: m.Since.UTC().Format("2006-01-02T15:04:05.000Z"), Error: m.MetaErr})
	}
	snap := s.agent.Snapshot()
	writeJSON(w, http.StatusOK, map[string]any{
		"self": s.cfg.Load().NodeID, "joined": s.agent.Joined(), "address": s.agent.Addr(),
		"alive": snap.Alive, "failed": snap.Failed, "left": snap.Left, "members": out,
	})
}

// registerGossipMetrics exposes the agent's figures.
func (s *Sidecar) registerGossipMetrics() {
	a := s.agent
	members := func(state string, f func(*discovery.Snapshot) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mesh_gossip_members", Help: "Gossip members by state (failed ones count toward the cluster size until reaped).",
			ConstLabels: prometheus.Labels{"state": state},
		}, func() float64 { return float64(f(a.Snapshot())) })
	}
	counter := func(name, help string, labels prometheus.Labels, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(f()) })
	}
	c := a.Counters()
	s.m.reg.MustRegister(
		members("alive", func(x *discovery.Snapshot) int { return x.Alive }),
		members("failed", func(x *discovery.Snapshot) int { return x.Failed }),
		members("left", func(x *discovery.Snapshot) int { return x.Left }),
		counter("mesh_gossip_bytes_total", "Gossip bytes (UDP and TCP).", prometheus.Labels{"direction": "sent"}, c.BytesSent.Load),
		counter("mesh_gossip_bytes_total", "Gossip bytes (UDP and TCP).", prometheus.Labels{"direction": "received"}, c.BytesReceived.Load),
		counter("mesh_gossip_member_events_total", "Membership changes seen.", prometheus.Labels{"event": "join"}, c.Joins.Load),
		counter("mesh_gossip_member_events_total", "Membership changes seen.", prometheus.Labels{"event": "failure"}, c.Failures.Load),
		counter("mesh_gossip_member_events_total", "Membership changes seen.", prometheus.Labels{"event": "leave"}, c.Leaves.Load),
		counter("mesh_gossip_suspicions_total", "Peers this member suspected (a probe went unanswered).", nil, c.Suspicions.Load),
		counter("mesh_gossip_dropped_events_total", "Membership events dropped because the queue was full.", nil, c.DroppedEvents.Load),
	)
}

// handleGossipKeys rotates the gossip keyring on this member:
// POST /gossip/keys {"op":"install|use|remove","key":"BASE64"}. GET lists
// fingerprints. Admin listener only (loopback by default).
func (s *Sidecar) handleGossipKeys(w http.ResponseWriter, r *http.Request) {
	if s.agent == nil {
		writeJSON(w, http.StatusConflict, map[string]string{"code": "gossip_off", "message": "gossip is off"})
		return
	}
	if r.Method == http.MethodPost {
		var req struct {
			Op  discovery.KeyOp `json:"op"`
			Key string          `json:"key"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"code": "bad_request", "message": err.Error()})
			return
		}
		key, err := discovery.ParseKey(req.Key)
		if err == nil {
			err = s.agent.RotateKey(req.Op, key)
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"code": "key_rejected", "message": err.Error()})
			return
		}
		s.log.Info("gossip keyring changed", "op", req.Op, "fingerprint", discovery.Fingerprint(key))
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": s.agent.KeyFingerprints()})
}
