package translate_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/policy"
	"github.com/causeway-mesh/causeway/control/translate"
	"github.com/causeway-mesh/causeway/control/xdsclient"
)

// The contract test: what the control plane translates, the sidecar's
// xDS client decodes and builds into a Model without error (so it would
// ACK), and the Model says what the policy said. Every golden fixture and
// the whole examples/policies directory are checked.

const examplesDir = "../../examples/policies"

// exampleInstances is the membership fixture for the examples: every
// service they name, with a spread of zones, weights and health states.
var exampleInstances = []membership.Instance{
	{Node: "inventory-1", Service: "inventory", Addr: "10.1.0.1:15006", Zone: "eu-1a", Version: "v1", Weight: 1, Health: membership.Healthy},
	{Node: "inventory-2", Service: "inventory", Addr: "10.1.0.2:15006", Zone: "eu-1b", Version: "v1", Weight: 2, Health: membership.Draining},
	{Node: "inventory-canary-1", Service: "inventory-canary", Addr: "10.1.1.1:15006", Zone: "eu-1a", Version: "v2", Weight: 1, Health: membership.Healthy},
	{Node: "orders-1", Service: "orders", Addr: "10.2.0.1:15006", Zone: "eu-1a", Version: "v7", Weight: 1, Health: membership.Healthy},
	{Node: "orders-2", Service: "orders", Addr: "10.2.0.2:15006", Zone: "eu-1b", Version: "v7", Weight: 1, Health: membership.Unhealthy},
	{Node: "catalog-1", Service: "catalog", Addr: "10.3.0.1:15006", Version: "v3", Weight: 3, Health: membership.Healthy},
}

type contractCase struct {
	name      string
	policies  []*policy.Resource
	instances []membership.Instance
	services  []string
}

func contractCases(t *testing.T) []contractCase {
	t.Helper()
	var cases []contractCase
	fixtures, err := filepath.Glob("testdata/*.policy.yaml")
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("no golden fixtures: %v", err)
	}
	for _, pf := range fixtures {
		name := strings.TrimSuffix(filepath.Base(pf), ".policy.yaml")
		var inst []membership.Instance
		readJSON(t, filepath.Join("testdata", name+".members.json"), &inst)
		membership.Sort(inst)
		cases = append(cases, contractCase{name: "golden/" + name, policies: decodeFile(t, pf), instances: inst, services: []string{"frontend"}})
	}
	examples, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples in %s: %v", examplesDir, err)
	}
	var all []*policy.Resource
	for _, f := range examples {
		rs := decodeFile(t, f)
		all = append(all, rs...)
		cases = append(cases, contractCase{name: "example/" + filepath.Base(f), policies: rs, instances: sortedInstances(exampleInstances)})
	}
	cases = append(cases, contractCase{name: "examples/all", policies: all, instances: sortedInstances(exampleInstances)})
	return cases
}

func sortedInstances(in []membership.Instance) []membership.Instance {
	out := slices.Clone(in)
	membership.Sort(out)
	return out
}

func decodeFile(t *testing.T, path string) []*policy.Resource {
	t.Helper()
	data, err := os.ReadFile(path) //nolint:gosec // test fixtures
	if err != nil {
		t.Fatal(err)
	}
	rs, err := policy.DecodeAll(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rs
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path) //nolint:gosec // test fixtures
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// toSidecar marshals the translation as the xDS server sends it (Any per
// resource) and decodes it the way the sidecar's client does.
func toSidecar(t *testing.T, out *translate.Output, version string) *xdsclient.Model {
	t.Helper()
	wire := map[string][]*anypb.Any{}
	for typeURL, rs := range out.Resources() {
		for _, r := range rs {
			a, err := anypb.New(proto.Message(r))
			if err != nil {
				t.Fatalf("%s: %v", typeURL, err)
			}
			wire[typeURL] = append(wire[typeURL], a)
		}
	}
	snap, err := xdsclient.SnapshotFromResources(version, wire)
	if err != nil {
		t.Fatalf("the sidecar would NACK (decode): %v", err)
	}
	if err := snap.Consistent(); err != nil {
		t.Fatalf("the sidecar would wait forever (inconsistent snapshot): %v", err)
	}
	m, err := xdsclient.BuildModel(snap)
	if err != nil {
		t.Fatalf("the sidecar would NACK (BuildModel): %v", err)
	}
	if m.Version != version {
		t.Errorf("model version %q, want %q", m.Version, version)
	}
	return m
}

// TestContractSidecarAcceptsTranslation is the control-plane ↔ sidecar
// contract: every fixture and example translates into resources the
// sidecar accepts, and the decoded Model matches the policy.
func TestContractSidecarAcceptsTranslation(t *testing.T) {
	for _, tc := range contractCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			out, err := translate.Translate(translate.Input{Policies: tc.policies, Instances: tc.instances, Services: tc.services})
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if err := translate.Validate(out); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			m := toSidecar(t, out, "boot-1")
			if len(m.Services) != len(out.Clusters) {
				t.Errorf("model has %d services, translation %d clusters", len(m.Services), len(out.Clusters))
			}
			checkEndpoints(t, tc.instances, m)
			checkBackendPolicies(t, tc.policies, m)
			checkRoutes(t, tc.policies, m)
			checkFencing(t, tc.policies, m)
		})
	}
}

