package fencing

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/control/fencingpb"
	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/policy"
)

func TestConnectedGroups(t *testing.T) {
	set := func(ns ...string) map[string]struct{} {
		m := map[string]struct{}{}
		for _, n := range ns {
			m[n] = struct{}{}
		}
		return m
	}
	for _, tc := range []struct {
		name  string
		reach map[string]map[string]struct{}
		want  [][]string
	}{
		{name: "none", reach: map[string]map[string]struct{}{}, want: [][]string{}},
		{name: "all connected", reach: map[string]map[string]struct{}{
			"a": set("a", "b", "c"), "b": set("a", "b", "c"), "c": set("a", "b", "c"),
		}, want: [][]string{{"a", "b", "c"}}},
		{name: "split 3|2", reach: map[string]map[string]struct{}{
			"a": set("a", "b", "c"), "b": set("a", "b", "c"), "c": set("a", "b", "c"), "d": set("d", "e"), "e": set("d", "e"),
		}, want: [][]string{{"a", "b", "c"}, {"d", "e"}}},
		{name: "one-way reachability does not connect", reach: map[string]map[string]struct{}{
			"a": set("a", "b"), "b": set("b"),
		}, want: [][]string{{"a"}, {"b"}}},
		{name: "connected through a third node", reach: map[string]map[string]struct{}{
			"a": set("a", "c"), "b": set("b", "c"), "c": set("a", "b", "c"),
		}, want: [][]string{{"a", "b", "c"}}},
		{name: "non-reporters are not nodes", reach: map[string]map[string]struct{}{
			"a": set("a", "x"), "b": set("b", "x"),
		}, want: [][]string{{"a"}, {"b"}}},
		{name: "ties ordered by first node", reach: map[string]map[string]struct{}{
			"d": set("d", "c"), "c": set("c", "d"), "b": set("a", "b"), "a": set("a", "b"),
		}, want: [][]string{{"a", "b"}, {"c", "d"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, connectedGroups(tc.reach)); diff != "" {
				t.Errorf("groups (-want +got):\n%s", diff)
			}
		})
	}
}

type timedReport struct {
	at     time.Duration
	report *fencingpb.ViewReport
}

