package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Resilience settings of the web sidecar, written to its --config file
// (shape: proxy/config/resilience.go). The breaker opens after three
// failures in a row and stays open breakerOpenFor (default 10 s) so that
// the breaker step need not wait long; outlier ejection is off so that
// the breaker alone decides.
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

// startControlPlane starts the control plane as the mesh's certificate
// authority (--tls) with its data in the demo's directory, and waits until
// its trust bundle exists, it answers over TLS, its token exists and (if
// the receiver is mounted) it accepts spans.
func (d *demo) startControlPlane(ctx context.Context) error {
	if err := d.start("controlplane", nil, "controlplane", "--xds", d.cpXDS, "--api", d.cpAPI,
		"--data-dir", d.cpData(), "--gossip", d.cpGossip, "--node-name", "controlplane", "--tls"); err != nil {
		return err
	}
	// The bundle is written before the listeners open: trust it, then
	// wait for the API.
	err := poll(ctx, readyTimeout, 20*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(d.cpBundle())
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return false, nil // not written yet
		case err != nil:
			return false, err
		}
		d.roots = x509.NewCertPool()
		if !d.roots.AppendCertsFromPEM(b) {
			return false, fmt.Errorf("%s holds no certificate", d.cpBundle())
		}
		return true, nil
	}, func() string { return "trust bundle " + d.cpBundle() + " not written" })
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: d.roots, MinVersion: tls.VersionTLS13}
	d.cpClient = &http.Client{Transport: tr, Timeout: client.Timeout}
	if err := waitReady(ctx, d.cpClient, "https://"+d.cpAPI+"/healthz"); err != nil {
		return err
	}
	tokenFile := filepath.Join(d.cpData(), "api-token")
	err = poll(ctx, 5*time.Second, 20*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(tokenFile) // #nosec G304 -- the demo's own temp dir
		d.token = strings.TrimSpace(string(b))
		return err == nil && d.token != "", nil
	}, func() string { return "token file " + tokenFile + " not written" })
	if err != nil {
		return err
	}
	d.tracesMounted, err = d.otlpMounted()
	return err
}

