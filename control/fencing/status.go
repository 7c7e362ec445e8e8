package fencing

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"
)

// Status is the control plane's fencing view, served as JSON by Handler
// (GET /api/v1/fencing) and shown by `meshctl status`.
type Status struct {
	// At is when the view was computed.
	At time.Time `json:"at"`
	// ReportInterval and Lease are Go duration strings ("2s", "10s").
	ReportInterval string         `json:"reportInterval"`
	Lease          string         `json:"lease"`
	Domains        []DomainStatus `json:"domains"`
	// Nodes are the sidecars that reported within the last 30 report
	// intervals, sorted by node id.
	Nodes []NodeStatus `json:"nodes"`
	// Error is set when the last evaluation failed (the epoch could not
	// be stored); the rest is then the last good view.
	Error string `json:"error,omitempty"`
}

// DomainStatus is one fencing domain.
type DomainStatus struct {
	// Name is "mesh" or "service/NAME".
	Name    string `json:"name"`
	Service string `json:"service,omitempty"`
	// Enabled is false when a FencingPolicy switches the domain off.
	Enabled bool `json:"enabled"`
	// Expected is the domain's size: its alive and failed members, or the
	// policy's expectedSize (then ExpectedFromPolicy is true).
	Expected           int  `json:"expected"`
	ExpectedFromPolicy bool `json:"expectedFromPolicy,omitempty"`
	// Needed is the least group size that holds the quorum.
	Needed int `json:"needed"`
	// Members are the node ids counted (the control plane's instances,
	// the reporters and the members they know).
	Members []string `json:"members"`
	// Groups are the connected groups of fresh reporters, largest first.
	Groups []GroupStatus `json:"groups"`
	// QuorumGroup is the index in Groups of the group holding the quorum,
	// -1 when none does.
	QuorumGroup int `json:"quorumGroup"`
	// Ambiguous is true when several groups exceed half of an explicit
	// expected size, so that none is given the quorum.
	Ambiguous bool   `json:"ambiguous,omitempty"`
	Epoch     uint64 `json:"epoch"`
}

// GroupStatus is one connected group.
type GroupStatus struct {
	Members []string `json:"members"`
	Quorum  bool     `json:"quorum"`
}

// NodeStatus is one reporting sidecar.
type NodeStatus struct {
	Node    string `json:"node"`
	Service string `json:"service,omitempty"`
	// Domain is the domain whose verdict the node gets.
	Domain     string    `json:"domain"`
	LastReport time.Time `json:"lastReport"`
	// Fresh is true while the last report counts (3 report intervals).
	Fresh bool `json:"fresh"`
	// LastVerdict is the verdict sent in answer to the last report.
	LastVerdict VerdictStatus `json:"lastVerdict"`
}

// VerdictStatus is a verdict as the status shows it.
type VerdictStatus struct {
	Enabled bool   `json:"enabled"`
	Fenced  bool   `json:"fenced"`
	Reason  string `json:"reason,omitempty"`
	Epoch   uint64 `json:"epoch"`
	// LeaseUntil is when the verdict runs out (zero when enabled is false).
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
}

// Status returns the current view, re-evaluated if anything changed.
func (s *Service) Status() Status {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{At: now, ReportInterval: s.cfg.ReportInterval.String(), Lease: s.cfg.Lease.String(),
		Domains: []DomainStatus{}, Nodes: []NodeStatus{}}
	if err := s.evaluateLocked(now, false); err != nil {
		st.Error = err.Error()
	}
	if s.view == nil {
		return st
	}
	for _, d := range s.view.domains {
		ds := DomainStatus{
			Name: d.name, Service: d.service, Enabled: d.enabled, Expected: d.expected,
			ExpectedFromPolicy: d.explicit, Needed: needed(d.expected), Members: slices.Clone(d.members),
			Groups: []GroupStatus{}, QuorumGroup: d.quorum, Ambiguous: d.ambiguous, Epoch: d.epoch,
		}
		if ds.Members == nil {
			ds.Members = []string{}
		}
		for i, g := range d.groups {
			ds.Groups = append(ds.Groups, GroupStatus{Members: slices.Clone(g), Quorum: i == d.quorum})
		}
		st.Domains = append(st.Domains, ds)
	}
	for _, n := range slices.Sorted(maps.Keys(s.reports)) {
		r := s.reports[n]
		ns := NodeStatus{Node: n, Service: r.service, Domain: s.view.domainFor(r.service).name,
			LastReport: r.at, Fresh: now.Sub(r.at) < s.ttl()}
		if sv, ok := s.verdicts[n]; ok {
			v := sv.verdict
			ns.LastVerdict = VerdictStatus{Enabled: v.GetEnabled(), Fenced: v.GetFenced(), Reason: v.GetReason(), Epoch: v.GetEpoch()}
			if v.GetLease() != nil {
				ns.LastVerdict.LeaseUntil = sv.at.Add(v.GetLease().AsDuration())
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}

// Handler serves GET (and HEAD) /api/v1/fencing: the Status as JSON. It
// does no authentication; mount it behind the API's.
func (s *Service) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			w.WriteHeader(http.StatusMethodNotAllowed)
			_ = json.NewEncoder(w).Encode(map[string]string{
				"code":    "MethodNotAllowed",
				"message": fmt.Sprintf("%s is not allowed on %s; use GET", r.Method, r.URL.Path),
			})
			return
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.Status())
	})
}

// Metrics are the figures to export. Counters only grow; gauges are per
// domain.
type Metrics struct {
	// Reports answered with a verdict, of which FencedVerdicts said fenced
	// and WritableVerdicts did not.
	Reports          uint64
	FencedVerdicts   uint64
	WritableVerdicts uint64
	// RejectedReports were invalid or could not be answered (the epoch
	// could not be stored).
	RejectedReports uint64
	// EpochChanges counts new epochs, over all domains.
	EpochChanges uint64
	Domains      []DomainMetrics
}

// DomainMetrics are one domain's gauges.
type DomainMetrics struct {
	Name      string
	Enabled   bool
	Epoch     uint64
	HasQuorum bool
	// WritableNodes and FencedNodes count the fresh reporters whose
	// verdict comes from this domain.
	WritableNodes int
	FencedNodes   int
}

// Metrics returns the counters and the current per-domain gauges.
func (s *Service) Metrics() Metrics {
	m := Metrics{
		Reports: s.counter.reports.Load(), FencedVerdicts: s.counter.fenced.Load(),
		WritableVerdicts: s.counter.writable.Load(), RejectedReports: s.counter.rejected.Load(),
		EpochChanges: s.counter.epochChanges.Load(),
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.evaluateLocked(now, false) // on failure, the last good view is reported
	if s.view == nil {
		return m
	}
	idx := map[string]int{}
	for _, d := range s.view.domains {
		idx[d.name] = len(m.Domains)
		m.Domains = append(m.Domains, DomainMetrics{Name: d.name, Enabled: d.enabled, Epoch: d.epoch, HasQuorum: d.quorum >= 0})
	}
	for n, r := range s.view.fresh {
		d := s.view.domainFor(r.service)
		dm := &m.Domains[idx[d.name]]
		if gi, ok := d.groupOf[n]; !d.enabled || (ok && gi == d.quorum) {
			dm.WritableNodes++
		} else {
			dm.FencedNodes++
		}
	}
	return m
}
