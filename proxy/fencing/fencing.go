// Package fencing decides, for one sidecar, whether writes may pass.
//
// When the mesh splits, only the side that holds a quorum keeps accepting
// writes; the other side keeps serving reads and refuses writes, so that
// no write is accepted where it could be lost or conflict. A sidecar
// learns whether its side holds the quorum from two sources, and the safer
// one wins:
//
//   - its own gossip view (Local): members it can reach, counting a member
//     it suspects as unreachable, against the expected size of the domain;
//   - the control plane (Remote): a verdict computed from the views of
//     every sidecar, valid for a lease. When the lease runs out without a
//     renewal, the sidecar fences itself, without waiting for gossip to
//     declare anyone dead: a control plane cut off on the other side can
//     no longer keep this side writable, and one on this side that lost
//     the quorum says so.
//
// Every change of the quorum side starts a new epoch (the control plane
// numbers them and stores them durably). A write is admitted under the
// newest epoch this sidecar knows and carries it in x-mesh-epoch; a
// receiving sidecar refuses a write whose epoch is older than the newest it
// knows, which closes the window in which a sidecar has not yet heard of a
// split (a fencing token, as Kleppmann describes).
package fencing

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Quorum is the size arithmetic of one fencing domain.
type Quorum struct {
	// Expected is the domain's size: alive and failed members, not members
	// that left gracefully (or the size a policy sets explicitly).
	Expected int `json:"expected"`
	// Reachable counts the members this side reaches, this one included.
	Reachable int `json:"reachable"`
	// Needed is the least Reachable that holds the quorum: more than half
	// of Expected.
	Needed int `json:"needed"`
}

// NewQuorum computes the figures for a domain of expected members of which
// reachable are on this side.
func NewQuorum(expected, reachable int) Quorum {
	return Quorum{Expected: expected, Reachable: reachable, Needed: expected/2 + 1}
}

// Holds reports whether this side holds the quorum. An empty domain (no
// members known yet) holds it: there is nothing to split from.
func (q Quorum) Holds() bool { return q.Expected == 0 || q.Reachable >= q.Needed }

// Verdict is one source's view.
type Verdict struct {
	Fenced bool   `json:"fenced"`
	Reason string `json:"reason,omitempty"`
	// Epoch is the newest epoch the source knows (0: none; the local
	// gossip view knows none).
	Epoch  uint64 `json:"epoch"`
	Quorum Quorum `json:"quorum"`
}

// State is what the data path reads: the combined decision.
type State struct {
	Fenced bool   `json:"fenced"`
	Reason string `json:"reason,omitempty"`
	// Source names what decided: "gossip", "control-plane", "lease" or ""
	// when not fenced.
	Source string `json:"source,omitempty"`
	Epoch  uint64 `json:"epoch"`
	// Quorum is the figure of the deciding source (or the local view).
	Quorum Quorum `json:"quorum"`
	// LeaseUntil is when the control plane's verdict runs out; zero when
	// no control plane is configured.
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
	// Enabled is false when fencing is switched off by policy.
	Enabled bool `json:"enabled"`
}

// Fence combines the sources. Safe for concurrent use; State is a single
// atomic load for the data path.
type Fence struct {
	now func() time.Time

	mu         sync.Mutex
	enabled    bool
	remoteOn   bool // a control plane is configured: its lease is required
	local      Verdict
	remote     Verdict
	leaseUntil time.Time
	staleLease bool // the gossip view fenced since the last verdict
	timer      *time.Timer

	// Heal hysteresis: after a fence, writes resume only once the sources
	// have agreed for stability (from stableSince).
	stability   time.Duration
	stableSince time.Time
	stableTimer *time.Timer
	onChange    func(from, to *State)

	newest atomic.Uint64 // newest epoch known, from any source
	state  atomic.Pointer[State]
}

