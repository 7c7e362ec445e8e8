package fencing

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/fencingpb"
	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/policy"
)

var quiet = slog.New(slog.DiscardHandler)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func instances(service string, nodes ...string) []membership.Instance {
	out := make([]membership.Instance, len(nodes))
	for i, n := range nodes {
		out[i] = membership.Instance{Node: n, Service: service, Addr: "10.0.0.1:" + n, Weight: 1, Health: membership.Healthy}
	}
	return out
}

func meshPolicy(mode policy.FencingMode, size int64) *policy.FencingPolicySpec {
	p := &policy.FencingPolicySpec{TargetRef: policy.TargetRef{Kind: policy.TargetMesh}, Mode: mode}
	if size > 0 {
		p.ExpectedSize = &size
	}
	return p
}

func servicePolicy(service string, mode policy.FencingMode, size int64) *policy.FencingPolicySpec {
	p := &policy.FencingPolicySpec{TargetRef: policy.TargetRef{Kind: policy.TargetService, Name: service}, Mode: mode}
	if size > 0 {
		p.ExpectedSize = &size
	}
	return p
}

func newTestService(t testing.TB, dir string, clk *clock, members []membership.Instance, policies ...*policy.FencingPolicySpec) *Service {
	t.Helper()
	s, err := New(Config{DataDir: dir, Members: membership.NewStatic(members), ReportInterval: 2 * time.Second, Now: clk.Now, Logger: quiet, EvaluateEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	s.SetPolicies(policies)
	return s
}

// viewOf builds a report of node (service svc) reaching reach (node added).
func viewOf(node, svc string, reach ...string) *fencingpb.ViewReport {
	r := &fencingpb.ViewReport{NodeId: node, Service: svc, Reachable: append([]string{node}, reach...)}
	for _, n := range r.Reachable {
		r.Known = append(r.Known, &fencingpb.KnownNode{NodeId: n, Service: svc, State: fencingpb.NodeState_NODE_STATE_ALIVE})
	}
	return r
}

func mustReport(t testing.TB, s *Service, r *fencingpb.ViewReport) *fencingpb.Verdict {
	t.Helper()
	v, err := s.Report(context.Background(), r)
	if err != nil {
		t.Fatalf("report from %s: %v", r.GetNodeId(), err)
	}
	return v
}
