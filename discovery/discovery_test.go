package discovery

import (
	"fmt"
	"net"
	"strings"

	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/causeway-mesh/causeway/discovery/discoverytest"

	"context"
)

func itoa(i int) string { return strconv.Itoa(i) }

func TestMetaRoundTrip(t *testing.T) {
	in := Meta{Service: "orders", Inbound: "10.0.0.7:15006", Protocol: "grpc", Zone: "eu-1a", Version: "v2",
		Weight: 3, Ready: true, Incarnation: 1764000000123}
	b, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeMeta(b)
	if err != nil || out != in {
		t.Fatalf("round trip: got %+v, %v; want %+v", out, err, in)
	}
	if len(b) > 64 {
		t.Errorf("encoded %d bytes; want a compact encoding (≤64 here)", len(b))
	}
	// A later version may append fields: they are ignored.
	if out2, err := DecodeMeta(append(b, 9, 9, 9)); err != nil || out2 != in {
		t.Errorf("with trailing bytes: %+v, %v", out2, err)
	}
}

func TestDecodeMetaRefusesBadInput(t *testing.T) {
	good, _ := Meta{Service: "a", Inbound: "h:1"}.Encode()
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"one byte", []byte{1}},
		{"version 0", append([]byte{0}, good[1:]...)},
		{"newer version", append([]byte{2}, good[1:]...)},
		{"truncated string", good[:len(good)-1]},
		{"length past end", []byte{1, 0, 1, 0, 200}},
	}
	for _, c := range cases {
		if _, err := DecodeMeta(c.in); err == nil {
			t.Errorf("%s: decoded without error", c.name)
		}
	}
	big := Meta{Service: "s", Version: string(make([]byte, 600))}
	if _, err := big.Encode(); err == nil {
		t.Error("metadata over 512 bytes encoded without error")
	}
}

func FuzzDecodeMeta(f *testing.F) {
	b, _ := Meta{Service: "orders", Inbound: "10.0.0.7:15006", Ready: true, Weight: 2}.Encode()
	f.Add(b)
	f.Add([]byte{1, 3, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeMeta(in)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to something that decodes the same.
		again, err := m.Encode()
		if err != nil {
			return // decodable but over the size limit once normalised
		}
		m2, err := DecodeMeta(again)
		if err != nil || m2 != m {
			t.Fatalf("re-decode: %+v, %v; want %+v", m2, err, m)
		}
	})
}

// cluster runs agents over a fault-injecting loopback network.
type cluster struct {
	t      *testing.T
	net    *discoverytest.Network
	agents map[string]*Agent
	cancel map[string]context.CancelFunc
	done   map[string]chan struct{}
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, net: discoverytest.NewNetwork(), agents: map[string]*Agent{}, cancel: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}}
	t.Cleanup(func() {
		for name := range c.agents {
			c.stop(name)
		}
	})
	return c
}

func testLogger() *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type agentOpt func(*Config, *Meta)

// add starts an agent named name serving service, joining seeds.
func (c *cluster) add(name, service string, seeds []string, opts ...agentOpt) *Agent {
	c.t.Helper()
	tr, err := c.net.Transport(name)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := Config{NodeName: name, Bind: tr.Addr(), Join: seeds, Transport: tr, Logger: testLogger().With("node", name),
		ReconnectInterval: 500 * time.Millisecond}
	meta := Meta{Service: service, Inbound: "127.0.0.1:" + itoa(10000+len(c.agents)), Protocol: "http1", Ready: true}
	for _, o := range opts {
		o(&cfg, &meta)
	}
	a, err := New(cfg, meta)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	c.agents[name], c.cancel[name], c.done[name] = a, cancel, done
	return a
}

// stop ends an agent gracefully (leave) if it is still running.
func (c *cluster) stop(name string) {
	if cancel, ok := c.cancel[name]; ok {
		cancel()
		<-c.done[name]
		delete(c.cancel, name)
	}
}

// crash stops an agent without a leave.
func (c *cluster) crash(name string) {
	c.agents[name].Crash()
	c.stop(name) // its loops end; Leave after Shutdown is a no-op error
}

func (c *cluster) wait(timeout time.Duration, what string, cond func() bool) time.Duration {
	c.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			c.t.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, c.dump())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func (c *cluster) dump() string {
	var s string
	for name, a := range c.agents {
		s += fmt.Sprintf("  %s: %v\n", name, a.Members())
	}
	return s
}