func TestVerdicts(t *testing.T) {
	five := instances("orders", "a", "b", "c", "d", "e")
	abc := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name     string
		members  []membership.Instance
		policies []*policy.FencingPolicySpec
		reports  []timedReport
		// checkAt: every node in want reports its last view again at this
		// time; its verdict is checked.
		checkAt    time.Duration
		want       map[string]bool // node -> fenced
		wantDomain map[string]string
		wantReason map[string]string // node -> substring of the reason
		wantOff    bool              // every checked verdict has enabled=false and no lease
	}{
		{
			name:    "clean split 3|2",
			members: five,
			reports: []timedReport{
				{0, viewOf("a", "orders", "b", "c")}, {0, viewOf("b", "orders", "a", "c")}, {0, viewOf("c", "orders", "a", "b")},
				{0, viewOf("d", "orders", "e")}, {0, viewOf("e", "orders", "d")},
			},
			want:       map[string]bool{"a": false, "b": false, "c": false, "d": true, "e": true},
			wantReason: map[string]string{"d": "domain mesh: this side reaches 2 of 5 members, 3 needed; another group of 3 holds the quorum"},
		},
		{
			name:    "even split 2|2: nobody",
			members: instances("orders", "a", "b", "c", "d"),
			reports: []timedReport{
				{0, viewOf("a", "orders", "b")}, {0, viewOf("b", "orders", "a")},
				{0, viewOf("c", "orders", "d")}, {0, viewOf("d", "orders", "c")},
			},
			want:       map[string]bool{"a": true, "b": true, "c": true, "d": true},
			wantReason: map[string]string{"a": "this side reaches 2 of 4 members, 3 needed; no group holds the quorum"},
		},
		{
			name:    "control plane on the minority hears 2 of 5",
			members: five,
			reports: []timedReport{{0, viewOf("d", "orders", "e")}, {0, viewOf("e", "orders", "d")}},
			want:    map[string]bool{"d": true, "e": true},
		},
		{
			name:    "without the control plane's own view the reports' known members count",
			members: nil,
			reports: []timedReport{
				{0, func() *fencingpb.ViewReport {
					r := viewOf("d", "orders", "e")
					for _, n := range abc {
						r.Known = append(r.Known, &fencingpb.KnownNode{NodeId: n, Service: "orders", State: fencingpb.NodeState_NODE_STATE_SUSPECT})
					}
					return r
				}()},
				{0, viewOf("e", "orders", "d")},
			},
			want:       map[string]bool{"d": true, "e": true},
			wantReason: map[string]string{"e": "reaches 2 of 5 members"},
		},
		{
			name:    "asymmetric reachability: a sees b, b does not see a",
			members: instances("orders", "a", "b", "c"),
			reports: []timedReport{{0, viewOf("a", "orders", "b")}, {0, viewOf("b", "orders")}},
			want:    map[string]bool{"a": true, "b": true},
		},
		{
			name:    "symmetric counterpart: a and b see each other",
			members: instances("orders", "a", "b", "c"),
			reports: []timedReport{{0, viewOf("a", "orders", "b")}, {0, viewOf("b", "orders", "a")}},
			want:    map[string]bool{"a": false, "b": false},
		},
		{
			name:    "stale reports are ignored",
			members: instances("orders", "a", "b", "c"),
			reports: []timedReport{
				{0, viewOf("a", "orders", "b", "c")}, {0, viewOf("b", "orders", "a", "c")}, {0, viewOf("c", "orders", "a", "b")},
			},
			checkAt:    7 * time.Second, // past 3 × 2s: only a's re-sent report is fresh
			want:       map[string]bool{"a": true},
			wantReason: map[string]string{"a": "reaches 1 of 3 members, 2 needed"},
		},
		{
			name:     "service-scoped domain",
			members:  append(instances("orders", "o1", "o2", "o3"), instances("web", "w1", "w2")...),
			policies: []*policy.FencingPolicySpec{servicePolicy("orders", policy.FencingOn, 0)},
			reports: []timedReport{
				// side 1: o1, o2, w1 (3 of 5 mesh, 2 of 3 orders); side 2: o3, w2.
				{0, viewOf("o1", "orders", "o2", "w1")}, {0, viewOf("o2", "orders", "o1", "w1")}, {0, viewOf("w1", "web", "o1", "o2")},
				{0, viewOf("o3", "orders", "w2")}, {0, viewOf("w2", "web", "o3")},
			},
			want:       map[string]bool{"o1": false, "o2": false, "w1": false, "o3": true, "w2": true},
			wantDomain: map[string]string{"o1": "service/orders", "o3": "service/orders", "w1": "mesh", "w2": "mesh"},
			wantReason: map[string]string{"o3": "domain service/orders: this side reaches 1 of 3 members, 2 needed"},
		},
		{
			name:     "service domain minority while the mesh side holds",
			members:  append(instances("orders", "o1", "o2", "o3"), instances("web", "w1", "w2", "w3")...),
			policies: []*policy.FencingPolicySpec{servicePolicy("orders", policy.FencingOn, 0)},
			reports: []timedReport{
				{0, viewOf("o1", "orders", "w1", "w2", "w3")}, {0, viewOf("w1", "web", "o1", "w2", "w3")},
				{0, viewOf("w2", "web", "o1", "w1", "w3")}, {0, viewOf("w3", "web", "o1", "w1", "w2")},
			},
			want: map[string]bool{"o1": true, "w1": false},
		},
		{
			name:     "explicit expected size above the count",
			members:  instances("orders", "a", "b"),
			policies: []*policy.FencingPolicySpec{meshPolicy(policy.FencingOn, 5)},
			reports:  []timedReport{{0, viewOf("a", "orders", "b")}, {0, viewOf("b", "orders", "a")}},
			want:     map[string]bool{"a": true, "b": true},
		},
		{
			name:     "explicit expected size below the count",
			members:  five,
			policies: []*policy.FencingPolicySpec{meshPolicy(policy.FencingOn, 3)},
			reports:  []timedReport{{0, viewOf("a", "orders", "b")}, {0, viewOf("b", "orders", "a")}},
			want:     map[string]bool{"a": false, "b": false},
		},
		{
			name:     "explicit expected size too small: two groups qualify, nobody holds",
			members:  five,
			policies: []*policy.FencingPolicySpec{meshPolicy(policy.FencingOn, 3)},
			reports: []timedReport{
				{0, viewOf("a", "orders", "b")}, {0, viewOf("b", "orders", "a")},
				{0, viewOf("c", "orders", "d")}, {0, viewOf("d", "orders", "c")},
			},
			want:       map[string]bool{"a": true, "c": true},
			wantReason: map[string]string{"a": "several groups each reach more than half of the expected size 3"},
		},
		{
			name:     "mode off",
			members:  five,
			policies: []*policy.FencingPolicySpec{meshPolicy(policy.FencingOff, 0)},
			reports:  []timedReport{{0, viewOf("d", "orders", "e")}, {0, viewOf("e", "orders", "d")}},
			want:     map[string]bool{"d": false, "e": false},
			wantOff:  true,
		},
		{
			name:     "service off, mesh on",
			members:  five,
			policies: []*policy.FencingPolicySpec{servicePolicy("orders", policy.FencingOff, 0)},
			reports:  []timedReport{{0, viewOf("d", "orders", "e")}},
			want:     map[string]bool{"d": false},
			wantOff:  true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			start := clk.Now()
			s := newTestService(t, t.TempDir(), clk, tc.members, tc.policies...)
			last := map[string]*fencingpb.ViewReport{}
			for _, r := range tc.reports {
				clk.advance(start.Add(r.at).Sub(clk.Now()))
				mustReport(t, s, r.report)
				last[r.report.GetNodeId()] = r.report
			}
			clk.advance(start.Add(tc.checkAt).Sub(clk.Now()))
			for _, n := range slices.Sorted(maps.Keys(tc.want)) {
				v := mustReport(t, s, last[n])
				if v.GetFenced() != tc.want[n] {
					t.Errorf("%s: fenced %v (%q), want %v", n, v.GetFenced(), v.GetReason(), tc.want[n])
				}
				if v.GetFenced() != (v.GetReason() != "") {
					t.Errorf("%s: fenced %v with reason %q", n, v.GetFenced(), v.GetReason())
				}
				if want, ok := tc.wantReason[n]; ok && !strings.Contains(v.GetReason(), want) {
					t.Errorf("%s: reason %q, want it to contain %q", n, v.GetReason(), want)
				}
				if want, ok := tc.wantDomain[n]; ok && v.GetDomain() != want {
					t.Errorf("%s: domain %q, want %q", n, v.GetDomain(), want)
				}
				if tc.wantOff != !v.GetEnabled() || tc.wantOff != (v.GetLease() == nil) {
					t.Errorf("%s: enabled %v lease %v; want enabled %v", n, v.GetEnabled(), v.GetLease(), !tc.wantOff)
				}
				if q := v.GetQuorum(); q.GetNeeded() != q.GetExpected()/2+1 || int(q.GetReachable()) != len(v.GetGroup()) {
					t.Errorf("%s: quorum figures %v with group %v", n, q, v.GetGroup())
				}
			}
		})
	}
}

