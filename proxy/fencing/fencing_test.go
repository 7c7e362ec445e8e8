package fencing

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

func TestQuorum(t *testing.T) {
	for _, tc := range []struct {
		expected, reachable, needed int
		holds                       bool
	}{
		{0, 0, 1, true}, // nothing known yet
		{1, 1, 1, true},
		{2, 1, 2, false}, // a pair split in two: neither side holds it
		{3, 2, 2, true},
		{3, 1, 2, false},
		{4, 2, 3, false}, // an even split: nobody writes
		{5, 3, 3, true},
		{1000, 500, 501, false},
	} {
		q := NewQuorum(tc.expected, tc.reachable)
		if q.Needed != tc.needed || q.Holds() != tc.holds {
			t.Errorf("NewQuorum(%d, %d) = %+v holds=%v; want needed %d holds %v",
				tc.expected, tc.reachable, q, q.Holds(), tc.needed, tc.holds)
		}
	}
}

func TestIsWrite(t *testing.T) {
	p := &Policy{GRPCWrites: []string{"/shop.Inventory/Reserve", "/shop.Orders/*"}}
	for _, tc := range []struct {
		method, path, ct string
		proto            int
		want             bool
	}{
		{"GET", "/items", "", 1, false},
		{"HEAD", "/items", "", 1, false},
		{"OPTIONS", "/", "", 1, false},
		{"TRACE", "/", "", 1, false},
		{"POST", "/items", "application/json", 1, true},
		{"PUT", "/items/1", "", 2, true},
		{"PATCH", "/items/1", "", 1, true},
		{"DELETE", "/items/1", "", 1, true},
		{"POST", "/shop.Inventory/Reserve", "application/grpc", 2, true},
		{"POST", "/shop.Inventory/GetStock", "application/grpc", 2, false},
		{"POST", "/shop.Inventory/GetStock", "application/grpc+proto", 2, false},
		{"POST", "/shop.Orders/Create", "application/grpc", 2, true},
		{"POST", "/shop.OrdersX/Create", "application/grpc", 2, false},
		// Not gRPC: a POST over HTTP/1 is a write whatever its type says.
		{"POST", "/shop.Inventory/GetStock", "application/grpc", 1, true},
		{"POST", "/x", "application/grpcweb", 2, true},
	} {
		r, _ := http.NewRequest(tc.method, "http://svc"+tc.path, nil)
		r.ProtoMajor = tc.proto
		if tc.ct != "" {
			r.Header.Set("Content-Type", tc.ct)
		}
		if got := p.IsWrite(r); got != tc.want {
			t.Errorf("IsWrite(%s %s %q h%d) = %v, want %v", tc.method, tc.path, tc.ct, tc.proto, got, tc.want)
		}
	}
	var none *Policy
	r, _ := http.NewRequest("POST", "http://svc/a.B/C", nil)
	r.ProtoMajor = 2
	r.Header.Set("Content-Type", "application/grpc")
	if none.IsWrite(r) {
		t.Error("a gRPC call is a write without a policy listing it")
	}
}

// clock is a manual time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestFence(requireLease bool) (*Fence, *clock) {
	c := &clock{t: time.Unix(1000, 0)}
	f := New(requireLease)
	f.now = c.now
	f.stability = 0 // the heal hysteresis has its own test
	f.mu.Lock()
	f.recomputeLocked()
	f.mu.Unlock()
	return f, c
}

func TestGossipViewAlone(t *testing.T) {
	f, _ := newTestFence(false)
	defer f.Close()
	if f.Fenced() {
		t.Fatal("fenced with no verdict and no control plane")
	}
	f.SetLocal(Verdict{Fenced: true, Reason: "2 of 5 reachable", Quorum: NewQuorum(5, 2)})
	st := f.State()
	if !f.Fenced() || st.Source != "gossip" || st.Quorum.Needed != 3 {
		t.Fatalf("state %+v, want fenced by gossip", st)
	}
	f.SetEnabled(false)
	if f.Fenced() || f.State().Enabled {
		t.Fatal("fenced although fencing is off")
	}
	f.SetEnabled(true)
	f.SetLocal(Verdict{Quorum: NewQuorum(5, 4)})
	if f.Fenced() {
		t.Fatal("still fenced after the gossip view regained the quorum")
	}
}

