package fencing

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/control/fencingpb"
	"github.com/causeway-mesh/causeway/control/membership"
)

// verdicts collects the last verdict per node.
type verdicts struct {
	mu   sync.Mutex
	last map[string]*fencingpb.Verdict
}

func (v *verdicts) set(node string, x *fencingpb.Verdict) {
	v.mu.Lock()
	v.last[node] = x
	v.mu.Unlock()
}

// waitFor polls cond over the last verdicts until it holds or ctx ends.
func (v *verdicts) waitFor(ctx context.Context, t *testing.T, what string, cond func(map[string]*fencingpb.Verdict) bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		v.mu.Lock()
		ok := cond(v.last)
		dump := fmt.Sprint(v.last)
		v.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; last verdicts: %s", what, dump)
		case <-tick.C:
		}
	}
}

// serve runs s on 127.0.0.1:0; the returned func stops the server.
func serve(t *testing.T, s *Service) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	s.Register(srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	return lis.Addr().String(), func() { srv.Stop(); <-done }
}

func TestEndToEndSplitAndHeal(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	nodes := []string{"a", "b", "c", "d", "e"}
	s, err := New(Config{DataDir: t.TempDir(), Members: membership.NewStatic(instances("orders", nodes...)),
		ReportInterval: time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	addr, stopServer := serve(t, s)
	defer stopServer()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()

	// views[n] is what node n reaches now.
	var views sync.Map
	setViews := func(reach map[string][]string) {
		for n, r := range reach {
			views.Store(n, r)
		}
	}
	setViews(map[string][]string{"a": nodes, "b": nodes, "c": nodes, "d": nodes, "e": nodes})
	got := &verdicts{last: map[string]*fencingpb.Verdict{}}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, n := range nodes {
		cfg := ReporterConfig{
			Conn: cc, Interval: 20 * time.Millisecond, Logger: quiet,
			View: func() *fencingpb.ViewReport {
				reach, _ := views.Load(n)
				return viewOf(n, "orders", reach.([]string)...)
			},
			OnVerdict: func(v *fencingpb.Verdict) { got.set(n, v) },
		}
		if i == 0 { // one reporter dials by address
			cfg.Conn, cfg.Addr = nil, addr
		}
		r, err := NewReporter(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := r.Run(rctx); err != nil {
				t.Errorf("reporter %s: %v", n, err)
			}
		})
	}
	defer func() { stop(); wg.Wait() }()

	allWritable := func(epoch *uint64) func(map[string]*fencingpb.Verdict) bool {
		return func(vs map[string]*fencingpb.Verdict) bool {
			for _, n := range nodes {
				v := vs[n]
				if v == nil || v.GetFenced() || v.GetLease().AsDuration() != DefaultLease || len(v.GetGroup()) != 5 {
					return false
				}
				if *epoch == 0 {
					*epoch = v.GetEpoch()
				} else if v.GetEpoch() != *epoch {
					return false
				}
			}
			return true
		}
	}
	var e uint64
	got.waitFor(ctx, t, "all writable", allWritable(&e))

	// Split: the majority's views change first, then the minority's.
	majority, minority := []string{"a", "b", "c"}, []string{"d", "e"}
	setViews(map[string][]string{"a": majority, "b": majority, "c": majority})
	got.waitFor(ctx, t, "the majority at a new epoch", func(vs map[string]*fencingpb.Verdict) bool {
		for _, n := range majority {
			if v := vs[n]; v == nil || v.GetFenced() || v.GetEpoch() != e+1 || v.GetQuorum().GetReachable() != 3 || v.GetLease() == nil {
				return false
			}
		}
		return true
	})
	setViews(map[string][]string{"d": minority, "e": minority})
	got.waitFor(ctx, t, "the minority fenced", func(vs map[string]*fencingpb.Verdict) bool {
		for _, n := range minority {
			if v := vs[n]; v == nil || !v.GetFenced() || v.GetEpoch() != e+1 || v.GetQuorum().GetReachable() != 2 || v.GetLease() == nil {
				return false
			}
		}
		return true
	})
	if st := s.Status(); len(st.Domains) != 1 || len(st.Domains[0].Groups) != 2 || st.Domains[0].QuorumGroup != 0 || st.Domains[0].Epoch != e+1 {
		t.Errorf("status during the split: %+v", st.Domains)
	}

	// Heal: everyone writable, and joining does not start an epoch.
	setViews(map[string][]string{"a": nodes, "b": nodes, "c": nodes, "d": nodes, "e": nodes})
	healed := e + 1
	got.waitFor(ctx, t, "all writable after the heal at the same epoch", allWritable(&healed))
	if m := s.Metrics(); m.EpochChanges != 2 || m.FencedVerdicts == 0 {
		t.Errorf("metrics %+v, want 2 epoch changes and some fenced verdicts", m)
	}
}

// flaky fails the first n reports, then answers.
type flaky struct {
	fencingpb.UnimplementedFencingServer
	fail  int64
	calls atomic.Int64
}

func (f *flaky) Report(context.Context, *fencingpb.ViewReport) (*fencingpb.Verdict, error) {
	if f.calls.Add(1) <= f.fail {
		return nil, status.Error(codes.Unavailable, "not now")
	}
	return &fencingpb.Verdict{Epoch: 7, Enabled: true}, nil
}

func TestReporterRetriesAndNeverFakesVerdicts(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{fail: 4}
	srv := grpc.NewServer()
	fencingpb.RegisterFencingServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	var got []*fencingpb.Verdict
	var mu sync.Mutex
	first := make(chan struct{})
	r, err := NewReporter(ReporterConfig{
		Addr: lis.Addr().String(), Interval: time.Hour, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		Logger: quiet,
		View:   func() *fencingpb.ViewReport { return viewOf("a", "orders") },
		OnVerdict: func(v *fencingpb.Verdict) {
			mu.Lock()
			got = append(got, v)
			if len(got) == 1 {
				close(first)
			}
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	select {
	case <-first:
	case <-ctx.Done():
		t.Fatal("no verdict after the server recovered")
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v, want nil after cancel", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].GetEpoch() != 7 || f.calls.Load() != 5 {
		t.Errorf("%d verdicts (%v) after %d calls; want exactly the server's one after 4 failures and a success", len(got), got, f.calls.Load())
	}
}

func TestReporterConfig(t *testing.T) {
	view := func() *fencingpb.ViewReport { return nil }
	for _, tc := range []struct {
		name string
		cfg  ReporterConfig
		want string
	}{
		{"no callbacks", ReporterConfig{Addr: "127.0.0.1:1"}, "View and OnVerdict must be set"},
		{"no target", ReporterConfig{View: view, OnVerdict: func(*fencingpb.Verdict) {}}, "Conn or Addr must be set"},
	} {
		if _, err := NewReporter(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestStatusHandler(t *testing.T) {
	clk := newClock()
	s := newTestService(t, t.TempDir(), clk, instances("orders", "a", "b", "c"))
	mustReport(t, s, viewOf("a", "orders", "b"))
	mustReport(t, s, viewOf("b", "orders", "a"))
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/v1/fencing")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d, %v", resp.StatusCode, err)
	}
	d := st.Domains[0]
	if d.Name != MeshDomain || d.Expected != 3 || d.Needed != 2 || d.QuorumGroup != 0 || d.Epoch != 1 ||
		len(d.Groups) != 1 || !d.Groups[0].Quorum || len(st.Nodes) != 2 || st.Nodes[1].LastVerdict.Fenced ||
		!st.Nodes[0].Fresh || st.Nodes[0].LastVerdict.LeaseUntil.IsZero() {
		t.Errorf("status %+v", st)
	}

	post, err := http.Post(srv.URL+"/api/v1/fencing", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed || post.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d Allow %q, want 405 with Allow: GET, HEAD", post.StatusCode, post.Header.Get("Allow"))
	}
}
