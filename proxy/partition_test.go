package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	cpfencing "github.com/causeway-mesh/causeway/control/fencing"
	"github.com/causeway-mesh/causeway/control/translate"
	"github.com/causeway-mesh/causeway/control/xds"
	"github.com/causeway-mesh/causeway/discovery/discoverytest"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// In-process partition tests of write fencing: five sidecars n0…n4 of
// service kv gossip over a fault-injecting network (discoverytest), and
// each reaches one in-process control plane (the xDS server and the
// fencing service on one gRPC server) through a relay of its own, so
// cutting a sidecar's relay takes the control plane away from that
// sidecar alone.
//
// Timings follow the defaults: the sidecar reports its view every 2 s
// (its reporter's interval is not configurable, so the control plane
// keeps the matching DefaultReportInterval, which decides how long a
// report counts) and verdicts carry DefaultLease, except where a test
// says why it needs a longer lease.
//
// Writes go to a sidecar's outbound port with Host kv. Each sidecar
// routes kv to its own inbound port (a static upstream added once it is
// listening), so a write tests exactly one sidecar's fence, on both its
// outbound and inbound side, whatever the other sidecars' state: the
// gossip-routed kv would send a writable sidecar's write to any replica,
// a fenced one included.

const (
	partitionSize = 5
	// Bounds of the scenarios (the figures); the race detector
	// slows every goroutine, so waits stretch by raceSlowdown there.
	minorityFencesWithin = 10 * time.Second
	healWithin           = 20 * time.Second
	// sampleEvery is how often the recorder samples every fence.
	sampleEvery = 100 * time.Millisecond
)

// partitionNode is one member: its sidecar, app and control-plane relay.
type partitionNode struct {
	name  string
	s     *runningSidecar
	app   *recordingApp
	relay *tcpRelay
}

func (n *partitionNode) fenced() bool  { return n.s.fence.Fenced() }
func (n *partitionNode) epoch() uint64 { return n.s.fence.Epoch() }

// describe is the node's /fencing state in one line.
func (n *partitionNode) describe() string {
	st := n.s.fence.State()
	q := st.Quorum
	s := fmt.Sprintf("%s: fenced=%v epoch=%d quorum=%d/%d (needed %d)", n.name, n.fenced(), st.Epoch, q.Reachable, q.Expected, q.Needed)
	if st.Fenced {
		s += fmt.Sprintf(" source=%s reason=%q", st.Source, st.Reason)
	}
	if snap := n.s.discovered.Load(); snap != nil {
		s += fmt.Sprintf(" gossip: alive=%d suspect=%d failed=%d", snap.Alive, snap.Suspect, snap.Failed)
	}
	return s
}

// partitionCluster is the five sidecars, their network and control plane.
type partitionCluster struct {
	t      *testing.T
	net    *discoverytest.Network
	nodes  []*partitionNode
	client *http.Client
	start  time.Time
	rec    *fenceRecorder
}

// startPartitionCluster starts the control plane, granting verdicts of
// the given lease (0: DefaultLease), and n0…n4 (n0 seeds the
// gossip pool) and waits until every sidecar is writable under one epoch
// and sees all five members alive.
func startPartitionCluster(t *testing.T, lease time.Duration) *partitionCluster {
	t.Helper()
	cpAddr := startInProcessControlPlane(t, lease)
	pc := &partitionCluster{t: t, net: discoverytest.NewNetwork(), client: h1Client(), start: time.Now()}
	t.Cleanup(pc.client.CloseIdleConnections)
	var seed string
	for i := range partitionSize {
		name := "n" + strconv.Itoa(i)
		tr, err := pc.net.Transport(name)
		if err != nil {
			t.Fatalf("gossip transport %s: %v", name, err)
		}
		app := &recordingApp{}
		relay := startRelay(t, cpAddr)
		cfg := gossipConfig("kv", name, startApp(t, app))
		cfg.Gossip.Bind = tr.Addr()
		if seed != "" {
			cfg.Gossip.Join = []string{seed}
		}
		cfg.ControlPlane = relay.Addr()
		cfg.DataDir = t.TempDir()
		s := startSidecarWith(t, cfg, WithGossipTransport(tr))
		if seed == "" {
			seed = tr.Addr()
		}
		pinKVToSelf(t, s)
		pc.nodes = append(pc.nodes, &partitionNode{name: name, s: s, app: app, relay: relay})
	}
	// Reconnect everything before the sidecars stop (cleanups run last
	// in, first out), so that each leaves the pool cleanly.
	t.Cleanup(pc.heal)
	pc.waitNodes(pc.nodes, 30*time.Second, "every sidecar writable under one epoch, seeing all 5 members", func(n *partitionNode) bool {
		snap := n.s.discovered.Load()
		return !n.fenced() && n.epoch() > 0 && n.epoch() == pc.nodes[0].epoch() &&
			snap != nil && snap.Alive == partitionSize && snap.Suspect == 0
	})
	for _, n := range pc.nodes {
		n.app.take() // nothing yet; start every scenario from empty apps
	}
	pc.rec = startFenceRecorder(t, pc.start, pc.nodes)
	t.Logf("+%v cluster up, epoch %d", pc.since(), pc.nodes[0].epoch())
	return pc
}

