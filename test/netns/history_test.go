//go:build netns && linux

package netns

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvcheck"
)

// Shape of the random-partition history test.
const (
	historyPartitions = 6
	historyKeys       = 8
	minCut, maxCut    = 5 * time.Second, 15 * time.Second
)

// TestHistoryUnderRandomPartitions writes unique values to a small key set
// from every node at once while a nemesis applies random partitions
// (random minority of one or two nodes, the control plane on a random
// side, random lengths), heals, waits until the mesh is steady, and then
// checks the kv histories against the timeline and the clients'
// outcomes (package kvcheck): no split-brain write outside the detection
// grace (the fence bound), nothing acknowledged lost, nothing refused
// forwarded, nothing accepted twice. The kv apps replicate to each other
// through the mesh: once the clients stop, the replicas must converge
// within convergeBound, every key on its highest-ranked accepted write
// and every acknowledged write held or superseded everywhere. CW_NETNS_SEED fixes the nemesis's
// choices; CW_NETNS_STRICT=1 tolerates no split-brain write at all.
func TestHistoryUnderRandomPartitions(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CW_NETNS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CW_NETNS_SEED=%q: want an unsigned integer", v)
		}
		seed = s
	}
	t.Logf("nemesis seed %d (set CW_NETNS_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	grace := fenceBound
	if os.Getenv("CW_NETNS_STRICT") == "1" {
		grace = 0
	}

	m := startMesh(t, 5)
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()

	// Clients: one per node, writing unique values to random keys.
	var log attempts
	cctx, stopClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for idx, n := range m.nodes {
		crng := rand.New(rand.NewPCG(seed, uint64(idx)))
		wg.Go(func() {
			for seq := 0; cctx.Err() == nil; seq++ {
				key := fmt.Sprintf("k%d", crng.IntN(historyKeys))
				a := m.put(cctx, n, key, fmt.Sprintf("%s-%d", n, seq))
				if cctx.Err() != nil && a.Outcome == kvcheck.Unknown {
					// Cancelled by the test: an unknown outcome, as after
					// any timeout; still recorded for the forwarded check.
					log.add(a)
					return
				}
				log.add(a)
				if a.Outcome != kvcheck.Acked {
					sleepCtx(cctx, 50*time.Millisecond)
				}
			}
		})
	}
	defer func() {
		stopClients()
		wg.Wait()
	}()

	// Nemesis.
	var timeline []kvcheck.Partition
	for i := range historyPartitions {
		sleepCtx(ctx, time.Duration(2000+rng.IntN(2000))*time.Millisecond)
		nodes := slices.Clone(m.nodes)
		rng.Shuffle(len(nodes), func(a, b int) { nodes[a], nodes[b] = nodes[b], nodes[a] })
		minority := nodes[:1+rng.IntN(2)]
		majority := m.others(minority)
		cut := slices.Clone(minority)
		if rng.IntN(2) == 0 {
			cut = append(cut, cpName)
			minority = append(minority, cpName)
		} else {
			majority = append(majority, cpName)
		}
		slices.Sort(minority)
		length := minCut + time.Duration(rng.Int64N(int64(maxCut-minCut)))
		p := kvcheck.Partition{From: time.Now(), Sides: [][]string{majority, minority}}
		if err := m.topo.partition(cut); err != nil {
			t.Fatal(err)
		}
		sleepCtx(ctx, length)
		p.To = time.Now()
		if err := m.topo.heal(); err != nil {
			t.Fatal(err)
		}
		timeline = append(timeline, p)
		t.Logf("partition %d: %v | %v for %v", i, majority, minority, p.To.Sub(p.From).Round(time.Millisecond))
		sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
		err := m.waitSteady(sctx)
		scancel()
		if err != nil {
			t.Fatalf("partition %d: mesh not steady 60s after the heal: %v (logs in %s)", i, err, m.dir)
		}
	}
	sleepCtx(ctx, 2*time.Second)
	stopClients()
	wg.Wait()

	// Every replica catches up with every write accepted anywhere, and
	// all end on the same values (the conflict rule decides each key).
	stopped := time.Now()
	took := m.checkConvergence(t, timeline[len(timeline)-1].To, "the final heal", log.list())
	fmt.Fprintf(os.Stdout, "RESULT convergence after_clients_stopped=%v after_final_heal=%v\n",
		took.Round(time.Millisecond), stopped.Add(took).Sub(timeline[len(timeline)-1].To).Round(time.Millisecond))

	hctx, hcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer hcancel()
	accepted, err := m.histories(hctx)
	if err != nil {
		t.Fatal(err)
	}
	rep := kvcheck.Check(timeline, accepted, log.list(), kvcheck.Options{DetectionGrace: grace})
	if !rep.OK() {
		t.Errorf("history check failed (detection grace %v; logs in %s):\n%s", grace, m.dir, rep.Summary(20))
		return
	}
	t.Logf("history check passed (detection grace %v):\n%s", grace, rep.Summary(5))
}
