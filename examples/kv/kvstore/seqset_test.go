package kvstore

import (
	"math/rand/v2"
	"testing"
)

// TestSeqSet: numbers added in any order are each new once, and the set
// keeps one span per run of consecutive numbers.
func TestSeqSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		var q seqSet
		nums := rng.Perm(200)
		present := map[uint64]bool{}
		for _, n := range nums[:150] {
			v := uint64(n + 1)
			if !q.add(v) {
				t.Fatalf("round %d: %d reported seen on first add", round, v)
			}
			present[v] = true
			if q.add(v) {
				t.Fatalf("round %d: %d reported new on second add", round, v)
			}
		}
		runs := 0
		for v := uint64(1); v <= 200; v++ {
			if present[v] && !present[v-1] {
				runs++
			}
		}
		if len(q.spans) != runs {
			t.Fatalf("round %d: %d spans for %d runs: %v", round, len(q.spans), runs, q.spans)
		}
		for i, s := range q.spans {
			if s.lo > s.hi || (i > 0 && q.spans[i-1].hi+1 >= s.lo) {
				t.Fatalf("round %d: spans not sorted, disjoint and apart: %v", round, q.spans)
			}
		}
	}
}
