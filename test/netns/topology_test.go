//go:build netns && linux

package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// dataSubnetPrefix is the first three octets of the data network, from
// the benchmarking range 198.18.0.0/15 (RFC 2544), never routed.
const dataSubnetPrefix = "198.18.0."

// node is one namespace of the topology.
type node struct {
	// name is the logical name (n1…, cp); ns the namespace's name.
	name, ns string
	// addr is the node's data address; port its veth end in the switch.
	addr, port string
}

// topology is the switch namespace, its two bridges and the nodes wired
// to them. Its methods are safe for concurrent use.
type topology struct {
	id               string
	sw               string
	bridgeA, bridgeB string
	nodes            map[string]*node
	state            *stateFiles

	mu  sync.Mutex
	cut map[string]bool // nodes whose port is on bridge B
}

// newTopology creates the switch namespace, both bridges and one
// namespace per name (each with addresses[name] on its data interface),
// all ports on bridge A. t.Cleanup removes everything.
func newTopology(t *testing.T, state *stateFiles, addrs map[string]string) *topology {
	t.Helper()
	id := randomID(t)
	tp := &topology{
		id: id, sw: "cw" + id + "-sw", bridgeA: "cwA-" + id, bridgeB: "cwB-" + id,
		nodes: make(map[string]*node), state: state, cut: make(map[string]bool),
	}
	t.Cleanup(func() { tp.destroy(t) })

	tp.addNamespace(t, tp.sw)
	for _, br := range []string{tp.bridgeA, tp.bridgeB} {
		mustIP(t, "-n", tp.sw, "link", "add", "name", br, "type", "bridge")
		mustIP(t, "-n", tp.sw, "link", "set", br, "up")
	}
	// Bridged frames skip iptables in this namespace when the module
	// allows it per namespace; a fresh namespace has no rules anyway.
	_ = exec.Command("ip", "netns", "exec", tp.sw, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0").Run()

	names := slices.Sorted(maps.Keys(addrs))
	for _, name := range names {
		n := &node{name: name, ns: "cw" + id + "-" + name, addr: addrs[name], port: "v" + id + "-" + name}
		tp.addNamespace(t, n.ns)
		mustIP(t, "link", "add", "name", n.port, "netns", tp.sw, "type", "veth", "peer", "name", "eth0", "netns", n.ns)
		mustIP(t, "-n", tp.sw, "link", "set", n.port, "master", tp.bridgeA, "up")
		mustIP(t, "-n", n.ns, "addr", "add", n.addr+"/24", "dev", "eth0")
		mustIP(t, "-n", n.ns, "link", "set", "eth0", "up")
		tp.nodes[name] = n
	}
	return tp
}

func (tp *topology) addNamespace(t *testing.T, ns string) {
	t.Helper()
	tp.state.add("netns", ns)
	mustIP(t, "netns", "add", ns)
	mustIP(t, "-n", ns, "link", "set", "lo", "up")
}

// destroy deletes every namespace of the run; the veths and bridges go
// with them.
func (tp *topology) destroy(t *testing.T) {
	for _, n := range tp.nodes {
		if err := ip("netns", "del", n.ns); err != nil {
			t.Logf("cleanup: %v", err)
		}
	}
	if err := ip("netns", "del", tp.sw); err != nil {
		t.Logf("cleanup: %v", err)
	}
}

// partition puts the named nodes on bridge B and every other node on
// bridge A: two sides that reach only themselves. An empty list heals.
func (tp *topology) partition(minority []string) error {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(tp.nodes)) {
		want := slices.Contains(minority, name)
		if tp.cut[name] == want {
			continue
		}
		br := tp.bridgeA
		if want {
			br = tp.bridgeB
		}
		if err := ip("-n", tp.sw, "link", "set", tp.nodes[name].port, "master", br); err != nil {
			return fmt.Errorf("moving %s to %s: %w", name, br, err)
		}
		tp.cut[name] = want
	}
	return nil
}

// heal puts every node back on bridge A.
func (tp *topology) heal() error { return tp.partition(nil) }

// nsPath is where `ip netns` keeps the namespace's handle.
func nsPath(ns string) string { return filepath.Join("/run/netns", ns) }

// ip runs the ip command with a bounded time and returns its output in
// the error.
func ip(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %v: %w: %s", args, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

func mustIP(t *testing.T, args ...string) {
	t.Helper()
	if err := ip(args...); err != nil {
		t.Fatal(err)
	}
}

func randomID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// stateFiles appends what a run creates (PIDs, namespaces) to files in a
// directory, for run.sh's trap. A nil *stateFiles records nothing.
type stateFiles struct {
	dir string
	mu  sync.Mutex
}

// newStateFiles returns the recorder for $CW_NETNS_STATE, or nil when it
// is unset.
func newStateFiles() *stateFiles {
	if d := os.Getenv("CW_NETNS_STATE"); d != "" {
		return &stateFiles{dir: d}
	}
	return nil
}

// add appends value as a line of the file kind ("pids" or "netns").
func (s *stateFiles) add(kind, value string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(s.dir, kind), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = fmt.Fprintln(f, value)
}
