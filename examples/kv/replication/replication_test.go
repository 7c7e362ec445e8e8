package replication_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
	"github.com/causeway-mesh/causeway/examples/kv/replication"
)

// refusal is how the fake mesh answers a replication request instead of
// delivering it ("" delivers).
type refusal string

const (
	deliver   refusal = ""
	fenced    refusal = "fenced"              // 503 x-mesh-error fenced
	stale     refusal = "stale_epoch"         // 409 x-mesh-error stale_epoch
	noUp      refusal = "no_healthy_upstream" // 503 x-mesh-error no_healthy_upstream
	hang      refusal = "hang"                // no answer until the caller gives up
	appReject refusal = "app-400"             // the peer app's own 400
)

// cluster is n replicas, each with a store, its handler and its own fake
// sidecar: an HTTP server that routes PUT /replicate by x-mesh-endpoint to
// the named replica's handler, or refuses as rule says.
type cluster struct {
	t        *testing.T
	names    []string
	stores   map[string]*kvstore.Store
	handlers map[string]http.Handler
	reps     map[string]*replication.Replicator
	requests atomic.Int64

	mu   sync.Mutex
	rule func(from, to string) refusal
}

// endpoint is the fake mesh endpoint of replica name.
func endpoint(name string) string { return name + ":15006" }

func newCluster(t *testing.T, n int, cfg replication.Config) *cluster {
	t.Helper()
	c := &cluster{t: t, stores: map[string]*kvstore.Store{}, handlers: map[string]http.Handler{},
		reps: map[string]*replication.Replicator{}}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("kv-%d", i)
		c.names = append(c.names, name)
		c.stores[name] = kvstore.New(name, kvstore.WithLastWriterWins())
		c.handlers[name] = kvstore.Handler(c.stores[name])
	}
	for _, name := range c.names {
		mesh := httptest.NewServer(c.sidecar(name))
		t.Cleanup(mesh.Close)
		pc := cfg
		pc.Mesh = strings.TrimPrefix(mesh.URL, "http://")
		pc.Peers = nil
		for _, peer := range c.names {
			if peer != name {
				pc.Peers = append(pc.Peers, endpoint(peer))
			}
		}
		r, err := replication.New(c.stores[name], pc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		c.reps[name] = r
	}
	return c
}

// refuse sets the rule every replication request is judged by.
func (c *cluster) refuse(rule func(from, to string) refusal) {
	c.mu.Lock()
	c.rule = rule
	c.mu.Unlock()
}

// sidecar is the fake outbound sidecar of replica from.
func (c *cluster) sidecar(from string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		to := strings.TrimSuffix(r.Header.Get(replication.EndpointHeader), ":15006")
		h, ok := c.handlers[to]
		if r.Host != replication.DefaultService || !ok || len(r.Header.Values(replication.EndpointHeader)) != 1 {
			w.Header().Set("X-Mesh-Error", "bad_request")
			http.Error(w, fmt.Sprintf("host %q endpoint %q", r.Host, r.Header.Values(replication.EndpointHeader)), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		rule := c.rule
		c.mu.Unlock()
		ref := deliver
		if rule != nil {
			ref = rule(from, to)
		}
		switch ref {
		case deliver:
			r.Header.Del(replication.EndpointHeader) // never forwarded
			h.ServeHTTP(w, r)
		case hang:
			// Read the body first: only then does the server watch the
			// connection and cancel the context when the caller gives up.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		case appReject:
			w.Header().Set(kvstore.NodeHeader, to)
			http.Error(w, "cannot apply", http.StatusBadRequest)
		case stale:
			w.Header().Set("X-Mesh-Error", string(ref))
			http.Error(w, "stale", http.StatusConflict)
		default:
			w.Header().Set("X-Mesh-Error", string(ref))
			http.Error(w, string(ref), http.StatusServiceUnavailable)
		}
	})
}

// put accepts a client write on replica name, as its handler would.
func (c *cluster) put(name, key, value string, epoch uint64) kvstore.Write {
	return c.stores[name].Put(key, value, epoch)
}