func TestLease(t *testing.T) {
	f, c := newTestFence(true)
	defer f.Close()
	if !f.Fenced() || f.State().Source != "lease" {
		t.Fatalf("writes admitted before the control plane's first verdict: %+v", f.State())
	}
	f.SetRemote(Verdict{Epoch: 7, Quorum: NewQuorum(3, 3)}, 10*time.Second)
	if f.Fenced() || f.Epoch() != 7 {
		t.Fatalf("state %+v epoch %d, want writable under epoch 7", f.State(), f.Epoch())
	}
	c.add(9 * time.Second)
	if f.Fenced() {
		t.Fatal("fenced before the lease ran out")
	}
	c.add(time.Second)
	if !f.Fenced() || f.State().Source != "lease" {
		t.Fatalf("state %+v, want fenced when the lease ran out", f.State())
	}
	f.SetRemote(Verdict{Epoch: 8, Quorum: NewQuorum(3, 2)}, 10*time.Second)
	if f.Fenced() {
		t.Fatal("still fenced after a renewal")
	}
	// The safer source wins: the gossip view alone is enough to fence.
	f.SetLocal(Verdict{Fenced: true, Reason: "1 of 3", Quorum: NewQuorum(3, 1)})
	if !f.Fenced() {
		t.Fatal("control plane's verdict overrode a fenced gossip view")
	}
	f.SetLocal(Verdict{Quorum: NewQuorum(3, 3)})
	f.SetRemote(Verdict{Fenced: true, Reason: "minority", Epoch: 9}, 10*time.Second)
	if st := f.State(); !st.Fenced || st.Source != "control-plane" || st.Epoch != 9 {
		t.Fatalf("state %+v, want fenced by the control plane under epoch 9", st)
	}
}

func TestLeaseTimerRecomputes(t *testing.T) {
	f := New(true)
	defer f.Close()
	f.SetRemote(Verdict{Epoch: 1}, 20*time.Millisecond)
	if f.State().Fenced {
		t.Fatal("fenced with a fresh lease")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !f.State().Fenced { // State alone, without Fenced's own check
		if time.Now().After(deadline) {
			t.Fatal("the published state never showed the expired lease")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAdmitEpochs(t *testing.T) {
	f, _ := newTestFence(false)
	defer f.Close()
	if !f.Admit(0) {
		t.Fatal("a write without an epoch was refused")
	}
	if !f.Admit(5) || f.Epoch() != 5 {
		t.Fatalf("epoch 5 not adopted: newest %d", f.Epoch())
	}
	if !f.Admit(5) {
		t.Fatal("the current epoch was refused")
	}
	if f.Admit(4) {
		t.Fatal("a stale epoch was admitted")
	}
	if f.State().Epoch != 5 {
		t.Fatalf("published epoch %d, want 5", f.State().Epoch)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { f.Admit(uint64(10 + i)) })
	}
	wg.Wait()
	if f.Epoch() != 59 {
		t.Fatalf("newest after concurrent admits = %d, want 59", f.Epoch())
	}
}

// A lease granted before the gossip view lost the quorum does not make the
// sidecar writable again when the view recovers: a verdict issued since
// (with the quorum side's new epoch) is needed.
func TestLeaseFromBeforeTheSplitIsNotReused(t *testing.T) {
	f, _ := newTestFence(true)
	defer f.Close()
	f.SetRemote(Verdict{Epoch: 3}, time.Minute)
	f.SetLocal(Verdict{Fenced: true, Reason: "2 of 5"})
	f.SetLocal(Verdict{Quorum: NewQuorum(5, 5)}) // healed
	if st := f.State(); !st.Fenced || st.Source != "lease" {
		t.Fatalf("state %+v after the heal, want fenced until a new verdict", st)
	}
	f.SetRemote(Verdict{Epoch: 4}, time.Minute)
	if f.Fenced() || f.Epoch() != 4 {
		t.Fatalf("fenced %v epoch %d after a new verdict, want writable under 4", f.Fenced(), f.Epoch())
	}
}

// After a fence, writes resume only once this side has held the quorum for
// the stability period; a flap within it starts the period again.
func TestHealStability(t *testing.T) {
	f, c := newTestFence(false)
	defer f.Close()
	f.SetStability(2 * time.Second)
	var flips []bool
	f.OnChange(func(_, to *State) { flips = append(flips, to.Fenced) })
	f.SetLocal(Verdict{Fenced: true, Reason: "1 of 3"})
	f.SetLocal(Verdict{Quorum: NewQuorum(3, 3)})
	if !f.Fenced() {
		t.Fatal("writable at once after the view recovered")
	}
	c.add(time.Second)
	f.SetLocal(Verdict{Fenced: true, Reason: "flap"})
	f.SetLocal(Verdict{Quorum: NewQuorum(3, 3)})
	c.add(1500 * time.Millisecond)
	f.SetLocal(Verdict{Quorum: NewQuorum(3, 3)}) // recompute: 1.5 s since the flap
	if !f.Fenced() {
		t.Fatal("writable before 2 s of stability since the last flap")
	}
	c.add(600 * time.Millisecond)
	f.SetLocal(Verdict{Quorum: NewQuorum(3, 3)})
	if f.Fenced() {
		t.Fatalf("still fenced after the stability period: %+v", f.State())
	}
	if len(flips) != 2 || !flips[0] || flips[1] {
		t.Fatalf("change events %v, want [fenced writable]", flips)
	}
}