// New returns an enabled fence that admits writes until a source says
// otherwise. requireLease is true when a control plane is configured: from
// then on writes need a valid lease, which the first verdict grants.
func New(requireLease bool) *Fence {
	f := &Fence{now: time.Now, enabled: true, remoteOn: requireLease, stability: DefaultStability}
	f.mu.Lock()
	f.recomputeLocked()
	f.mu.Unlock()
	return f
}

// State returns the current decision.
func (f *Fence) State() *State { return f.state.Load() }

// Fenced reports whether writes must be refused now. It also catches a
// lease that ran out between timer ticks.
func (f *Fence) Fenced() bool {
	st := f.state.Load()
	if st.Fenced {
		return true
	}
	if !st.LeaseUntil.IsZero() && st.Enabled && !f.now().Before(st.LeaseUntil) {
		f.mu.Lock()
		f.recomputeLocked()
		f.mu.Unlock()
		return f.state.Load().Fenced
	}
	return false
}

// SetEnabled switches fencing on or off (policy).
func (f *Fence) SetEnabled(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enabled = on
	f.recomputeLocked()
}

// SetLocal records the verdict of this sidecar's gossip view.
func (f *Fence) SetLocal(v Verdict) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.local = v
	if v.Fenced && f.remoteOn {
		// A lease granted before this side lost the quorum says nothing
		// about after: once the view recovers, writes wait for a verdict
		// issued since (which carries the epoch the quorum side moved to).
		f.staleLease = true
	}
	f.recomputeLocked()
}

// SetRemote records the control plane's verdict, valid for lease from now.
func (f *Fence) SetRemote(v Verdict, lease time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.remote = v
	f.remoteOn = true
	f.staleLease = false
	f.leaseUntil = f.now().Add(lease)
	f.raiseEpoch(v.Epoch)
	if f.timer != nil {
		f.timer.Stop()
	}
	// Recompute when the lease runs out, so /fencing and metrics show it
	// even when no write arrives.
	f.timer = time.AfterFunc(lease, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.recomputeLocked()
	})
	f.recomputeLocked()
}

// AwaitingVerdict reports whether fencing needs a control-plane lease and
// none has been granted yet: the sidecar's write decision is unknown.
func (f *Fence) AwaitingVerdict() bool {
	st := f.state.Load()
	return st.Enabled && f.requiresLease() && st.LeaseUntil.IsZero()
}

func (f *Fence) requiresLease() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.remoteOn
}

// DefaultStability is how long this side must hold the quorum again,
// after being fenced, before writes resume: an intermittent link does not
// make the sidecar flap between fenced and writable.
const DefaultStability = 2 * time.Second

// SetStability changes the heal stability period (0: writes resume at
// once).
func (f *Fence) SetStability(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stability = d
	f.recomputeLocked()
}

// OnChange registers a function called, under the fence's lock, whenever
// the decision flips between fenced and writable (for logs and events; it
// must not call back into the Fence).
func (f *Fence) OnChange(fn func(from, to *State)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onChange = fn
}

// Epoch returns the newest epoch this sidecar knows: the one outbound
// writes are admitted under.
func (f *Fence) Epoch() uint64 { return f.newest.Load() }

// Admit checks an incoming write's epoch (0: the caller sent none). It
// returns false when the epoch is older than the newest known; a newer
// one becomes the newest known (the caller heard of it first).
func (f *Fence) Admit(epoch uint64) bool {
	if epoch == 0 {
		return true
	}
	for {
		cur := f.newest.Load()
		if epoch < cur {
			return false
		}
		if epoch == cur || f.newest.CompareAndSwap(cur, epoch) {
			if epoch > cur {
				f.mu.Lock()
				f.recomputeLocked()
				f.mu.Unlock()
			}
			return true
		}
	}
}

// Close stops the lease timer.
func (f *Fence) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.timer != nil {
		f.timer.Stop()
	}
	if f.stableTimer != nil {
		f.stableTimer.Stop()
	}
}