// startInProcessControlPlane serves the xDS server (a translate-based
// build) and the control plane's fencing service on one gRPC server on
// 127.0.0.1:0 until the test ends, and returns its address. Verdicts
// carry lease (0: DefaultLease).
func startInProcessControlPlane(t *testing.T, lease time.Duration) string {
	t.Helper()
	fs, err := cpfencing.New(cpfencing.Config{
		DataDir:        t.TempDir(),
		ReportInterval: cpfencing.DefaultReportInterval,
		Lease:          lease,
		Logger:         testLogger().With("component", "control-plane-fencing"),
	})
	if err != nil {
		t.Fatalf("fencing service: %v", err)
	}
	build := func(services []string) (*translate.Output, error) {
		return translate.Translate(translate.Input{Services: services})
	}
	xs, err := xds.New(xds.Config{Build: build, Debounce: 10 * time.Millisecond, DebounceMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("xds server: %v", err)
	}
	gs := grpc.NewServer()
	xs.Register(gs)
	fs.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = xs.Run(ctx) })
	wg.Go(func() { _ = gs.Serve(lis) })
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		wg.Wait()
	})
	return lis.Addr().String()
}

// pinKVToSelf routes kv from s's outbound port to s's own inbound port,
// through a configuration reload (a static upstream overrides the gossip
// view for its service).
func pinKVToSelf(t *testing.T, s *runningSidecar) {
	t.Helper()
	next := *s.cfg.Load()
	next.Upstreams = map[string]config.Upstream{"kv": {Endpoints: []string{s.addr("inbound")}}}
	if err := s.Reload(&next); err != nil {
		t.Fatalf("pin kv to %s's own inbound: %v", next.NodeID, err)
	}
}

func (pc *partitionCluster) since() time.Duration {
	return time.Since(pc.start).Round(10 * time.Millisecond)
}

// split cuts gossip between the two sides both ways, and takes the
// control plane away from the side that must not have it.
func (pc *partitionCluster) split(a, b []*partitionNode, withoutControlPlane []*partitionNode) {
	pc.net.Split(names(a), names(b))
	for _, n := range withoutControlPlane {
		n.relay.Cut()
	}
	pc.t.Logf("+%v split %v | %v; control plane cut from %v", pc.since(), names(a), names(b), names(withoutControlPlane))
}

// heal restores every gossip link and every relay.
func (pc *partitionCluster) heal() {
	pc.net.Heal()
	for _, n := range pc.nodes {
		n.relay.Restore()
	}
}

func names(nodes []*partitionNode) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.name
	}
	return out
}

// waitNodes polls until cond holds for every node in nodes, and returns
// how long that took. On timeout it fails with every node's state.
func (pc *partitionCluster) waitNodes(nodes []*partitionNode, timeout time.Duration, what string, cond func(*partitionNode) bool) time.Duration {
	pc.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout * raceSlowdown)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok := true
		for _, n := range nodes {
			if !cond(n) {
				ok = false
				break
			}
		}
		if ok {
			took := time.Since(start).Round(10 * time.Millisecond)
			pc.t.Logf("+%v %s (%v)", pc.since(), what, took)
			return took
		}
		if time.Now().After(deadline) {
			pc.t.Fatalf("timed out after %v waiting for %s\n%s", timeout*raceSlowdown, what, pc.dump())
		}
		<-tick.C
	}
}

