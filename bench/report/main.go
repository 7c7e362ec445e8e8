// Command report turns the raw records written by bench/run.sh (one JSON
// object per test run) into bench/results/latest.md and latest.json: medians
// over rounds, ratios to direct and to nginx, and a verdict against the bars.
//
//	report -raw raw.jsonl -meta meta.txt -md latest.md -json latest.json
//	report -line < record.json     (one progress line for a single record)
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/causeway-mesh/causeway/bench/loadgen/lg"
)

// Record is one test run as written by run.sh.
type Record struct {
	Round         int    `json:"round"`
	Config        string `json:"config"`
	Test          string `json:"test"` // closed, open1k, open5k
	WallNS        int64  `json:"wall_ns"`
	ProxyCPUNS    int64  `json:"proxy_cpu_ns"`
	UpstreamCPUNS int64  `json:"upstream_cpu_ns"`
	ProxyHWMKB    int64  `json:"proxy_hwm_kb"`
	UpstreamHWMKB int64  `json:"upstream_hwm_kb"`
	// /proc/stat idle deltas for the load generator's CPU and the SUT CPU.
	// Busy time is derived as wall - idle: idle is accounted exactly by the
	// tickless kernel, whereas user/system are tick-sampled.
	LGIdleTicks  int64      `json:"lg_cpu_idle_ticks"`
	SUTIdleTicks int64      `json:"sut_cpu_idle_ticks"`
	StealTicks   int64      `json:"steal_ticks"`
	ClkTck       int64      `json:"clk_tck"`
	Dead         bool       `json:"dead"`
	LoadgenError string     `json:"loadgen_error,omitempty"`
	LG           *lg.Result `json:"lg,omitempty"`
}

func (r *Record) errs() uint64 {
	if r.LG == nil {
		return 0
	}
	return r.LG.Errors + r.LG.Non2xx + r.LG.Timeouts + r.LG.Unsent
}

// busy converts idle ticks over the test's wall time into a busy fraction.
func (r *Record) busy(idleTicks int64) float64 {
	if r.WallNS <= 0 || r.ClkTck <= 0 {
		return math.NaN()
	}
	total := float64(r.WallNS) / 1e9 * float64(r.ClkTck)
	return math.Max(0, math.Min(1, 1-float64(idleTicks)/total))
}

// sutBusy is the fraction of the SUT CPU that was busy during the test.
func (r *Record) sutBusy() float64 { return r.busy(r.SUTIdleTicks) }

// lgBusy is the fraction of the load generator's CPU that was busy.
func (r *Record) lgBusy() float64 { return r.busy(r.LGIdleTicks) }

// foreign estimates how much of the SUT CPU was used by anything other than
// the proxies and the upstream (other workloads on a shared machine; also
// kernel work not charged to a task).
func (r *Record) foreign() float64 {
	if r.WallNS <= 0 {
		return math.NaN()
	}
	return r.sutBusy() - float64(r.ProxyCPUNS+r.UpstreamCPUNS)/float64(r.WallNS)
}

func (r *Record) stealFrac() float64 {
	if r.WallNS <= 0 || r.ClkTck <= 0 {
		return math.NaN()
	}
	return float64(r.StealTicks) / (2 * float64(r.WallNS) / 1e9 * float64(r.ClkTck))
}

func (r *Record) cpuPerReqUS(ns int64) float64 {
	if r.LG == nil || r.LG.CompletedTotal == 0 {
		return math.NaN()
	}
	return float64(ns) / 1e3 / float64(r.LG.CompletedTotal)
}

// Stats are the medians (over rounds) of one config and test.
type Stats struct {
	Runs       int       `json:"runs"`
	RPS        float64   `json:"rps"`
	RPSMin     float64   `json:"rps_min"`
	RPSMax     float64   `json:"rps_max"`
	Achieved   float64   `json:"achieved_rate_rps,omitempty"`
	SvcP50     float64   `json:"svc_p50_us"`
	SvcP90     float64   `json:"svc_p90_us"`
	SvcP99     float64   `json:"svc_p99_us"`
	SvcP999    float64   `json:"svc_p99_9_us"`
	CoP50      float64   `json:"co_p50_us,omitempty"`
	CoP99      float64   `json:"co_p99_us,omitempty"`
	LagP99     float64   `json:"send_lag_p99_us,omitempty"`
	P99PerRun  []float64 `json:"svc_p99_per_run_us"`
	ProxyUS    float64   `json:"proxy_cpu_us_per_req"`
	UpUS       float64   `json:"upstream_cpu_us_per_req"`
	ProxyCores float64   `json:"proxy_cores"`
	SUTBusy    float64   `json:"sut_cpu_busy"`
	LGBusy     float64   `json:"lg_cpu_busy"`
	HWMMiB     float64   `json:"proxy_peak_rss_mib"`     // median over runs
	HWMMaxMiB  float64   `json:"proxy_peak_rss_max_mib"` // max over runs
	Errors     uint64    `json:"errors"`                 // errors + non-2xx + timeouts + unsent, summed
	Dead       bool      `json:"dead,omitempty"`
	Failed     int       `json:"failed_runs,omitempty"`
}