// TestContractExamplesDecoded pins the examples' meaning as the sidecar
// sees it, independently of how the checks above derive expectations.
func TestContractExamplesDecoded(t *testing.T) {
	var all []*policy.Resource
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		all = append(all, decodeFile(t, f)...)
	}
	out, err := translate.Translate(translate.Input{Policies: all, Instances: sortedInstances(exampleInstances)})
	if err != nil {
		t.Fatal(err)
	}
	m := toSidecar(t, out, "v1")

	inv := route(t, m, "inventory", "canary-split")
	if diff := cmp.Diff([]xdsclient.WeightedBackend{{Service: "inventory", Weight: 90}, {Service: "inventory-canary", Weight: 10}}, inv.Backends); diff != "" {
		t.Errorf("canary weights (-want +got):\n%s", diff)
	}
	optIn := route(t, m, "inventory", "canary-opt-in")
	if len(optIn.Match.Headers) != 1 || optIn.Match.Headers[0].Name != "x-canary" || optIn.Match.Headers[0].Value != "always" ||
		len(optIn.Backends) != 1 || optIn.Backends[0].Service != "inventory-canary" {
		t.Errorf("canary opt-in: got match %+v backends %+v", optIn.Match, optIn.Backends)
	}

	reads := route(t, m, "orders", "reads")
	if reads.Timeout != 2*time.Second {
		t.Errorf("reads timeout %s, want 2s", reads.Timeout)
	}
	wantRetry := &xdsclient.RetryPolicy{
		On:         []string{"connect-failure", "refused-stream", "reset", "unavailable", "retriable-status-codes"},
		NumRetries: 3, PerTryTimeout: 500 * time.Millisecond, BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		RetriableStatusCodes: []uint32{502, 503, 504},
	}
	if diff := cmp.Diff(wantRetry, reads.Retry); diff != "" {
		t.Errorf("reads retry (-want +got):\n%s", diff)
	}
	if reads.Match.Method != "GET" || reads.Match.Path != "/orders" || reads.Match.PathKind != xdsclient.PathPrefix {
		t.Errorf("reads match %+v, want GET prefix /orders", reads.Match)
	}
	if f := reads.Fault; f == nil || f.DelayPercent != 5 || time.Duration(f.Delay) != 100*time.Millisecond || f.AbortPercent != 0 {
		t.Errorf("reads fault %+v, want a 5%% 100ms delay and no abort", f)
	}
	if rl := reads.RateLimit; rl == nil || rl.PerSecond != 200 || rl.Burst != 50 {
		t.Errorf("reads rate limit %+v, want 200/s burst 50", rl)
	}
	writes := route(t, m, "orders", "writes")
	if writes.Timeout != 5*time.Second || writes.Retry != nil || writes.Fault != nil || writes.RateLimit != nil {
		t.Errorf("writes: timeout %s retry %+v fault %+v rate %+v; want 5s and nothing else", writes.Timeout, writes.Retry, writes.Fault, writes.RateLimit)
	}

	orders := m.Services["orders"]
	wantBreaker := &xdsclient.BreakerSettings{ConsecutiveFailures: 5, FailureRatio: 0.5, MinRequests: 20, Window: 10 * time.Second, OpenFor: 30 * time.Second, HalfOpenProbes: 3}
	if diff := cmp.Diff(wantBreaker, orders.Breaker); diff != "" {
		t.Errorf("orders breaker (-want +got):\n%s", diff)
	}
	wantOutlier := &xdsclient.OutlierDetection{Consecutive5xx: 5, ConsecutiveGatewayFailure: 3, Interval: 10 * time.Second,
		BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 5 * time.Minute, MaxEjectionPercent: 50}
	if diff := cmp.Diff(wantOutlier, orders.Outlier); diff != "" {
		t.Errorf("orders outlier detection (-want +got):\n%s", diff)
	}
	wantBudget := &xdsclient.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3, MinPerSecond: 10, Window: 10 * time.Second}
	if diff := cmp.Diff(wantBudget, orders.RetryBudget); diff != "" {
		t.Errorf("orders retry budget (-want +got):\n%s", diff)
	}
	if orders.LB != xdsclient.LBRoundRobin || orders.ConnectTimeout != time.Second ||
		orders.Limits != (xdsclient.ConnectionLimits{MaxConnections: 1024, MaxPendingRequests: 256, MaxRequests: 1024, MaxRetries: 32}) {
		t.Errorf("orders cluster: lb %s connect %s limits %+v", orders.LB, orders.ConnectTimeout, orders.Limits)
	}
	if inv := m.Services["inventory"]; inv.LB != xdsclient.LBPeakEWMA || inv.Breaker != nil || inv.Outlier != nil || inv.RetryBudget != nil {
		t.Errorf("inventory (no BackendPolicy): got lb %s breaker %+v outlier %+v budget %+v; want defaults", inv.LB, inv.Breaker, inv.Outlier, inv.RetryBudget)
	}

	if f := m.FencingFor("catalog"); f.Enabled() {
		t.Errorf("catalog fencing %+v, want off", f)
	}
	if f := m.FencingFor("orders"); !f.Enabled() || f.ExpectedSize != 3 ||
		!slices.Equal(f.GRPCWriteMethods, []string{"/orders.v1.Orders/Create", "/orders.v1.Orders/Cancel"}) {
		t.Errorf("orders fencing %+v", f)
	}
	if f := m.FencingFor("inventory"); !f.Enabled() {
		t.Errorf("inventory fencing %+v, want the mesh-wide on", f)
	}
}