func (pc *partitionCluster) dump() string {
	var b strings.Builder
	for _, n := range pc.nodes {
		b.WriteString("  " + n.describe() + "\n")
	}
	return b.String()
}

// write sends a POST with Host kv through n's outbound port and returns
// the status and x-mesh-error.
func (pc *partitionCluster) write(ctx context.Context, n *partitionNode) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.s.addr("outbound")+"/keys/k", strings.NewReader("v"))
	if err != nil {
		return 0, "", err
	}
	req.Host = "kv"
	resp, err := pc.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get(HeaderError), nil
}

// posts returns the writes every app received since the last call.
func (pc *partitionCluster) posts() map[string][]string {
	out := map[string][]string{}
	for _, n := range pc.nodes {
		for _, s := range n.app.take() {
			if strings.HasPrefix(s, "POST ") {
				out[n.name] = append(out[n.name], s)
			}
		}
	}
	return out
}

// assertWritable checks that n admits a write: it reaches n's app, and
// only it, under an epoch at least the one n knew before sending.
func (pc *partitionCluster) assertWritable(n *partitionNode) {
	pc.t.Helper()
	before := n.epoch()
	if n.fenced() {
		pc.t.Errorf("%s is fenced, want writable:\n%s", n.name, pc.dump())
		return
	}
	code, meshErr, err := pc.write(testContext(pc.t, 10*time.Second), n)
	if err != nil || code != http.StatusOK {
		pc.t.Errorf("write through %s: status %d %q, err %v; want 200\n%s", n.name, code, meshErr, err, pc.dump())
		return
	}
	got := pc.posts()
	seen := got[n.name]
	delete(got, n.name)
	if len(seen) != 1 || len(got) != 0 {
		pc.t.Errorf("apps saw writes %v from %s's write, want one at %s's app", got, n.name, n.name)
		return
	}
	e, err := strconv.ParseUint(strings.TrimPrefix(seen[0], "POST "), 10, 64)
	if err != nil || e == 0 || e < before {
		pc.t.Errorf("%s's app saw %q, want x-mesh-epoch ≥ %d", n.name, seen[0], max(before, 1))
	}
}

// assertRefused checks that n is fenced and refuses a write with 503
// fenced, which no app sees.
func (pc *partitionCluster) assertRefused(n *partitionNode) {
	pc.t.Helper()
	if !n.fenced() {
		pc.t.Errorf("%s is writable, want fenced:\n%s", n.name, pc.dump())
		return
	}
	code, meshErr, err := pc.write(testContext(pc.t, 10*time.Second), n)
	if err != nil || code != http.StatusServiceUnavailable || meshErr != "fenced" {
		pc.t.Errorf("write through fenced %s: status %d %q, err %v; want 503 fenced", n.name, code, meshErr, err)
	}
	if got := pc.posts(); len(got) != 0 {
		pc.t.Errorf("apps saw %v after a write through fenced %s, want none", got, n.name)
	}
}

// fenceRecorder samples every node's fence every sampleEvery, logs each
// fence and unfence with its time since the cluster started, and keeps
// the samples for the assertions on what happened in between.
type fenceRecorder struct {
	t     *testing.T
	start time.Time
	nodes []*partitionNode

	mu      sync.Mutex
	samples []fenceSample

	stop chan struct{}
	done chan struct{}
}

type fenceSample struct {
	at     time.Time
	fenced []bool // by node index
}

