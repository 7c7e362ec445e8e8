package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/echo/echoserver"
)

// The multi-process gossip test: real sidecar processes find each other
// through SWIM gossip on loopback, the client routes over what they
// advertise, a SIGKILLed instance is dropped within the detection bound
// and a SIGTERMed one leaves without a failed request.

// gossipNode is a sidecar process that gossips.
type gossipNode struct {
	*sidecarProc
	name   string // node id, and the name of the echo instance behind it
	gossip string // gossip HOST:PORT
}

// freeGossipAddr returns a loopback HOST:PORT free for both TCP and UDP
// (memberlist binds both on the same port).
func freeGossipAddr(t *testing.T) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue // UDP side taken: try another port
		}
		pc.Close()
		return addr
	}
	t.Fatal("no loopback port free for both TCP and UDP after 50 tries")
	return ""
}

// startGossipNode starts a sidecar of service in front of app, gossiping on
// a fresh loopback port and joining seed (none: it starts the pool), and
// waits until it is ready (for a joiner, readiness includes the join).
// startProc passes "--gossip off" first; the later "--gossip ADDR" wins.
func startGossipNode(t *testing.T, name, service, app, seed string, extra ...string) *gossipNode {
	t.Helper()
	n := &gossipNode{name: name}
	n.sidecarProc = startProcArgs(t, func() []string {
		n.gossip = freeGossipAddr(t) // fresh on every try, as the other ports are
		args := []string{"--service", service, "--node-id", name, "--app", app,
			"--gossip", n.gossip, "--advertise", "127.0.0.1", "--drain-timeout", "5s"}
		if seed != "" {
			args = append(args, "--join", seed)
		}
		return append(args, extra...)
	})
	return n
}

// adminGet decodes a JSON document from a sidecar's admin listener.
func adminGet(admin, path string, v any) error {
	resp, err := probe.Get("http://" + admin + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

type clustersDoc struct {
	Clusters []struct {
		Name      string `json:"name"`
		Endpoints []struct {
			Address  string `json:"address"`
			Requests uint64 `json:"requests"`
		} `json:"endpoints"`
	} `json:"clusters"`
}

// clusterEndpoints returns the sorted endpoint addresses of service in the
// sidecar's /clusters, or nil when it cannot be read.
func clusterEndpoints(admin, service string) []string {
	var doc clustersDoc
	if err := adminGet(admin, "/clusters", &doc); err != nil {
		return nil
	}
	var out []string
	for _, c := range doc.Clusters {
		if c.Name == service {
			for _, e := range c.Endpoints {
				out = append(out, e.Address)
			}
		}
	}
	sort.Strings(out)
	return out
}

type memberDoc struct {
	Node          string `json:"node"`
	Service       string `json:"service"`
	Address       string `json:"address"`
	GossipAddress string `json:"gossipAddress"`
	State         string `json:"state"`
	Ready         bool   `json:"ready"`
}

type membersDoc struct {
	Gossip  string      `json:"gossip"` // "off" when gossip is disabled
	Self    string      `json:"self"`
	Joined  bool        `json:"joined"`
	Alive   int         `json:"alive"`
	Failed  int         `json:"failed"`
	Left    int         `json:"left"`
	Members []memberDoc `json:"members"`
}

func members(t *testing.T, admin string) membersDoc {
	t.Helper()
	var doc membersDoc
	if err := adminGet(admin, "/members", &doc); err != nil {
		t.Fatalf("/members on %s: %v", admin, err)
	}
	return doc
}

// memberState is node's state in the /members of the sidecar at admin, or
// "" if it is not listed or /members cannot be read.
func memberState(admin, node string) string {
	var doc membersDoc
	if err := adminGet(admin, "/members", &doc); err != nil {
		return ""
	}
	for _, m := range doc.Members {
		if m.Node == node {
			return m.State
		}
	}
	return ""
}

func sortedAddrs(ns ...*gossipNode) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.inbound
	}
	sort.Strings(out)
	return out
}

// echoCaller sends requests for service echo through a sidecar's outbound
// listener, as the client's app would.
type echoCaller struct {
	url string
	hc  *http.Client
}

