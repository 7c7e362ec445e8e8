package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// tlsProbe is what a TLS client that trusts the mesh CA, but has no
// certificate of its own, learns from a sidecar's inbound port.
type tlsProbe struct {
	version  uint16
	alpn     string
	identity string        // the SPIFFE ID in the sidecar's certificate
	validFor time.Duration // until the certificate expires
	refusal  error         // what the sidecar answered to the missing client certificate
}

// probeInbound completes a TLS handshake with a sidecar's inbound port
// (verifying its certificate against roots, as any mesh peer does, but by
// SPIFFE ID rather than host name) and reads once, to see the sidecar
// refuse a client without a certificate.
func probeInbound(addr string, roots *x509.CertPool) (tlsProbe, error) {
	var p tlsProbe
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12, // the sidecar picks; the probe reports what it picked
		NextProtos: []string{"h2"},
		// Mesh certificates name a SPIFFE ID, not a host: the chain is
		// verified in VerifyConnection instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return err
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].Scheme != "spiffe" {
				return fmt.Errorf("certificate names %v, want one SPIFFE ID", leaf.URIs)
			}
			p.identity, p.validFor = leaf.URIs[0].String(), time.Until(leaf.NotAfter)
			return nil
		},
	}
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(dialer, "tcp", addr, cfg)
	if err != nil {
		return p, fmt.Errorf("TLS to %s: %w", addr, err)
	}
	defer c.Close()
	cs := c.ConnectionState()
	p.version, p.alpn = cs.Version, cs.NegotiatedProtocol
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	timedOut := errors.As(err, &ne) && ne.Timeout()
	if err != nil && !timedOut {
		p.refusal = err // silence until the deadline is no refusal
	}
	return p, nil
}

// plaintextProbe sends a plaintext HTTP request to addr and describes
// what came back.
func plaintextProbe(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "not connected: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: echo\r\n\r\n"); err != nil {
		return "refused while sending: " + err.Error()
	}
	n, err := c.Read(make([]byte, 512))
	switch {
	case n > 0:
		return fmt.Sprintf("answered with %d bytes", n)
	case errors.Is(err, io.EOF):
		return "connection closed without a response"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset without a response"
	default:
		return "no response: " + err.Error()
	}
}

// roughDuration renders d in whole hours, or minutes under an hour.
func roughDuration(d time.Duration) string {
	if d >= time.Hour {
		return fmt.Sprintf("%dh", int(d.Round(time.Hour).Hours()))
	}
	return fmt.Sprintf("%dm", int(d.Round(time.Minute).Minutes()))
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLS 1.3"
	case tls.VersionTLS12:
		return "TLS 1.2"
	}
	return fmt.Sprintf("TLS 0x%04x", v)
}

