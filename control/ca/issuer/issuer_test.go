package issuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
	"github.com/causeway-mesh/causeway/control/ca/k8stoken"
	"github.com/causeway-mesh/causeway/control/ca/k8stoken/k8stokentest"
	"github.com/causeway-mesh/causeway/control/ca/ledger"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/control/identitypb"
)

const (
	td      = "mesh.local"
	k8sIss  = "https://kubernetes.default.svc.cluster.local"
	orders  = "spiffe://mesh.local/ns/shop/sa/orders"
	billing = "spiffe://mesh.local/ns/shop/sa/billing"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func csr(t *testing.T, uri string) []byte {
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

// TestSignWithServiceAccountToken: the identity issued is the token's
// namespace and service account, which must be the service the CSR
// claims; every refused token is UNAUTHENTICATED.
func TestSignWithServiceAccountToken(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	authority, err := ca.LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	tokens, _ := bootstrap.Open(filepath.Join(dir, bootstrap.FileName))
	leaves, err := ledger.Open(filepath.Join(dir, ledger.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer leaves.Close()
	cluster, err := k8stokentest.New(k8sIss)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := k8stokentest.New(k8sIss)
	verifier, err := k8stoken.New(k8stoken.Config{Issuer: k8sIss, JWKS: cluster.JWKS()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{CA: authority, Tokens: tokens, ServiceAccounts: verifier, Ledger: leaves, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := New(Config{CA: authority, Tokens: tokens, Log: quiet}) // no --k8s-jwks

	sign := func(c *k8stokentest.Cluster, mut func(*k8stokentest.Claims)) string {
		cl := k8stokentest.Standard("shop", "orders", now)
		if mut != nil {
			mut(&cl)
		}
		tok, err := c.Token(cl, jose.RS256)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	billingToken, _, _ := tokens.Create(bootstrap.Scope{Service: "billing", Namespace: "shop"}, time.Hour, false)

	tests := []struct {
		name   string
		server *Server
		req    *identitypb.SignRequest
		code   codes.Code
		want   string // the SPIFFE ID issued
	}{
		{"valid, claiming its service", s, &identitypb.SignRequest{Csr: csr(t, orders), ServiceAccountToken: sign(cluster, nil)}, codes.OK, orders},
		{"valid, claiming nothing", s, &identitypb.SignRequest{Csr: csr(t, ""), ServiceAccountToken: sign(cluster, nil)}, codes.OK, orders},
		{"claims another namespace", s, &identitypb.SignRequest{Csr: csr(t, "spiffe://mesh.local/ns/default/sa/orders"), ServiceAccountToken: sign(cluster, nil)}, codes.PermissionDenied, ""},
		{"claims another service", s, &identitypb.SignRequest{Csr: csr(t, billing), ServiceAccountToken: sign(cluster, nil)}, codes.PermissionDenied, ""},
		{"expired", s, &identitypb.SignRequest{Csr: csr(t, orders), ServiceAccountToken: sign(cluster, func(c *k8stokentest.Claims) { c.Expiry = now.Add(-time.Hour) })}, codes.Unauthenticated, ""},
		{"wrong audience", s, &identitypb.SignRequest{Csr: csr(t, orders), ServiceAccountToken: sign(cluster, func(c *k8stokentest.Claims) { c.Audience = []string{"vault"} })}, codes.Unauthenticated, ""},
		{"wrong issuer", s, &identitypb.SignRequest{Csr: csr(t, orders), ServiceAccountToken: sign(cluster, func(c *k8stokentest.Claims) { c.Issuer = "https://other.example" })}, codes.Unauthenticated, ""},
		{"wrong key", s, &identitypb.SignRequest{Csr: csr(t, orders), ServiceAccountToken: sign(other, nil)}, codes.Unauthenticated, ""},
		{"alg none", s, &identitypb.SignRequest{Csr: csr(t, orders), ServiceAccountToken: cluster.Raw(map[string]any{"alg": "none"}, k8stokentest.Standard("shop", "orders", now), nil)}, codes.Unauthenticated, ""},
		{"HS256 keyed with the public key", s, &identitypb.SignRequest{Csr: csr(t, orders), ServiceAccountToken: cluster.Raw(map[string]any{"alg": "HS256", "kid": k8stokentest.RSAKeyID},
			k8stokentest.Standard("shop", "orders", now), k8stokentest.HS256(cluster.RSAPublicKeyPEM()))}, codes.Unauthenticated, ""},
		{"not configured", plain, &identitypb.SignRequest{Csr: csr(t, orders), ServiceAccountToken: sign(cluster, nil)}, codes.Unauthenticated, ""},
		{"a bootstrap token wins", s, &identitypb.SignRequest{Csr: csr(t, ""), BootstrapToken: billingToken, ServiceAccountToken: sign(cluster, nil)}, codes.OK, billing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.server.Sign(context.Background(), tt.req)
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.code)
			}
			if tt.code != codes.OK {
				return
			}
			block, _ := pem.Decode(resp.GetCertificateChainPem())
			leaf, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != tt.want {
				t.Fatalf("issued %v, want %s", leaf.URIs, tt.want)
			}
		})
	}
	recorded := map[string]int{}
	for _, lf := range leaves.Leaves(ca.Fingerprint(authority.Issuer())) {
		recorded[lf.ID]++
	}
	if recorded[spiffeid.Must(td, "shop", "orders").String()] != 2 || recorded[billing] != 1 || len(recorded) != 2 {
		t.Fatalf("the ledger holds %v, want the 3 leaves issued", recorded)
	}
}

func TestNewValidation(t *testing.T) {
	authority, _ := ca.LoadOrCreate(t.TempDir(), td)
	tokens, _ := bootstrap.Open(filepath.Join(t.TempDir(), bootstrap.FileName))
	for name, cfg := range map[string]Config{
		"no CA":               {Tokens: tokens},
		"no tokens":           {CA: authority},
		"TTL over the max":    {CA: authority, Tokens: tokens, TTL: 8 * 24 * time.Hour},
		"negative window":     {CA: authority, Tokens: tokens, RenewWindow: -time.Second},
		"negative TTL (zero)": {CA: authority, Tokens: tokens, TTL: -time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	s, err := New(Config{CA: authority, Tokens: tokens})
	if err != nil || s.TTL() != ca.DefaultTTL || s.renewWindow != DefaultRenewWindow {
		t.Fatalf("defaults: %v, TTL %v, window %v", err, s.TTL(), s.renewWindow)
	}
}
