package fencing

import (
	"fmt"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/fencingpb"
	"github.com/causeway-mesh/causeway/control/membership"
)

// benchService has n nodes that all reported a full view.
func benchService(b *testing.B, n int) (*Service, *clock, []*fencingpb.ViewReport) {
	nodes := make([]string, n)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("n%04d", i)
	}
	clk := newClock()
	s, err := New(Config{DataDir: b.TempDir(), Members: membership.NewStatic(instances("orders", nodes...)), Now: clk.Now, Logger: quiet,
		ReportInterval: time.Hour, EvaluateEvery: time.Millisecond}) // reports stay fresh while the clock moves
	if err != nil {
		b.Fatal(err)
	}
	reports := make([]*fencingpb.ViewReport, n)
	for i, node := range nodes {
		reports[i] = viewOf(node, "orders", nodes...)
		mustReport(b, s, reports[i])
	}
	clk.advance(time.Second) // past EvaluateEvery: the next report evaluates all
	if v := mustReport(b, s, reports[0]); v.GetFenced() {
		b.Fatalf("setup: %s", v.GetReason())
	}
	return s, clk, reports
}

// BenchmarkReportUnchanged is the steady state: a view that did not change
// is answered from the cached evaluation.
func BenchmarkReportUnchanged(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s, _, reports := benchService(b, n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				mustReport(b, s, reports[i%n])
				i++
			}
		})
	}
}

// BenchmarkEvaluate measures one full evaluation of a domain of n
// sidecars that all see each other: a report whose view changed (without
// changing the quorum side) after EvaluateEvery has passed.
func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s, clk, reports := benchService(b, n)
			// n0000 stops seeing the last node; both stay connected
			// through everyone else.
			partial := viewOf(reports[0].GetNodeId(), "orders", reports[0].GetReachable()[1:n-1]...)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r := reports[0]
				if i%2 == 0 {
					r = partial
				}
				clk.advance(time.Millisecond)
				if v := mustReport(b, s, r); v.GetFenced() {
					b.Fatal(v.GetReason())
				}
				i++
			}
			if m := s.Metrics(); m.EpochChanges != 1 {
				b.Fatalf("%d epoch changes, want 1 (the side never changes)", m.EpochChanges)
			}
		})
	}
}
