package proxy

import (
	"sync"
	"testing"

	"github.com/causeway-mesh/causeway/proxy/config"
	"github.com/causeway-mesh/causeway/resilience"
)

// TestUpstreamStateIsShared: requests that find no state for a service at
// the same moment all get the same one, so the retry budget and its
// reserve exist once (a second state would let retries past the budget).
func TestUpstreamStateIsShared(t *testing.T) {
	s, err := New(testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	pol := resilience.DefaultPolicy()
	const n = 64
	got := make([]*upstreamState, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			got[i] = s.upstream("flaky", &pol)
		}()
	}
	start.Done()
	done.Wait()
	for i, st := range got {
		if st != got[0] {
			t.Fatalf("request %d got another state than request 0: the budget exists twice", i)
		}
	}
	// Changed settings replace the state once; the same settings keep it.
	pol.Budget.Ratio /= 2
	changed := s.upstream("flaky", &pol)
	if changed == got[0] || s.upstream("flaky", &pol) != changed {
		t.Fatal("changed budget settings did not replace the state exactly once")
	}
}
