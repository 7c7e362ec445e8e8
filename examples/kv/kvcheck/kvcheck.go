// Package kvcheck checks the histories of kv example instances against what
// clients saw, in the spirit of Jepsen: given the partitions a test put in
// force (a timeline), every write each instance accepted (its /history) and
// every write each client attempted with its outcome, it finds
//
//   - split-brain writes: two writes of the same key admitted under the same
//     fencing epoch by instances on different sides of the same partition;
//   - lost writes: a write the mesh acknowledged (200) that no instance holds;
//   - forwarded refusals: a write the mesh refused (fenced, stale_epoch:
//     refused writes are never forwarded, PRODUCT.md) that an instance holds;
//   - duplicates: one client write accepted more than once (the mesh retries
//     a write only when it provably never reached the app).
//
// These four look only at accepted entries of the histories: entries an
// instance recorded when it applied a peer's write (kind "replicated")
// are copies, not acceptances. CheckConvergence checks the replicas'
// final values after the last heal (convergence.go).
//
// Instances and clients must share a clock: the partition timeline, the
// attempts and Write.At are compared directly. The test tier runs every
// process on one host, so they do.
package kvcheck

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

// Partition is one network partition: from From until To (zero To: never
// healed), the nodes of each side reach each other and nothing on another
// side. Nodes on no side are ignored while it is in force.
type Partition struct {
	From, To time.Time
	Sides    [][]string
}

// in reports whether t falls inside the partition.
func (p Partition) in(t time.Time) bool {
	return !t.Before(p.From) && (p.To.IsZero() || t.Before(p.To))
}

// side returns the index of node's side, or -1.
func (p Partition) side(node string) int {
	for i, s := range p.Sides {
		if slices.Contains(s, node) {
			return i
		}
	}
	return -1
}

// Outcome is what a client learned about its write.
type Outcome int

// Outcomes, by what they promise.
const (
	// Unknown: the client got an error, a timeout or an answer from the
	// app that was not 200; the write may or may not have been accepted.
	Unknown Outcome = iota
	// Acked: 200 from the app through the mesh; the write must be held.
	Acked
	// Refused: the mesh itself refused it (x-mesh-error fenced or
	// stale_epoch); it must not have reached any app.
	Refused
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acked"
	case Refused:
		return "refused"
	default:
		return "unknown"
	}
}

// Attempt is one write a client sent through the sidecar of Node.
type Attempt struct {
	Node       string
	Key, Value string
	Start, End time.Time
	Outcome    Outcome
	// Status and MeshError are the response's status code and
	// x-mesh-error (0 and "" when there was no response).
	Status    int
	MeshError string
}

// Conflict is a pair of writes of one key under one epoch, accepted on
// different sides of one partition.
type Conflict struct {
	Key       string
	Epoch     uint64
	Partition int
	A, B      kvstore.Write
	// WithinGrace is set when both writes were accepted less than
	// Options.DetectionGrace after the partition began.
	WithinGrace bool
}

func (c Conflict) String() string {
	return fmt.Sprintf("key %q epoch %d partition #%d: %q on %s at %s and %q on %s at %s",
		c.Key, c.Epoch, c.Partition, c.A.Value, c.A.Node, c.A.At.Format(time.RFC3339Nano),
		c.B.Value, c.B.Node, c.B.At.Format(time.RFC3339Nano))
}

// Options tune Check.
type Options struct {
	// DetectionGrace is how long after a partition begins the check
	// tolerates split-brain writes: a conflict whose two writes were both
	// accepted within it is reported (Conflict.WithinGrace) but does not
	// fail the check. Both sides hold the old epoch until the mesh has
	// detected the cut, so conflicts inside the detection time are
	// expected from a design that fences on detection; the bound the
	// product promises for fencing the minority is the natural value.
	// Zero (the default) tolerates nothing.
	DetectionGrace time.Duration
}

// SideStats counts the attempts of clients on one side of one partition
// (Partition -1 and Side 0: while no partition was in force).
type SideStats struct {
	Partition, Side         int
	Nodes                   []string
	Acked, Refused, Unknown int
	Accepted                int // writes instances of this side accepted
	Epochs                  []uint64
}