func median(xs []float64) float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func summarize(recs []*Record) *Stats {
	s := &Stats{}
	var rps, ach, p50, p90, p99, p999, co50, co99, lag99, pus, uus, cores, hwm, sb, lb []float64
	for _, r := range recs {
		if r.Dead {
			s.Dead = true
		}
		if r.LG == nil {
			s.Failed++
			continue
		}
		g := r.LG
		s.Runs++
		rps = append(rps, g.ThroughputRPS)
		ach = append(ach, g.AchievedRate)
		p50 = append(p50, g.Svc.P50)
		p90 = append(p90, g.Svc.P90)
		p99 = append(p99, g.Svc.P99)
		p999 = append(p999, g.Svc.P999)
		s.P99PerRun = append(s.P99PerRun, math.Round(g.Svc.P99))
		if g.Co != nil {
			co50 = append(co50, g.Co.P50)
			co99 = append(co99, g.Co.P99)
		}
		if g.SendLag != nil {
			lag99 = append(lag99, g.SendLag.P99)
		}
		pus = append(pus, r.cpuPerReqUS(r.ProxyCPUNS))
		uus = append(uus, r.cpuPerReqUS(r.UpstreamCPUNS))
		if r.WallNS > 0 {
			cores = append(cores, float64(r.ProxyCPUNS)/float64(r.WallNS))
		}
		sb = append(sb, r.sutBusy())
		lb = append(lb, r.lgBusy())
		m := float64(r.ProxyHWMKB) / 1024
		hwm = append(hwm, m)
		s.HWMMaxMiB = math.Max(s.HWMMaxMiB, m)
		s.Errors += r.errs()
	}
	if s.Runs == 0 {
		return s
	}
	s.RPS, s.RPSMin, s.RPSMax = median(rps), slices.Min(rps), slices.Max(rps)
	s.Achieved = median(ach)
	s.SvcP50, s.SvcP90, s.SvcP99, s.SvcP999 = median(p50), median(p90), median(p99), median(p999)
	if len(co50) > 0 {
		s.CoP50, s.CoP99 = median(co50), median(co99)
	}
	if len(lag99) > 0 {
		s.LagP99 = median(lag99)
	}
	s.ProxyUS, s.UpUS, s.ProxyCores, s.HWMMiB = median(pus), median(uus), median(cores), median(hwm)
	s.SUTBusy, s.LGBusy = median(sb), median(lb)
	// JSON cannot carry NaN; a missing measurement reads 0.
	for _, p := range []*float64{&s.RPS, &s.RPSMin, &s.RPSMax, &s.Achieved, &s.SvcP50, &s.SvcP90, &s.SvcP99,
		&s.SvcP999, &s.CoP50, &s.CoP99, &s.LagP99, &s.ProxyUS, &s.UpUS, &s.ProxyCores, &s.HWMMiB, &s.SUTBusy, &s.LGBusy} {
		if math.IsNaN(*p) || math.IsInf(*p, 0) {
			*p = 0
		}
	}
	return s
}

// Summary is everything the report shows, also written as JSON.
type Summary struct {
	Meta    map[string]string            `json:"meta"`
	Configs []string                     `json:"configs"`
	Stats   map[string]map[string]*Stats `json:"stats"` // config -> test -> stats
	IdleKB  map[string]int64             `json:"idle_rss_kb,omitempty"`
	Verdict Verdict                      `json:"verdict"`
	Records []*Record                    `json:"records"`
}

var configOrder = []string{"direct", "sidecar", "mesh", "nginx", "haproxy", "nginx-x2", "haproxy-x2"}

