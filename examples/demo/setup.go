package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Resilience settings of the web sidecar, written to its --config file
// (shape: proxy/config/resilience.go). The breaker opens after three
// failures in a row and stays open breakerOpenFor (default 10 s) so that
// step 9 need not wait long; outlier ejection is off so that the breaker
// alone decides.
const (
	breakerFailures = 3
	breakerOpenFor  = 3 * time.Second
)

var webConfig = fmt.Sprintf(`# The demo's web sidecar: resilience for every service it calls.
# Flags give everything else.
resilience:
  breaker:
    consecutiveFailures: %d
    openFor: %v
  outlier:
    consecutiveGatewayErrors: 0
`, breakerFailures, breakerOpenFor)

// startControlPlane starts the control plane with its data in the demo's
// directory and waits until it answers, its token exists and (if the
// receiver is mounted) it accepts spans.
func (d *demo) startControlPlane(ctx context.Context) error {
	if err := d.start("controlplane", nil, "controlplane", "--xds", d.cpXDS, "--api", d.cpAPI,
		"--data-dir", d.cpData(), "--gossip", d.cpGossip, "--node-name", "controlplane"); err != nil {
		return err
	}
	if err := waitReady(ctx, "http://"+d.cpAPI+"/healthz"); err != nil {
		return err
	}
	tokenFile := filepath.Join(d.cpData(), "api-token")
	err := poll(ctx, 5*time.Second, 20*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(tokenFile) // #nosec G304 -- the demo's own temp dir
		d.token = strings.TrimSpace(string(b))
		return err == nil && d.token != "", nil
	}, func() string { return "token file " + tokenFile + " not written" })
	if err != nil {
		return err
	}
	d.tracesMounted, err = otlpMounted(d.cpAPI)
	return err
}

// otlpMounted reports whether the control plane accepts OTLP/HTTP spans
// on POST /v1/traces: an empty export is accepted where the receiver is
// mounted, and 404 or 405 where it is not.
func otlpMounted(api string) (bool, error) {
	resp, err := client.Post("http://"+api+"/v1/traces", "application/x-protobuf", http.NoBody)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		return true, nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		return false, nil
	}
	return false, fmt.Errorf("POST /v1/traces with an empty export: %s", resp.Status)
}

// allocate picks distinct free loopback ports for the control plane and
// everything in the mesh.
func (d *demo) allocate() (*mesh, error) {
	var a portAllocator
	d.cpXDS, d.cpAPI, d.cpGossip = a.next(), a.next(), a.next()
	m := &mesh{
		inv1: a.sidecar(), inv2: a.sidecar(), canary: a.sidecar(), orders: a.sidecar(), web: a.sidecar(),
		flaky: a.sidecar(), echoA: a.sidecar(), echoB: a.sidecar(),
		inv1App: a.next(), inv2App: a.next(), canaryApp: a.next(), ordersApp: a.next(),
		flakyApp: a.next(), echoAApp: a.next(), echoBApp: a.next(),
		gone: map[string]bool{},
	}
	return m, a.release()
}