// startFenceRecorder samples until the test ends (its cleanup runs before
// the sidecars stop).
func startFenceRecorder(t *testing.T, start time.Time, nodes []*partitionNode) *fenceRecorder {
	r := &fenceRecorder{t: t, start: start, nodes: nodes, stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	t.Cleanup(func() {
		close(r.stop)
		<-r.done
	})
	return r
}

func (r *fenceRecorder) run() {
	defer close(r.done)
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	prev := make([]bool, len(r.nodes))
	for {
		prev = r.sample(prev)
		select {
		case <-r.stop:
			r.sample(prev) // the state the test ended in
			return
		case <-tick.C:
		}
	}
}

// sample records every fence, logs those that changed since prev, and
// returns the new states.
func (r *fenceRecorder) sample(prev []bool) []bool {
	s := fenceSample{at: time.Now(), fenced: make([]bool, len(r.nodes))}
	for i, n := range r.nodes {
		s.fenced[i] = n.fenced()
		if s.fenced[i] != prev[i] {
			r.logChange(n, s)
		}
	}
	r.mu.Lock()
	r.samples = append(r.samples, s)
	r.mu.Unlock()
	return s.fenced
}

func (r *fenceRecorder) logChange(n *partitionNode, s fenceSample) {
	at := s.at.Sub(r.start).Round(10 * time.Millisecond)
	st := n.s.fence.State()
	if st.Fenced || n.fenced() {
		r.t.Logf("+%v %s fenced by %s (epoch %d): %s", at, n.name, st.Source, st.Epoch, st.Reason)
	} else {
		r.t.Logf("+%v %s writable (epoch %d)", at, n.name, st.Epoch)
	}
}

// window returns the samples taken at or after from.
func (r *fenceRecorder) window(from time.Time) []fenceSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []fenceSample
	for _, s := range r.samples {
		if !s.at.Before(from) {
			out = append(out, s)
		}
	}
	return out
}

// fencedSamples counts, per node index, the samples since from in which
// the node was fenced, and returns the total number of samples.
func (r *fenceRecorder) fencedSamples(from time.Time) (fenced []int, total int) {
	w := r.window(from)
	fenced = make([]int, len(r.nodes))
	for _, s := range w {
		for i, f := range s.fenced {
			if f {
				fenced[i]++
			}
		}
	}
	return fenced, len(w)
}

// longestFenced returns, per node index, the longest run of consecutive
// fenced samples since from, as a duration.
func (r *fenceRecorder) longestFenced(from time.Time) []time.Duration {
	w := r.window(from)
	out := make([]time.Duration, len(r.nodes))
	for i := range r.nodes {
		var runStart time.Time
		for _, s := range w {
			switch {
			case s.fenced[i] && runStart.IsZero():
				runStart = s.at
			case !s.fenced[i] && !runStart.IsZero():
				out[i] = max(out[i], s.at.Sub(runStart))
				runStart = time.Time{}
			}
		}
		if !runStart.IsZero() && len(w) > 0 {
			out[i] = max(out[i], w[len(w)-1].at.Sub(runStart)+sampleEvery)
		}
	}
	return out
}

// minWritable returns the fewest writable nodes in any sample since from.
func (r *fenceRecorder) minWritable(from time.Time) int {
	least := len(r.nodes)
	for _, s := range r.window(from) {
		w := 0
		for _, f := range s.fenced {
			if !f {
				w++
			}
		}
		least = min(least, w)
	}
	return least
}

// assertNeverFenced fails for every node of nodes fenced in a sample
// since from.
func (pc *partitionCluster) assertNeverFenced(nodes []*partitionNode, from time.Time, during string) {
	pc.t.Helper()
	fenced, total := pc.rec.fencedSamples(from)
	if total == 0 {
		pc.t.Fatalf("no fence samples %s", during)
	}
	for _, n := range nodes {
		if i := pc.index(n); fenced[i] > 0 {
			pc.t.Errorf("%s was fenced in %d of %d samples %s, want none", n.name, fenced[i], total, during)
		}
	}
}

func (pc *partitionCluster) index(n *partitionNode) int {
	for i, m := range pc.nodes {
		if m == n {
			return i
		}
	}
	pc.t.Fatalf("%s is not a member", n.name)
	return -1
}

// TestPartitionMajorityKeepsControlPlane splits the mesh 3|2 with the
// control plane on the majority side: the minority fences itself, the
// majority keeps accepting writes under a new epoch, and after the heal
// everyone is writable again and the minority knows the new epoch.
func TestPartitionMajorityKeepsControlPlane(t *testing.T) {
	pc := startPartitionCluster(t, 0)
	majority, minority := pc.nodes[:3], pc.nodes[3:]
	splitEpoch := pc.splitMinority(majority, minority)

	pc.heal()
	t.Logf("+%v healed", pc.since())
	// Whether a minority sidecar is writable for a moment under the old
	// epoch depends on its pre-split lease outlasting the split; the
	// failure is pinned down in TestPartitionHealedMinorityWaitsForNewEpoch.
	stale := pc.watchStaleWrites(minority, splitEpoch, healWithin, "everyone writable under the split's epoch or newer after the heal")
	for _, sw := range stale {
		t.Logf("%s admitted a write under the superseded epoch %d %v after the heal (its app saw %q)", sw.node, sw.epoch, sw.after, sw.appSaw)
	}
	for _, n := range pc.nodes {
		pc.assertWritable(n)
	}
}