// echoedHeader is a request header as the echo app received it ("" when
// absent), from the request headers it echoes back.
func echoedHeader(body []byte, name string) string {
	var v struct {
		Headers map[string]string `json:"headers"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	for k, val := range v.Headers {
		if strings.EqualFold(k, name) {
			return val
		}
	}
	return ""
}

// stepMTLS shows that every sidecar's inbound port speaks TLS 1.3 with a
// SPIFFE certificate and refuses anyone without one, and that the app
// behind a sidecar learns its caller's verified identity.
func (d *demo) stepMTLS(ctx context.Context, m *mesh) error {
	fmt.Println("mutual TLS: every hop is TLS 1.3 with SPIFFE identities; the app sees the caller")
	fmt.Println("   every sidecar's inbound port, probed by a TLS client that trusts ca-bundle.pem but has no certificate:")
	fmt.Printf("   %-19s %-16s %-8s %-5s %-54s %s\n", "node", "inbound", "protocol", "alpn", "certificate names", "expires in")
	var refusal error
	nodes := []struct {
		node string
		p    sidecarPorts
	}{
		{"inventory-1", m.inv1}, {"inventory-2", m.inv2}, {"inventory-canary-1", m.canary}, {"orders-1", m.orders},
		{"flaky-1", m.flaky}, {"echo-a", m.echoA}, {"echo-b", m.echoB}, {"web-1", m.web},
	}
	for _, n := range nodes {
		p, err := probeInbound(n.p.inbound, d.roots)
		if err != nil {
			return fmt.Errorf("%s: %w", n.node, err)
		}
		if p.version != tls.VersionTLS13 || p.alpn != "h2" || p.refusal == nil {
			return fmt.Errorf("%s's inbound port: %s, ALPN %q, client without a certificate refused: %t; want TLS 1.3, h2, refused",
				n.node, tlsVersionName(p.version), p.alpn, p.refusal != nil)
		}
		refusal = p.refusal
		fmt.Printf("   %-19s %-16s %-8s %-5s %-54s %s\n", n.node, n.p.inbound, tlsVersionName(p.version), p.alpn, p.identity,
			roughDuration(p.validFor))
	}
	fmt.Printf("   each refused the client for having no certificate: %v\n", refusal)
	fmt.Printf("   a plaintext request to echo-a's inbound port (strict mode): %s\n", plaintextProbe(m.echoA.inbound))
	fmt.Println("   (certificates come from the control plane's Identity service; each sidecar renews its own at two")
	fmt.Println("    thirds of the lifetime over mutual TLS, and checks that a peer names the service at its address)")

	forged := "spiffe://causeway.local/ns/default/sa/orders"
	fmt.Println("   what the echo app behind its sidecar received, for a request from the demo through web-1,")
	fmt.Println("   with a forged identity header added by the calling app:")
	fmt.Printf("   $ curl -H 'Host: echo' -H 'x-mesh-peer-identity: %s' http://%s/whoami\n", forged, m.web.outbound)
	r, err := call(ctx, m, http.MethodGet, "echo", "/whoami", "", map[string]string{"x-mesh-peer-identity": forged})
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		return fmt.Errorf("GET echo/whoami: %d %s", r.status, r.body)
	}
	seen := echoedHeader(r.body, "X-Mesh-Peer-Identity")
	fmt.Printf("   %d from %s; it saw x-mesh-peer-identity: %s\n", r.status, r.header.Get("X-Echo-Instance"), seen)
	if !strings.HasSuffix(seen, "/sa/web") {
		return fmt.Errorf("the echo app saw x-mesh-peer-identity %q, want web's SPIFFE ID", seen)
	}
	fmt.Println("   web-1's sidecar removed the forged header; echo's sidecar set the identity it verified in the handshake")
	return nil
}

// authzCase is one request of the authorization step.
type authzCase struct {
	method, path, body string
	want               int
	note               string
}

// stepAuthz applies the orders AuthorizationPolicy and shows what web may
// and may not do, including a path that only looks allowed.
func (d *demo) stepAuthz(ctx context.Context, m *mesh) error {
	file := filepath.Join(d.policies, "orders-authz.yaml")
	fmt.Println("authorization: only web may call orders, and only to read orders (GET /orders/*) or place one (POST /orders)")
	fmt.Printf("   before the policy web-1 may call anything on orders: curl -H 'Host: orders' http://%s/healthz\n", m.web.outbound)
	r, err := call(ctx, m, http.MethodGet, "orders", "/healthz", "", nil)
	if err != nil {
		return err
	}
	fmt.Printf("   %d %s\n", r.status, strings.TrimSpace(string(r.body)))

	before, err := controlPlaneVersion(m.orders.admin)
	if err != nil {
		return err
	}
	applied := time.Now()
	if err := d.meshctl(ctx, "apply", "-f", file); err != nil {
		return err
	}
	versions, err := waitConfigApplied(ctx, m, before)
	if err != nil {
		return err
	}
	fmt.Printf("   every sidecar applied configuration %s %v after the apply; orders' sidecars evaluate it on the\n",
		versions["orders-1"], time.Since(applied).Round(time.Millisecond))
	fmt.Println("   caller's verified identity (mutual TLS) and the normalized path:")

	cases := []authzCase{
		{http.MethodGet, "/orders/widget", "", http.StatusOK, "allowed: web-reads-orders"},
		{http.MethodPost, "/orders", `{"sku":"widget","quantity":1}`, http.StatusOK, "allowed: web-places-orders"},
		{http.MethodGet, "/healthz", "", http.StatusForbidden, "no rule allows it (default: deny)"},
		{http.MethodDelete, "/orders/widget", "", http.StatusForbidden, "the path is allowed, not the method"},
		{http.MethodGet, "/orders/../admin", "", http.StatusForbidden, "normalized to /admin before the rules see it"},
		{http.MethodGet, "/orders/%2e%2e/healthz", "", http.StatusForbidden, "%2e decoded, then normalized to /healthz"},
	}
	fmt.Printf("   %-7s %-23s %-6s %-14s %s\n", "method", "path", "status", "x-mesh-error", "")
	for _, c := range cases {
		r, err := call(ctx, m, c.method, "orders", c.path, c.body, nil)
		if err != nil {
			return err
		}
		fmt.Printf("   %-7s %-23s %-6d %-14s %s\n", c.method, c.path, r.status, r.meshError(), c.note)
		if r.status != c.want || (c.want == http.StatusForbidden && r.meshError() != "forbidden") {
			return fmt.Errorf("%s orders%s: %d x-mesh-error %s, want %d (403 with x-mesh-error forbidden)",
				c.method, c.path, r.status, r.meshError(), c.want)
		}
	}
	fmt.Printf("   (curl --path-as-is -H 'Host: orders' 'http://%s/orders/../admin'; the orders app never saw the denied ones)\n", m.web.outbound)
	fmt.Printf("   $ curl http://%s/metrics | grep mesh_authz_denied_total     (orders-1's sidecar)\n", m.orders.health)
	return printMetrics("http://"+m.orders.health+"/metrics", []string{"mesh_authz_denied_total"})
}

// waitConfigApplied waits until every running sidecar applied the same
// control-plane configuration, newer than before (orders-1's version
// before a change), and returns each node's version.
func waitConfigApplied(ctx context.Context, m *mesh, before string) (map[string]string, error) {
	admins := map[string]string{}
	for node, admin := range map[string]string{
		"inventory-1": m.inv1.admin, "inventory-2": m.inv2.admin, "inventory-canary-1": m.canary.admin,
		"orders-1": m.orders.admin, "flaky-1": m.flaky.admin, "echo-a": m.echoA.admin, "echo-b": m.echoB.admin, "web-1": m.web.admin,
	} {
		if !m.gone[admin] {
			admins[node] = admin
		}
	}
	// The control plane debounces changes, builds one snapshot and pushes
	// it to every sidecar; wait until all of them applied the same one.
	versions := map[string]string{}
	err := poll(ctx, 15*time.Second, 50*time.Millisecond, func() (bool, error) {
		for node, admin := range admins {
			v, err := controlPlaneVersion(admin)
			if err != nil {
				return false, err
			}
			versions[node] = v
		}
		return versions["orders-1"] != before && len(distinct(versions)) == 1, nil
	}, func() string {
		return fmt.Sprintf("sidecars never agreed on a configuration newer than %s: %v", before, versions)
	})
	return versions, err
}
