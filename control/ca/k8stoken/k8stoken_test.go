package k8stoken_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/causeway-mesh/causeway/control/ca/k8stoken"
	"github.com/causeway-mesh/causeway/control/ca/k8stoken/k8stokentest"
)

const issuer = "https://kubernetes.default.svc.cluster.local"

func TestVerify(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	cluster, err := k8stokentest.New(issuer)
	if err != nil {
		t.Fatal(err)
	}
	other, err := k8stokentest.New(issuer) // same issuer, other keys
	if err != nil {
		t.Fatal(err)
	}
	v, err := k8stoken.New(k8stoken.Config{Issuer: issuer, JWKS: cluster.JWKS(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	std := func(mut func(*k8stokentest.Claims)) k8stokentest.Claims {
		c := k8stokentest.Standard("shop", "orders", now.Add(-time.Minute))
		if mut != nil {
			mut(&c)
		}
		return c
	}
	sign := func(c *k8stokentest.Cluster, cl k8stokentest.Claims, alg jose.SignatureAlgorithm) string {
		tok, err := c.Token(cl, alg)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name    string
		token   string
		wantErr string // "" for accepted
	}{
		{"valid RS256", sign(cluster, std(nil), jose.RS256), ""},
		{"valid ES256", sign(cluster, std(nil), jose.ES256), ""},
		{"valid with clock skew on nbf", sign(cluster, std(func(c *k8stokentest.Claims) { c.NotBefore = now.Add(20 * time.Second) }), jose.RS256), ""},
		{"several audiences", sign(cluster, std(func(c *k8stokentest.Claims) { c.Audience = []string{"vault", "causeway"} }), jose.RS256), ""},
		{"expired", sign(cluster, std(func(c *k8stokentest.Claims) { c.Expiry = now.Add(-time.Minute) }), jose.RS256), "expired at"},
		{"not yet valid", sign(cluster, std(func(c *k8stokentest.Claims) { c.NotBefore = now.Add(5 * time.Minute) }), jose.RS256), "not valid yet"},
		{"issued in the future", sign(cluster, std(func(c *k8stokentest.Claims) { c.IssuedAt = now.Add(5 * time.Minute) }), jose.RS256), "issued in the future"},
		{"no expiry", sign(cluster, std(func(c *k8stokentest.Claims) { c.Expiry = time.Time{} }), jose.RS256), "no expiry"},
		{"wrong audience", sign(cluster, std(func(c *k8stokentest.Claims) { c.Audience = []string{"https://kubernetes.default.svc"} }), jose.RS256), "does not include \"causeway\""},
		{"wrong issuer", sign(cluster, std(func(c *k8stokentest.Claims) { c.Issuer = "https://evil.example" }), jose.RS256), "issuer \"https://evil.example\""},
		{"wrong key", sign(other, std(nil), jose.RS256), "no key with id \"rsa-1\" in the JWK set verifies"},
		{"wrong key, EC", sign(other, std(nil), jose.ES256), "verifies its ES256 signature"},
		{"alg none", cluster.Raw(map[string]any{"alg": "none", "typ": "JWT"}, std(nil), nil), "only RS256 and ES256"},
		{"alg none with a kid", cluster.Raw(map[string]any{"alg": "none", "kid": k8stokentest.RSAKeyID}, std(nil), nil), "only RS256 and ES256"},
		{"HS256 keyed with the public key", cluster.Raw(map[string]any{"alg": "HS256", "kid": k8stokentest.RSAKeyID}, std(nil),
			k8stokentest.HS256(cluster.RSAPublicKeyPEM())), "only RS256 and ES256"},
		{"RS256 header over an ES256 key", cluster.Raw(map[string]any{"alg": "RS256", "kid": k8stokentest.ECKeyID}, std(nil),
			func([]byte) []byte { return make([]byte, 256) }), "no key with id \"ec-1\""},
		{"tampered payload", tamper(sign(cluster, std(nil), jose.RS256), cluster.Raw(map[string]any{"alg": "RS256"}, std(func(c *k8stokentest.Claims) { c.Namespace = "kube-system" }), nil)), "verifies its RS256 signature"},
		{"no kubernetes.io claim", sign(cluster, std(func(c *k8stokentest.Claims) { c.Namespace, c.ServiceAccount, c.Subject = "", "", "system:anonymous" }), jose.RS256), "no kubernetes.io namespace"},
		{"subject of another account", sign(cluster, std(func(c *k8stokentest.Claims) { c.Subject = "system:serviceaccount:shop:admin" }), jose.RS256), "does not match the kubernetes.io claim"},
		{"account name not a DNS label", sign(cluster, std(func(c *k8stokentest.Claims) { c.ServiceAccount = "orders.v2" }), jose.RS256), "not a DNS label"},
		{"garbage", "not.a.jwt", "only RS256 and ES256"},
		{"oversized", strings.Repeat("a", k8stoken.MaxTokenBytes+1), "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acct, err := v.Verify(tt.token)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if acct.Namespace != "shop" || acct.Name != "orders" || acct.Pod == "" {
					t.Fatalf("account %+v, want shop/orders with its pod", acct)
				}
				return
			}
			if !errors.Is(err, k8stoken.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Verify error = %v, want ErrInvalid containing %q", err, tt.wantErr)
			}
		})
	}
}

// tamper keeps good's header and signature with bad's payload.
func tamper(good, bad string) string {
	g := strings.Split(good, ".")
	b := strings.Split(bad, ".")
	return g[0] + "." + b[1] + "." + g[2]
}

func TestNewValidation(t *testing.T) {
	cluster, err := k8stokentest.New(issuer)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     k8stoken.Config
		wantErr string
	}{
		{"good", k8stoken.Config{Issuer: issuer, JWKS: cluster.JWKS()}, ""},
		{"no issuer", k8stoken.Config{JWKS: cluster.JWKS()}, "issuer is required"},
		{"not JSON", k8stoken.Config{Issuer: issuer, JWKS: []byte("-----BEGIN PUBLIC KEY-----")}, "JWK set"},
		{"empty set", k8stoken.Config{Issuer: issuer, JWKS: []byte(`{"keys":[]}`)}, "no key"},
		{"symmetric key", k8stoken.Config{Issuer: issuer, JWKS: []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}`)}, "want a public RSA or P-256 ECDSA key"},
		{"encryption key", k8stoken.Config{Issuer: issuer, JWKS: []byte(strings.Replace(string(cluster.JWKS()), `"use":"sig"`, `"use":"enc"`, 1))}, `use "enc"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := k8stoken.New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAudience(t *testing.T) {
	now := time.Now()
	cluster, _ := k8stokentest.New(issuer)
	v, err := k8stoken.New(k8stoken.Config{Issuer: issuer, JWKS: cluster.JWKS(), Audience: "mesh.example"})
	if err != nil {
		t.Fatal(err)
	}
	cl := k8stokentest.Standard("shop", "orders", now)
	tok, _ := cluster.Token(cl, jose.ES256)
	if _, err := v.Verify(tok); err == nil {
		t.Fatal("a token for audience causeway was accepted where mesh.example is configured")
	}
	cl.Audience = []string{"mesh.example"}
	tok, _ = cluster.Token(cl, jose.ES256)
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
}
