package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"
)

// Bounds of the partition step.
const (
	// kvDomainWait bounds the wait for the kv fencing domain to admit
	// writes after its policy is applied.
	kvDomainWait = 20 * time.Second
	// kvFenceWait bounds the wait for kv-1 to fence after kv-2 and kv-3
	// freeze (the product fences a cut-off minority within 10 s).
	kvFenceWait = 20 * time.Second
	// kvUnfenceWait bounds the wait for kv-1 to accept writes again after
	// they continue (the product's bound is 20 s after a heal).
	kvUnfenceWait = 30 * time.Second
	// kvReplicateWait bounds the wait for a write to reach every replica.
	kvReplicateWait = 20 * time.Second
)

// kvKey is the key the partition step writes.
const kvKey = "motd"

// kvName is the name of replica i (0-based): kv-1, kv-2, kv-3.
func kvName(i int) string { return fmt.Sprintf("kv-%d", i+1) }

// kvWrite is the part of kv's answer to a PUT the step shows.
type kvWrite struct {
	Epoch uint64 `json:"epoch"`
	Node  string `json:"node"`
}

// kvCall sends a request for the kv service through kv-1's sidecar, as an
// app beside kv-1 would, pinned with x-mesh-endpoint to the replica whose
// sidecar's inbound address is pin.
func kvCall(ctx context.Context, m *mesh, method, pin, body string) (*reply, error) {
	return callVia(ctx, m.kv[0].outbound, method, "kv", "/kv/"+kvKey, body,
		map[string]string{"x-mesh-endpoint": pin, "Content-Type": "text/plain"})
}