func build(recs []*Record, meta map[string]string) *Summary {
	s := &Summary{Meta: meta, Stats: map[string]map[string]*Stats{}, Records: recs}
	groups := map[string]map[string][]*Record{}
	for _, r := range recs {
		if groups[r.Config] == nil {
			groups[r.Config] = map[string][]*Record{}
		}
		groups[r.Config][r.Test] = append(groups[r.Config][r.Test], r)
	}
	for _, c := range configOrder {
		if _, ok := groups[c]; ok {
			s.Configs = append(s.Configs, c)
		}
	}
	for c := range groups {
		if !slices.Contains(s.Configs, c) {
			s.Configs = append(s.Configs, c)
		}
	}
	for c, tests := range groups {
		s.Stats[c] = map[string]*Stats{}
		for t, rs := range tests {
			s.Stats[c][t] = summarize(rs)
		}
	}
	if js, ok := meta["idle_rss_kb"]; ok {
		_ = json.Unmarshal([]byte(js), &s.IdleKB)
	}
	s.Verdict = verdict(s)
	return s
}

func (s *Summary) get(config, test string) *Stats {
	if st := s.Stats[config][test]; st != nil && st.Runs > 0 {
		return st
	}
	return nil
}

// ---------------------------------------------------------------- verdict

// Bars the sidecar is judged against (reported, never enforced).
const (
	barThroughputVsNginx = 0.6   // one sidecar >= 0.6x nginx closed-loop throughput
	barMeshAddedP50US    = 250.0 // mesh p50 at 1000 rps within 250 us of direct
	barSidecarRSSMiB     = 30.0  // one sidecar's peak RSS at 1000 rps
)

type Check struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Bar    string  `json:"bar"`
	Result string  `json:"result"` // PASS, FAIL, N/A
}

type Verdict struct {
	Overall string  `json:"overall"`
	Checks  []Check `json:"checks"`
	Line    string  `json:"line"`
}

func verdict(s *Summary) Verdict {
	var v Verdict
	add := func(name string, val float64, ok bool, have bool, bar, text string) {
		c := Check{Name: name, Bar: bar, Result: "N/A"}
		if have {
			c.Value = round(val, 3)
			c.Result = map[bool]string{true: "PASS", false: "FAIL"}[ok]
		}
		v.Checks = append(v.Checks, c)
		if !have {
			text = name + " n/a"
		}
		v.Line += fmt.Sprintf("%s: %s [%s]; ", text, c.Result, bar)
	}
	sc, ng := s.get("sidecar", "closed"), s.get("nginx", "closed")
	r := math.NaN()
	if sc != nil && ng != nil && ng.RPS > 0 {
		r = sc.RPS / ng.RPS
	}
	add("sidecar_throughput_vs_nginx", r, r >= barThroughputVsNginx, !math.IsNaN(r) && !s.dead("sidecar"),
		fmt.Sprintf("≥ %.1f×", barThroughputVsNginx), fmt.Sprintf("sidecar throughput %.2f× nginx", r))
	mesh, dir := s.get("mesh", "open1k"), s.get("direct", "open1k")
	d := math.NaN()
	if mesh != nil && dir != nil {
		d = mesh.SvcP50 - dir.SvcP50
	}
	add("mesh_p50_added_us_at_1k", d, d <= barMeshAddedP50US, !math.IsNaN(d) && !s.dead("mesh"),
		fmt.Sprintf("≤ +%.0f µs", barMeshAddedP50US), fmt.Sprintf("mesh p50 @1k %+.0f µs vs direct", d))
	rss := math.NaN()
	if st := s.get("sidecar", "open1k"); st != nil {
		rss = st.HWMMaxMiB
	}
	add("sidecar_peak_rss_mib_at_1k", rss, rss <= barSidecarRSSMiB, !math.IsNaN(rss) && !s.dead("sidecar"),
		fmt.Sprintf("≤ %.0f MiB", barSidecarRSSMiB), fmt.Sprintf("sidecar peak RSS @1k %.1f MiB", rss))
	v.Overall = "PASS"
	for _, c := range v.Checks {
		if c.Result == "FAIL" {
			v.Overall = "FAIL"
			break
		}
		if c.Result == "N/A" {
			v.Overall = "INCOMPLETE"
		}
	}
	v.Line = "Verdict: " + v.Overall + " — " + strings.TrimSuffix(v.Line, "; ")
	return v
}