// splitMinority splits majority | minority, the control plane with the
// majority, and checks what must hold during the split: the minority
// fences within minorityFencesWithin and refuses writes; the majority
// starts a new epoch and never stops accepting writes. It returns the
// majority's new epoch.
func (pc *partitionCluster) splitMinority(majority, minority []*partitionNode) uint64 {
	pc.t.Helper()
	before := pc.nodes[0].epoch()
	cut := time.Now()
	pc.split(majority, minority, minority)
	pc.waitNodes(minority, minorityFencesWithin, "the minority fenced", (*partitionNode).fenced)
	for _, n := range minority {
		pc.assertRefused(n)
	}
	pc.waitNodes(majority, minorityFencesWithin, fmt.Sprintf("a new epoch (above %d) on the majority", before), func(n *partitionNode) bool {
		return n.epoch() > before
	})
	for _, n := range majority {
		pc.assertWritable(n)
	}
	pc.assertNeverFenced(majority, cut, "on the majority side during the split")
	pc.t.Logf("during the split:\n%s", pc.dump())
	return majority[0].epoch()
}

// TestPartitionHealedMinorityWaitsForNewEpoch: a sidecar that its own
// gossip view fenced during a split must not admit writes after the heal
// under the epoch the split superseded. The control plane started a new
// epoch without it; until a verdict carries that epoch, a write it
// admits reaches its app stamped with the old one, as if the split had
// never happened (and a peer that knows the new epoch refuses it as
// stale).
//
// The lease here (15 s) outlasts the split (the minority's gossip view
// fences it some 5 s after the cut, and the heal follows at once), which
// is what exposes the old verdict; with the default lease the same
// happens whenever a split heals before the lease granted just before it
// runs out.
func TestPartitionHealedMinorityWaitsForNewEpoch(t *testing.T) {
	const lease = 15 * time.Second
	pc := startPartitionCluster(t, lease)
	majority, minority := pc.nodes[:3], pc.nodes[3:]
	splitEpoch := pc.splitMinority(majority, minority)
	for _, n := range minority {
		if st := n.s.fence.State(); st.Source != "gossip" || !time.Now().Before(st.LeaseUntil) {
			t.Fatalf("precondition: %s must be fenced by its gossip view while its pre-split lease is valid; it is: %s", n.name, n.describe())
		}
	}

	pc.heal()
	t.Logf("+%v healed", pc.since())
	stale := pc.watchStaleWrites(minority, splitEpoch, healWithin, "everyone writable under the split's epoch or newer after the heal")
	for _, sw := range stale {
		t.Errorf("%s admitted a write under epoch %d %v after the heal (its app saw %q), though the control plane had started epoch %d during the split: "+
			"the lease granted before the split made it writable again as soon as its gossip view recovered, before any verdict carried the new epoch",
			sw.node, sw.epoch, sw.after, sw.appSaw, splitEpoch)
	}
}

// staleWrite is a write a sidecar admitted under an epoch older than one
// already in force.
type staleWrite struct {
	node   string
	epoch  uint64
	after  time.Duration // since the watch began
	appSaw []string
}

