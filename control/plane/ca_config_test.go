package plane

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/causeway-mesh/causeway/control/ca/k8stoken/k8stokentest"
	"github.com/causeway-mesh/causeway/control/identity"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

func TestCAConfigValidation(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	tests := []struct {
		name    string
		args    []string
		wantErr string // "" for valid
	}{
		{"defaults", nil, ""},
		{"kubernetes with tls", []string{"--tls", "--k8s-issuer", "https://k8s", "--k8s-jwks", "/etc/jwks.json"}, ""},
		{"renew window zero", []string{"--ca-renew-window", "0s"}, "tls.renewWindow"},
		{"renew window too long", []string{"--ca-renew-window", "2h"}, "at most 1h0m0s"},
		{"kubernetes without tls", []string{"--k8s-issuer", "https://k8s", "--k8s-jwks", "/etc/jwks.json"}, "set --tls"},
		{"issuer without keys", []string{"--tls", "--k8s-issuer", "https://k8s"}, "tls.kubernetes.jwksFile: required"},
		{"keys without issuer", []string{"--tls", "--k8s-jwks", "/etc/jwks.json"}, "tls.kubernetes.issuer: required"},
		{"empty audience", []string{"--tls", "--k8s-issuer", "https://k8s", "--k8s-jwks", "/etc/jwks.json", "--k8s-audience", ""}, "tls.kubernetes.audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(tt.args, none, io.Discard)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.TLS.RenewWindow.Duration != DefaultRenewWindow || cfg.TLS.Kubernetes.Audience != "causeway" {
					t.Fatalf("defaults: %+v", cfg.TLS)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	file := filepath.Join(t.TempDir(), "cp.yaml")
	yaml := "tls:\n  enabled: true\n  renewWindow: 30s\n  kubernetes:\n    issuer: https://k8s\n    jwksFile: /etc/jwks.json\n    audience: mesh\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file}, none, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if k := cfg.TLS.Kubernetes; k.Issuer != "https://k8s" || k.JWKSFile != "/etc/jwks.json" || k.Audience != "mesh" || cfg.TLS.RenewWindow.Duration != 30*time.Second {
		t.Fatalf("from the file: %+v", cfg.TLS)
	}
}

// TestServiceAccountTokenEndToEnd: a control plane given the cluster's
// issuer and keys issues a sidecar presenting a projected token its
// service account's identity.
func TestServiceAccountTokenEndToEnd(t *testing.T) {
	const iss = "https://kubernetes.default.svc.cluster.local"
	cluster, err := k8stokentest.New(iss)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	jwks := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwks, cluster.JWKS(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.TLS.Enabled = true
	cfg.TLS.Kubernetes.Issuer, cfg.TLS.Kubernetes.JWKSFile = iss, jwks

	bad := cfg
	bad.TLS.Kubernetes.JWKSFile = filepath.Join(dir, "absent.json")
	if _, err := New(bad, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "tls.kubernetes.jwksFile") {
		t.Fatalf("a missing JWK set file: %v", err)
	}

	p := startPlane(t, cfg)
	tok, err := cluster.Token(k8stokentest.Standard("shop", "orders", time.Now()), jose.RS256)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	anchor, _ := identity.AnchorFromBundle(p.CA().Bundle())
	m, err := identity.New(identity.Config{
		ControlPlane: p.XDSAddr(), ServerName: "127.0.0.1", TrustDomain: cfg.TLS.TrustDomain, Service: "orders", Namespace: "shop",
		ServiceAccountTokenFile: tokFile, Anchor: anchor, NoBundleWatch: true, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if got := m.Credentials().ID(); got != spiffeid.Must(cfg.TLS.TrustDomain, "shop", "orders") {
		t.Fatalf("issued %v", got)
	}
}
