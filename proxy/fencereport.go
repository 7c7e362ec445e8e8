package proxy

import (
	"context"
	"fmt"
	"slices"

	"github.com/causeway-mesh/causeway/control/fencing"
	"github.com/causeway-mesh/causeway/control/fencingpb"
	"github.com/causeway-mesh/causeway/control/xdsclient"
	"github.com/causeway-mesh/causeway/discovery"
	pfencing "github.com/causeway-mesh/causeway/proxy/fencing"
)

// Fencing sources (see proxy/fencing for how they combine).
//
// With a control plane, the sidecar reports its gossip view every 2 s
// (control/fencing.Reporter) and each answer renews its lease; the model
// from xDS says whether fencing is on for its service and which gRPC
// methods are writes. Without one, fencing follows the file's
// fencing.mode, deciding from the gossip view alone.

// newFenceReporter returns the reporter of this sidecar's view, or nil
// without a control plane or gossip.
func (s *Sidecar) newFenceReporter() (*fencing.Reporter, error) {
	cfg := s.cfg.Load()
	if cfg.ControlPlane == "" || s.agent == nil {
		return nil, nil
	}
	return fencing.NewReporter(fencing.ReporterConfig{
		Addr:        cfg.ControlPlane,
		DialOptions: s.controlPlaneDialOptions(),
		View:        s.fenceView,
		OnVerdict:   s.onVerdict,
		Logger:      s.log.With("component", "fencing"),
	})
}

// fenceView is this sidecar's gossip view in the report's form: the
// serving members it knows (not those that left), and those it reaches.
func (s *Sidecar) fenceView() *fencingpb.ViewReport {
	cfg := s.cfg.Load()
	v := &fencingpb.ViewReport{NodeId: cfg.NodeID, Service: cfg.Service, NewestEpoch: s.fence.Epoch()}
	for _, m := range s.agent.Members() {
		if m.Meta.Service == "" || m.State == discovery.StateLeft {
			continue
		}
		st := fencingpb.NodeState_NODE_STATE_ALIVE
		switch {
		case m.State == discovery.StateFailed:
			st = fencingpb.NodeState_NODE_STATE_FAILED
		case m.Suspect:
			st = fencingpb.NodeState_NODE_STATE_SUSPECT
		default:
			v.Reachable = append(v.Reachable, m.Name)
		}
		v.Known = append(v.Known, &fencingpb.KnownNode{NodeId: m.Name, Service: m.Meta.Service, State: st})
	}
	if !slices.Contains(v.Reachable, cfg.NodeID) {
		v.Reachable = append(v.Reachable, cfg.NodeID)
	}
	return v
}

// onVerdict applies the control plane's verdict.
func (s *Sidecar) onVerdict(v *fencingpb.Verdict) {
	if !v.GetEnabled() {
		s.fence.SetEnabled(false)
		return
	}
	s.fence.SetEnabled(true)
	q := v.GetQuorum()
	s.fence.SetRemote(pfencing.Verdict{
		Fenced: v.GetFenced(), Reason: v.GetReason(), Epoch: v.GetEpoch(),
		Quorum: pfencing.Quorum{Expected: int(q.GetExpected()), Reachable: int(q.GetReachable()), Needed: int(q.GetNeeded())},
	}, v.GetLease().AsDuration())
}

// applyFencingPolicy takes the model's policy for this sidecar's service:
// whether fencing is on, which gRPC methods are writes, and the domain
// the gossip view counts.
func (s *Sidecar) applyFencingPolicy(m *xdsclient.Model) {
	p := m.FencingFor(s.service)
	s.writes.Store(&pfencing.Policy{GRPCWrites: p.GRPCWriteMethods})
	s.fence.SetEnabled(p.Enabled())
	scoped := false
	if svc, ok := m.Services[s.service]; ok && svc.Fencing.Mode != xdsclient.FencingUnset {
		scoped = true
	}
	name := fencing.MeshDomain
	if scoped {
		name = fencing.ServiceDomain(s.service)
	}
	s.fenceDomain.Store(&fenceDomain{name: name, service: scoped, expected: p.ExpectedSize})
	if snap := s.discovered.Load(); snap != nil {
		s.fence.SetLocal(s.gossipVerdict(snap))
	}
}

// fenceDomain is what the gossip view counts: the whole mesh, or this
// service's replicas, against the counted or an explicit size.
type fenceDomain struct {
	name     string // "mesh" or "service/NAME": whose epochs this sidecar's are
	service  bool
	expected int
}

// fenceDomainName is the fencing domain this sidecar belongs to; "mesh"
// until the control plane says otherwise.
func (s *Sidecar) fenceDomainName() string {
	if d := s.fenceDomain.Load(); d != nil {
		return d.name
	}
	return fencing.MeshDomain
}

// gossipVerdict is the fencing verdict of this sidecar's own gossip view.
// Failed members count toward the size and members that left do not; a
// member this sidecar suspects counts as unreachable, so a cut-off side
// fences itself within a few probe rounds, before anyone is declared
// failed.
func (s *Sidecar) gossipVerdict(snap *discovery.Snapshot) pfencing.Verdict {
	d := s.fenceDomain.Load()
	expected, reachable := snap.Alive+snap.Failed, snap.Alive-snap.Suspect
	if d != nil && d.service && s.agent != nil {
		expected, reachable = 0, 0
		for _, m := range s.agent.Members() {
			if m.Meta.Service != s.service || m.State == discovery.StateLeft {
				continue
			}
			expected++
			if m.State == discovery.StateAlive && !m.Suspect {
				reachable++
			}
		}
	}
	if d != nil && d.expected > 0 {
		expected = d.expected
	}
	return verdictFor(expected, reachable)
}

func verdictFor(expected, reachable int) pfencing.Verdict {
	q := pfencing.NewQuorum(expected, reachable)
	v := pfencing.Verdict{Quorum: q}
	if !q.Holds() {
		v.Fenced = true
		v.Reason = fmt.Sprintf("this side reaches %d of %d members; %d needed", q.Reachable, q.Expected, q.Needed)
	}
	return v
}

// runFenceReporter runs the reporter until ctx ends.
func (s *Sidecar) runFenceReporter(ctx context.Context, r *fencing.Reporter, done chan<- struct{}) {
	defer close(done)
	if err := r.Run(ctx); err != nil {
		s.log.Warn("fencing reporter stopped", "error", err)
	}
}
