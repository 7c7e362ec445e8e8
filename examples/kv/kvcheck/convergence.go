package kvcheck

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

// Replica is one replica's final state: its GET /kv?dump=1.
type Replica struct {
	Node string
	Dump map[string]string
}

// Divergence is a key whose value on a replica is not the one every
// replica must converge to: the value of the highest-ranked accepted
// write of that key (the conflict rule, package kvstore).
type Divergence struct {
	Key, Node string
	// Got is the replica's value, Held whether it has one.
	Got  string
	Held bool
	// Want is the key's highest-ranked accepted write; nil when no
	// history holds an accepted write of the key (the value came from
	// nowhere).
	Want *kvstore.Write
}

func (d Divergence) String() string {
	got := "nothing"
	if d.Held {
		got = fmt.Sprintf("%q", d.Got)
	}
	if d.Want == nil {
		return fmt.Sprintf("key %q on %s: holds %s, but no history has an accepted write of the key", d.Key, d.Node, got)
	}
	return fmt.Sprintf("key %q on %s: holds %s, want %q %v accepted on %s", d.Key, d.Node, got, d.Want.Value, d.Want.Rank(), d.Want.OriginNode())
}

// NotHeld is an acknowledged write a replica neither holds nor holds a
// higher-ranked write of its key instead of.
type NotHeld struct {
	Attempt Attempt
	Write   kvstore.Write // the accepted write the attempt was acknowledged for
	Node    string
	Got     string
	Held    bool
}

func (n NotHeld) String() string {
	got := "nothing"
	if n.Held {
		got = fmt.Sprintf("%q", n.Got)
	}
	return fmt.Sprintf("%s: %s holds %s for the key", attemptString(n.Attempt), n.Node, got)
}

// Convergence is the result of CheckConvergence.
type Convergence struct {
	// Replicas and Keys count what was compared; Identical reports
	// whether every replica holds exactly the same keys and values.
	Replicas, Keys int
	Identical      bool
	Diverged       []Divergence
	NotHeld        []NotHeld
}

// OK reports whether the replicas converged: identical, every key at its
// highest-ranked accepted write, every acknowledged write held or
// superseded everywhere.
func (c Convergence) OK() bool {
	return c.Identical && len(c.Diverged) == 0 && len(c.NotHeld) == 0
}

// CheckConvergence checks the replicas' final states after the last heal,
// once replication has caught up: every replica holds the same values;
// each key's value is that of its highest-ranked accepted write in any
// history (so all replicas applied the same conflict rule to the same
// writes); and every acknowledged attempt is held by every replica or
// superseded there by a higher-ranked write of its key. history is every
// replica's history (replicated entries are ignored); attempts are the
// clients' writes (only acknowledged ones are checked; one acknowledged
// but found in no history is Check's lost write, not checked here).
// Values identify writes: clients make them unique.
func CheckConvergence(replicas []Replica, history []kvstore.Write, attempts []Attempt) Convergence {
	c := Convergence{Replicas: len(replicas), Identical: true}
	winner := map[string]kvstore.Write{}
	byValue := map[string]map[string]kvstore.Write{} // key → value → its highest-ranked write
	for _, w := range acceptedOnly(history) {
		if b, ok := winner[w.Key]; !ok || w.Rank().Compare(b.Rank()) > 0 {
			winner[w.Key] = w
		}
		if byValue[w.Key] == nil {
			byValue[w.Key] = map[string]kvstore.Write{}
		}
		if b, ok := byValue[w.Key][w.Value]; !ok || w.Rank().Compare(b.Rank()) > 0 {
			byValue[w.Key][w.Value] = w
		}
	}

	keys := map[string]bool{}
	for k := range winner {
		keys[k] = true
	}
	for i, r := range replicas {
		for k := range r.Dump {
			keys[k] = true
		}
		if i > 0 && !maps.Equal(r.Dump, replicas[0].Dump) {
			c.Identical = false
		}
	}
	c.Keys = len(keys)
	for _, r := range replicas {
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			got, held := r.Dump[k]
			w, ok := winner[k]
			if ok && held && got == w.Value {
				continue
			}
			d := Divergence{Key: k, Node: r.Node, Got: got, Held: held}
			if ok {
				d.Want = &w
			}
			c.Diverged = append(c.Diverged, d)
		}
	}

	for _, a := range attempts {
		if a.Outcome != Acked {
			continue
		}
		w, ok := byValue[a.Key][a.Value]
		if !ok {
			continue
		}
		for _, r := range replicas {
			got, held := r.Dump[a.Key]
			if held && got == a.Value {
				continue
			}
			if cur, ok := byValue[a.Key][got]; held && ok && cur.Rank().Compare(w.Rank()) > 0 {
				continue // superseded
			}
			c.NotHeld = append(c.NotHeld, NotHeld{Attempt: a, Write: w, Node: r.Node, Got: got, Held: held})
		}
	}
	return c
}

// Summary renders the result for a test log (at most limit findings of
// each kind; 0 means all).
func (c Convergence) Summary(limit int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "replicas: %d, keys: %d, identical: %v\n", c.Replicas, c.Keys, c.Identical)
	list := func(name string, n int, item func(i int) string) {
		fmt.Fprintf(&b, "%s: %d\n", name, n)
		for i := range n {
			if limit > 0 && i == limit {
				fmt.Fprintf(&b, "  ... %d more\n", n-limit)
				break
			}
			fmt.Fprintf(&b, "  %s\n", item(i))
		}
	}
	list("keys not at their highest-ranked accepted write", len(c.Diverged), func(i int) string { return c.Diverged[i].String() })
	list("acknowledged writes neither held nor superseded on a replica", len(c.NotHeld), func(i int) string { return c.NotHeld[i].String() })
	return b.String()
}
