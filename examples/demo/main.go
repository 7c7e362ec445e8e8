// Command demo runs a small Causeway mesh on this machine (no containers),
// sends traffic through it, prints what happens, and stops everything it
// started. `make demo` builds the binaries and runs it.
//
// Topology (every arrow crosses two sidecars: the caller's outbound port,
// then the callee's inbound port, over a multiplexed HTTP/2 connection in
// mutual TLS 1.3):
//
//	demo (as "web") ──HTTP/1.1──▶ orders-1 ──gRPC──▶ inventory-1, inventory-2
//	                │                        └─────▶ inventory-canary-1 (by policy)
//	                ├──────────▶ flaky-1  (echo answering 503 to 30% of requests)
//	                └──────────▶ echo-a, echo-b (echo-b can be switched to fail)
//
//	kv-1 ◀──▶ kv-2 ◀──▶ kv-3 ◀──▶ kv-1   three key-value replicas, each
//	replicating the writes it accepts to the other two through its sidecar
//	(the partition step writes through kv-1's sidecar, as an app beside it)
//
//	controlplane --tls: the mesh's certificate authority, xDS for every
//	sidecar, the policy API meshctl uses, a gossip member watching the
//	mesh, and the trace receiver the sidecars export their spans to.
//
// Every sidecar obtains its SPIFFE certificate from the control plane with
// a bootstrap token of its service (created with `meshctl token create`,
// in a 0600 file), and speaks mutual TLS only (--mtls strict) to the other
// sidecars and to the control plane; the demo and meshctl verify the
// control plane against its trust bundle, DATA_DIR/ca-bundle.pem.
//
// No sidecar is told where another is: they find each other through SWIM
// gossip (every sidecar joins the control plane's gossip port). The demo
// shows routing, mutual TLS and the caller's identity as the app sees it,
// an AuthorizationPolicy denying what web may not do, a policy applied with
// meshctl, retries, a circuit breaker, a crash leaving every view, write
// fencing when two kv replicas freeze (a partition as kv-1 sees it), and
// the causal order of a trace; then it stops every process it started,
// also on failure or Ctrl-C (continuing frozen ones first).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() { os.Exit(run()) }

func run() int {
	bin := flag.String("bin", "bin", "directory holding the sidecar, controlplane, meshctl, echo, orders, inventory and kv binaries")
	requests := flag.Int("requests", 12, "orders requests to send in the first traffic step")
	policies := flag.String("policies", "examples/policies", "directory holding inventory-canary.yaml, orders-authz.yaml and kv-fencing.yaml")
	keep := flag.Bool("keep", false, "keep the temporary directory (logs, control-plane data) after a successful run")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	d := &demo{bin: *bin, policies: *policies, keep: *keep}
	began := time.Now()
	// Deferred so that processes are stopped even if a step panics.
	defer func() {
		if killed := d.stopAll(); killed > 0 {
			fmt.Fprintf(os.Stderr, "%d processes did not stop within %v of SIGTERM and were killed\n", killed, stopGrace)
		}
	}()
	err := d.run(ctx, *requests)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		if d.dir != "" {
			fmt.Fprintln(os.Stderr, "logs of every process are in", d.dir)
		}
		return 1
	}
	stopping := time.Now()
	if killed := d.stopAll(); killed > 0 {
		fmt.Fprintf(os.Stderr, "%d processes did not stop within %v of SIGTERM and were killed\n", killed, stopGrace)
		return 1
	}
	fmt.Printf("   all stopped in %v; the demo took %v\n", time.Since(stopping).Round(10*time.Millisecond),
		time.Since(began).Round(100*time.Millisecond))
	if !d.keep {
		if err := os.RemoveAll(d.dir); err != nil {
			fmt.Fprintln(os.Stderr, "removing", d.dir+":", err)
		}
	}
	return 0
}

// mesh holds the addresses of everything the demo runs.
type mesh struct {
	inv1, inv2, canary, orders, web, flaky, echoA, echoB sidecarPorts
	inv1App, inv2App, canaryApp, ordersApp               string
	flakyApp, echoAApp, echoBApp                         string
	// The kv replicas, in order kv-1, kv-2, kv-3.
	kv    [3]sidecarPorts
	kvApp [3]string

	gone map[string]bool // admin addresses of sidecars the demo stopped or killed
}

// admins are the admin addresses of every sidecar still running, but the
// kv replicas': once the partition step scopes a fencing domain to them,
// they know that domain's epoch, not the rest of the mesh's.
func (m *mesh) admins() []string {
	var out []string
	for _, p := range []sidecarPorts{m.inv1, m.inv2, m.canary, m.orders, m.flaky, m.echoA, m.echoB, m.web} {
		if !m.gone[p.admin] {
			out = append(out, p.admin)
		}
	}
	return out
}

// kvAdmins are the admin addresses of the kv replicas' sidecars.
func (m *mesh) kvAdmins() []string {
	return []string{m.kv[0].admin, m.kv[1].admin, m.kv[2].admin}
}

func (d *demo) run(ctx context.Context, n int) error {
	var err error
	if d.dir, err = os.MkdirTemp("", "causeway-demo-"); err != nil {
		return err
	}
	fmt.Println("Causeway demo: a mesh of sidecars and a control plane on this machine")
	fmt.Println()
	m, err := d.allocate()
	if err != nil {
		return err
	}
	if err := d.startControlPlane(ctx); err != nil {
		return err
	}
	if err := d.createTokens(ctx); err != nil {
		return err
	}
	if err := d.startMesh(ctx, m); err != nil {
		return err
	}
	steps := []func(context.Context, *mesh) error{
		d.stepMesh,
		func(ctx context.Context, m *mesh) error { return d.stepOrders(ctx, m, n) },
		d.stepWrite,
		d.stepSmuggling,
		d.stepUnknownService,
		d.stepMTLS,
		d.stepAuthz,
		d.stepClusters,
		d.stepMetrics,
		d.stepCanary,
		d.stepRetries,
		d.stepBreaker,
		d.stepCrash,
		d.stepPartition,
		// Last, so the demo ends on the causal timeline of a request chain.
		d.stepTrace,
	}
	for i, step := range steps {
		fmt.Printf("%d. ", i)
		if err := step(ctx, m); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
		fmt.Println()
	}
	fmt.Printf("%d. stopping everything (SIGTERM: each sidecar gossips not-ready, drains, leaves the pool, exits)\n", len(steps))
	return nil
}