func TestVerdictFigures(t *testing.T) {
	s := newTestService(t, t.TempDir(), newClock(), instances("orders", "a", "b", "c", "d", "e"))
	for _, r := range []*fencingpb.ViewReport{viewOf("a", "orders", "b", "c"), viewOf("b", "orders", "a", "c")} {
		mustReport(t, s, r)
	}
	v := mustReport(t, s, viewOf("c", "orders", "a", "b"))
	want := &fencingpb.Verdict{Domain: "mesh", Epoch: 1, Enabled: true, Group: []string{"a", "b", "c"},
		Quorum: &fencingpb.Quorum{Expected: 5, Reachable: 3, Needed: 3}}
	if v.GetLease().AsDuration() != DefaultLease {
		t.Errorf("lease %v, want %v", v.GetLease().AsDuration(), DefaultLease)
	}
	v.Lease = nil
	if diff := cmp.Diff(want.String(), v.String()); diff != "" {
		t.Errorf("verdict (-want +got):\n%s", diff)
	}
}

func TestInvalidReports(t *testing.T) {
	s := newTestService(t, t.TempDir(), newClock(), nil)
	for _, tc := range []struct {
		name   string
		report *fencingpb.ViewReport
		want   string
	}{
		{"no node id", &fencingpb.ViewReport{Reachable: []string{"a"}}, "node_id is required"},
		{"long node id", &fencingpb.ViewReport{NodeId: strings.Repeat("n", 300), Reachable: []string{strings.Repeat("n", 300)}}, "node_id is 300 bytes, more than 256"},
		{"itself not reachable", &fencingpb.ViewReport{NodeId: "a", Reachable: []string{"b"}}, `reachable must include the reporting node "a" itself`},
		{"empty reachable id", &fencingpb.ViewReport{NodeId: "a", Reachable: []string{"a", ""}}, "reachable: empty node id"},
		{"bad service", &fencingpb.ViewReport{NodeId: "a", Service: "Orders!", Reachable: []string{"a"}}, `service "Orders!" is not a valid service name`},
		{"unspecified state", &fencingpb.ViewReport{NodeId: "a", Reachable: []string{"a"}, Known: []*fencingpb.KnownNode{{NodeId: "b"}}}, "known[0] (b): state 0 is not alive, suspect or failed"},
		{"unknown state", &fencingpb.ViewReport{NodeId: "a", Reachable: []string{"a"}, Known: []*fencingpb.KnownNode{{NodeId: "b", State: 9}}}, "known[0] (b): state 9 is not alive, suspect or failed"},
		{"known without id", &fencingpb.ViewReport{NodeId: "a", Reachable: []string{"a"}, Known: []*fencingpb.KnownNode{{State: fencingpb.NodeState_NODE_STATE_ALIVE}}}, "known[0]: empty node id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Report(context.Background(), tc.report)
			if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != tc.want {
				t.Fatalf("got %v, want InvalidArgument %q", err, tc.want)
			}
		})
	}
	if m := s.Metrics(); m.RejectedReports != 8 || m.Reports != 0 {
		t.Errorf("metrics %+v, want 8 rejected and no reports", m)
	}
}