// watchStaleWrites waits until every node of the cluster is writable
// under epoch want or newer. Meanwhile, whenever one of nodes is writable
// under an older epoch, it sends a write through it and records what its
// app admitted (once per node).
func (pc *partitionCluster) watchStaleWrites(nodes []*partitionNode, want uint64, timeout time.Duration, what string) []staleWrite {
	pc.t.Helper()
	var stale []staleWrite
	seen := map[string]bool{}
	start := time.Now()
	deadline := start.Add(timeout * raceSlowdown)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, n := range nodes {
			if e := n.epoch(); !seen[n.name] && !n.fenced() && e < want {
				seen[n.name] = true
				after := time.Since(start).Round(10 * time.Millisecond)
				code, meshErr, err := pc.write(testContext(pc.t, 10*time.Second), n)
				if err == nil && code == http.StatusOK {
					stale = append(stale, staleWrite{node: n.name, epoch: e, after: after, appSaw: pc.posts()[n.name]})
				} else {
					pc.t.Logf("%s writable under stale epoch %d %v after the heal; its write got %d %q (err %v)", n.name, e, after, code, meshErr, err)
				}
			}
		}
		done := true
		for _, n := range pc.nodes {
			done = done && !n.fenced() && n.epoch() >= want
		}
		if done {
			pc.t.Logf("+%v %s (%v)", pc.since(), what, time.Since(start).Round(10*time.Millisecond))
			pc.posts()
			return stale
		}
		if time.Now().After(deadline) {
			pc.t.Fatalf("timed out after %v waiting for %s\n%s", timeout*raceSlowdown, what, pc.dump())
		}
		<-tick.C
	}
}

// TestPartitionControlPlaneOnMinority splits the mesh 4|1 with the only
// control plane on the lone node's side: the lone node is fenced, and the
// majority, unable to renew its lease, fences itself when the lease runs
// out — the documented trade-off of a single control plane. After the
// heal everyone is writable again.
func TestPartitionControlPlaneOnMinority(t *testing.T) {
	pc := startPartitionCluster(t, 0)
	majority, lone := pc.nodes[:4], pc.nodes[4:]

	cut := time.Now()
	pc.split(majority, lone, majority)
	pc.waitNodes(lone, minorityFencesWithin, "the lone node fenced", (*partitionNode).fenced)
	// The majority's own view holds the quorum (4 of 5): only the lease
	// can fence it, within a lease of the last renewal before the cut.
	pc.waitNodes(majority, cpfencing.DefaultLease+healWithin, "the majority fenced at lease expiry", (*partitionNode).fenced)
	fencedAfter := time.Since(cut).Round(10 * time.Millisecond)
	for _, n := range majority {
		if st := n.s.fence.State(); st.Source != "lease" {
			t.Errorf("%s fenced by %q (%s), want by its lease", n.name, st.Source, st.Reason)
		}
	}
	// The last renewal came at most one report interval before the cut
	// (two, allowing for a slow report), so the lease cannot have run
	// out much sooner than a lease after it.
	t.Logf("the majority fenced %v after losing the control plane (lease %v)", fencedAfter, cpfencing.DefaultLease)
	if earliest := cpfencing.DefaultLease - 2*cpfencing.DefaultReportInterval; fencedAfter < earliest {
		t.Errorf("the majority was fenced %v after the cut, before its lease could have run out (%v)", fencedAfter, earliest)
	}
	for _, n := range pc.nodes {
		pc.assertRefused(n)
	}
	t.Logf("during the split:\n%s", pc.dump())

	pc.heal()
	t.Logf("+%v healed", pc.since())
	pc.waitNodes(pc.nodes, healWithin, "everyone writable after the heal", func(n *partitionNode) bool { return !n.fenced() })
	for _, n := range pc.nodes {
		pc.assertWritable(n)
	}
}