// otlpMounted reports whether the control plane accepts OTLP/HTTP spans
// on POST /v1/traces: an empty export is accepted where the receiver is
// mounted, and 404 or 405 where it is not.
func (d *demo) otlpMounted() (bool, error) {
	resp, err := d.cpClient.Post("https://"+d.cpAPI+"/v1/traces", "application/x-protobuf", http.NoBody)
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

// meshServices are the services of the demo's sidecars; each gets its own
// bootstrap token.
var meshServices = []string{"inventory", "inventory-canary", "orders", "flaky", "echo", "web", "kv"}

// bootstrapTokenTTL is the lifetime of the demo's bootstrap tokens: a
// sidecar presents its token once, at start, then renews its certificate
// over mutual TLS.
const bootstrapTokenTTL = "10m"

// createTokens asks the control plane (with meshctl) for a bootstrap token
// per service and writes each to its own 0600 file, as an operator would
// hand one to a deployment.
func (d *demo) createTokens(ctx context.Context) error {
	dir := filepath.Join(d.dir, "tokens")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	d.tokenFiles = map[string]string{}
	for _, svc := range meshServices {
		out, err := d.meshctlStdout(ctx, "token", "create", "--service", svc, "--ttl", bootstrapTokenTTL)
		if err != nil {
			return err
		}
		file := filepath.Join(dir, svc+".token")
		if err := os.WriteFile(file, []byte(out), 0o600); err != nil {
			return err
		}
		d.tokenFiles[svc] = file
	}
	return nil
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
		kv:    [3]sidecarPorts{a.sidecar(), a.sidecar(), a.sidecar()},
		kvApp: [3]string{a.next(), a.next(), a.next()},
		gone:  map[string]bool{},
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
	// The kv replicas: each app replicates to the other two through its
	// own sidecar, naming each peer by its sidecar's inbound address.
	for i := range m.kv {
		name := kvName(i)
		var peers []string
		for j := range m.kv {
			if j != i {
				peers = append(peers, m.kv[j].inbound)
			}
		}
		steps = append(steps,
			d.start(name, nil, "kv", "--listen", m.kvApp[i], "--name", name,
				"--peers", strings.Join(peers, ","), "--mesh", m.kv[i].outbound, "--service", "kv"),
			d.sidecar("kv", name, m.kvApp[i], "http1", m.kv[i]))
	}
	if err := errors.Join(steps...); err != nil {
		return err
	}
	for _, p := range []sidecarPorts{m.inv1, m.inv2, m.canary, m.orders, m.flaky, m.echoA, m.echoB, m.web, m.kv[0], m.kv[1], m.kv[2]} {
		if err := waitReady(ctx, client, "http://"+p.health+"/ready"); err != nil {
			return err
		}
	}
	fenceStart := time.Now()
	fence, err := waitUnfenced(ctx, append(m.admins(), m.kvAdmins()...))
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
		{m.kv[0].admin, "kv", 3}, {m.kv[1].admin, "kv", 3}, {m.kv[2].admin, "kv", 3},
	} {
		if err := waitEndpoints(ctx, w.admin, w.service, w.n); err != nil {
			return err
		}
	}

	fmt.Println("  started    controlplane --tls         xDS " + d.cpXDS + ", API https://" + d.cpAPI + ", gossip " + d.cpGossip)
	fmt.Println("             inventory-1, inventory-2   gRPC apps, each behind its own sidecar (--app-protocol grpc)")
	fmt.Println("             inventory-canary-1         a new inventory version, service inventory-canary (canary step)")
	fmt.Println("             orders-1                   HTTP app; calls inventory through its sidecar's outbound port")
	fmt.Println("             flaky-1                    echo answering 503 to 30% of requests (retries step)")
	fmt.Println("             echo-a, echo-b             two echo instances; echo-b can be told to fail (breaker step)")
	fmt.Println("             web-1 sidecar              the demo sends its requests here, as an app would")
	fmt.Println("             kv-1, kv-2, kv-3           key-value replicas; each replicates its writes to the other two")
	fmt.Println("                                        through its own sidecar (kv --peers PEER-INBOUNDS --mesh OWN-OUTBOUND)")
	fmt.Println("  identity   the control plane is the mesh's CA: trust bundle " + d.cpBundle())
	fmt.Println("             a bootstrap token per service, each in its own 0600 file:")
	fmt.Println("               meshctl token create --service SERVICE --ttl " + bootstrapTokenTTL + " > " + filepath.Join(d.dir, "tokens", "SERVICE.token"))
	fmt.Println("  mTLS       every sidecar: --mtls strict --ca-bundle ca-bundle.pem --bootstrap-token-file SERVICE.token")
	fmt.Println("  discovery  every sidecar gossips (SWIM, memberlist) and joins the control plane's gossip port")
	fmt.Println("  config     every sidecar: --control-plane " + d.cpXDS + " (xDS over mutual TLS); web-1 also --config " + webFile)
	if d.tracesMounted {
		fmt.Println("  traces     every sidecar: OTEL_EXPORTER_OTLP_ENDPOINT=https://" + d.cpAPI + " OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
		fmt.Println("             OTEL_EXPORTER_OTLP_CERTIFICATE=" + d.cpBundle())
	} else {
		fmt.Println("  traces     off: the control plane does not accept POST /v1/traces (the trace step is skipped)")
	}
	fmt.Printf("  fencing    writes are refused until the control plane counts a quorum of the sidecars' gossip views:\n")
	fmt.Printf("             admitted under epoch %d after %v (curl http://ADMIN/fencing)\n", fence.Epoch, fenceWait.Round(10*time.Millisecond))
	fmt.Println("  meshctl    export MESH_SERVER=https://" + d.cpAPI + " MESH_DATA_DIR=" + d.cpData())
	fmt.Println("             (meshctl verifies the control plane against MESH_DATA_DIR/ca-bundle.pem; or --ca-file FILE)")
	if d.keep {
		fmt.Println("  logs       " + d.dir)
	} else {
		fmt.Println("  logs       " + d.dir + " (removed at the end unless the demo fails; -keep keeps it)")
	}
	fmt.Println()
	return nil
}