// sees reports whether observer's view has node in state.
func sees(observer *Agent, node string, state State) bool {
	for _, m := range observer.Members() {
		if m.Name == node {
			return m.State == state
		}
	}
	return false
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// start5 starts n0…n4 (n0 seeds the rest) and waits until every view is whole.
func start5(t *testing.T) (*cluster, []string) {
	c := newCluster(t)
	nodes := names("n", 5)
	seed := c.add(nodes[0], "orders", nil)
	for _, n := range nodes[1:] {
		svc := "orders"
		if n == "n4" {
			svc = "inventory"
		}
		c.add(n, svc, []string{seed.Addr()})
	}
	c.wait(10*time.Second, "5 alive in every view", func() bool {
		for _, a := range c.agents {
			if a.Snapshot().Alive != 5 {
				return false
			}
		}
		return true
	})
	return c, nodes
}

func TestJoinDiscoversEndpoints(t *testing.T) {
	c, _ := start5(t)
	for name, a := range c.agents {
		s := a.Snapshot()
		if len(s.Services["orders"]) != 4 || len(s.Services["inventory"]) != 1 {
			t.Errorf("%s: services %v, want 4 orders and 1 inventory endpoints", name, s.Services)
		}
		if !a.Joined() {
			t.Errorf("%s: not joined", name)
		}
	}
}

func TestCrashedMemberLeavesEveryView(t *testing.T) {
	c, nodes := start5(t)
	start := time.Now()
	c.crash("n3")
	c.wait(15*time.Second, "n3 failed in every view", func() bool {
		for _, n := range nodes {
			if n != "n3" && (!sees(c.agents[n], "n3", StateFailed) || c.agents[n].Snapshot().Failed != 1) {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	t.Logf("crash detected by every member in %v", took.Round(10*time.Millisecond))
	var suspicions uint64
	for _, n := range nodes {
		if n != "n3" {
			suspicions += c.agents[n].Counters().Suspicions.Load()
		}
	}
	if suspicions == 0 {
		t.Error("no member counted a suspicion of the crashed one")
	}
	if took > 10*time.Second {
		t.Errorf("crash took %v to leave every view, want ≤10s", took)
	}
	for _, n := range nodes {
		if n == "n3" {
			continue
		}
		s := c.agents[n].Snapshot()
		if s.Alive != 4 || s.Failed != 1 || len(s.Services["orders"]) != 3 {
			t.Errorf("%s: alive %d failed %d orders %d; want 4, 1 (still counted), 3", n, s.Alive, s.Failed, len(s.Services["orders"]))
		}
	}
}

func TestGracefulLeaveIsImmediate(t *testing.T) {
	c, nodes := start5(t)
	start := time.Now()
	c.stop("n2")
	c.wait(5*time.Second, "n2 left in every view", func() bool {
		for _, n := range nodes {
			if n != "n2" && (!sees(c.agents[n], "n2", StateLeft) || c.agents[n].Snapshot().Left != 1) {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	t.Logf("graceful leave seen by every member in %v", took.Round(time.Millisecond))
	if took > time.Second+100*time.Millisecond { // Leave itself waits up to 1s for the broadcast
		t.Errorf("leave took %v, want ≤1s", took)
	}
	if s := c.agents["n0"].Snapshot(); s.Left != 1 || s.Failed != 0 || s.Alive != 4 {
		t.Errorf("after a leave: alive %d failed %d left %d; want 4, 0, 1", s.Alive, s.Failed, s.Left)
	}
}

func TestPartitionThenHealReMerges(t *testing.T) {
	c, _ := start5(t)
	a, b := []string{"n0", "n1"}, []string{"n2", "n3", "n4"}
	c.net.Split(a, b)
	c.wait(20*time.Second, "both sides to see the other as failed", func() bool {
		return c.agents["n0"].Snapshot().Alive == 2 && c.agents["n1"].Snapshot().Alive == 2 &&
			c.agents["n2"].Snapshot().Alive == 3 && c.agents["n3"].Snapshot().Alive == 3 && c.agents["n4"].Snapshot().Alive == 3
	})
	if s := c.agents["n0"].Snapshot(); s.Failed != 3 {
		t.Errorf("minority side: failed %d, want 3 (counted toward the cluster size)", s.Failed)
	}
	healed := time.Now()
	c.net.Heal()
	took := c.wait(15*time.Second, "views whole again", func() bool {
		for _, ag := range c.agents {
			if s := ag.Snapshot(); s.Alive != 5 || s.Failed != 0 {
				return false
			}
		}
		return true
	})
	t.Logf("views whole %v after the heal", took.Round(10*time.Millisecond))
	if time.Since(healed) > 10*time.Second {
		t.Errorf("heal took %v, want ≤10s", took)
	}
}

func TestWrongKeyOrLabelCannotJoin(t *testing.T) {
	key := []byte("0123456789abcdef")
	other := []byte("fedcba9876543210")
	withKey := func(k []byte) agentOpt { return func(c *Config, _ *Meta) { c.Keys = [][]byte{k} } }
	withLabel := func(l string) agentOpt { return func(c *Config, _ *Meta) { c.Label = l } }
	for _, tc := range []struct {
		name      string
		seedOpts  []agentOpt
		intruder  []agentOpt
		wantAlive int
	}{
		{"same key joins", []agentOpt{withKey(key)}, []agentOpt{withKey(key)}, 2},
		{"wrong key", []agentOpt{withKey(key)}, []agentOpt{withKey(other)}, 1},
		{"no key against encrypted pool", []agentOpt{withKey(key)}, nil, 1},
		{"wrong label", []agentOpt{withKey(key), withLabel("prod")}, []agentOpt{withKey(key), withLabel("dev")}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			seed := c.add("seed", "orders", nil, tc.seedOpts...)
			intruder := c.add("intruder", "evil", []string{seed.Addr()}, tc.intruder...)
			if tc.wantAlive == 2 {
				c.wait(5*time.Second, "the member with the right key to join", func() bool { return seed.Snapshot().Alive == 2 })
				return
			}
			// Give it several join attempts, then check nothing got in.
			time.Sleep(1500 * time.Millisecond)
			if intruder.Joined() {
				t.Error("intruder reports joined")
			}
			if s := seed.Snapshot(); s.Alive != 1 || len(s.Services["evil"]) != 0 {
				t.Errorf("seed view: alive %d services %v; want itself only", s.Alive, s.Services)
			}
		})
	}
}

func TestJoinRetriesUntilASeedAnswers(t *testing.T) {
	c := newCluster(t)
	// The seed's address is known before it runs: reserve a port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seedAddr := ln.Addr().String()
	ln.Close()
	early := c.add("early", "orders", []string{seedAddr})
	time.Sleep(600 * time.Millisecond)
	if early.Joined() {
		t.Fatal("joined a seed that is not running")
	}
	// Now the seed starts on that address.
	_, port, _ := net.SplitHostPort(seedAddr)
	p, _ := strconv.Atoi(port)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: p})
	if err != nil {
		t.Skipf("the reserved port was taken meanwhile: %v", err)
	}
	seed, err := New(Config{NodeName: "seed", Bind: seedAddr, Transport: nt, Logger: testLogger()}, Meta{Service: "orders", Inbound: "127.0.0.1:1", Ready: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = seed.Run(ctx) }()
	took := c.wait(10*time.Second, "the retrying join to succeed", early.Joined)
	t.Logf("joined %v after the seed started", took.Round(10*time.Millisecond))
}

func TestMassJoinIsCoalesced(t *testing.T) {
	c := newCluster(t)
	var published atomic.Int64
	seed := c.add("seed", "orders", nil, func(cfg *Config, _ *Meta) {
		cfg.OnChange = func(*Snapshot) { published.Add(1) }
	})
	const n = 24
	for i := range n {
		c.add(fmt.Sprintf("m%02d", i), "orders", []string{seed.Addr()})
	}
	c.wait(20*time.Second, "every member in the seed's view", func() bool { return seed.Snapshot().Alive == n+1 })
	got := published.Load()
	t.Logf("%d joins published as %d snapshots", n, got)
	if got > n/2 {
		t.Errorf("%d snapshots for %d joins; want bursts coalesced (at most %d)", got, n, n/2)
	}
	eps := seed.Snapshot().Services["orders"]
	if len(eps) != n+1 || !slices.IsSortedFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.Addr, b.Addr) }) {
		t.Errorf("%d endpoints (sorted %v), want %d sorted", len(eps), slices.IsSortedFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.Addr, b.Addr) }), n+1)
	}
}

func TestUnreadyMemberIsNotRouted(t *testing.T) {
	c := newCluster(t)
	seed := c.add("seed", "orders", nil)
	b := c.add("b", "orders", []string{seed.Addr()}, func(_ *Config, m *Meta) { m.Ready = false })
	c.wait(5*time.Second, "b alive in the seed's view", func() bool { return seed.Snapshot().Alive == 2 })
	if eps := seed.Snapshot().Services["orders"]; len(eps) != 1 {
		t.Fatalf("endpoints %v, want only the seed (b is not ready)", eps)
	}
	if err := b.UpdateMeta(Meta{Service: "orders", Inbound: "127.0.0.1:19999", Ready: true}); err != nil {
		t.Fatal(err)
	}
	c.wait(5*time.Second, "b routed once ready", func() bool { return len(seed.Snapshot().Services["orders"]) == 2 })
}

func TestKeyRotationWithoutRestart(t *testing.T) {
	oldKey, newKey := []byte("0123456789abcdef"), []byte("ABCDEFGHIJKLMNOPQRSTUVWX") // AES-128, AES-192
	keys := func(k ...[]byte) agentOpt { return func(c *Config, _ *Meta) { c.Keys = k } }
	c := newCluster(t)
	a := c.add("a", "orders", nil, keys(oldKey))
	b := c.add("b", "orders", []string{a.Addr()}, keys(oldKey))
	c.wait(5*time.Second, "a and b joined", func() bool { return a.Snapshot().Alive == 2 && b.Snapshot().Alive == 2 })

	for _, step := range []struct {
		op  KeyOp
		key []byte
	}{{KeyInstall, newKey}, {KeyUse, newKey}, {KeyRemove, oldKey}} {
		for _, ag := range []*Agent{a, b} {
			if err := ag.RotateKey(step.op, step.key); err != nil {
				t.Fatalf("%s: %v", step.op, err)
			}
		}
	}
	if got := a.KeyFingerprints(); len(got) != 1 || got[0] != Fingerprint(newKey) {
		t.Fatalf("keyring after rotation: %v, want only the new key", got)
	}
	// The pool still talks: a member with only the new key joins; one with
	// only the old key cannot.
	nc := c.add("new", "orders", []string{a.Addr()}, keys(newKey))
	c.wait(5*time.Second, "a member with the new key to join", func() bool { return a.Snapshot().Alive == 3 && nc.Joined() })
	stale := c.add("stale", "orders", []string{a.Addr()}, keys(oldKey))
	time.Sleep(1500 * time.Millisecond)
	if stale.Joined() || a.Snapshot().Alive != 3 {
		t.Fatalf("a member with the removed key got in (joined %v, alive %d)", stale.Joined(), a.Snapshot().Alive)
	}
	if err := a.RotateKey(KeyRemove, newKey); err == nil {
		t.Error("removing the key in use succeeded")
	}
}

// A cut-off member is suspected by this agent's own probes well before it
// is declared failed, and the suspicion clears when it answers again.
func TestSuspicionFromOwnProbes(t *testing.T) {
	c, _ := start5(t)
	c.net.Split([]string{"n0", "n1", "n2", "n3"}, []string{"n4"})
	cut := time.Now()
	took := c.wait(15*time.Second, "n0 to suspect n4", func() bool {
		return c.agents["n0"].Snapshot().Suspect == 1
	})
	// The isolated member suspects everyone it probes.
	c.wait(20*time.Second, "n4 to suspect or fail all four others", func() bool {
		s := c.agents["n4"].Snapshot()
		return s.Suspect+s.Failed == 4
	})
	t.Logf("suspected after %v; isolated side saw no one reachable after %v",
		took.Round(10*time.Millisecond), time.Since(cut).Round(10*time.Millisecond))
	c.net.Heal()
	c.wait(20*time.Second, "no suspicion and 5 alive everywhere", func() bool {
		for _, a := range c.agents {
			if s := a.Snapshot(); s.Alive != 5 || s.Suspect != 0 {
				return false
			}
		}
		return true
	})
	var suspectFlag bool
	for _, m := range c.agents["n0"].Members() {
		suspectFlag = suspectFlag || m.Suspect
	}
	if suspectFlag {
		t.Fatal("a member still shows suspect after the heal")
	}
}

// A watch-only member (the control plane: no service) is listed but never
// counted, so it cannot tip a quorum.
func TestWatchOnlyMemberIsNotCounted(t *testing.T) {
	c := newCluster(t)
	seed := c.add("seed", "orders", nil)
	cp := c.add("cp", "", []string{seed.Addr()}, func(_ *Config, m *Meta) { m.Inbound, m.Ready = "", false })
	c.wait(5*time.Second, "the watch-only member in the seed's table", func() bool { return sees(seed, "cp", StateAlive) })
	// b joins after cp is in the seed's table, so the snapshot that routes
	// to b was built with cp in it.
	c.add("b", "orders", []string{seed.Addr()})
	for _, a := range []*Agent{seed, cp} {
		c.wait(5*time.Second, "b routed", func() bool { return len(a.Snapshot().Services["orders"]) == 2 })
		if s := a.Snapshot(); s.Alive != 2 || s.Suspect != 0 || s.Failed != 0 {
			t.Errorf("alive %d suspect %d failed %d; want 2, 0, 0 (the watch-only member is not counted)", s.Alive, s.Suspect, s.Failed)
		}
	}
	if !sees(seed, "cp", StateAlive) {
		t.Errorf("the watch-only member is missing from Members: %v", seed.Members())
	}
}