// TestContractRejectsForeignTypes checks SnapshotFromResources refuses a
// type the sidecar does not subscribe to.
func TestContractRejectsForeignTypes(t *testing.T) {
	_, err := xdsclient.SnapshotFromResources("v", map[string][]*anypb.Any{resourcev3.SecretType: nil})
	if err == nil || !strings.Contains(err.Error(), "not one of the subscribed types") {
		t.Errorf("got %v, want a subscribed-types error", err)
	}
	// A resource under the wrong type URL fails as a response would.
	out, err := translate.Translate(translate.Input{Services: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(out.Clusters[0])
	if err != nil {
		t.Fatal(err)
	}
	_, err = xdsclient.SnapshotFromResources("v", map[string][]*anypb.Any{resourcev3.ListenerType: {a}})
	if err == nil || !strings.Contains(err.Error(), "listener") {
		t.Errorf("got %v, want a listener decode error", err)
	}
}

func route(t *testing.T, m *xdsclient.Model, service, name string) xdsclient.Route {
	t.Helper()
	svc, ok := m.Services[service]
	if !ok {
		t.Fatalf("no service %q in the model", service)
	}
	for _, r := range svc.Routes {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("service %q has no route %q", service, name)
	return xdsclient.Route{}
}

// checkEndpoints: every instance with a usable address is an endpoint of
// its service with its zone, weight, node, version and health; nothing else
// is.
func checkEndpoints(t *testing.T, instances []membership.Instance, m *xdsclient.Model) {
	t.Helper()
	health := map[membership.Health]xdsclient.Health{
		membership.Healthy: xdsclient.HealthHealthy, membership.Draining: xdsclient.HealthDraining, membership.Unhealthy: xdsclient.HealthUnhealthy,
	}
	byAddr := map[string][]membership.Instance{}
	for _, in := range instances {
		byAddr[in.Service+"|"+in.Addr] = append(byAddr[in.Service+"|"+in.Addr], in)
	}
	for name, svc := range m.Services {
		for _, ep := range svc.Endpoints {
			cands := byAddr[name+"|"+ep.Addr]
			match := slices.ContainsFunc(cands, func(in membership.Instance) bool {
				return in.Node == ep.Node && in.Zone == ep.Zone && in.Version == ep.Version &&
					max(in.Weight, 1) == ep.Weight && health[in.Health] == ep.Health
			})
			if !match {
				t.Errorf("service %q endpoint %+v matches no instance %+v", name, ep, cands)
			}
		}
	}
	for key, cands := range byAddr {
		service, addr, _ := strings.Cut(key, "|")
		if _, _, err := splitHostPort(addr); err != nil {
			continue // translation drops it with a warning
		}
		if !slices.ContainsFunc(m.Services[service].Endpoints, func(ep xdsclient.Endpoint) bool { return ep.Addr == addr }) {
			t.Errorf("instance %+v is not an endpoint of %q", cands[0], service)
		}
	}
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("%q: no port", addr)
	}
	p, err := strconv.Atoi(addr[i+1:])
	if err != nil || p < 1 || p > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	return addr[:i], p, nil
}

func durOr(d *policy.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

func u32(v *int64) uint32 {
	if v == nil {
		return 0
	}
	return uint32(*v) //nolint:gosec // validated policy values
}

// checkBackendPolicies compares each service's cluster settings with its
// BackendPolicy.
func checkBackendPolicies(t *testing.T, rs []*policy.Resource, m *xdsclient.Model) {
	t.Helper()
	for _, r := range rs {
		bp := r.BackendPolicy
		if bp == nil {
			continue
		}
		svc, ok := m.Services[bp.TargetRef.Name]
		if !ok {
			t.Errorf("BackendPolicy %s: no service %q in the model", r.Metadata.Name, bp.TargetRef.Name)
			continue
		}
		wantLB := xdsclient.LBPeakEWMA
		if bp.LoadBalancer != nil && bp.LoadBalancer.Type == policy.LBRoundRobin {
			wantLB = xdsclient.LBRoundRobin
		}
		if svc.LB != wantLB {
			t.Errorf("%s: lb %s, want %s", svc.Name, svc.LB, wantLB)
		}
		if want := durOr(bp.ConnectTimeout, translate.DefaultConnectTimeout); svc.ConnectTimeout != want {
			t.Errorf("%s: connect timeout %s, want %s", svc.Name, svc.ConnectTimeout, want)
		}
		if l := bp.Limits; l != nil {
			want := xdsclient.ConnectionLimits{MaxConnections: u32(l.MaxConnections), MaxPendingRequests: u32(l.MaxPendingRequests), MaxRequests: u32(l.MaxRequests), MaxRetries: u32(l.MaxRetries)}
			if svc.Limits != want {
				t.Errorf("%s: limits %+v, want %+v", svc.Name, svc.Limits, want)
			}
		}
		if cb := bp.CircuitBreaker; cb != nil {
			want := &xdsclient.BreakerSettings{ConsecutiveFailures: u32(cb.ConsecutiveFailures), MinRequests: u32(cb.MinRequests),
				Window: durOr(cb.Window, 0), OpenFor: durOr(cb.OpenFor, 0), HalfOpenProbes: u32(cb.HalfOpenProbes)}
			if cb.FailureRatio != nil {
				want.FailureRatio = *cb.FailureRatio
			}
			if diff := cmp.Diff(want, svc.Breaker); diff != "" {
				t.Errorf("%s: breaker (-want +got):\n%s", svc.Name, diff)
			}
		} else if svc.Breaker != nil {
			t.Errorf("%s: breaker %+v without policy", svc.Name, svc.Breaker)
		}
		if od := bp.OutlierDetection; od != nil {
			if svc.Outlier == nil {
				t.Errorf("%s: no outlier detection", svc.Name)
			} else {
				o := svc.Outlier
				if (od.Consecutive5xx != nil && o.Consecutive5xx != u32(od.Consecutive5xx)) ||
					(od.ConsecutiveGatewayFailure != nil && o.ConsecutiveGatewayFailure != u32(od.ConsecutiveGatewayFailure)) ||
					(od.Interval != nil && o.Interval != od.Interval.Duration) ||
					(od.BaseEjectionTime != nil && o.BaseEjectionTime != od.BaseEjectionTime.Duration) ||
					(od.MaxEjectionTime != nil && o.MaxEjectionTime != od.MaxEjectionTime.Duration) ||
					(od.MaxEjectionPercent != nil && o.MaxEjectionPercent != u32(od.MaxEjectionPercent)) {
					t.Errorf("%s: outlier detection %+v, policy %+v", svc.Name, o, od)
				}
			}
		}
		if rb := bp.RetryBudget; rb != nil {
			b := svc.RetryBudget
			switch {
			case b == nil:
				t.Errorf("%s: no retry budget", svc.Name)
			case (rb.Percent != nil && b.BudgetPercent != *rb.Percent) ||
				(rb.MinRetryConcurrency != nil && b.MinRetryConcurrency != u32(rb.MinRetryConcurrency)) ||
				(rb.MinPerSecond != nil && b.MinPerSecond != float64(*rb.MinPerSecond)) ||
				(rb.Window != nil && b.Window != rb.Window.Duration):
				t.Errorf("%s: retry budget %+v, policy %+v", svc.Name, b, rb)
			}
		}
	}
}

// expectedRoute is what one generated route must decode to.
type expectedRoute struct {
	name string
	rule policy.RouteRule
}

// checkRoutes derives each service's routes from its HTTPRoutes (in
// namespace/name order, rule order, one route per match, then the default
// route) and compares names, backends, timeouts, retries, faults and rate
// limits.
func checkRoutes(t *testing.T, rs []*policy.Resource, m *xdsclient.Model) {
	t.Helper()
	sorted := slices.Clone(rs)
	policy.SortResources(sorted)
	rules := map[string][]policy.RouteRule{}
	for _, r := range sorted {
		if r.HTTPRoute == nil {
			continue
		}
		for _, p := range r.HTTPRoute.ParentRefs {
			rules[p.Name] = append(rules[p.Name], r.HTTPRoute.Rules...)
		}
	}
	for name, svc := range m.Services {
		var want []expectedRoute
		for i, rule := range rules[name] {
			base := rule.Name
			if base == "" {
				base = name + "/" + strconv.Itoa(i)
			}
			for j := range max(len(rule.Matches), 1) {
				n := base
				if j > 0 {
					n += "/" + strconv.Itoa(j)
				}
				want = append(want, expectedRoute{name: n, rule: rule})
			}
		}
		if len(svc.Routes) != len(want)+1 {
			t.Errorf("%s: %d routes, want %d and the default", name, len(svc.Routes), len(want))
			continue
		}
		last := svc.Routes[len(svc.Routes)-1]
		if last.Name != name+"/default" || last.Match.PathKind != xdsclient.PathPrefix || last.Match.Path != "/" ||
			!slices.Equal(last.Backends, []xdsclient.WeightedBackend{{Service: name, Weight: 1}}) {
			t.Errorf("%s: last route %+v, want the default route to %s", name, last, name)
		}
		for i, w := range want {
			checkRoute(t, name, w, svc.Routes[i])
		}
	}
}

func checkRoute(t *testing.T, service string, w expectedRoute, got xdsclient.Route) {
	t.Helper()
	where := service + " route " + w.name
	if got.Name != w.name {
		t.Errorf("%s: got route named %q", where, got.Name)
		return
	}
	rule := w.rule
	var wantBackends []xdsclient.WeightedBackend
	switch len(rule.BackendRefs) {
	case 0:
		wantBackends = []xdsclient.WeightedBackend{{Service: service, Weight: 1}}
	case 1:
		wantBackends = []xdsclient.WeightedBackend{{Service: rule.BackendRefs[0].Name, Weight: 1}}
	default:
		for _, b := range rule.BackendRefs {
			wt := uint32(1)
			if b.Weight != nil {
				wt = u32(b.Weight)
			}
			if wt > 0 {
				wantBackends = append(wantBackends, xdsclient.WeightedBackend{Service: b.Name, Weight: wt})
			}
		}
	}
	if diff := cmp.Diff(wantBackends, got.Backends); diff != "" {
		t.Errorf("%s: backends (-want +got):\n%s", where, diff)
	}
	var request, backend *policy.Duration
	if rule.Timeouts != nil {
		request, backend = rule.Timeouts.Request, rule.Timeouts.BackendRequest
	}
	wantTimeout := durOr(request, 0)
	if rule.Retry == nil && backend != nil && (request == nil || backend.Duration < request.Duration) {
		wantTimeout = backend.Duration
	}
	if got.Timeout != wantTimeout {
		t.Errorf("%s: timeout %s, want %s", where, got.Timeout, wantTimeout)
	}
	if r := rule.Retry; r != nil {
		want := &xdsclient.RetryPolicy{
			On:            strings.Split(translate.RetryOn, ","),
			NumRetries:    translate.DefaultRetryAttempts,
			PerTryTimeout: durOr(backend, 0),
			BackoffBase:   durOr(r.Backoff, translate.DefaultRetryBackoff),
		}
		want.BackoffMax = 10 * want.BackoffBase
		if r.Attempts != nil {
			want.NumRetries = u32(r.Attempts)
		}
		if len(r.Codes) > 0 {
			want.On = append(want.On, "retriable-status-codes")
			for _, c := range r.Codes {
				want.RetriableStatusCodes = append(want.RetriableStatusCodes, uint32(c)) //nolint:gosec // validated codes
			}
		}
		if diff := cmp.Diff(want, got.Retry); diff != "" {
			t.Errorf("%s: retry (-want +got):\n%s", where, diff)
		}
	} else if got.Retry != nil {
		t.Errorf("%s: retry %+v without policy", where, got.Retry)
	}
	var wantFault *xdsclient.FaultPolicy
	if f := rule.Fault; f != nil {
		wantFault = &xdsclient.FaultPolicy{}
		if d := f.Delay; d != nil {
			wantFault.DelayPercent, wantFault.Delay = d.Percent, xdsclient.Duration(d.Duration.Duration)
		}
		if a := f.Abort; a != nil {
			wantFault.AbortPercent, wantFault.AbortStatus = a.Percent, int(a.HTTPStatus)
			if a.GRPCStatus != nil {
				wantFault.AbortGRPCStatus = int(*a.GRPCStatus)
			}
		}
	}
	if diff := cmp.Diff(wantFault, got.Fault); diff != "" {
		t.Errorf("%s: fault (-want +got):\n%s", where, diff)
	}
	var wantRate *xdsclient.RateLimit
	if rl := rule.RateLimit; rl != nil {
		wantRate = &xdsclient.RateLimit{PerSecond: rl.PerSecond, Burst: int(rl.Burst)}
	}
	if diff := cmp.Diff(wantRate, got.RateLimit, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s: rate limit (-want +got):\n%s", where, diff)
	}
}

// checkFencing compares the decoded fencing modes with the FencingPolicies.
func checkFencing(t *testing.T, rs []*policy.Resource, m *xdsclient.Model) {
	t.Helper()
	meshMode := xdsclient.FencingUnset
	services := map[string]*policy.FencingPolicySpec{}
	for _, r := range rs {
		fp := r.FencingPolicy
		if fp == nil {
			continue
		}
		if fp.TargetRef.Kind == policy.TargetMesh {
			meshMode = xdsclient.FencingMode(fp.Mode)
			continue
		}
		services[fp.TargetRef.Name] = fp
	}
	if m.Fencing.Mode != meshMode {
		t.Errorf("mesh-wide fencing mode %q, want %q", m.Fencing.Mode, meshMode)
	}
	for name, svc := range m.Services {
		fp := services[name]
		if fp == nil {
			if svc.Fencing.Mode != xdsclient.FencingUnset {
				t.Errorf("%s: fencing %+v without a policy", name, svc.Fencing)
			}
			continue
		}
		want := xdsclient.FencingPolicy{Mode: xdsclient.FencingMode(fp.Mode), GRPCWriteMethods: fp.WriteMethods}
		if fp.ExpectedSize != nil {
			want.ExpectedSize = int(*fp.ExpectedSize)
		}
		if diff := cmp.Diff(want, svc.Fencing, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: fencing (-want +got):\n%s", name, diff)
		}
	}
}

// Keep the type-URL map form of Output.Resources in step with what the
// client subscribes to.
func TestContractTypesSubscribed(t *testing.T) {
	out, err := translate.Translate(translate.Input{Services: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for typeURL := range out.Resources() {
		got = append(got, typeURL)
	}
	want := xdsclient.TypeURLs()
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("translated types differ from the sidecar's subscriptions (-want +got):\n%s", diff)
	}
}
