package fencing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/causeway-mesh/causeway/control/fencingpb"
	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/policy"
)

// Defaults of Config.
const (
	DefaultReportInterval = 2 * time.Second
	DefaultLease          = 6 * time.Second
)

// MeshDomain is the name of the mesh-wide fencing domain.
const MeshDomain = "mesh"

// ServiceDomain returns the name of the domain a service-scoped
// FencingPolicy creates: "service/NAME".
func ServiceDomain(service string) string { return "service/" + service }

func validDomainName(d string) bool {
	if d == MeshDomain {
		return true
	}
	s, ok := strings.CutPrefix(d, "service/")
	return ok && policy.ValidName(s)
}

// Limits on a ViewReport; larger ones are refused as invalid.
const (
	maxNodeIDLen   = 256
	maxReportNodes = 100_000
)

// Config configures a Service.
type Config struct {
	// DataDir holds the epoch file (EpochFileName). Required; the
	// control plane's --data-dir.
	DataDir string
	// Members is the control plane's membership source (the gossip
	// watcher). Its instances, alive and failed, count toward the domains'
	// sizes. Nil: only what the sidecars report counts.
	Members membership.Source
	// ReportInterval is how often sidecars report; a report counts for 3
	// intervals. Default DefaultReportInterval (2s).
	ReportInterval time.Duration
	// Lease is how long a verdict is valid. Default DefaultLease (6s). It
	// should be several report intervals, so that a lost report or two does
	// not fence a healthy sidecar.
	Lease time.Duration
	// EvaluateEvery bounds how often the domains are recomputed, which
	// costs O(reported reachability entries): up to N² for N sidecars
	// that all see each other. Within it, verdicts come from the last
	// evaluation, so a changed view shows in verdicts at most this much
	// later. Default ReportInterval / 4; negative: on every change.
	EvaluateEvery time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Service is the control plane's side of fencing: it collects the
// sidecars' views, computes each domain's connected groups and quorum
// side, keeps the epochs and answers every report with a verdict. Create
// it with New; it is safe for concurrent use and has no goroutines of its
// own (work happens in Report, Status and Metrics calls).
type Service struct {
	fencingpb.UnimplementedFencingServer

	cfg     Config
	file    epochFile
	counter counters

	mu            sync.Mutex
	policies      map[string]*policy.FencingPolicySpec // by service; "" is the mesh-wide one
	reports       map[string]*report
	verdicts      map[string]sentVerdict
	epochs        map[string]uint64              // durable: written before any verdict carries them
	sides         map[string]map[string]struct{} // each domain's quorum group; nil when none
	maxReported   uint64                         // newest epoch any sidecar reported
	dirty         bool
	nextExpiry    time.Time
	lastInstances []membership.Instance
	view          *view
}

type counters struct {
	reports, rejected, fenced, writable, epochChanges atomic.Uint64
}

// report is a sidecar's last view.
type report struct {
	service   string
	newest    uint64
	reachable map[string]struct{}
	known     map[string]string // node id -> service
	at        time.Time
}

func (r *report) sameView(o *report) bool {
	return r.service == o.service && maps.Equal(r.reachable, o.reachable) && maps.Equal(r.known, o.known)
}

type sentVerdict struct {
	at      time.Time
	verdict *fencingpb.Verdict
}

// view is one evaluation of every domain.
type view struct {
	at      time.Time
	domains []*domainView // mesh first, then service domains by name
	byName  map[string]*domainView
	fresh   map[string]*report
}

type domainView struct {
	name     string
	service  string // "" for the mesh domain
	enabled  bool
	explicit bool // expected comes from the policy
	expected int
	members  []string
	groups   [][]string
	quorum   int // index into groups, -1 when no group holds the quorum
	// ambiguous: several groups exceed half of an explicit expected size.
	ambiguous bool
	epoch     uint64
	groupOf   map[string]int
}

// New loads the epochs from cfg.DataDir and returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("fencing: config: DataDir must be set")
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = DefaultReportInterval
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.EvaluateEvery == 0 {
		cfg.EvaluateEvery = cfg.ReportInterval / 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	f := epochFile{path: filepath.Join(cfg.DataDir, EpochFileName)}
	epochs, err := f.load()
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg: cfg, file: f,
		policies: map[string]*policy.FencingPolicySpec{},
		reports:  map[string]*report{},
		verdicts: map[string]sentVerdict{},
		epochs:   epochs,
		sides:    map[string]map[string]struct{}{},
		dirty:    true,
	}, nil
}