// stepPartition scopes a fencing domain to the kv replicas, shows a write
// replicated to all three, freezes two of them so that kv-1 is cut off
// from the quorum, shows kv-1 fenced (writes refused, reads served), lets
// them continue, and shows writes accepted and replicated again.
func (d *demo) stepPartition(ctx context.Context, m *mesh) (err error) {
	fmt.Println("a simulated partition: kv-1, kv-2 and kv-3 replicate every write they accept to the other two,")
	fmt.Println("   each through its own sidecar (PUT /replicate pinned to the peer with x-mesh-endpoint, retried until")
	fmt.Println("   acknowledged). First, a fencing domain of their own: writes need more than half of the kv replicas")
	if err := d.meshctl(ctx, "apply", "-f", filepath.Join(d.policies, "kv-fencing.yaml")); err != nil {
		return err
	}
	dom, err := d.waitKVDomain(ctx, m)
	if err != nil {
		return err
	}
	fmt.Printf("   domain %s: members %s, writable with %d of %d, epoch %d (meshctl status)\n",
		dom.Name, strings.Join(dom.Members, " "), dom.Needed, dom.Expected, dom.Epoch)

	// A write through kv-1, replicated to the others.
	fmt.Println("   a write through kv-1's sidecar, as an app beside kv-1 would send it:")
	fmt.Printf("   $ curl -X PUT -H 'Host: kv' -H 'x-mesh-endpoint: %s' -d hello http://%s/kv/%s\n", m.kv[0].inbound, m.kv[0].outbound, kvKey)
	wrote := time.Now()
	if err := d.kvPut(ctx, m, "hello", 0); err != nil {
		return err
	}
	if err := waitReplicated(ctx, m, "hello", kvReplicateWait); err != nil {
		return err
	}
	fmt.Printf("   on every replica %v after the write (each read pinned to one replica with x-mesh-endpoint):\n",
		time.Since(wrote).Round(time.Millisecond))
	if err := printReplicas(ctx, m); err != nil {
		return err
	}

	// Freeze kv-2 and kv-3: kv-1 alone is a minority.
	frozen := []string{"kv-2-sidecar", "kv-2", "kv-3-sidecar", "kv-3"}
	fmt.Printf("   kv-2 and kv-3 freeze, app and sidecar: kill -STOP %s\n", d.pids(frozen...))
	fmt.Println("   (to kv-1 a frozen peer is indistinguishable from a network cut: the kernel still accepts its")
	fmt.Println("    connections, but nothing answers a gossip probe, a request or the control plane)")
	defer func() {
		// Also on failure: a stopped process would not act on the SIGTERM
		// of the clean-up.
		if terr := d.thaw(); terr != nil && err == nil {
			err = terr
		}
	}()
	if err := d.freeze(frozen...); err != nil {
		return err
	}
	frozeAt := time.Now()
	fenced, err := waitFencing(ctx, m.kv[0].admin, true, kvFenceWait)
	if err != nil {
		return err
	}
	fenceTime := time.Since(frozeAt)
	fmt.Printf("   kv-1's sidecar fenced itself %v after the freeze: curl http://%s/fencing\n", fenceTime.Round(time.Millisecond), m.kv[0].admin)
	fmt.Printf("     fenced %v, source %s, epoch %d, reachable %d of %d (needs %d)\n", fenced.Fenced, fenced.Source, fenced.Epoch,
		fenced.Quorum.Reachable, fenced.Quorum.Expected, fenced.Quorum.Needed)
	fmt.Printf("     reason: %s\n", fenced.Reason)

	r, err := kvCall(ctx, m, http.MethodPut, m.kv[0].inbound, "refused")
	if err != nil {
		return err
	}
	fmt.Printf("   a write through kv-1:  %d  x-mesh-error: %-7s %-8v refused at once by kv-1's sidecar, forwarded nowhere\n",
		r.status, r.meshError(), r.elapsed.Round(10*time.Microsecond))
	if r.status != http.StatusServiceUnavailable || r.meshError() != "fenced" {
		return fmt.Errorf("PUT kv/%s through fenced kv-1: %d %s, want 503 fenced", kvKey, r.status, r.meshError())
	}
	r, err = kvCall(ctx, m, http.MethodGet, m.kv[0].inbound, "")
	if err != nil {
		return err
	}
	fmt.Printf("   a read through kv-1:   %d  %-22q %-8v reads are served on the minority side\n",
		r.status, string(r.body), r.elapsed.Round(10*time.Microsecond))
	if r.status != http.StatusOK || string(r.body) != "hello" {
		return fmt.Errorf("GET kv/%s through fenced kv-1: %d %q, want 200 hello", kvKey, r.status, r.body)
	}

	// Continue them: kv-1 is back in a majority.
	fmt.Printf("   kv-2 and kv-3 continue: kill -CONT %s\n", d.pids(frozen...))
	if err := d.thaw(); err != nil {
		return err
	}
	thawedAt := time.Now()
	unfenced, err := waitFencing(ctx, m.kv[0].admin, false, kvUnfenceWait)
	if err != nil {
		return err
	}
	unfenceTime := time.Since(thawedAt)
	fmt.Printf("   kv-1's sidecar admits writes again %v after they continued, under epoch %d\n",
		unfenceTime.Round(time.Millisecond), unfenced.Epoch)
	if unfenced.Epoch == fenced.Epoch {
		fmt.Println("   (the same epoch: the control plane still counted kv-2's and kv-3's last reports, which count for")
		fmt.Println("    three 2 s report intervals, so only kv-1's own gossip view had fenced it)")
	} else {
		fmt.Println("   (a new epoch: the control plane saw the kv domain lose its quorum and regain it)")
	}
	fmt.Printf("   $ curl -X PUT -H 'Host: kv' -H 'x-mesh-endpoint: %s' -d hello-again http://%s/kv/%s\n", m.kv[0].inbound, m.kv[0].outbound, kvKey)
	wrote = time.Now()
	if err := d.kvPut(ctx, m, "hello-again", kvUnfenceWait); err != nil {
		return err
	}
	if err := waitReplicated(ctx, m, "hello-again", kvReplicateWait); err != nil {
		return err
	}
	replicateTime := time.Since(wrote)
	fmt.Printf("   on every replica %v after the write (kv-2's and kv-3's sidecars had to take writes again too):\n",
		replicateTime.Round(time.Millisecond))
	if err := printReplicas(ctx, m); err != nil {
		return err
	}
	fmt.Printf("   measured: fenced %v after the freeze, writable %v after the continue, replicated %v after the write\n",
		fenceTime.Round(time.Millisecond), unfenceTime.Round(time.Millisecond), replicateTime.Round(time.Millisecond))
	return printReplication(m)
}

// kvPut writes value through kv-1's sidecar to kv-1 and prints the answer.
// With retry > 0 a refusal by the mesh is retried every 100 ms for that
// long (kv-1 is writable, but its first write may race the last verdict).
func (d *demo) kvPut(ctx context.Context, m *mesh, value string, retry time.Duration) error {
	var last *reply
	err := poll(ctx, max(retry, time.Millisecond), 100*time.Millisecond, func() (bool, error) {
		r, err := kvCall(ctx, m, http.MethodPut, m.kv[0].inbound, value)
		if err != nil {
			return false, err
		}
		last = r
		return r.status == http.StatusOK || retry == 0, nil
	}, func() string { return "" })
	if err != nil && last == nil {
		return err
	}
	var w kvWrite
	if last.status != http.StatusOK || json.Unmarshal(last.body, &w) != nil {
		return fmt.Errorf("PUT kv/%s through kv-1: %d x-mesh-error %s: %s", kvKey, last.status, last.meshError(), strings.TrimSpace(string(last.body)))
	}
	fmt.Printf("   %d: accepted by %s under epoch %d (x-mesh-epoch, stamped by kv-1's sidecar)\n", last.status, w.Node, w.Epoch)
	return nil
}