func newEchoCaller(t *testing.T, outbound string) *echoCaller {
	tr := &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 10 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &echoCaller{url: "http://" + outbound + "/", hc: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

// call returns the instance that answered, or an error for a transport
// failure or any status other than 200.
func (c *echoCaller) call(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return "", err
	}
	req.Host = "echo"
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	return resp.Header.Get(echoserver.InstanceHeader), nil
}

// tally counts requests by the instance that served them.
type tally struct {
	mu sync.Mutex
	m  map[string]int
}

func (t *tally) add(instance string) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]int{}
	}
	t.m[instance]++
	t.mu.Unlock()
}

func (t *tally) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.m))
	for k, v := range t.m {
		out[k] = v
	}
	return out
}

// TestGossipMultiProcess: three echo sidecars and a client sidecar, each a
// separate process, gossip on loopback. The client spreads requests over
// the three; a SIGKILLed instance leaves routing within 10 s and then no
// request fails; a SIGTERMed instance (drain period 500ms) leaves while a
// load runs, without a single failed request, and shows as "left".
func TestGossipMultiProcess(t *testing.T) {
	sidecarBinary(t) // build first: the build does not count toward the timings below
	begin := time.Now()

	echo1 := startGossipNode(t, "echo-1", "echo", startEcho(t, "echo-1"), "", "--drain-period", "0s")
	seed := echo1.gossip
	echo2 := startGossipNode(t, "echo-2", "echo", startEcho(t, "echo-2"), seed, "--drain-period", "500ms")
	echo3 := startGossipNode(t, "echo-3", "echo", startEcho(t, "echo-3"), seed, "--drain-period", "0s")
	client := startGossipNode(t, "client-1", "client", startEcho(t, "client-app"), seed, "--drain-period", "0s")

	// The later --gossip flag overrode startProc's "--gossip off".
	if d := members(t, echo1.admin); d.Gossip == "off" || d.Self != "echo-1" {
		t.Fatalf("echo-1 /members: gossip %q self %q; want gossip on (the last --gossip wins) and self echo-1", d.Gossip, d.Self)
	}

	// (a) Discovery: the client routes to all three instances.
	all := sortedAddrs(echo1, echo2, echo3)
	start := time.Now()
	dumped := false
	waitUntil(t, 10*time.Second, "3 echo endpoints in the client's /clusters", func() bool {
		ok := slices.Equal(clusterEndpoints(client.admin, "echo"), all)
		if !ok && !dumped && time.Since(start) > 9*time.Second {
			dumped = true // the views, to tell slow convergence from a lost member
			for _, n := range []*gossipNode{echo1, echo2, echo3, client} {
				b, _ := adminRaw(n.admin, "/members")
				t.Logf("/members of %s: %s", n.admin, b)
			}
		}
		return ok
	})
	t.Logf("(a) client routes to 3 echo endpoints %v after the last start-up", time.Since(start).Round(time.Millisecond))
	if d := members(t, client.admin); d.Alive != 4 || !d.Joined || d.Failed != 0 {
		t.Errorf("client /members: alive %d failed %d joined %v; want 4, 0, true: %+v", d.Alive, d.Failed, d.Joined, d.Members)
	}
	caller := newEchoCaller(t, client.outbound)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	served := &tally{}
	for i := range 60 {
		inst, err := caller.call(ctx)
		if err != nil {
			t.Fatalf("(a) request %d through the client: %v", i, err)
		}
		served.add(inst)
	}
	got := served.snapshot()
	if len(got) != 3 || got["echo-1"] == 0 || got["echo-2"] == 0 || got["echo-3"] == 0 {
		t.Fatalf("(a) 60 requests served by %v; want echo-1, echo-2 and echo-3", got)
	}
	t.Logf("(a) 60 requests served by %v", got)

	// (b) SIGKILL echo-3's sidecar: the client drops it within 10 s.
	killed := time.Now()
	if err := echo3.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-echo3.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("echo-3's sidecar still running 5s after SIGKILL")
	}
	two := sortedAddrs(echo1, echo2)
	waitUntil(t, 15*time.Second, "the client's /clusters to drop echo-3", func() bool {
		return slices.Equal(clusterEndpoints(client.admin, "echo"), two)
	})
	detect := time.Since(killed)
	t.Logf("(b) SIGKILLed echo-3 dropped from the client's /clusters after %v", detect.Round(time.Millisecond))
	if detect > 10*time.Second {
		t.Errorf("(b) crash detection took %v, want ≤10s", detect)
	}
	// Routing drops a member as soon as the client's probes suspect it;
	// the pool declares it failed a few seconds later.
	waitUntil(t, 30*time.Second, "echo-3 failed in the client's /members", func() bool {
		return memberState(client.admin, "echo-3") == "failed"
	})
	t.Logf("(b) echo-3 failed in the client's /members after %v", time.Since(killed).Round(time.Millisecond))
	served = &tally{}
	for i := range 200 {
		inst, err := caller.call(ctx)
		if err != nil {
			t.Fatalf("(b) request %d after echo-3 was dropped: %v", i, err)
		}
		served.add(inst)
	}
	got = served.snapshot()
	if got["echo-3"] != 0 || got["echo-1"]+got["echo-2"] != 200 {
		t.Fatalf("(b) 200 requests after the crash served by %v; want echo-1 and echo-2 only", got)
	}
	t.Logf("(b) 200 requests after the crash: 0 failed, served by %v", got)

	// (c) SIGTERM echo-2 under load: no request fails; it leaves.
	var sent, failed atomic.Int64
	served = &tally{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000 && ctx.Err() == nil; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				inst, err := caller.call(ctx)
				if err != nil {
					if failed.Add(1) <= 10 {
						t.Errorf("(c) request failed: %v", err)
					}
					continue
				}
				served.add(inst)
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	waitUntil(t, 10*time.Second, "100 requests of load", func() bool { return sent.Load() >= 100 })

	var exitedAt atomic.Int64 // unix ns
	exitErr := make(chan error, 1)
	termed := time.Now()
	if err := echo2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := <-echo2.exited
		exitedAt.Store(time.Now().UnixNano())
		exitErr <- err
	}()
	one := sortedAddrs(echo1)
	waitUntil(t, 10*time.Second, "the client's /clusters to drop echo-2", func() bool {
		return slices.Equal(clusterEndpoints(client.admin, "echo"), one)
	})
	dropped := time.Since(termed)
	waitUntil(t, 10*time.Second, `echo-2 "left" in the client's /members`, func() bool {
		return memberState(client.admin, "echo-2") == "left"
	})
	leftSeen := time.Now()
	select {
	case err := <-exitErr:
		if err != nil {
			t.Errorf("(c) echo-2's sidecar exited with %v, want status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("(c) echo-2's sidecar still running 10s after SIGTERM")
	}
	exited := time.Unix(0, exitedAt.Load())
	// Keep the load going a little after the leave, then stop it.
	after := sent.Load()
	waitUntil(t, 10*time.Second, "100 more requests after the leave", func() bool { return sent.Load() >= after+100 })
	stopLoad()

	t.Logf("(c) SIGTERM → dropped from the client's /clusters %v; process exited %v; \"left\" in /members %v (%v after the exit)",
		dropped.Round(time.Millisecond), exited.Sub(termed).Round(time.Millisecond),
		leftSeen.Sub(termed).Round(time.Millisecond), leftSeen.Sub(exited).Round(time.Millisecond))
	if dropped > 500*time.Millisecond {
		t.Errorf("(c) echo-2 left routing %v after SIGTERM, want within its 500ms drain period", dropped)
	}
	if d := leftSeen.Sub(exited); d > 2*time.Second {
		t.Errorf("(c) echo-2 shown as left %v after its process exited, want ≤2s", d)
	}
	t.Logf("(c) %d requests during the SIGTERM, %d failed, served by %v", sent.Load(), failed.Load(), served.snapshot())
	if f := failed.Load(); f != 0 {
		t.Errorf("(c) %d of %d requests failed, want 0", f, sent.Load())
	}
	if got := served.snapshot(); got["echo-3"] != 0 {
		t.Errorf("(c) served by %v: echo-3 is dead", got)
	}
	// The counts in /members come from the published snapshot, which is
	// coalesced (up to 500ms), so they may trail the member list briefly.
	var d membersDoc
	deadline := time.Now().Add(2 * time.Second)
	for {
		d = members(t, client.admin)
		if (d.Alive == 2 && d.Failed == 1 && d.Left == 1) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d.Alive != 2 || d.Failed != 1 || d.Left != 1 {
		t.Errorf("client /members at the end: alive %d failed %d left %d; want 2 (echo-1, client-1), 1 (echo-3), 1 (echo-2): %+v",
			d.Alive, d.Failed, d.Left, d.Members)
	}
	t.Logf("wall time %v (excluding the build)", time.Since(begin).Round(time.Millisecond))
}

func adminRaw(admin, path string) (string, error) {
	resp, err := http.Get("http://" + admin + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