func (f *Fence) raiseEpoch(e uint64) {
	for {
		cur := f.newest.Load()
		if e <= cur || f.newest.CompareAndSwap(cur, e) {
			return
		}
	}
}

// recomputeLocked publishes the combined state. Order of precedence: off
// by policy; the control plane's verdict while its lease is valid, or the
// expired lease; the gossip view. Fenced by either source means fenced.
func (f *Fence) recomputeLocked() {
	st := &State{Enabled: f.enabled, Epoch: f.newest.Load(), Quorum: f.local.Quorum}
	if f.remoteOn {
		st.LeaseUntil = f.leaseUntil
	}
	switch {
	case !f.enabled:
	case f.remoteOn && !f.now().Before(f.leaseUntil):
		st.Fenced, st.Source, st.Quorum = true, "lease", f.remote.Quorum
		st.Reason = "no valid lease from a control plane that holds the quorum"
		if f.leaseUntil.IsZero() {
			st.Reason = "waiting for the first verdict from the control plane"
		}
	case f.remote.Fenced:
		st.Fenced, st.Source, st.Reason, st.Quorum = true, "control-plane", f.remote.Reason, f.remote.Quorum
	case f.local.Fenced:
		st.Fenced, st.Source, st.Reason = true, "gossip", f.local.Reason
	case f.remoteOn && f.staleLease:
		st.Fenced, st.Source, st.Quorum = true, "lease", f.remote.Quorum
		st.Reason = "waiting for a verdict issued after this side regained the quorum"
	}
	prev := f.state.Load()
	f.holdAfterFenceLocked(prev, st)
	f.state.Store(st)
	if f.onChange != nil && prev != nil && prev.Fenced != st.Fenced {
		f.onChange(prev, st)
	}
}

// holdAfterFenceLocked keeps st fenced until the sources have agreed for
// the stability period after a fence (not after the wait for the first
// verdict at start-up).
func (f *Fence) holdAfterFenceLocked(prev, st *State) {
	if st.Fenced || !st.Enabled || f.stability <= 0 {
		f.stableSince = time.Time{}
		return
	}
	startup := prev != nil && prev.Source == "lease" && prev.LeaseUntil.IsZero()
	if prev == nil || !prev.Fenced || startup {
		return
	}
	now := f.now()
	if f.stableSince.IsZero() {
		f.stableSince = now
	}
	if wait := f.stability - now.Sub(f.stableSince); wait > 0 {
		st.Fenced, st.Source = true, prev.Source
		st.Reason = fmt.Sprintf("this side holds the quorum again; writes resume after %v of stability", f.stability)
		if f.stableTimer != nil {
			f.stableTimer.Stop()
		}
		f.stableTimer = time.AfterFunc(wait, func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.recomputeLocked()
		})
		return
	}
	f.stableSince = time.Time{}
}

// Policy says which requests are writes.
type Policy struct {
	// GRPCWrites lists the gRPC methods that are writes, as
	// "/package.Service/Method" or "/package.Service/*". Every gRPC call is
	// an HTTP POST, so gRPC calls are writes only when listed here.
	GRPCWrites []string
}

// IsWrite reports whether r is a write: an HTTP method other than GET,
// HEAD, OPTIONS and TRACE, or a gRPC call the policy lists.
func (p *Policy) IsWrite(r *http.Request) bool {
	if isGRPC(r) {
		return p != nil && p.grpcWrite(r.URL.Path)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

func (p *Policy) grpcWrite(method string) bool {
	for _, w := range p.GRPCWrites {
		if w == method {
			return true
		}
		if svc, ok := strings.CutSuffix(w, "/*"); ok && strings.HasPrefix(method, svc+"/") {
			return true
		}
	}
	return false
}

func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return r.ProtoMajor == 2 && strings.HasPrefix(ct, "application/grpc") && (len(ct) == 16 || ct[16] == '+' || ct[16] == ';')
}