// waitReplicated polls each replica (a read pinned to it) until all hold
// value.
func waitReplicated(ctx context.Context, m *mesh, value string, limit time.Duration) error {
	got := make([]string, len(m.kv))
	return poll(ctx, limit, 100*time.Millisecond, func() (bool, error) {
		all := true
		for i, p := range m.kv {
			r, err := kvCall(ctx, m, http.MethodGet, p.inbound, "")
			if err != nil {
				return false, err
			}
			got[i] = fmt.Sprintf("%d %s %q", r.status, r.meshError(), r.body)
			all = all && r.status == http.StatusOK && string(r.body) == value
		}
		return all, nil
	}, func() string { return fmt.Sprintf("%q not on every replica; reads answered %v", value, got) })
}

// printReplicas prints what a read pinned to each replica answers.
func printReplicas(ctx context.Context, m *mesh) error {
	for i, p := range m.kv {
		r, err := kvCall(ctx, m, http.MethodGet, p.inbound, "")
		if err != nil {
			return err
		}
		fmt.Printf("     %-5s x-mesh-endpoint: %-16s %d %-13q (x-kv-node: %s)\n", kvName(i), p.inbound, r.status, r.body, r.header.Get("X-Kv-Node"))
	}
	fmt.Printf("     (curl -H 'Host: kv' -H 'x-mesh-endpoint: %s' http://%s/kv/%s)\n", m.kv[1].inbound, m.kv[0].outbound, kvKey)
	return nil
}

// printReplication prints kv-1's replication figures (GET /replication).
func printReplication(m *mesh) error {
	var s struct {
		Peers []struct {
			Peer      string `json:"peer"`
			Queued    int    `json:"queued"`
			Delivered int    `json:"delivered"`
			Failures  int    `json:"failures"`
		} `json:"peers"`
	}
	if err := getJSON("http://"+m.kvApp[0]+"/replication", &s); err != nil {
		return err
	}
	names := map[string]string{m.kv[1].inbound: kvName(1), m.kv[2].inbound: kvName(2)}
	fmt.Printf("   kv-1's replication queues: curl http://%s/replication\n", m.kvApp[0])
	for _, p := range s.Peers {
		fmt.Printf("     to %-5s %-16s queued %d, delivered %d, failed attempts %d\n", names[p.Peer], p.Peer, p.Queued, p.Delivered, p.Failures)
	}
	return nil
}

// waitFencing polls a sidecar's /fencing until its fenced flag is want.
func waitFencing(ctx context.Context, admin string, want bool, limit time.Duration) (fencingState, error) {
	var st fencingState
	err := poll(ctx, limit, 50*time.Millisecond, func() (bool, error) {
		if err := getJSON("http://"+admin+"/fencing", &st); err != nil {
			return false, err
		}
		return st.Fenced == want, nil
	}, func() string {
		return fmt.Sprintf("%s/fencing: fenced %v (%s), want %v", admin, st.Fenced, st.Reason, want)
	})
	return st, err
}

// kvDomain is the control plane's view of one fencing domain (GET
// /api/v1/fencing).
type kvDomain struct {
	Name        string   `json:"name"`
	Expected    int      `json:"expected"`
	Needed      int      `json:"needed"`
	Members     []string `json:"members"`
	QuorumGroup int      `json:"quorumGroup"`
	Epoch       uint64   `json:"epoch"`
}

// waitKVDomain waits until the control plane has a quorum in the domain
// service/kv and every kv sidecar admits writes under its epoch.
func (d *demo) waitKVDomain(ctx context.Context, m *mesh) (kvDomain, error) {
	var (
		dom   kvDomain
		found bool
		side  = make([]fencingState, len(m.kv))
	)
	err := poll(ctx, kvDomainWait, 100*time.Millisecond, func() (bool, error) {
		status, b, err := d.apiGet("/api/v1/fencing")
		if err != nil {
			return false, err
		}
		if status != http.StatusOK {
			return false, fmt.Errorf("GET /api/v1/fencing: %d %s", status, b)
		}
		var v struct {
			Domains []kvDomain `json:"domains"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return false, fmt.Errorf("GET /api/v1/fencing: %w", err)
		}
		found = false
		for _, x := range v.Domains {
			if x.Name == "service/kv" {
				dom, found = x, true
			}
		}
		if !found || dom.QuorumGroup < 0 || dom.Epoch == 0 {
			return false, nil
		}
		for i, a := range m.kvAdmins() {
			if err := getJSON("http://"+a+"/fencing", &side[i]); err != nil {
				return false, err
			}
			if side[i].Fenced || side[i].Epoch < dom.Epoch {
				return false, nil
			}
		}
		return true, nil
	}, func() string {
		return fmt.Sprintf("domain service/kv (found %v) %+v; kv sidecars %+v", found, dom, side)
	})
	return dom, err
}