// waitIdle waits until every replicator has nothing left to send.
func (c *cluster) waitIdle(limit time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		idle := true
		for _, r := range c.reps {
			idle = idle && r.Status().Idle()
		}
		if idle {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("replication not idle after %v: %s", limit, c.statuses())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *cluster) statuses() string {
	var b strings.Builder
	for _, n := range c.names {
		s, _ := json.Marshal(c.reps[n].Status())
		fmt.Fprintf(&b, "\n%s", s)
	}
	return b.String()
}

// requireConverged checks that every replica holds the same values, and
// that they are want.
func (c *cluster) requireConverged(want map[string]string) {
	c.t.Helper()
	for _, n := range c.names {
		if got := c.stores[n].Dump(); !maps.Equal(got, want) {
			c.t.Errorf("%s holds %v, want %v", n, got, want)
		}
	}
}

// fast is a configuration whose retries are quick.
var fast = replication.Config{MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, RequestTimeout: 200 * time.Millisecond}

// TestConvergeAfterRefusals: while the mesh refuses everything to and
// from kv-3 (fenced, stale epoch, no endpoint, requests that never
// answer), kv-1 and kv-2 replicate to each other and kv-3 stays behind;
// once the refusals stop, all three hold the same values, and every
// write is in every history once.
func TestConvergeAfterRefusals(t *testing.T) {
	c := newCluster(t, 3, fast)
	var round atomic.Int64
	kinds := []refusal{fenced, stale, noUp, hang}
	c.refuse(func(from, to string) refusal {
		if from == "kv-3" || to == "kv-3" {
			return kinds[round.Add(1)%int64(len(kinds))]
		}
		return deliver
	})
	want := map[string]string{}
	var accepted []kvstore.Write
	for i := range 30 {
		node := c.names[i%2]
		key := fmt.Sprintf("k%d", i%5)
		w := c.put(node, key, fmt.Sprintf("%s-%d", node, i), 1)
		accepted = append(accepted, w)
		want[key] = w.Value
	}
	w := c.put("kv-3", "only-on-3", "kv-3-0", 1) // accepted before kv-3 was cut off, say
	accepted = append(accepted, w)
	want["only-on-3"] = w.Value

	// kv-1 and kv-2 catch up with each other; kv-3 does not.
	deadline := time.Now().Add(5 * time.Second)
	for !maps.Equal(c.stores["kv-1"].Dump(), c.stores["kv-2"].Dump()) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if d1, d2 := c.stores["kv-1"].Dump(), c.stores["kv-2"].Dump(); !maps.Equal(d1, d2) || len(d1) != 5 {
		t.Fatalf("kv-1 %v and kv-2 %v did not converge while kv-3 was cut off", d1, d2)
	}
	if d3 := c.stores["kv-3"].Dump(); len(d3) != 1 {
		t.Fatalf("kv-3 holds %v while every replication to it is refused", d3)
	}
	toKV3 := func() replication.PeerStatus { return c.reps["kv-1"].Status().Peers[1] }
	for toKV3().Failures == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := toKV3(); st.Peer != endpoint("kv-3") || st.Queued != 15 || st.Failures == 0 || st.LastError == "" || st.Delivered != 0 {
		t.Errorf("kv-1's queue for kv-3: %+v, want 15 queued, none delivered, failures and the last error", st)
	}

	c.refuse(nil)
	c.waitIdle(10 * time.Second)
	c.requireConverged(want)
	for _, n := range c.names {
		h := c.stores[n].History()
		if len(h) != len(accepted) {
			t.Errorf("%s's history has %d entries, want one per accepted write (%d)", n, len(h), len(accepted))
		}
		seen := map[string]bool{}
		for _, e := range h {
			id := fmt.Sprintf("%s/%d", e.OriginNode(), e.OriginSeq)
			if seen[id] {
				t.Errorf("%s recorded %s twice", n, id)
			}
			seen[id] = true
			if wantKind := kvstore.KindReplicated; e.Origin != n && e.Kind != wantKind {
				t.Errorf("%s: %s from %s recorded as %q, want %q", n, e.Value, e.Origin, e.Kind, wantKind)
			}
		}
	}
}

// TestConcurrentWritesConverge: every replica accepts writes to the same
// keys at once, under different epochs, while the mesh refuses a share of
// the requests at random; afterwards all hold, for every key, the write of
// the highest rank any of them accepted.
func TestConcurrentWritesConverge(t *testing.T) {
	c := newCluster(t, 3, fast)
	var n atomic.Int64
	c.refuse(func(_, _ string) refusal {
		if n.Add(1)%3 == 0 {
			return fenced
		}
		return deliver
	})
	var wg sync.WaitGroup
	for _, node := range c.names {
		wg.Go(func() {
			for i := range 100 {
				c.put(node, fmt.Sprintf("k%d", i%4), fmt.Sprintf("%s-%d", node, i), uint64(1+i/50))
			}
		})
	}
	wg.Wait()
	c.refuse(nil)
	c.waitIdle(10 * time.Second)

	best := map[string]kvstore.Write{}
	for _, node := range c.names {
		for _, w := range c.stores[node].History() {
			if b, ok := best[w.Key]; w.Accepted() && (!ok || w.Rank().Compare(b.Rank()) > 0) {
				best[w.Key] = w
			}
		}
	}
	want := map[string]string{}
	for k, w := range best {
		want[k] = w.Value
	}
	c.requireConverged(want)
}

// TestQueueBoundFullSync: a peer that falls more than QueueLimit writes
// behind is marked for a full sync rather than losing writes silently,
// client writes are never refused, and once it can be reached it gets
// the current write of every key and converges.
func TestQueueBoundFullSync(t *testing.T) {
	cfg := fast
	cfg.QueueLimit = 4
	cfg.RequestTimeout = 500 * time.Millisecond
	c := newCluster(t, 2, cfg)
	// The first write hangs in flight, so that the sender cannot act on
	// the overflow before the test has looked; later attempts are fenced.
	var hung atomic.Bool
	c.refuse(func(_, to string) refusal {
		switch {
		case to != "kv-2":
			return deliver
		case hung.CompareAndSwap(false, true):
			return hang
		}
		return fenced
	})
	want := map[string]string{}
	w := c.put("kv-1", "k0", "v0", 1)
	want[w.Key] = w.Value
	deadline := time.Now().Add(5 * time.Second)
	for c.requests.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < 20; i++ {
		w := c.put("kv-1", fmt.Sprintf("k%d", i%3), fmt.Sprintf("v%d", i), 1)
		want[w.Key] = w.Value
	}
	st := c.reps["kv-1"].Status().Peers[0]
	if !st.NeedsSync || st.Queued != 1 {
		t.Fatalf("after 20 writes to a queue of 4: %+v, want a full sync due and only the write in flight queued", st)
	}
	if c.reps["kv-1"].Status().Idle() {
		t.Error("a replicator with a sync due reports idle")
	}

	c.refuse(nil)
	c.waitIdle(5 * time.Second)
	c.requireConverged(want)
	st = c.reps["kv-1"].Status().Peers[0]
	if st.Syncs != 1 {
		t.Errorf("syncs: %d, want 1", st.Syncs)
	}
	// kv-2 got the write in flight when the queue overflowed, then one
	// write per key: not the 20.
	h := c.stores["kv-2"].History()
	if len(h) > 1+len(want) {
		t.Errorf("kv-2's history has %d entries after a full sync of %d keys: %v", len(h), len(want), h)
	}

	// After the sync the queue works as before.
	w = c.put("kv-1", "after", "sync", 1)
	want[w.Key] = w.Value
	c.waitIdle(5 * time.Second)
	c.requireConverged(want)
}

// TestRejectedWriteDropped: a write the peer's app refuses for good (400)
// is dropped and counted, and does not hold up the writes behind it.
func TestRejectedWriteDropped(t *testing.T) {
	c := newCluster(t, 2, fast)
	c.refuse(func(_, _ string) refusal { return appReject })
	c.put("kv-1", "a", "1", 1)
	deadline := time.Now().Add(5 * time.Second)
	for c.reps["kv-1"].Status().Peers[0].Rejected == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	c.refuse(nil)
	c.put("kv-1", "b", "2", 1)
	c.waitIdle(5 * time.Second)
	st := c.reps["kv-1"].Status().Peers[0]
	if st.Rejected != 1 || st.Delivered != 1 || !strings.Contains(st.LastError, "400") {
		t.Errorf("status %+v, want 1 rejected (400), 1 delivered", st)
	}
	if got := c.stores["kv-2"].Dump(); !maps.Equal(got, map[string]string{"b": "2"}) {
		t.Errorf("kv-2 holds %v, want only b", got)
	}
}

// TestCloseStopsSenders: Close returns promptly even with a request in
// flight that would not end for a minute, and the write stays counted as
// undelivered.
func TestCloseStopsSenders(t *testing.T) {
	cfg := fast
	cfg.RequestTimeout = time.Minute
	c := newCluster(t, 2, cfg)
	c.refuse(func(_, _ string) refusal { return hang })
	c.put("kv-1", "a", "1", 1)
	deadline := time.Now().Add(5 * time.Second)
	for c.requests.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	go func() {
		c.reps["kv-1"].Close()
		c.reps["kv-2"].Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s with a request in flight")
	}
	if st := c.reps["kv-1"].Status().Peers[0]; st.Queued != 1 || st.Delivered != 0 {
		t.Errorf("after Close: %+v, want the write still queued", st)
	}
	// A write accepted after Close is queued, never sent.
	before := c.requests.Load()
	c.put("kv-1", "b", "2", 1)
	time.Sleep(50 * time.Millisecond)
	if got := c.requests.Load(); got != before {
		t.Errorf("%d requests sent after Close", got-before)
	}
}

func TestConfigValidation(t *testing.T) {
	s := kvstore.New("kv-1")
	for _, tc := range []struct {
		name string
		cfg  replication.Config
		want string
	}{
		{"no peers", replication.Config{Mesh: "127.0.0.1:15001"}, "no peers"},
		{"bad peer", replication.Config{Peers: []string{"kv-2"}, Mesh: "127.0.0.1:15001"}, "want HOST:PORT"},
		{"peer twice", replication.Config{Peers: []string{"a:1", "a:1"}, Mesh: "127.0.0.1:15001"}, "listed twice"},
		{"no mesh", replication.Config{Peers: []string{"a:1"}}, "mesh address"},
		{"negative limit", replication.Config{Peers: []string{"a:1"}, Mesh: "127.0.0.1:15001", QueueLimit: -1}, "queue limit"},
	} {
		r, err := replication.New(s, tc.cfg)
		if err == nil {
			r.Close()
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestStatusHandler(t *testing.T) {
	c := newCluster(t, 3, fast)
	for _, tc := range []struct {
		name      string
		r         *replication.Replicator
		wantPeers []string
	}{
		{"replica", c.reps["kv-2"], []string{endpoint("kv-1"), endpoint("kv-3")}},
		{"single instance", nil, []string{}},
	} {
		rec := httptest.NewRecorder()
		replication.StatusHandler(tc.r, "kv-2").ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/replication", nil))
		var s replication.Status
		if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
			t.Fatalf("%s: %v: %s", tc.name, err, rec.Body)
		}
		var peers []string
		for _, p := range s.Peers {
			peers = append(peers, p.Peer)
		}
		if s.Node != "kv-2" || rec.Header().Get(kvstore.NodeHeader) != "kv-2" || !slices.Equal(peers, tc.wantPeers) {
			t.Errorf("%s: %s, want node kv-2 and peers %v", tc.name, rec.Body, tc.wantPeers)
		}
	}
}