// TestPartitionAsymmetricCut drops n1's gossip to n0 while n0's reaches
// n1. Every member still reaches a connected majority (directly or
// through the others' indirect probes), so the majority stays writable
// throughout and nobody is fenced for long.
func TestPartitionAsymmetricCut(t *testing.T) {
	pc := startPartitionCluster(t, 0)
	const observe = 10 * time.Second
	from := time.Now()
	pc.net.Cut("n1", "n0")
	t.Logf("+%v cut n1 → n0 (n0 → n1 flows)", pc.since())

	// Write through every sidecar while the cut lasts; a write may be
	// refused only by a fenced sidecar.
	ctx := testContext(t, observe+30*time.Second)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for time.Since(from) < observe {
		for _, n := range pc.nodes {
			code, meshErr, err := pc.write(ctx, n)
			if err != nil || (code != http.StatusOK && meshErr != "fenced") {
				t.Errorf("write through %s during the cut: status %d %q, err %v", n.name, code, meshErr, err)
			}
		}
		<-tick.C
	}
	pc.posts()
	t.Logf("after %v of the one-way cut:\n%s", observe, pc.dump())

	if w := pc.rec.minWritable(from); w <= partitionSize/2 {
		t.Errorf("only %d of %d sidecars were writable at some point during the one-way cut, want a majority", w, partitionSize)
	}
	pc.assertNeverFenced(pc.nodes[2:], from, "during a cut between n0 and n1")
	longest := pc.rec.longestFenced(from)
	for i, n := range pc.nodes[:2] {
		t.Logf("%s: longest fenced stretch during the cut %v", n.name, longest[i])
		// Longer than suspicion takes to clear (a few probe rounds)
		// would mean a member that reaches the majority is kept from
		// writing.
		if longest[i] > 5*time.Second {
			t.Errorf("%s was fenced for %v at a stretch during a one-way cut, want at most 5s", n.name, longest[i])
		}
	}

	pc.net.Restore("n1", "n0")
	pc.waitNodes(pc.nodes, healWithin, "everyone writable after the cut is restored", func(n *partitionNode) bool { return !n.fenced() })
	for _, n := range pc.nodes {
		pc.assertWritable(n)
	}
}

// TestPartitionFlappingLink takes n4's links (gossip and control plane)
// down and up every 700 ms for 10 s: the other four, a majority without
// n4, never stop accepting writes, and n4 is writable soon after its link
// settles.
func TestPartitionFlappingLink(t *testing.T) {
	pc := startPartitionCluster(t, 0)
	others, n4 := pc.nodes[:4], pc.nodes[4]
	const (
		flapEvery = 700 * time.Millisecond
		flapFor   = 10 * time.Second
	)
	ctx := testContext(t, flapFor+30*time.Second)
	suspicions := func() (total uint64) {
		for _, n := range pc.nodes {
			total += n.s.agent.Counters().Suspicions.Load()
		}
		return total
	}
	suspectedBefore, epochBefore := suspicions(), others[0].epoch()
	from := time.Now()
	nextFlap := from
	down := false
	writes, failures := 0, 0
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for time.Since(from) < flapFor {
		if now := time.Now(); !now.Before(nextFlap) {
			if down {
				pc.net.Heal()
				n4.relay.Restore()
			} else {
				pc.net.Split([]string{n4.name}, names(others))
				n4.relay.Cut()
			}
			down = !down
			nextFlap = now.Add(flapEvery)
		}
		for _, n := range others {
			code, meshErr, err := pc.write(ctx, n)
			writes++
			if err != nil || code != http.StatusOK {
				failures++
				if failures <= 5 {
					t.Errorf("+%v write through %s while n4 flaps: status %d %q, err %v", pc.since(), n.name, code, meshErr, err)
				}
			}
		}
		<-tick.C
	}
	pc.heal()
	settled := time.Now()
	t.Logf("+%v n4's link settled; %d writes through n0..n3 while it flapped, %d failed", pc.since(), writes, failures)
	got := pc.posts()
	if total := len(got["n0"]) + len(got["n1"]) + len(got["n2"]) + len(got["n3"]); total != writes-failures || len(got["n4"]) != 0 {
		t.Errorf("apps saw %d writes at n0..n3 and %d at n4, want %d and 0", total, len(got["n4"]), writes-failures)
	}
	pc.assertNeverFenced(others, from, "while n4's link flapped")
	fenced, total := pc.rec.fencedSamples(from)
	suspected := suspicions() - suspectedBefore
	t.Logf("while n4's link flapped: n4 fenced in %d of %d samples, longest %v; %d gossip suspicions; epoch %d → %d",
		fenced[4], total, pc.rec.longestFenced(from)[4], suspected, epochBefore, others[0].epoch())
	if suspected == 0 {
		t.Errorf("no member suspected another while n4's link flapped: the cuts did not reach gossip")
	}

	took := pc.waitNodes([]*partitionNode{n4}, healWithin, "n4 writable after its link settled", func(n *partitionNode) bool { return !n.fenced() })
	t.Logf("n4 writable %v after the link settled (%v since)", took, time.Since(settled).Round(10*time.Millisecond))
	for _, n := range pc.nodes {
		pc.assertWritable(n)
	}
}
