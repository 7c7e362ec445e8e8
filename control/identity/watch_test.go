package identity

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/control/ca/fleet"
	"github.com/causeway-mesh/causeway/control/ca/issuer"
	"github.com/causeway-mesh/causeway/control/ca/k8stoken"
	"github.com/causeway-mesh/causeway/control/ca/k8stoken/k8stokentest"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// runManagers runs ms until the test ends and waits for their first
// certificates.
func runManagers(t *testing.T, ctx context.Context, ms ...*Manager) {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.Run(runCtx) }()
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	for _, m := range ms {
		select {
		case <-m.Ready():
		case <-ctx.Done():
			t.Fatalf("%s: no first certificate", m.ID())
		}
	}
}

func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// TestWatchBundleFollowsRotation: a prepared root reaches running
// managers without a renewal, and they acknowledge it; once it is
// activated they renew onto it within the window; once the old root is
// pruned their bundles hold the new root alone.
func TestWatchBundleFollowsRotation(t *testing.T) {
	sidecars := fleet.New()
	cp := startControlPlaneWith(t, issuer.Config{TTL: time.Hour, RenewWindow: 300 * time.Millisecond, Fleet: sidecars})
	ctx := testContext(t)
	a := cp.manager(t, "orders", cp.token(t, "orders", false), Anchor{})
	b := cp.manager(t, "billing", cp.token(t, "billing", false), Anchor{})
	runManagers(t, ctx, a, b)
	acked := func() int {
		d := cp.ca.BundleDigest()
		n := 0
		for _, s := range sidecars.Snapshot() {
			if s.Bundle == hex.EncodeToString(d[:]) {
				n++
			}
		}
		return n
	}
	eventually(t, ctx, "both managers to connect and acknowledge", func() bool { return acked() == 2 })
	serialA := a.Credentials().Certificate().Leaf.SerialNumber

	next, err := cp.ca.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the prepared root to reach both", func() bool {
		return len(a.Credentials().Bundle()) == 2 && len(b.Credentials().Bundle()) == 2 && acked() == 2
	})
	if a.Credentials().Certificate().Leaf.SerialNumber.Cmp(serialA) != 0 {
		t.Fatal("the manager renewed on prepare; the bundle should have arrived alone")
	}

	if _, err := cp.ca.Activate(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, ctx, "both to renew onto the new root", func() bool {
		return a.Credentials().Certificate().Leaf.CheckSignatureFrom(next) == nil &&
			b.Credentials().Certificate().Leaf.CheckSignatureFrom(next) == nil
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("renewal onto the new root took %v with a 300ms window", took)
	}
	eventually(t, ctx, "the fleet to see the new leaves", func() bool {
		for _, s := range sidecars.Snapshot() {
			if s.LeafRoot != fingerprint(next) {
				return false
			}
		}
		return true
	})

	if _, err := cp.ca.Prune(); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the old root to leave both bundles", func() bool {
		for _, m := range []*Manager{a, b} {
			if bundle := m.Credentials().Bundle(); len(bundle) != 1 || !bundle[0].Equal(next) {
				return false
			}
		}
		return true
	})
}

// TestForcedPruneRebootstraps: a manager whose certificate's root is
// pruned from under it (its renewal window had not come) bootstraps again
// with its token.
func TestForcedPruneRebootstraps(t *testing.T) {
	cp := startControlPlaneWith(t, issuer.Config{TTL: time.Hour, RenewWindow: time.Hour})
	ctx := testContext(t)
	m := cp.manager(t, "orders", cp.token(t, "orders", false), Anchor{})
	runManagers(t, ctx, m)
	newRoot, err := cp.ca.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the prepared bundle", func() bool { return len(m.Credentials().Bundle()) == 2 })
	if _, err := cp.ca.Activate(); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.ca.Prune(); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "a certificate of the new root", func() bool {
		return m.Credentials().Certificate().Leaf.CheckSignatureFrom(newRoot) == nil && len(m.Credentials().Bundle()) == 1
	})
}

func fingerprint(c *x509.Certificate) string {
	return "sha256:" + hex.EncodeToString(sha256Sum(c.Raw))
}

