// Package rotation runs a staged root rotation of the mesh CA for an
// operator: it decides whether the fleet is ready for each stage, runs it
// (control/ca does the work and keeps the state), and reports where the
// rotation stands.
//
// The stages and when each may run without force:
//
//   - prepare (from stable): always. A new root joins the trust bundle; the
//     old root keeps signing. Sidecars receive the new bundle at once over
//     their WatchBundle stream (and with every certificate).
//   - activate (from prepared): once every sidecar connected to the
//     WatchBundle stream has acknowledged the current bundle, or once the
//     propagation period (the leaf lifetime, 24 h by default) has passed
//     since prepare: by then every running sidecar has renewed and so
//     received the bundle. With no sidecar connected, only when no issued
//     leaf is in use either (otherwise nothing proves that its holder has
//     the bundle). The new root then signs; sidecars whose leaf it did not
//     sign renew within the renew window.
//   - prune (from activated): once no leaf issued by an old root is still in
//     use: every one was replaced by a renewal or has expired (the ledger),
//     and no connected sidecar reports one. Old roots then leave the
//     bundle, so a leaf they signed is refused everywhere the bundle
//     arrives.
//
// Force runs a stage whatever the fleet's state: sidecars that did not yet
// receive the new bundle refuse peers with new leaves (after activate), and
// sidecars still holding an old leaf are refused by their peers and must
// bootstrap again with a token (after prune).
package rotation

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/fleet"
	"github.com/causeway-mesh/causeway/control/ca/ledger"
)

// Action is a rotation step an operator asks for.
type Action string

// The actions.
const (
	Prepare  Action = "prepare"
	Activate Action = "activate"
	Prune    Action = "prune"
)

// ParseAction parses "prepare", "activate" or "prune".
func ParseAction(s string) (Action, error) {
	switch a := Action(strings.ToLower(s)); a {
	case Prepare, Activate, Prune:
		return a, nil
	}
	return "", fmt.Errorf("rotation stage %q: want prepare, activate or prune", s)
}

// ErrNotReady wraps every refusal of a step the fleet is not ready for;
// the message says what is missing and when the step becomes safe.
var ErrNotReady = errors.New("the mesh is not ready for this step")

// maxListed bounds the sidecars or leaves a refusal or the status names.
const maxListed = 10

// Config configures a Rotator.
type Config struct {
	// CA is the mesh CA. Required.
	CA *ca.CA
	// Ledger holds the leaves the Identity service issued; nil means none
	// are known, so prune waits until every leaf an old root may have
	// signed has expired (the CA's MaxTTL after activation).
	Ledger *ledger.Ledger
	// Fleet holds the sidecars connected to WatchBundle; nil means none.
	Fleet *fleet.Registry
	// LeafTTL is the lifetime of the Identity service's leaves, which is
	// the propagation period after prepare; zero means ca.DefaultTTL.
	LeafTTL time.Duration
	// Log receives one line per step; nil means slog.Default().
	Log *slog.Logger
	// Now replaces time.Now, for tests.
	Now func() time.Time
}

// Rotator runs rotation steps. It is safe for concurrent use; the CA
// serialises the steps themselves.
type Rotator struct {
	ca      *ca.CA
	ledger  *ledger.Ledger
	fleet   *fleet.Registry
	leafTTL time.Duration
	log     *slog.Logger
	now     func() time.Time
}

