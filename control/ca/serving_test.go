package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func base64Lines(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 64 {
		out.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	out.WriteString(s + "\n")
	return out.String()
}

func TestServerTLSConfig(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir(), td)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ServerTLSConfig(nil); err == nil {
		t.Fatal("no hosts accepted")
	}
	if _, err := c.ServerTLSConfig([]string{"bad host!"}); err == nil {
		t.Fatal("invalid host accepted")
	}
	cfg, err := c.ServerTLSConfig([]string{"127.0.0.1", "controlplane.mesh"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			_ = conn.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()

	dial := func(clientCert *tls.Certificate) (*x509.Certificate, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cc := &tls.Config{RootCAs: c.Pool(), ServerName: "controlplane.mesh", MinVersion: tls.VersionTLS13}
		if clientCert != nil {
			cc.Certificates = []tls.Certificate{*clientCert}
		}
		d := tls.Dialer{Config: cc}
		conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		// In TLS 1.3 the server's verdict on a client certificate arrives
		// after the client's handshake: read to see it.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		if err != nil && !strings.Contains(err.Error(), "EOF") {
			return nil, err
		}
		return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
	}
	leaf, err := dial(nil)
	if err != nil {
		t.Fatalf("handshake without client certificate: %v", err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	// A certificate of a foreign CA is refused.
	foreign, _ := LoadOrCreate(t.TempDir(), td)
	bad := signedPair(t, foreign)
	if _, err := dial(bad); err == nil {
		t.Fatal("client certificate of a foreign CA accepted")
	}
	if _, err := dial(signedPair(t, c)); err != nil {
		t.Fatalf("valid client certificate refused: %v", err)
	}

	// After a rotation the serving certificate follows the new issuer.
	oldRoot := c.Issuer()
	if _, err := c.Rotate(); err != nil {
		t.Fatal(err)
	}
	leaf2, err := dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf2.CheckSignatureFrom(c.Issuer()); err != nil {
		t.Fatalf("serving certificate not reissued by the new root: %v", err)
	}
	// Until the old root is pruned, its chain lets a client that trusts
	// only the old root verify it.
	cert, err := sc(c).get()
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for _, der := range cert.Certificate {
		x, _ := x509.ParseCertificate(der)
		chain = append(chain, x)
	}
	if err := verifyWith(time.Now(), chain, oldRoot); err != nil {
		t.Fatalf("a client on the old bundle cannot verify the new serving certificate: %v", err)
	}
}

func sc(c *CA) *servingCache {
	return &servingCache{ca: c, hosts: []string{"127.0.0.1"}, ttl: time.Hour}
}

// signedPair is a client certificate for "orders" issued by c.
func signedPair(t *testing.T, c *CA) *tls.Certificate {
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
	chain, err := c.Sign(csr, spiffeid.Must(td, "", "orders"), 0)
	if err != nil {
		t.Fatal(err)
	}
	out := &tls.Certificate{PrivateKey: key}
	for _, x := range chain {
		out.Certificate = append(out.Certificate, x.Raw)
	}
	return out
}
