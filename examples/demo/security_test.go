package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// testCA is a root and a serving certificate for one SPIFFE ID.
func testCA(t *testing.T, id string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(2 * time.Hour / 3),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, leafKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
}

// mtlsServer accepts TLS 1.3 connections that must present a client
// certificate, as a strict sidecar's inbound port does.
func mtlsServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"}, ClientAuth: tls.RequireAnyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

func TestProbeInbound(t *testing.T) {
	const id = "spiffe://causeway.local/ns/default/sa/echo"
	roots, cert := testCA(t, id)
	addr := mtlsServer(t, cert)

	p, err := probeInbound(addr, roots)
	if err != nil {
		t.Fatal(err)
	}
	if p.version != tls.VersionTLS13 || p.alpn != "h2" || p.identity != id || p.refusal == nil {
		t.Errorf("probe = %s, ALPN %q, %q, refusal %v; want TLS 1.3, h2, %q, refused",
			tlsVersionName(p.version), p.alpn, p.identity, p.refusal, id)
	}
	if p.validFor <= 0 || p.validFor > time.Hour {
		t.Errorf("valid for %v, want the leaf's remaining 40m", p.validFor)
	}

	otherRoots, _ := testCA(t, id)
	if _, err := probeInbound(addr, otherRoots); err == nil {
		t.Error("a certificate from another CA was accepted")
	}
}

func TestPlaintextProbeRefused(t *testing.T) {
	_, cert := testCA(t, "spiffe://causeway.local/ns/default/sa/echo")
	addr := mtlsServer(t, cert)
	if got := plaintextProbe(addr); got == "" || strings.HasPrefix(got, "answered") {
		t.Errorf("plaintext to a TLS-only port: %q, want no response", got)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	if got := plaintextProbe(addr); !strings.HasPrefix(got, "not connected") {
		t.Errorf("closed port: %q", got)
	}
}

func TestEchoedHeader(t *testing.T) {
	tests := []struct{ body, name, want string }{
		{`{"headers":{"X-Mesh-Peer-Identity":"spiffe://td/ns/default/sa/web"}}`, "x-mesh-peer-identity", "spiffe://td/ns/default/sa/web"},
		{`{"headers":{"Accept":"*/*"}}`, "X-Mesh-Peer-Identity", ""},
		{`403 forbidden`, "X-Mesh-Peer-Identity", ""},
	}
	for _, tt := range tests {
		if got := echoedHeader([]byte(tt.body), tt.name); got != tt.want {
			t.Errorf("echoedHeader(%q, %q) = %q, want %q", tt.body, tt.name, got, tt.want)
		}
	}
}

func TestRoughDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{24*time.Hour - 3*time.Second, "24h"},
		{90 * time.Minute, "2h"},
		{40*time.Minute + 20*time.Second, "40m"},
		{0, "0m"},
	}
	for _, tt := range tests {
		if got := roughDuration(tt.d); got != tt.want {
			t.Errorf("roughDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