// New validates cfg and returns a Rotator.
func New(cfg Config) (*Rotator, error) {
	if cfg.CA == nil {
		return nil, errors.New("rotation: CA is required")
	}
	r := &Rotator{ca: cfg.CA, ledger: cfg.Ledger, fleet: cfg.Fleet, leafTTL: cfg.LeafTTL, log: cfg.Log, now: cfg.Now}
	if r.leafTTL == 0 {
		r.leafTTL = ca.DefaultTTL
	}
	if r.leafTTL < 0 {
		return nil, fmt.Errorf("rotation: leaf TTL %v must be positive", cfg.LeafTTL)
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r, nil
}

// Rotate runs one step. Without force, a step the fleet is not ready for
// is refused with an error wrapping ErrNotReady; a step the stage does not
// allow wraps ca.ErrStage; an operator-managed CA answers
// ca.ErrOperatorManaged. It returns the status after the step.
func (r *Rotator) Rotate(action Action, force bool) (Status, error) {
	if r.ca.OperatorManaged() {
		return r.Status(), ca.ErrOperatorManaged
	}
	want := map[Action]ca.Stage{Prepare: ca.StageStable, Activate: ca.StagePrepared, Prune: ca.StageActivated}[action]
	if want == "" {
		return r.Status(), fmt.Errorf("rotation: unknown step %q", action)
	}
	if st := r.ca.Rotation().Stage; st != want {
		return r.Status(), fmt.Errorf("%s: %w: the CA is %s; %s", action, ca.ErrStage, st, stageHint(st))
	}
	check := r.check(r.now(), r.ca.Rotation())
	if !check.Ready {
		if !force {
			return r.Status(), fmt.Errorf("%s: %w: %s; or force it", action, ErrNotReady, check.Reason)
		}
		r.log.Warn("CA rotation step forced", "step", action, "not_ready_because", check.Reason)
	}
	switch action {
	case Prepare:
		root, err := r.ca.Prepare()
		if err != nil {
			return r.Status(), err
		}
		r.log.Info("CA rotation prepared: a new root is in the trust bundle; the old root still signs",
			"new_root", ca.Fingerprint(root))
	case Activate:
		root, err := r.ca.Activate()
		if err != nil {
			return r.Status(), err
		}
		r.log.Info("CA rotation activated: the new root signs; sidecars renew onto it; sidecars started from now on trust this control plane with the new --ca-pin or the new bundle",
			"root", ca.Fingerprint(root), "ca_pin", pin(root), "forced", force && !check.Ready)
	case Prune:
		removed, err := r.ca.Prune()
		if err != nil {
			return r.Status(), err
		}
		fps := make([]string, len(removed))
		for i, c := range removed {
			fps[i] = ca.Fingerprint(c)
		}
		r.log.Info("CA rotation pruned: old roots left the trust bundle", "removed", fps, "forced", force && !check.Ready)
	}
	return r.Status(), nil
}

// stageHint says what to do in stage s.
func stageHint(s ca.Stage) string {
	switch s {
	case ca.StagePrepared:
		return "activate comes next"
	case ca.StageActivated:
		return "prune comes next"
	}
	return "prepare starts a rotation"
}

// Status is where the CA and the fleet stand (GET /api/v1/ca).
type Status struct {
	// Mode is "self-managed" or "operator-managed".
	Mode string `json:"mode"`
	// TrustDomain is the mesh's trust domain.
	TrustDomain string `json:"trustDomain"`
	// Stage is "stable", "prepared" or "activated".
	Stage ca.Stage `json:"stage"`
	// PreparedAt and ActivatedAt are when the current rotation reached
	// those stages.
	PreparedAt  *time.Time `json:"preparedAt,omitempty"`
	ActivatedAt *time.Time `json:"activatedAt,omitempty"`
	// Bundle is the hex SHA-256 of the trust bundle (PEM) sidecars
	// acknowledge.
	Bundle string `json:"bundle"`
	// Roots are the bundle's roots, oldest first.
	Roots []Root `json:"roots"`
	// Sidecars counts the sidecars connected to WatchBundle.
	Sidecars Sidecars `json:"sidecars"`
	// Next is the next step and whether it may run now.
	Next *Step `json:"next,omitempty"`
}

// Root is one root of the bundle.
type Root struct {
	Fingerprint string    `json:"fingerprint"`
	Pin         string    `json:"pin"` // for a sidecar's --ca-pin
	Subject     string    `json:"subject"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	// Signing reports the root that signs new leaves.
	Signing bool `json:"signing"`
	// State is "signing", "prepared" (in the bundle, not signing yet),
	// "retiring" (no longer signs; prune removes it) or "trusted" (an
	// extra root the operator put in the bundle).
	State string `json:"state"`
	// Leaves counts the leaves the Identity service issued under this root
	// that may still be in use, and LeavesUntil is when the last expires.
	Leaves      int        `json:"leaves"`
	LeavesUntil *time.Time `json:"leavesUntil,omitempty"`
	// Connected counts the connected sidecars whose current leaf chains to
	// this root.
	Connected int `json:"connected"`
}

// Sidecars counts the sidecars connected to WatchBundle.
type Sidecars struct {
	Connected int `json:"connected"`
	// CurrentBundle have acknowledged the current bundle.
	CurrentBundle int `json:"currentBundle"`
	// Pending names (ID@address) up to ten that have not.
	Pending []string `json:"pending,omitempty"`
}

// Step is the rotation's next step.
type Step struct {
	Action Action `json:"action"`
	// Ready reports whether it may run without force; Reason says why or
	// why not.
	Ready  bool   `json:"ready"`
	Reason string `json:"reason"`
	// SafeAfter, when set, is when the step becomes ready at the latest
	// without anything else happening (leaves expiring, the propagation
	// period ending).
	SafeAfter *time.Time `json:"safeAfter,omitempty"`
}

// Status reports the CA's rotation state and the fleet's.
func (r *Rotator) Status() Status {
	rot := r.ca.Rotation()
	digest := r.ca.BundleDigest()
	st := Status{
		Mode: "self-managed", TrustDomain: r.ca.TrustDomain(), Stage: rot.Stage,
		PreparedAt: timePtr(rot.PreparedAt), ActivatedAt: timePtr(rot.ActivatedAt),
		Bundle: hex.EncodeToString(digest[:]),
	}
	if rot.OperatorManaged {
		st.Mode = "operator-managed"
	}
	connected := r.sidecars()
	st.Sidecars.Connected = len(connected)
	for _, s := range connected {
		if s.Bundle == st.Bundle {
			st.Sidecars.CurrentBundle++
		} else if len(st.Sidecars.Pending) < maxListed {
			st.Sidecars.Pending = append(st.Sidecars.Pending, s.ID+"@"+s.Addr)
		}
	}
	signingRoot, _ := r.ca.RootOf([]*x509.Certificate{rot.Signing})
	for _, root := range r.ca.Roots() {
		fp := ca.Fingerprint(root)
		rs := Root{
			Fingerprint: fp, Pin: pin(root), Subject: root.Subject.String(),
			NotBefore: root.NotBefore.UTC(), NotAfter: root.NotAfter.UTC(), State: "trusted",
		}
		switch {
		case signingRoot != nil && root.Equal(signingRoot):
			rs.Signing, rs.State = true, "signing"
		case rot.Next != nil && root.Equal(rot.Next):
			rs.State = "prepared"
		case containsCert(rot.Retiring, root):
			rs.State = "retiring"
		}
		if r.ledger != nil {
			n, until := r.ledger.Outstanding(fp)
			rs.Leaves, rs.LeavesUntil = n, timePtr(until)
		}
		for _, s := range connected {
			if s.LeafRoot == fp {
				rs.Connected++
			}
		}
		st.Roots = append(st.Roots, rs)
	}
	if !rot.OperatorManaged {
		c := r.check(r.now(), rot)
		st.Next = &c
	}
	return st
}

// check decides whether the step after rot's stage may run at now.
func (r *Rotator) check(now time.Time, rot ca.Rotation) Step {
	switch rot.Stage {
	case ca.StagePrepared:
		return r.checkActivate(now, rot)
	case ca.StageActivated:
		return r.checkPrune(now, rot)
	}
	return Step{Action: Prepare, Ready: true, Reason: "no rotation is in progress"}
}

func (r *Rotator) checkActivate(now time.Time, rot ca.Rotation) Step {
	step := Step{Action: Activate}
	safe := rot.PreparedAt.Add(r.leafTTL)
	step.SafeAfter = &safe
	if !now.Before(safe) {
		step.Ready, step.Reason = true, fmt.Sprintf("the propagation period (%v, the leaf lifetime) has passed since prepare: every running sidecar has renewed and received the bundle", r.leafTTL)
		return step
	}
	digest := r.ca.BundleDigest()
	current := hex.EncodeToString(digest[:])
	connected := r.sidecars()
	var pending []string
	for _, s := range connected {
		if s.Bundle != current {
			pending = append(pending, s.ID+"@"+s.Addr)
		}
	}
	switch {
	case len(pending) > 0:
		step.Reason = fmt.Sprintf("%d of %d connected sidecars have not acknowledged the new bundle (%s); wait for them or until %s",
			len(pending), len(connected), list(pending), safe.UTC().Format(time.RFC3339))
	case len(connected) == 0 && r.leavesInUse() > 0:
		step.Reason = fmt.Sprintf("no sidecar is connected to acknowledge the new bundle, but %d issued leaves are in use; wait for their sidecars to connect or until %s",
			r.leavesInUse(), safe.UTC().Format(time.RFC3339))
	case len(connected) == 0:
		step.Ready, step.Reason = true, "no sidecar is connected and no issued leaf is in use"
	default:
		step.Ready, step.Reason = true, fmt.Sprintf("all %d connected sidecars have acknowledged the new bundle", len(connected))
	}
	return step
}

func (r *Rotator) checkPrune(now time.Time, rot ca.Rotation) Step {
	step := Step{Action: Prune}
	var problems []string
	var safe time.Time
	later := func(t time.Time) {
		if t.After(safe) {
			safe = t
		}
	}
	if r.ledger == nil {
		// Nothing recorded: every leaf of an old root expires at most
		// MaxTTL after the root stopped signing.
		if t := rot.ActivatedAt.Add(r.ca.MaxTTL()); now.Before(t) {
			problems = append(problems, "no ledger of issued leaves: leaves of the old roots may be valid until "+t.UTC().Format(time.RFC3339))
			later(t)
		}
	} else if since := r.ledger.Since(); !since.IsZero() {
		if t := since.Add(r.ca.MaxTTL()); now.Before(t) {
			problems = append(problems, "leaves issued before the ledger started ("+since.UTC().Format(time.RFC3339)+") may be valid until "+t.UTC().Format(time.RFC3339))
			later(t)
		}
	}
	connected := r.sidecars()
	for _, old := range rot.Retiring {
		fp := ca.Fingerprint(old)
		if r.ledger != nil {
			if leaves := r.ledger.Leaves(fp); len(leaves) > 0 {
				var ids []string
				for _, lf := range leaves {
					ids = append(ids, lf.ID)
				}
				last := leaves[len(leaves)-1].NotAfter
				problems = append(problems, fmt.Sprintf("%d leaves of old root %s are neither re-issued nor expired (%s; the last expires %s)",
					len(leaves), short(fp), list(ids), last.UTC().Format(time.RFC3339)))
				later(last)
			}
		}
		var holders []string
		for _, s := range connected {
			if s.LeafRoot == fp && now.Before(s.LeafNotAfter) {
				holders = append(holders, s.ID+"@"+s.Addr)
				later(s.LeafNotAfter)
			}
		}
		if len(holders) > 0 {
			problems = append(problems, fmt.Sprintf("%d connected sidecars still present a leaf of old root %s (%s)", len(holders), short(fp), list(holders)))
		}
	}
	if len(problems) == 0 {
		step.Ready, step.Reason = true, "every leaf of the old roots has been re-issued by the new root or has expired"
		return step
	}
	step.Reason = strings.Join(problems, "; ")
	if !safe.IsZero() {
		step.SafeAfter = &safe
	}
	return step
}

// leavesInUse counts the unexpired recorded leaves of every root.
func (r *Rotator) leavesInUse() int {
	if r.ledger == nil {
		return 0
	}
	return len(r.ledger.Leaves(""))
}

func (r *Rotator) sidecars() []fleet.Sidecar {
	if r.fleet == nil {
		return nil
	}
	return r.fleet.Snapshot()
}

// pin is the sidecars' --ca-pin for root: "sha256:" and the hex SHA-256 of
// its SubjectPublicKeyInfo.
func pin(root *x509.Certificate) string {
	sum := sha256.Sum256(root.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// short abbreviates a fingerprint for messages.
func short(fp string) string {
	if len(fp) > len("sha256:")+16 {
		return fp[:len("sha256:")+16] + "…"
	}
	return fp
}

// list joins up to maxListed names, saying how many more there are.
func list(names []string) string {
	if len(names) <= maxListed {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:maxListed], ", ") + fmt.Sprintf(" and %d more", len(names)-maxListed)
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
