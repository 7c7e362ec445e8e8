package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// issue signs a fresh key for id with c and returns it as a TLS certificate.
func issue(t testing.TB, c *ca.CA, id spiffeid.ID, ttl time.Duration) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	chain, err := c.Sign(csr, id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	out := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		out.Certificate = append(out.Certificate, x.Raw)
	}
	return out
}

func credsFor(t testing.TB, c *ca.CA, id spiffeid.ID, bundle ...*x509.Certificate) *Credentials {
	t.Helper()
	cr, err := NewCredentials(td)
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle) == 0 {
		bundle = c.Roots()
	}
	if err := cr.Update(issue(t, c, id, time.Hour), bundle); err != nil {
		t.Fatal(err)
	}
	return cr
}

// meshServer accepts TLS connections with cfg and reports each handshake.
type result struct {
	id  spiffeid.ID
	err error
}

func meshServer(t testing.TB, cfg *tls.Config) (addr string, results <-chan result) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan result, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			err = tc.Handshake()
			var id spiffeid.ID
			if err == nil {
				id, err = PeerIdentity(tc.ConnectionState())
				_, _ = tc.Write([]byte("k"))
			}
			select {
			case ch <- result{id, err}:
			default:
			}
			_ = tc.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), ch
}

// dialMesh handshakes with cfg and reads the server's byte, which is how a
// TLS 1.3 client learns that the server refused its certificate.
func dialMesh(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		return tls.ConnectionState{}, err
	}
	return conn.(*tls.Conn).ConnectionState(), nil
}

func TestHandshakeMatrix(t *testing.T) {
	mesh, err := ca.LoadOrCreate(t.TempDir(), td)
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-30 * time.Minute)
	meshPast, err := ca.LoadOrCreate(t.TempDir(), td, ca.WithClock(func() time.Time { return past }))
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := ca.LoadOrCreate(t.TempDir(), td)
	otherDomain, _ := ca.LoadOrCreate(t.TempDir(), "other.local")

	orders := spiffeid.Must(td, "", "orders")
	billing := spiffeid.Must(td, "", "billing")
	// The server trusts the mesh root, the root that issued the expired
	// certificate, and another trust domain's root, so that those cases
	// fail on expiry and on trust domain rather than on an unknown root.
	bundle := append(append(mesh.Roots(), meshPast.Roots()...), otherDomain.Roots()...)
	server := credsFor(t, mesh, billing, bundle...)
	addr, results := meshServer(t, server.ServerTLSConfig())

	client := credsFor(t, mesh, orders)
	expired := issue(t, meshPast, orders, 10*time.Minute)
	fromForeign := issue(t, foreign, orders, time.Hour)
	otherCert := issue(t, otherDomain, spiffeid.Must("other.local", "", "orders"), time.Hour)

	plain := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13} //nolint:gosec // a client without a certificate
	tls12 := client.ClientTLSConfig(billing)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	otherALPN := client.ClientTLSConfig(billing)
	otherALPN.NextProtos = []string{"spdy/3"}
	rawNoALPN := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*client.Certificate()}} //nolint:gosec // a careless client

	tests := []struct {
		name      string
		cfg       *tls.Config
		serverErr string // substring of the server's handshake error
		clientErr string // substring of the client's error
	}{
		{"good", client.ClientTLSConfig(billing), "", ""},
		{"good, any peer of the domain", client.ClientTLSConfig(spiffeid.ID{}), "", ""},
		{"no client certificate", plain, "client didn't provide a certificate", "certificate required"},
		{"expired client certificate", presenting(client, expired, billing), "expired", "bad certificate"},
		{"untrusted root", presenting(client, fromForeign, billing), "unknown authority", "bad certificate"},
		{"wrong trust domain", presenting(client, otherCert, billing), `trust domain "other.local" is not "mesh.local"`, "bad certificate"},
		{"server is A where B is expected", client.ClientTLSConfig(orders), "", "peer is spiffe://mesh.local/ns/default/sa/billing, want spiffe://mesh.local/ns/default/sa/orders"},
		{"TLS 1.2", tls12, "unsupported versions", "protocol version"},
		{"good, an upgrade connection (ALPN http/1.1)", client.ClientTLSConfigFor(billing, ALPNUpgrade), "", ""},
		{"neither h2 nor http/1.1", otherALPN, "unsupported application protocols", "no application protocol"},
		{"no ALPN, from a client that does not check", rawNoALPN, `ALPN "", want "h2" or "http/1.1"`, "bad certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := dialMesh(addr, tt.cfg)
			if tt.clientErr == "" {
				if err != nil {
					t.Fatalf("client: %v", err)
				}
				id, err := PeerIdentity(cs)
				if err != nil || id != billing {
					t.Fatalf("client PeerIdentity = %v, %v; want %v", id, err, billing)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.clientErr) {
				t.Fatalf("client error = %v, want one containing %q", err, tt.clientErr)
			}
			var r result
			select {
			case r = <-results:
			case <-time.After(5 * time.Second):
				t.Fatal("server reported nothing")
			}
			switch {
			case tt.clientErr == "" && (r.err != nil || r.id != orders):
				t.Fatalf("server: PeerIdentity = %v, %v; want %v", r.id, r.err, orders)
			case tt.serverErr != "" && (r.err == nil || !strings.Contains(r.err.Error(), tt.serverErr)):
				t.Fatalf("server error = %v, want one containing %q", r.err, tt.serverErr)
			}
		})
	}
}