// Register registers the Fencing gRPC service on s (the xDS server).
func (s *Service) Register(srv *grpc.Server) { fencingpb.RegisterFencingServer(srv, s) }

// SetPolicies replaces the fencing policies in force (call it with every
// stored FencingPolicy after each change; nil entries are ignored). A
// policy targeting the Mesh sets the mesh domain's mode and expected size;
// one targeting a service makes that service's replicas a domain of their
// own. Without any, the mesh domain is on with the counted size.
func (s *Service) SetPolicies(specs []*policy.FencingPolicySpec) {
	ps := map[string]*policy.FencingPolicySpec{}
	for _, p := range specs {
		if p == nil {
			continue
		}
		if p.TargetRef.Kind == policy.TargetMesh {
			ps[""] = p
		} else {
			ps[p.TargetRef.Name] = p
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies = ps
	s.dirty = true
}

// Report implements fencingpb.FencingServer.
func (s *Service) Report(_ context.Context, in *fencingpb.ViewReport) (*fencingpb.Verdict, error) {
	r, err := parseReport(in)
	if err != nil {
		s.counter.rejected.Add(1)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r.at = now
	prev := s.reports[in.GetNodeId()]
	if prev == nil || now.Sub(prev.at) >= s.ttl() || !r.sameView(prev) {
		s.dirty = true
	}
	s.reports[in.GetNodeId()] = r
	s.maxReported = max(s.maxReported, r.newest)
	// A node reporting for the first time (or again after going silent)
	// is evaluated at once, so that a sidecar that just started is not
	// fenced until the next evaluation.
	_, known := s.verdicts[in.GetNodeId()]
	back := prev != nil && now.Sub(prev.at) >= s.ttl() // silent long enough to have been dropped
	if err := s.evaluateLocked(now, prev == nil || !known || back); err != nil {
		s.counter.rejected.Add(1)
		s.cfg.Logger.Error("fencing: no verdict: the epoch could not be stored", "error", err)
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	v := s.verdictLocked(in.GetNodeId(), r)
	s.verdicts[in.GetNodeId()] = sentVerdict{at: now, verdict: v}
	s.counter.reports.Add(1)
	if v.GetFenced() {
		s.counter.fenced.Add(1)
	} else {
		s.counter.writable.Add(1)
	}
	return v, nil
}

func (s *Service) ttl() time.Duration { return 3 * s.cfg.ReportInterval }

// forgetAfter is how long a silent sidecar stays in the status.
func (s *Service) forgetAfter() time.Duration { return 30 * s.cfg.ReportInterval }

func parseReport(in *fencingpb.ViewReport) (*report, error) {
	id := in.GetNodeId()
	switch {
	case id == "":
		return nil, errors.New("node_id is required")
	case len(id) > maxNodeIDLen:
		return nil, fmt.Errorf("node_id is %d bytes, more than %d", len(id), maxNodeIDLen)
	case len(in.GetReachable()) > maxReportNodes || len(in.GetKnown()) > maxReportNodes:
		return nil, fmt.Errorf("more than %d nodes in the view", maxReportNodes)
	case in.GetService() != "" && !policy.ValidName(in.GetService()):
		return nil, fmt.Errorf("service %q is not a valid service name", in.GetService())
	}
	r := &report{
		service: in.GetService(), newest: in.GetNewestEpoch(),
		reachable: make(map[string]struct{}, len(in.GetReachable())),
		known:     make(map[string]string, len(in.GetKnown())),
	}
	for _, n := range in.GetReachable() {
		if n == "" {
			return nil, errors.New("reachable: empty node id")
		}
		r.reachable[n] = struct{}{}
	}
	if _, ok := r.reachable[id]; !ok {
		return nil, fmt.Errorf("reachable must include the reporting node %q itself", id)
	}
	for i, k := range in.GetKnown() {
		switch {
		case k.GetNodeId() == "":
			return nil, fmt.Errorf("known[%d]: empty node id", i)
		case k.GetState() == fencingpb.NodeState_NODE_STATE_UNSPECIFIED || fencingpb.NodeState_name[int32(k.GetState())] == "":
			return nil, fmt.Errorf("known[%d] (%s): state %d is not alive, suspect or failed", i, k.GetNodeId(), k.GetState())
		}
		r.known[k.GetNodeId()] = k.GetService()
	}
	return r, nil
}

// evaluateLocked recomputes every domain when anything it depends on
// changed: a report's view, a report going stale, the policies or the
// membership source's instances. Epoch changes are stored before they
// take effect; when storing fails nothing changes and the error is
// returned.
func (s *Service) evaluateLocked(now time.Time, force bool) error {
	var instances []membership.Instance
	if s.cfg.Members != nil {
		instances = s.cfg.Members.Instances()
	}
	if s.view != nil {
		if !s.dirty && now.Before(s.nextExpiry) && slices.Equal(instances, s.lastInstances) {
			return nil
		}
		if !force && now.Sub(s.view.at) < s.cfg.EvaluateEvery {
			return nil
		}
	}
	ttl := s.ttl()
	fresh := map[string]*report{}
	next := now.Add(ttl)
	for n, r := range s.reports {
		age := now.Sub(r.at)
		if age >= s.forgetAfter() {
			delete(s.reports, n)
			delete(s.verdicts, n)
			continue
		}
		if age < ttl {
			fresh[n] = r
			if exp := r.at.Add(ttl); exp.Before(next) {
				next = exp
			}
		}
	}

	// Which service every known member fronts: the control plane's own
	// view, then what the sidecars know, then each reporter's own word.
	serviceOf := map[string]string{}
	for _, in := range instances {
		serviceOf[in.Node] = in.Service
	}
	for _, r := range fresh {
		for n, svc := range r.known {
			if serviceOf[n] == "" {
				serviceOf[n] = svc
			}
		}
	}
	for n, r := range fresh {
		serviceOf[n] = r.service
	}

	v := &view{at: now, byName: map[string]*domainView{}, fresh: fresh}
	v.domains = append(v.domains, s.domainLocked(MeshDomain, "", s.policies[""], serviceOf, fresh))
	for _, svc := range slices.Sorted(maps.Keys(s.policies)) {
		if svc != "" {
			v.domains = append(v.domains, s.domainLocked(ServiceDomain(svc), svc, s.policies[svc], serviceOf, fresh))
		}
	}

	for _, d := range v.domains {
		v.byName[d.name] = d
	}

	// Epochs: a change of the quorum side takes the next number above
	// every epoch known anywhere, so numbers are unique across domains and
	// never below one a sidecar has already seen.
	top := s.maxReported
	for _, e := range s.epochs {
		top = max(top, e)
	}
	epochs := maps.Clone(s.epochs)
	sides := map[string]map[string]struct{}{}
	var changed []*domainView
	for _, d := range v.domains {
		var cur []string
		if d.enabled && d.quorum >= 0 {
			cur = d.groups[d.quorum]
		}
		if d.enabled && quorumSideChanged(s.sides[d.name], cur) {
			top++
			epochs[d.name] = top
			changed = append(changed, d)
		}
		if cur != nil {
			set := make(map[string]struct{}, len(cur))
			for _, n := range cur {
				set[n] = struct{}{}
			}
			sides[d.name] = set
		}
		d.epoch = epochs[d.name]
	}
	if len(changed) > 0 {
		if err := s.file.store(epochs); err != nil {
			return err
		}
		for _, d := range changed {
			s.counter.epochChanges.Add(1)
			quorumSize := 0
			if d.quorum >= 0 {
				quorumSize = len(d.groups[d.quorum])
			}
			s.cfg.Logger.Info("fencing epoch changed", "domain", d.name, "epoch", d.epoch,
				"quorumGroupSize", quorumSize, "expected", d.expected, "groups", len(d.groups))
		}
	}
	s.epochs, s.sides, s.view = epochs, sides, v
	s.dirty, s.nextExpiry = false, next
	s.lastInstances = slices.Clone(instances)
	return nil
}

func (s *Service) domainLocked(name, service string, p *policy.FencingPolicySpec, serviceOf map[string]string, fresh map[string]*report) *domainView {
	d := &domainView{name: name, service: service, enabled: true, quorum: -1, groupOf: map[string]int{}}
	if p != nil {
		d.enabled = p.Mode != policy.FencingOff
		if p.ExpectedSize != nil && *p.ExpectedSize > 0 {
			d.explicit, d.expected = true, int(*p.ExpectedSize)
		}
	}
	in := func(n string) bool { return service == "" || serviceOf[n] == service }
	for n := range serviceOf {
		if in(n) {
			d.members = append(d.members, n)
		}
	}
	slices.Sort(d.members)
	if !d.explicit {
		d.expected = len(d.members)
	}
	reach := map[string]map[string]struct{}{}
	for n, r := range fresh {
		if in(n) {
			reach[n] = r.reachable
		}
	}
	d.groups = connectedGroups(reach)
	for i, g := range d.groups {
		for _, n := range g {
			d.groupOf[n] = i
		}
	}
	d.quorum, d.ambiguous = quorumGroup(d.groups, d.expected)
	return d
}

// domainFor returns the domain whose verdict a sidecar of service gets:
// its service's own domain when a policy creates one, else the mesh.
func (v *view) domainFor(service string) *domainView {
	if service != "" {
		if d := v.byName[ServiceDomain(service)]; d != nil {
			return d
		}
	}
	return v.byName[MeshDomain]
}

func (s *Service) verdictLocked(node string, r *report) *fencingpb.Verdict {
	d := s.view.domainFor(r.service)
	gi, ok := d.groupOf[node]
	var group []string
	if ok {
		group = d.groups[gi]
	}
	out := &fencingpb.Verdict{
		Domain: d.name, Epoch: d.epoch, Enabled: d.enabled,
		Quorum: &fencingpb.Quorum{Expected: uint32(d.expected), Reachable: uint32(len(group)), Needed: uint32(needed(d.expected))}, // #nosec G115 -- sizes are bounded by maxReportNodes and policy validation
		Group:  slices.Clone(group),
	}
	if !d.enabled {
		return out
	}
	out.Lease = durationpb.New(s.cfg.Lease)
	switch {
	case ok && gi == d.quorum:
	case !ok:
		out.Fenced = true
		out.Reason = fmt.Sprintf("domain %s: this node's report is not evaluated yet (at most %v)", d.name, s.cfg.EvaluateEvery)
	case d.ambiguous:
		out.Fenced = true
		out.Reason = fmt.Sprintf("domain %s: several groups each reach more than half of the expected size %d (the policy's expectedSize is below the domain's real size); none holds the quorum", d.name, d.expected)
	case d.quorum >= 0:
		out.Fenced = true
		out.Reason = fmt.Sprintf("domain %s: this side reaches %d of %d members, %d needed; another group of %d holds the quorum", d.name, len(group), d.expected, needed(d.expected), len(d.groups[d.quorum]))
	default:
		out.Fenced = true
		out.Reason = fmt.Sprintf("domain %s: this side reaches %d of %d members, %d needed; no group holds the quorum", d.name, len(group), d.expected, needed(d.expected))
	}
	return out
}
