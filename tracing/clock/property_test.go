package clock

import (
	"math/rand/v2"
	"net/http"
	"testing"
)

// event is one step of a simulated mesh.
type event struct {
	node    int
	lamport uint64
	vec     Vector
	anc     []uint64 // bitset of events that happened before this one
}

type message struct {
	h    http.Header
	from int // index of the send event
}

// simulate runs steps random local, send and receive events among n nodes
// whose vectors keep at most k entries, and returns the events with their
// true happens-before sets (transitive closure of program order and
// message delivery).
func simulate(t *testing.T, seed uint64, n, k, steps int) []event {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	clocks := make([]*Clock, n)
	for i := range clocks {
		clocks[i] = mustClock(t, Config{NodeID: "node", Incarnation: uint64(i + 1), MaxEntries: k})
	}
	words := (steps + 63) / 64
	var events []event
	lastOn := make([]int, n)
	for i := range lastOn {
		lastOn[i] = -1
	}
	inbox := make([][]message, n)
	add := func(node int, st Stamp, preds ...int) int {
		v, err := ParseVector(st.Vector)
		if err != nil {
			t.Fatalf("own vector %q: %v", st.Vector, err)
		}
		e := event{node: node, lamport: st.Lamport, vec: v, anc: make([]uint64, words)}
		for _, p := range preds {
			if p < 0 {
				continue
			}
			e.anc[p/64] |= 1 << (p % 64)
			for w := range e.anc {
				e.anc[w] |= events[p].anc[w]
			}
		}
		events = append(events, e)
		lastOn[node] = len(events) - 1
		return len(events) - 1
	}
	for len(events) < steps {
		node := rng.IntN(n)
		switch op := rng.IntN(10); {
		case op < 2: // local event
			st, err := clocks[node].Tick()
			if err != nil {
				t.Fatal(err)
			}
			add(node, st, lastOn[node])
		case op < 6: // send to a random other node
			to := rng.IntN(n)
			h := http.Header{}
			st, err := clocks[node].Send(h)
			if err != nil {
				t.Fatal(err)
			}
			id := add(node, st, lastOn[node])
			inbox[to] = append(inbox[to], message{h: h, from: id})
		default: // receive a pending message, in random order
			if len(inbox[node]) == 0 {
				continue
			}
			i := rng.IntN(len(inbox[node]))
			m := inbox[node][i]
			inbox[node] = append(inbox[node][:i], inbox[node][i+1:]...)
			st, err := clocks[node].Receive(m.h)
			if err != nil {
				t.Fatal(err)
			}
			add(node, st, lastOn[node], m.from)
		}
	}
	return events
}

func (e event) after(i int) bool { return e.anc[i/64]&(1<<(i%64)) != 0 }

func truth(events []event, i, j int) Order {
	switch {
	case i == j:
		return Equal
	case events[j].after(i):
		return Before
	case events[i].after(j):
		return After
	default:
		return Concurrent
	}
}

func TestPropertyExactWithoutPruning(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		events := simulate(t, seed, 8, 16, 400)
		for i := range events {
			for j := range events {
				want := truth(events, i, j)
				if got := Compare(events[i].vec, events[j].vec); got != want {
					t.Fatalf("seed %d: Compare(#%d %s, #%d %s) = %v, want %v", seed, i, events[i].vec, j, events[j].vec, got, want)
				}
				if want == Before && events[i].lamport >= events[j].lamport {
					t.Fatalf("seed %d: #%d→#%d but lamport %d >= %d", seed, i, j, events[i].lamport, events[j].lamport)
				}
			}
		}
	}
}

func TestPropertyPrunedNeverLies(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		events := simulate(t, seed, 24, 4, 600)
		counts := map[Order]int{}
		for i := range events {
			for j := range events {
				want := truth(events, i, j)
				got := Compare(events[i].vec, events[j].vec)
				counts[got]++
				if got != Unknown && got != want {
					t.Fatalf("seed %d: Compare(#%d %s, #%d %s) = %v, truth %v", seed, i, events[i].vec, j, events[j].vec, got, want)
				}
				if len(events[i].vec.Entries) > 4 {
					t.Fatalf("vector over the bound: %s", events[i].vec)
				}
				if want == Before && events[i].lamport >= events[j].lamport {
					t.Fatalf("seed %d: #%d→#%d but lamport %d >= %d", seed, i, j, events[i].lamport, events[j].lamport)
				}
			}
		}
		if counts[Before] == 0 || counts[Unknown] == 0 {
			t.Fatalf("seed %d: degenerate simulation, answers %v", seed, counts)
		}
	}
}
