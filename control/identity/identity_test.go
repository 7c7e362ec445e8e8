package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
	"github.com/causeway-mesh/causeway/control/ca/issuer"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/control/identitypb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const td = "mesh.local"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// controlPlane is a CA, a token store and the Identity service on
// 127.0.0.1 over TLS.
type controlPlane struct {
	ca     *ca.CA
	tokens *bootstrap.Store
	addr   string
}

func startControlPlane(t *testing.T, ttl time.Duration) *controlPlane {
	t.Helper()
	return startControlPlaneWith(t, issuer.Config{TTL: ttl})
}

// startControlPlaneWith is startControlPlane with the issuer configured
// by cfg (its CA, Tokens and Log are filled in).
func startControlPlaneWith(t *testing.T, cfg issuer.Config) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	c, err := ca.LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := bootstrap.Open(filepath.Join(dir, bootstrap.FileName))
	if err != nil {
		t.Fatal(err)
	}
	cfg.CA, cfg.Tokens, cfg.Log = c, tokens, quiet
	srv, err := issuer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := c.ServerTLSConfig([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	srv.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	return &controlPlane{ca: c, tokens: tokens, addr: ln.Addr().String()}
}

func (cp *controlPlane) token(t *testing.T, service string, singleUse bool) string {
	t.Helper()
	tok, _, err := cp.tokens.Create(bootstrap.Scope{Service: service}, time.Hour, singleUse)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (cp *controlPlane) manager(t *testing.T, service, token string, anchor Anchor) *Manager {
	t.Helper()
	if anchor.IsZero() {
		var err error
		if anchor, err = AnchorFromBundle(cp.ca.Bundle()); err != nil {
			t.Fatal(err)
		}
	}
	m, err := New(Config{
		ControlPlane: cp.addr, TrustDomain: td, Service: service, Token: token, Anchor: anchor,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Log: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestBootstrapAndRenew(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	ctx := testContext(t)
	m := cp.manager(t, "orders", cp.token(t, "orders", true), Anchor{})
	if err := m.Renew(ctx); err != nil {
		t.Fatalf("bootstrap with token: %v", err)
	}
	first := m.Credentials().Certificate()
	if got := m.Credentials().ID(); got != spiffeid.Must(td, "", "orders") {
		t.Fatalf("ID = %v", got)
	}
	// The token was single use: this renewal can only succeed over mTLS.
	if err := m.Renew(ctx); err != nil {
		t.Fatalf("renewal over mTLS: %v", err)
	}
	second := m.Credentials().Certificate()
	if first.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) == 0 {
		t.Fatal("renewal installed the same certificate")
	}
	if first.PrivateKey.(*ecdsa.PrivateKey).Equal(second.PrivateKey) {
		t.Fatal("renewal reused the private key")
	}
	select {
	case <-m.Ready():
	default:
		t.Fatal("Ready not closed")
	}
}

func TestBootstrapWithPin(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	ctx := testContext(t)
	pin, err := AnchorFromPin(Pin(cp.ca.Issuer()))
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.manager(t, "orders", cp.token(t, "orders", false), pin).Renew(ctx); err != nil {
		t.Fatalf("bootstrap with a pinned CA: %v", err)
	}
	other, _ := ca.LoadOrCreate(t.TempDir(), td)
	wrongPin, _ := AnchorFromPin(Pin(other.Issuer()))
	err = cp.manager(t, "orders", cp.token(t, "orders", false), wrongPin).Renew(ctx)
	if err == nil || !strings.Contains(err.Error(), "pinned CA") {
		t.Fatalf("wrong pin: %v", err)
	}
	for _, bad := range []string{"", "sha256:xyz", "md5:" + strings.Repeat("0", 64), "sha256:" + strings.Repeat("0", 62)} {
		if _, err := AnchorFromPin(bad); err == nil {
			t.Errorf("AnchorFromPin(%q) accepted", bad)
		}
	}
}

// signCall calls Sign directly with an optional client certificate.
func signCall(ctx context.Context, cp *controlPlane, clientCert *tls.Certificate, req *identitypb.SignRequest) error {
	cfg := &tls.Config{RootCAs: cp.ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = identitypb.NewIdentityClient(conn).Sign(ctx, req)
	return err
}

func csrFor(t *testing.T, uri string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignRefusals(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	ctx := testContext(t)
	orders := cp.manager(t, "orders", cp.token(t, "orders", false), Anchor{})
	if err := orders.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	ordersCert := orders.Credentials().Certificate()
	billingToken := cp.token(t, "billing", false)

	tests := []struct {
		name string
		cert *tls.Certificate
		req  *identitypb.SignRequest
		code codes.Code
	}{
		{"no credentials", nil, &identitypb.SignRequest{Csr: csrFor(t, "")}, codes.Unauthenticated},
		{"wrong token", nil, &identitypb.SignRequest{Csr: csrFor(t, ""), BootstrapToken: billingToken + "x"}, codes.Unauthenticated},
		{"garbage token", nil, &identitypb.SignRequest{Csr: csrFor(t, ""), BootstrapToken: "cwt.nope"}, codes.Unauthenticated},
		{"token for another service", nil, &identitypb.SignRequest{Csr: csrFor(t, "spiffe://mesh.local/ns/default/sa/orders"), BootstrapToken: billingToken}, codes.PermissionDenied},
		{"renewal for another identity", ordersCert, &identitypb.SignRequest{Csr: csrFor(t, "spiffe://mesh.local/ns/default/sa/billing")}, codes.PermissionDenied},
		{"bad csr", ordersCert, &identitypb.SignRequest{Csr: []byte("junk")}, codes.InvalidArgument},
		{"no csr", ordersCert, &identitypb.SignRequest{}, codes.InvalidArgument},
		{"token with matching CSR identity", nil, &identitypb.SignRequest{Csr: csrFor(t, "spiffe://mesh.local/ns/default/sa/billing"), BootstrapToken: billingToken}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := signCall(ctx, cp, tt.cert, tt.req)
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.code)
			}
		})
	}
	// A renewal with a certificate of a foreign CA fails the handshake.
	foreign := startControlPlane(t, time.Hour)
	fm := foreign.manager(t, "orders", foreign.token(t, "orders", false), Anchor{})
	if err := fm.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := signCall(ctx, cp, fm.Credentials().Certificate(), &identitypb.SignRequest{Csr: csrFor(t, "")}); err == nil {
		t.Fatal("renewal with a foreign CA's certificate succeeded")
	}
}

func TestNewValidation(t *testing.T) {
	anchor, _ := AnchorFromPin("sha256:" + strings.Repeat("ab", 32))
	good := Config{ControlPlane: "127.0.0.1:1", TrustDomain: td, Service: "orders", Token: "t", Anchor: anchor}
	for name, mutate := range map[string]func(*Config){
		"no address":   func(c *Config) { c.ControlPlane = "" },
		"no port":      func(c *Config) { c.ControlPlane = "127.0.0.1" },
		"bad service":  func(c *Config) { c.Service = "Orders" },
		"bad domain":   func(c *Config) { c.TrustDomain = "" },
		"no anchor":    func(c *Config) { c.Anchor = Anchor{} },
		"backoff swap": func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second },
	} {
		cfg := good
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeStrict, "STRICT": ModeStrict, "permissive": ModePermissive, "off": ModeOff} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseMode("on"); err == nil {
		t.Error("ParseMode(\"on\") accepted")
	}
	if !ModePermissive.AcceptsTLS() || !ModePermissive.AcceptsPlaintext() || ModeStrict.AcceptsPlaintext() || ModeOff.AcceptsTLS() {
		t.Error("Accepts* wrong")
	}
	if !LooksLikeTLS([]byte{0x16, 0x03, 0x01}) || LooksLikeTLS([]byte("GET")) || LooksLikeTLS([]byte("PRI")) || LooksLikeTLS([]byte{0x16}) {
		t.Error("LooksLikeTLS wrong")
	}
}