func (s *Summary) dead(config string) bool {
	for _, st := range s.Stats[config] {
		if st.Dead {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------- markdown

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func num(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	neg := x < 0
	if neg {
		x = -x
	}
	s := fmt.Sprintf("%.0f", x)
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fixed(x float64, prec int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, x)
}

func pct(x float64) string {
	if math.IsNaN(x) || x == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*x)
}

func signed(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%+.0f", x)
}

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func (s *Summary) label(c string) string {
	if s.dead(c) {
		return c + " (DIED)"
	}
	return c
}

func (s *Summary) Markdown() string {
	var b strings.Builder
	m := s.Meta
	fmt.Fprintf(&b, "# Causeway benchmark results\n\n")
	fmt.Fprintf(&b, "- **Date**: %s; **commit**: %s\n", m["date"], m["commit"])
	fmt.Fprintf(&b, "- **Command**: `%s`\n", m["command"])
	fmt.Fprintf(&b, "- **Machine**: %s CPUs, %s; %s; kernel %s; load average before the run %s; waited %s s in total for other work to stop\n",
		m["nproc"], m["cpu"], m["lscpu"], m["kernel"], m["load_before"], m["quiet_wait_s"])
	fmt.Fprintf(&b, "- **Software**: %s", m["go"])
	if m["nginx"] != "" {
		fmt.Fprintf(&b, ", nginx %s", m["nginx"])
	}
	if m["haproxy"] != "" {
		fmt.Fprintf(&b, ", haproxy %s", m["haproxy"])
	}
	fmt.Fprintf(&b, "\n- **Method**: %s; %s rounds interleaved round-robin (start rotates), medians shown. "+
		"Closed loop: %s. Open loop: %s. All HTTP/1.1 keep-alive, 13-byte body.\n\n",
		m["pinning"], m["rounds"], m["closed"], m["open"])
	if m["quick"] == "1" {
		b.WriteString("> **BENCH_QUICK=1 smoke run**: one short round; numbers are indicative only.\n\n")
	}
	fmt.Fprintf(&b, "**%s**\n\n", s.Verdict.Line)
	if n, total := s.disturbed(); n > 0 {
		fmt.Fprintf(&b, "> %d of %d tests ran while other work used > %.0f%% of the SUT CPU (see Problems); "+
			"treat their numbers with care or rerun on a quiet machine.\n\n", n, total, 100*foreignLimit)
	}

	nginx := func(test string) *Stats { return s.get("nginx", test) }
	direct := func(test string) *Stats { return s.get("direct", test) }

	b.WriteString("## Throughput (closed loop)\n\n")
	b.WriteString("| config | rps | range | × direct | × nginx | proxy CPU µs/req | upstream CPU µs/req | proxy cores | SUT CPU busy | loadgen CPU busy | p50 µs | p99 µs | peak RSS MiB | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range s.Configs {
		st := s.get(c, "closed")
		if st == nil {
			fmt.Fprintf(&b, "| %s | no data |||||||||||\n", s.label(c))
			continue
		}
		dr, nr := math.NaN(), math.NaN()
		if d := direct("closed"); d != nil {
			dr = d.RPS
		}
		if n := nginx("closed"); n != nil {
			nr = n.RPS
		}
		proxyUS, cores, hwm := fixed(st.ProxyUS, 1), fixed(st.ProxyCores, 2), fixed(st.HWMMaxMiB, 1)
		if c == "direct" {
			proxyUS, cores, hwm = "–", "–", "–"
		}
		fmt.Fprintf(&b, "| %s | %s | %s–%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
			s.label(c), num(st.RPS), num(st.RPSMin), num(st.RPSMax), ratio(st.RPS, dr), ratio(st.RPS, nr),
			proxyUS, fixed(st.UpUS, 1), cores, pct(st.SUTBusy), pct(st.LGBusy), num(st.SvcP50), num(st.SvcP99), hwm, st.Errors)
	}

	for _, t := range []struct{ test, title string }{
		{"open1k", "Latency at 1,000 rps (open loop), µs"},
		{"open5k", "Latency at 5,000 rps (open loop), µs"},
	} {
		fmt.Fprintf(&b, "\n## %s\n\n", t.title)
		b.WriteString("| config | p50 | p90 | p99 | p99.9 | co p50 | co p99 | +p50 vs direct | +p99 vs direct | +p50 vs nginx | p50 × nginx | p99 per round | achieved rps | send lag p99 | errors |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		d, n := direct(t.test), nginx(t.test)
		for _, c := range s.Configs {
			st := s.get(c, t.test)
			if st == nil {
				fmt.Fprintf(&b, "| %s | no data ||||||||||||||\n", s.label(c))
				continue
			}
			ad50, ad99, an50, rn := math.NaN(), math.NaN(), math.NaN(), "–"
			if d != nil {
				ad50, ad99 = st.SvcP50-d.SvcP50, st.SvcP99-d.SvcP99
			}
			if n != nil {
				an50, rn = st.SvcP50-n.SvcP50, ratio(st.SvcP50, n.SvcP50)
			}
			perRun := make([]string, len(st.P99PerRun))
			for i, x := range st.P99PerRun {
				perRun[i] = num(x)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
				s.label(c), num(st.SvcP50), num(st.SvcP90), num(st.SvcP99), num(st.SvcP999), num(st.CoP50), num(st.CoP99),
				signed(ad50), signed(ad99), signed(an50), rn, "["+strings.Join(perRun, ", ")+"]",
				num(st.Achieved), num(st.LagP99), st.Errors)
		}
	}

	b.WriteString("\n## Resources at 1,000 rps\n\n")
	b.WriteString("| config | proxy CPU s per 1k req | × nginx | upstream CPU s per 1k req | peak RSS MiB (max of rounds) | idle RSS MiB |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, c := range s.Configs {
		st := s.get(c, "open1k")
		if st == nil {
			fmt.Fprintf(&b, "| %s | no data |||||\n", s.label(c))
			continue
		}
		cpu1k := st.ProxyUS / 1e3 // µs per request == ms per 1k requests; /1e3 -> s per 1k
		rn := "–"
		if n := nginx("open1k"); n != nil {
			rn = ratio(st.ProxyUS, n.ProxyUS)
		}
		idle := "–"
		if kb, ok := s.IdleKB[c]; ok && c != "direct" {
			idle = fixed(float64(kb)/1024, 1)
		}
		if c == "direct" {
			fmt.Fprintf(&b, "| %s | – | – | %s | – (upstream %s) | – (upstream %s) |\n", c, fixed(st.UpUS/1e3, 3),
				fixed(upstreamHWM(s.Records), 1), fixed(float64(s.IdleKB["upstream"])/1024, 1))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", s.label(c), fixed(cpu1k, 3), rn,
			fixed(st.UpUS/1e3, 3), fixed(st.HWMMaxMiB, 1), idle)
	}

	b.WriteString("\nNotes: svc = actual send → response done; co = intended send → done (corrected for coordinated omission). " +
		"Added latency is config − direct of the same percentile's median, from svc. " +
		"Proxy CPU is from /proc/PID/task/*/schedstat of the proxy processes (nginx master + worker; both hops for x2 and mesh), " +
		"divided by all responses of the run; CPU s per 1k requests at 1,000 rps equals vCPU per 1000 rps. " +
		"Peak RSS is VmHWM after `echo 5 > clear_refs`, summed over the proxy processes. " +
		"Proxy and upstream share CPU 1, so closed-loop ratios depend on the upstream's cost; CPU per request is the portable number. " +
		"p99.9 on this VM is dominated by the host. Compare ratios within one run, not absolute numbers across runs.\n")
	if bad := s.problems(); len(bad) > 0 {
		b.WriteString("\n**Problems in this run**:\n")
		for _, p := range bad {
			b.WriteString("- " + p + "\n")
		}
	}
	return b.String()
}

func upstreamHWM(recs []*Record) float64 {
	var v []float64
	for _, r := range recs {
		if r.Config == "direct" && r.Test == "open1k" && r.LG != nil {
			v = append(v, float64(r.UpstreamHWMKB)/1024)
		}
	}
	return median(v)
}

// Thresholds above which a test is flagged as disturbed.
const (
	foreignLimit = 0.25
	stealLimit   = 0.05
)

func (s *Summary) disturbed() (n, total int) {
	for _, r := range s.Records {
		if r.LG == nil {
			continue
		}
		total++
		if r.foreign() > foreignLimit {
			n++
		}
	}
	return n, total
}

func (s *Summary) problems() []string {
	var out []string
	for _, r := range s.Records {
		id := fmt.Sprintf("round %d %s %s", r.Round, r.Config, r.Test)
		switch {
		case r.Dead && r.LG == nil:
			out = append(out, id+": skipped, a process of the config had exited")
		case r.LG == nil:
			out = append(out, id+": load generator failed: "+r.LoadgenError)
		default:
			g := r.LG
			if r.errs() > 0 {
				out = append(out, fmt.Sprintf("%s: %d errors, %d non-2xx, %d timeouts, %d unsent (first error: %s)",
					id, g.Errors, g.Non2xx, g.Timeouts, g.Unsent, g.FirstError))
			}
			if g.TargetRate > 0 && math.Abs(g.AchievedRate/g.TargetRate-1) > 0.02 {
				out = append(out, fmt.Sprintf("%s: achieved %.0f rps of %.0f (target fell behind or the generator was starved)",
					id, g.AchievedRate, g.TargetRate))
			}
			if r.Dead {
				out = append(out, id+": a process of the config exited during the test")
			}
			if g.SendLag != nil && g.SendLag.P99 > 10_000 {
				out = append(out, fmt.Sprintf("%s: requests went out up to %.0f ms late (send lag p99): the target "+
					"could not keep up with the rate (or the generator was starved); read co, not svc", id, g.SendLag.P99/1e3))
			}
			if f := r.foreign(); f > foreignLimit {
				out = append(out, fmt.Sprintf("%s: ~%.0f%% of the SUT CPU went to other work (machine not quiet)", id, 100*f))
			}
			if st := r.stealFrac(); st > stealLimit {
				out = append(out, fmt.Sprintf("%s: %.0f%% steal time (host contention)", id, 100*st))
			}
		}
	}
	return out
}

// ---------------------------------------------------------------- I/O

func readRecords(r io.Reader) ([]*Record, error) {
	var recs []*Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rec Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		recs = append(recs, &rec)
	}
	return recs, sc.Err()
}

func readMeta(path string) (map[string]string, error) {
	meta := map[string]string{}
	if path == "" {
		return meta, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			meta[k] = v
		}
	}
	return meta, nil
}

func progressLine(r *Record) string {
	if r.LG == nil {
		return fmt.Sprintf("r%d %-10s %-6s FAILED %s", r.Round, r.Config, r.Test, r.LoadgenError)
	}
	g := r.LG
	s := fmt.Sprintf("r%d %-10s %-6s %7.0f rps  svc p50 %5.0f p99 %6.0f", r.Round, r.Config, r.Test,
		g.ThroughputRPS, g.Svc.P50, g.Svc.P99)
	if g.Co != nil {
		s += fmt.Sprintf("  co p99 %6.0f  lag p99 %5.0f", g.Co.P99, g.SendLag.P99)
	}
	s += fmt.Sprintf("  proxy %5.1f µs/req  rss %5.1f MiB  cpu0 %3.0f%% cpu1 %3.0f%% (other %3.0f%%)  errs %d",
		r.cpuPerReqUS(r.ProxyCPUNS), float64(r.ProxyHWMKB)/1024, 100*r.lgBusy(), 100*r.sutBusy(), 100*r.foreign(), r.errs())
	return s
}

func main() {
	var (
		raw     = flag.String("raw", "", "raw records (JSON lines) from run.sh")
		metaF   = flag.String("meta", "", "key=value metadata file")
		mdOut   = flag.String("md", "", "write the markdown report here")
		jsonOut = flag.String("json", "", "write the JSON summary here")
		line    = flag.Bool("line", false, "read one record on stdin and print a progress line")
	)
	flag.Parse()
	if err := run(*raw, *metaF, *mdOut, *jsonOut, *line); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(raw, metaF, mdOut, jsonOut string, line bool) error {
	if line {
		recs, err := readRecords(os.Stdin)
		if err != nil {
			return err
		}
		for _, r := range recs {
			fmt.Println(progressLine(r))
		}
		return nil
	}
	if raw == "" {
		return errors.New("-raw is required")
	}
	f, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer f.Close()
	recs, err := readRecords(f)
	if err != nil {
		return err
	}
	meta, err := readMeta(metaF)
	if err != nil {
		return err
	}
	s := build(recs, meta)
	md := s.Markdown()
	if mdOut != "" {
		if err := os.WriteFile(mdOut, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if jsonOut != "" {
		js, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(jsonOut, append(js, '\n'), 0o644); err != nil {
			return err
		}
	}
	fmt.Print(md)
	return nil
}