// TestServiceAccountTokenBootstrap: without a bootstrap token, the manager
// sends the service-account token it reads from its file, at every use.
func TestServiceAccountTokenBootstrap(t *testing.T) {
	const k8sIss = "https://kubernetes.default.svc.cluster.local"
	cluster, err := k8stokentest.New(k8sIss)
	if err != nil {
		t.Fatal(err)
	}
	v, err := k8stoken.New(k8stoken.Config{Issuer: k8sIss, JWKS: cluster.JWKS()})
	if err != nil {
		t.Fatal(err)
	}
	cp := startControlPlaneWith(t, issuer.Config{TTL: time.Hour, ServiceAccounts: v})
	ctx := testContext(t)
	anchor, _ := AnchorFromBundle(cp.ca.Bundle())
	file := filepath.Join(t.TempDir(), "token")
	write := func(ns, sa string) {
		tok, err := cluster.Token(k8stokentest.Standard(ns, sa, time.Now()), jose.ES256)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	newManager := func(service, saFile string) *Manager {
		m, err := New(Config{ControlPlane: cp.addr, TrustDomain: td, Service: service, Namespace: "shop",
			ServiceAccountTokenFile: saFile, Anchor: anchor, NoBundleWatch: true, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	write("shop", "orders")
	m := newManager("orders", file)
	if err := m.Renew(ctx); err != nil {
		t.Fatalf("bootstrap with a service-account token: %v", err)
	}
	if got := m.Credentials().ID(); got != spiffeid.Must(td, "shop", "orders") {
		t.Fatalf("ID = %v", got)
	}

	// The token names another service account than the sidecar's service.
	if err := newManager("billing", file).Renew(ctx); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("token of shop/orders for service billing: %v, want PermissionDenied", err)
	}
	// The file is read at every use: a token of the right account works.
	write("shop", "billing")
	if err := newManager("billing", file).Renew(ctx); err != nil {
		t.Fatalf("after the token file changed: %v", err)
	}

	missing := filepath.Join(t.TempDir(), "absent")
	if err := newManager("orders", missing).Renew(ctx); err == nil || !strings.Contains(err.Error(), "service-account token") {
		t.Fatalf("a configured but missing token file: %v", err)
	}
	if _, err := os.Stat(DefaultServiceAccountTokenFile); err == nil {
		t.Skip("this machine has a token at the default path")
	}
	if err := newManager("orders", "").Renew(ctx); err == nil || !strings.Contains(err.Error(), DefaultServiceAccountTokenFile) {
		t.Fatalf("no token anywhere: %v, want an error naming %s", err, DefaultServiceAccountTokenFile)
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestLaggingSidecarAfterActivation: a sidecar that missed the prepared
// bundle (it does not watch) still verifies, through the cross-certificate
// the chains carry, both the control plane's new serving certificate and a
// peer's new leaf, and catches up at its next renewal.
func TestLaggingSidecarAfterActivation(t *testing.T) {
	cp := startControlPlane(t, time.Hour)
	ctx := testContext(t)
	anchor, _ := AnchorFromBundle(cp.ca.Bundle())
	lagging, err := New(Config{ControlPlane: cp.addr, TrustDomain: td, Service: "billing", Token: cp.token(t, "billing", false),
		Anchor: anchor, NoBundleWatch: true, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := lagging.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	next, err := cp.ca.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.ca.Activate(); err != nil {
		t.Fatal(err)
	}
	peer := cp.manager(t, "orders", cp.token(t, "orders", false), Anchor{})
	if err := peer.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	peerChain := peer.Credentials().Certificate()
	if peerChain.Leaf.CheckSignatureFrom(next) != nil {
		t.Fatal("the peer's leaf is not from the new root")
	}
	var chain []*x509.Certificate
	for _, der := range peerChain.Certificate {
		c, _ := x509.ParseCertificate(der)
		chain = append(chain, c)
	}
	if len(lagging.Credentials().Bundle()) != 1 {
		t.Fatal("the lagging sidecar already has the new bundle")
	}
	if _, err := lagging.Credentials().VerifyPeer(chain, x509.ExtKeyUsageClientAuth, spiffeid.ID{}); err != nil {
		t.Fatalf("a sidecar on the old bundle refuses a new leaf: %v", err)
	}
	if err := lagging.Renew(ctx); err != nil {
		t.Fatalf("a sidecar on the old bundle cannot reach the control plane after activation: %v", err)
	}
	if len(lagging.Credentials().Bundle()) != 2 || lagging.Credentials().Certificate().Leaf.CheckSignatureFrom(next) != nil {
		t.Fatal("the renewal did not bring the new bundle and a new-root leaf")
	}
}