// startMesh starts every app and sidecar and waits until each sidecar is
// ready, every caller knows its callees and writes are admitted.
func (d *demo) startMesh(ctx context.Context, m *mesh) error {
	webFile := filepath.Join(d.dir, "web-sidecar.yaml")
	if err := os.WriteFile(webFile, []byte(webConfig), 0o600); err != nil {
		return err
	}
	steps := []error{
		d.start("inventory-1", nil, "inventory", "--listen", m.inv1App, "--name", "inventory-1"),
		d.start("inventory-2", nil, "inventory", "--listen", m.inv2App, "--name", "inventory-2"),
		d.start("inventory-canary-1", nil, "inventory", "--listen", m.canaryApp, "--name", "inventory-canary-1"),
		d.start("orders-1", nil, "orders", "--listen", m.ordersApp, "--name", "orders-1", "--inventory", m.orders.outbound),
		d.start("flaky-1", nil, "echo", "--listen", m.flakyApp, "--name", "flaky-1", "--fail-rate", "0.3"),
		d.start("echo-a", nil, "echo", "--listen", m.echoAApp, "--name", "echo-a"),
		d.start("echo-b", nil, "echo", "--listen", m.echoBApp, "--name", "echo-b"),
		d.sidecar("inventory", "inventory-1", m.inv1App, "grpc", m.inv1),
		d.sidecar("inventory", "inventory-2", m.inv2App, "grpc", m.inv2),
		d.sidecar("inventory-canary", "inventory-canary-1", m.canaryApp, "grpc", m.canary),
		d.sidecar("orders", "orders-1", m.ordersApp, "http1", m.orders),
		d.sidecar("flaky", "flaky-1", m.flakyApp, "http1", m.flaky),
		d.sidecar("echo", "echo-a", m.echoAApp, "http1", m.echoA),
		d.sidecar("echo", "echo-b", m.echoBApp, "http1", m.echoB),
		d.sidecar("web", "web-1", "127.0.0.1:1", "http1", m.web, "--config", webFile),
	}
	if err := errors.Join(steps...); err != nil {
		return err
	}
	for _, p := range []sidecarPorts{m.inv1, m.inv2, m.canary, m.orders, m.flaky, m.echoA, m.echoB, m.web} {
		if err := waitReady(ctx, "http://"+p.health+"/ready"); err != nil {
			return err
		}
	}
	fenceStart := time.Now()
	fence, err := waitUnfenced(ctx, m.admins())
	if err != nil {
		return err
	}
	fenceWait := time.Since(fenceStart)
	// Wait until gossip has told every caller about its callees.
	for _, w := range []struct {
		admin, service string
		n              int
	}{
		{m.orders.admin, "inventory", 2}, {m.orders.admin, "inventory-canary", 1},
		{m.web.admin, "orders", 1}, {m.web.admin, "flaky", 1}, {m.web.admin, "echo", 2},
	} {
		if err := waitEndpoints(ctx, w.admin, w.service, w.n); err != nil {
			return err
		}
	}

	fmt.Println("  started    controlplane               xDS " + d.cpXDS + ", API " + d.cpAPI + ", gossip " + d.cpGossip)
	fmt.Println("             inventory-1, inventory-2   gRPC apps, each behind its own sidecar (--app-protocol grpc)")
	fmt.Println("             inventory-canary-1         a new inventory version, service inventory-canary (step 7)")
	fmt.Println("             orders-1                   HTTP app; calls inventory through its sidecar's outbound port")
	fmt.Println("             flaky-1                    echo answering 503 to 30% of requests (step 8)")
	fmt.Println("             echo-a, echo-b             two echo instances; echo-b can be told to fail (step 9)")
	fmt.Println("             web-1 sidecar              the demo sends its requests here, as an app would")
	fmt.Println("  discovery  every sidecar gossips (SWIM, memberlist) and joins the control plane's gossip port")
	fmt.Println("  config     every sidecar: --control-plane " + d.cpXDS + " (xDS); web-1 also --config " + webFile)
	if d.tracesMounted {
		fmt.Println("  traces     every sidecar: OTEL_EXPORTER_OTLP_ENDPOINT=http://" + d.cpAPI + " OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
	} else {
		fmt.Println("  traces     off: the control plane does not accept POST /v1/traces (step 10 is skipped)")
	}
	fmt.Printf("  fencing    writes are refused until the control plane counts a quorum of the sidecars' gossip views:\n")
	fmt.Printf("             admitted under epoch %d after %v (curl http://ADMIN/fencing)\n", fence.Epoch, fenceWait.Round(10*time.Millisecond))
	fmt.Println("  meshctl    export MESH_SERVER=http://" + d.cpAPI + " MESH_DATA_DIR=" + d.cpData())
	if d.keep {
		fmt.Println("  logs       " + d.dir)
	} else {
		fmt.Println("  logs       " + d.dir + " (removed at the end unless the demo fails; -keep keeps it)")
	}
	fmt.Println()
	return nil
}