// Report is the result of Check.
type Report struct {
	Conflicts []Conflict
	Lost      []Attempt
	Forwarded []Attempt
	// Duplicates are values accepted more than once, with every copy.
	Duplicates [][]kvstore.Write
	// Accepted is the number of accepted writes in the histories,
	// Replicated the number of entries that record a peer's write; Epochs
	// the distinct epochs the accepted writes carry, ascending.
	Accepted   int
	Replicated int
	Epochs     []uint64
	Sides      []SideStats
}

// OK reports whether the check found nothing wrong (conflicts within the
// detection grace excepted).
func (r Report) OK() bool {
	return r.FailingConflicts() == 0 && len(r.Lost) == 0 && len(r.Forwarded) == 0 && len(r.Duplicates) == 0
}

// FailingConflicts counts the conflicts outside the detection grace.
func (r Report) FailingConflicts() int {
	n := 0
	for _, c := range r.Conflicts {
		if !c.WithinGrace {
			n++
		}
	}
	return n
}

// Check compares the histories of every instance (their entries in any
// order; only accepted writes count) with the timeline and the clients'
// attempts. Partitions must not overlap.
func Check(timeline []Partition, history []kvstore.Write, attempts []Attempt, opts Options) Report {
	accepted := acceptedOnly(history)
	r := Report{Accepted: len(accepted), Replicated: len(history) - len(accepted)}

	byValue := make(map[string][]kvstore.Write, len(accepted))
	epochs := make(map[uint64]bool)
	for _, w := range accepted {
		byValue[w.Value] = append(byValue[w.Value], w)
		epochs[w.Epoch] = true
	}
	r.Epochs = slices.Sorted(maps.Keys(epochs))

	for _, a := range attempts {
		held := len(byValue[a.Value]) > 0
		switch {
		case a.Outcome == Acked && !held:
			r.Lost = append(r.Lost, a)
		case a.Outcome == Refused && held:
			r.Forwarded = append(r.Forwarded, a)
		}
	}
	for _, v := range slices.Sorted(maps.Keys(byValue)) {
		if ws := byValue[v]; len(ws) > 1 {
			r.Duplicates = append(r.Duplicates, ws)
		}
	}

	r.Conflicts = conflicts(timeline, accepted, opts.DetectionGrace)
	r.Sides = sideStats(timeline, accepted, attempts)
	return r
}

// conflicts finds, per partition, key and epoch, writes accepted on more
// than one side; it reports the earliest write of each side after the
// first against the first side's earliest.
func conflicts(timeline []Partition, accepted []kvstore.Write, grace time.Duration) []Conflict {
	type group struct {
		partition int
		key       string
		epoch     uint64
	}
	first := make(map[group]map[int]kvstore.Write)
	for _, w := range accepted {
		p := partitionAt(timeline, w.At)
		if p < 0 {
			continue
		}
		side := timeline[p].side(w.Node)
		if side < 0 {
			continue
		}
		g := group{p, w.Key, w.Epoch}
		if first[g] == nil {
			first[g] = make(map[int]kvstore.Write)
		}
		if old, ok := first[g][side]; !ok || w.At.Before(old.At) {
			first[g][side] = w
		}
	}
	var out []Conflict
	for g, sides := range first {
		if len(sides) < 2 {
			continue
		}
		ws := slices.SortedFunc(maps.Values(sides), func(a, b kvstore.Write) int { return a.At.Compare(b.At) })
		graceEnd := timeline[g.partition].From.Add(grace)
		for _, w := range ws[1:] {
			out = append(out, Conflict{Key: g.key, Epoch: g.epoch, Partition: g.partition, A: ws[0], B: w,
				WithinGrace: w.At.Before(graceEnd)})
		}
	}
	slices.SortFunc(out, func(a, b Conflict) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), strings.Compare(a.Key, b.Key),
			cmp.Compare(a.Epoch, b.Epoch), a.B.At.Compare(b.B.At))
	})
	return out
}

// acceptedOnly returns the entries that record a client write accepted
// where they were recorded.
func acceptedOnly(history []kvstore.Write) []kvstore.Write {
	out := make([]kvstore.Write, 0, len(history))
	for _, w := range history {
		if w.Accepted() {
			out = append(out, w)
		}
	}
	return out
}