// presenting is client's configuration presenting cert, which Update
// would refuse to install, instead of client's own certificate.
func presenting(client *Credentials, cert *tls.Certificate, expected spiffeid.ID) *tls.Config {
	cfg := client.ClientTLSConfig(expected)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	return cfg
}

func TestUpdateRefusesBadCertificates(t *testing.T) {
	mesh, _ := ca.LoadOrCreate(t.TempDir(), td)
	foreign, _ := ca.LoadOrCreate(t.TempDir(), td)
	cr, _ := NewCredentials(td)
	good := issue(t, mesh, spiffeid.Must(td, "", "orders"), time.Hour)
	otherKey := issue(t, mesh, spiffeid.Must(td, "", "orders"), time.Hour)
	mismatched := &tls.Certificate{Certificate: good.Certificate, PrivateKey: otherKey.PrivateKey}
	for name, tc := range map[string]struct {
		cert   *tls.Certificate
		bundle []*x509.Certificate
	}{
		"nil":          {nil, mesh.Roots()},
		"no bundle":    {good, nil},
		"foreign root": {good, foreign.Roots()},
		"wrong key":    {mismatched, mesh.Roots()},
	} {
		if err := cr.Update(tc.cert, tc.bundle); err == nil {
			t.Errorf("%s: Update accepted", name)
		}
	}
	if cr.Certificate() != nil {
		t.Fatal("a refused Update installed something")
	}
	if err := cr.Update(good, mesh.Roots()); err != nil {
		t.Fatal(err)
	}
	if _, err := PeerIdentity(tls.ConnectionState{}); err == nil {
		t.Fatal("PeerIdentity of an incomplete handshake succeeded")
	}
	if _, err := NewCredentials("Bad Domain"); err == nil {
		t.Fatal("NewCredentials accepted an invalid trust domain")
	}
}

func BenchmarkMeshHandshake(b *testing.B) {
	mesh, err := ca.LoadOrCreate(b.TempDir(), td)
	if err != nil {
		b.Fatal(err)
	}
	server := credsFor(b, mesh, spiffeid.Must(td, "", "billing"))
	client := credsFor(b, mesh, spiffeid.Must(td, "", "orders"))
	addr, _ := meshServer(b, server.ServerTLSConfig())
	cfg := client.ClientTLSConfig(spiffeid.Must(td, "", "billing"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dialMesh(addr, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
