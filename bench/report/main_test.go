package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/causeway-mesh/causeway/bench/loadgen/lg"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{math.NaN(), 5, 1}, 3},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Errorf("median of nothing should be NaN")
	}
}

func rec(config, test string, rps, p50 float64, proxyCPUms, hwmKB int64) *Record {
	co := lg.Summary{P50: p50 + 5, P99: 3 * p50}
	return &Record{
		Round: 1, Config: config, Test: test, WallNS: 10e9,
		ProxyCPUNS: proxyCPUms * 1e6, UpstreamCPUNS: 1e9, ProxyHWMKB: hwmKB,
		SUTIdleTicks: 100, LGIdleTicks: 700, ClkTck: 100,
		LG: &lg.Result{
			ThroughputRPS: rps, CompletedTotal: uint64(rps * 10), TargetRate: 1000, AchievedRate: 1000,
			Svc: lg.Summary{P50: p50, P90: 2 * p50, P99: 3 * p50, P999: 10 * p50},
			Co:  &co, SendLag: &lg.Summary{P99: 20},
		},
	}
}

func TestVerdict(t *testing.T) {
	base := func() []*Record {
		return []*Record{
			rec("direct", "closed", 60000, 700, 0, 0),
			rec("nginx", "closed", 28000, 1600, 5000, 13*1024),
			rec("direct", "open1k", 1000, 150, 0, 0),
			rec("nginx", "open1k", 1000, 210, 800, 13*1024),
		}
	}
	tests := []struct {
		name    string
		extra   []*Record
		overall string
		results []string
	}{
		{"no sidecar data", nil, "INCOMPLETE", []string{"N/A", "N/A", "N/A"}},
		{"all pass", []*Record{
			rec("sidecar", "closed", 20000, 2000, 6000, 20*1024),
			rec("sidecar", "open1k", 1000, 230, 900, 20*1024),
			rec("mesh", "open1k", 1000, 390, 1800, 40*1024),
		}, "PASS", []string{"PASS", "PASS", "PASS"}},
		{"all fail", []*Record{
			rec("sidecar", "closed", 10000, 2000, 6000, 20*1024),
			rec("sidecar", "open1k", 1000, 230, 900, 31*1024),
			rec("mesh", "open1k", 1000, 401, 1800, 40*1024),
		}, "FAIL", []string{"FAIL", "FAIL", "FAIL"}},
		{"dead sidecar is n/a", []*Record{
			{Round: 1, Config: "sidecar", Test: "closed", Dead: true},
			rec("mesh", "open1k", 1000, 300, 1800, 40*1024),
		}, "INCOMPLETE", []string{"N/A", "PASS", "N/A"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := build(append(base(), tt.extra...), map[string]string{"date": "today", "idle_rss_kb": `{"upstream":7000,"nginx":12000}`})
			if s.Verdict.Overall != tt.overall {
				t.Fatalf("overall %s, want %s (%s)", s.Verdict.Overall, tt.overall, s.Verdict.Line)
			}
			for i, want := range tt.results {
				if got := s.Verdict.Checks[i].Result; got != want {
					t.Errorf("check %s: %s, want %s", s.Verdict.Checks[i].Name, got, want)
				}
			}
			md := s.Markdown()
			for _, want := range []string{"Verdict: " + tt.overall, "| direct |", "| nginx |", "## Resources at 1,000 rps"} {
				if !strings.Contains(md, want) {
					t.Errorf("markdown lacks %q", want)
				}
			}
			if _, err := json.Marshal(s); err != nil {
				t.Fatalf("summary does not marshal: %v", err)
			}
		})
	}
}

func TestRatiosAndProblems(t *testing.T) {
	bad := rec("haproxy", "open1k", 1000, 200, 900, 15*1024)
	bad.LG.Errors, bad.LG.FirstError = 3, "connection reset"
	bad.LG.AchievedRate = 900
	bad.SUTIdleTicks = 100 // 90 % busy, but the proxy+upstream used 19 %: foreign load
	s := build([]*Record{
		rec("direct", "closed", 60000, 700, 0, 0),
		rec("nginx", "closed", 30000, 1600, 5000, 13*1024),
		rec("haproxy", "closed", 15000, 1600, 5000, 13*1024),
		bad,
	}, map[string]string{})
	md := s.Markdown()
	for _, want := range []string{
		"| haproxy | 15,000 | 15,000–15,000 | 0.25× | 0.50× |",
		"3 errors", "achieved 900 rps of 1000 ", "of the SUT CPU went to other work",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n%s", want, md)
		}
	}
	if st := s.Stats["nginx"]["closed"]; math.Abs(st.ProxyUS-5000.0/300) > 1e-9 {
		t.Errorf("proxy CPU µs/req = %v, want %v", st.ProxyUS, 5000.0/300)
	}
}