func partitionAt(timeline []Partition, t time.Time) int {
	for i, p := range timeline {
		if p.in(t) {
			return i
		}
	}
	return -1
}

func sideStats(timeline []Partition, accepted []kvstore.Write, attempts []Attempt) []SideStats {
	type at struct{ p, s int }
	stats := make(map[at]*SideStats)
	epochs := make(map[at]map[uint64]bool)
	get := func(p int, node string) (at, *SideStats) {
		k := at{p, 0}
		var nodes []string
		if p >= 0 {
			k.s = timeline[p].side(node)
			if k.s < 0 {
				return k, nil
			}
			nodes = timeline[p].Sides[k.s]
		}
		if stats[k] == nil {
			stats[k] = &SideStats{Partition: k.p, Side: k.s, Nodes: nodes}
			epochs[k] = make(map[uint64]bool)
		}
		return k, stats[k]
	}
	for _, a := range attempts {
		_, s := get(partitionAt(timeline, a.Start), a.Node)
		if s == nil {
			continue
		}
		switch a.Outcome {
		case Acked:
			s.Acked++
		case Refused:
			s.Refused++
		default:
			s.Unknown++
		}
	}
	for _, w := range accepted {
		k, s := get(partitionAt(timeline, w.At), w.Node)
		if s == nil {
			continue
		}
		s.Accepted++
		epochs[k][w.Epoch] = true
	}
	out := make([]SideStats, 0, len(stats))
	for k, s := range stats {
		s.Epochs = slices.Sorted(maps.Keys(epochs[k]))
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b SideStats) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Side, b.Side))
	})
	return out
}

// Summary renders the report for a test log: the totals, the per-side
// figures and every finding (at most limit of each kind; 0 means all).
func (r Report) Summary(limit int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "accepted writes: %d, epochs seen: %v", r.Accepted, r.Epochs)
	if r.Replicated > 0 {
		fmt.Fprintf(&b, " (and %d replicated copies)", r.Replicated)
	}
	b.WriteString("\n")
	for _, s := range r.Sides {
		where := "connected"
		if s.Partition >= 0 {
			where = fmt.Sprintf("partition #%d side %d %v", s.Partition, s.Side, s.Nodes)
		}
		fmt.Fprintf(&b, "  %-40s acked %5d  refused %5d  unknown %4d  accepted %5d  epochs %v\n",
			where, s.Acked, s.Refused, s.Unknown, s.Accepted, s.Epochs)
	}
	section := func(name string, n int, item func(i int) string) {
		fmt.Fprintf(&b, "%s: %d\n", name, n)
		for i := range n {
			if limit > 0 && i == limit {
				fmt.Fprintf(&b, "  ... %d more\n", n-limit)
				break
			}
			fmt.Fprintf(&b, "  %s\n", item(i))
		}
	}
	var failing, tolerated []Conflict
	for _, c := range r.Conflicts {
		if c.WithinGrace {
			tolerated = append(tolerated, c)
		} else {
			failing = append(failing, c)
		}
	}
	section("split-brain writes (same key, same epoch, different sides)", len(failing), func(i int) string { return failing[i].String() })
	section("split-brain writes within the detection grace (tolerated)", len(tolerated), func(i int) string { return tolerated[i].String() })
	section("acknowledged writes missing from every history", len(r.Lost), func(i int) string { return attemptString(r.Lost[i]) })
	section("refused writes found in a history", len(r.Forwarded), func(i int) string { return attemptString(r.Forwarded[i]) })
	section("writes accepted more than once", len(r.Duplicates), func(i int) string {
		ws := r.Duplicates[i]
		nodes := make([]string, len(ws))
		for j, w := range ws {
			nodes[j] = w.Node
		}
		return fmt.Sprintf("%q accepted %d times, on %v", ws[0].Value, len(ws), nodes)
	})
	return b.String()
}

func attemptString(a Attempt) string {
	return fmt.Sprintf("%q=%q via %s at %s: %s (status %d %s)", a.Key, a.Value, a.Node,
		a.Start.Format(time.RFC3339Nano), a.Outcome, a.Status, a.MeshError)
}
