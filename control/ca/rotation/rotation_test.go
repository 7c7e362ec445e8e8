package rotation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/fleet"
	"github.com/causeway-mesh/causeway/control/ca/ledger"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

const td = "mesh.local"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// world is a CA, a ledger and a fleet on one fake clock.
type world struct {
	now    time.Time
	ca     *ca.CA
	ledger *ledger.Ledger
	fleet  *fleet.Registry
	r      *Rotator
}

func newWorld(t *testing.T, withLedger bool) *world {
	t.Helper()
	w := &world{now: time.Now()}
	clock := func() time.Time { return w.now }
	dir := t.TempDir()
	var err error
	if w.ca, err = ca.LoadOrCreate(dir, td, ca.WithClock(clock)); err != nil {
		t.Fatal(err)
	}
	if withLedger {
		if w.ledger, err = ledger.Open(filepath.Join(dir, ledger.FileName), ledger.WithClock(clock), ledger.WithSince(time.Time{})); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.ledger.Close() })
	}
	w.fleet = fleet.New()
	if w.r, err = New(Config{CA: w.ca, Ledger: w.ledger, Fleet: w.fleet, LeafTTL: time.Hour, Log: quiet, Now: clock}); err != nil {
		t.Fatal(err)
	}
	return w
}

// issue signs a leaf for service and records it, replacing replaces.
func (w *world) issue(t *testing.T, service, replaces string) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	chain, err := w.ca.Sign(csr, spiffeid.Must(td, "", service), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if w.ledger != nil {
		root, _ := w.ca.RootOf(chain)
		if err := w.ledger.Record(ledger.Leaf{Serial: chain[0].SerialNumber.Text(16), ID: service, Root: ca.Fingerprint(root), NotAfter: chain[0].NotAfter}, replaces); err != nil {
			t.Fatal(err)
		}
	}
	return chain[0]
}

// connect adds a sidecar to the fleet that acknowledged the current
// bundle (or not) and holds leaf.
func (w *world) connect(service string, acked bool, leaf *x509.Certificate) *fleet.Conn {
	c := w.fleet.Connect("spiffe://"+td+"/ns/default/sa/"+service, "127.0.0.1:1", w.now)
	bundle := "0000"
	if acked {
		d := w.ca.BundleDigest()
		bundle = hex.EncodeToString(d[:])
	}
	var serial, root string
	if leaf != nil {
		serial = leaf.SerialNumber.Text(16)
		if r, ok := w.ca.RootOf([]*x509.Certificate{leaf}); ok {
			root = ca.Fingerprint(r)
		}
	}
	c.Ack(bundle, serial, root, leafNotAfter(leaf), w.now)
	return c
}

func leafNotAfter(c *x509.Certificate) time.Time {
	if c == nil {
		return time.Time{}
	}
	return c.NotAfter
}

func TestActivateReadiness(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, w *world)
		ready     bool
		reasonHas string
	}{
		{"no sidecar and no leaf", func(*testing.T, *world) {}, true, "no sidecar is connected and no issued leaf"},
		{"no sidecar connected but leaves in use", func(t *testing.T, w *world) { w.issue(t, "orders", "") }, false, "no sidecar is connected"},
		{"every sidecar acknowledged", func(t *testing.T, w *world) {
			w.connect("orders", true, w.issue(t, "orders", ""))
			w.connect("billing", true, w.issue(t, "billing", ""))
		}, true, "all 2 connected sidecars"},
		{"one sidecar behind", func(t *testing.T, w *world) {
			w.connect("orders", true, w.issue(t, "orders", ""))
			w.connect("billing", false, w.issue(t, "billing", ""))
		}, false, "1 of 2 connected sidecars have not acknowledged the new bundle (spiffe://mesh.local/ns/default/sa/billing@127.0.0.1:1)"},
		{"a sidecar behind, but the propagation period has passed", func(t *testing.T, w *world) {
			w.connect("billing", false, w.issue(t, "billing", ""))
			w.now = w.now.Add(time.Hour)
		}, true, "propagation period"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, true)
			if _, err := w.r.Rotate(Prepare, false); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, w)
			st := w.r.Status()
			if st.Next.Action != Activate || st.Next.Ready != tt.ready || !strings.Contains(st.Next.Reason, tt.reasonHas) {
				t.Fatalf("next = %+v; want activate, ready %v, reason containing %q", st.Next, tt.ready, tt.reasonHas)
			}
			_, err := w.r.Rotate(Activate, false)
			if tt.ready != (err == nil) || (!tt.ready && !errors.Is(err, ErrNotReady)) {
				t.Fatalf("Rotate(activate) = %v; want ready=%v", err, tt.ready)
			}
			if !tt.ready {
				if st.Next.SafeAfter == nil || !st.Next.SafeAfter.Equal(w.ca.Rotation().PreparedAt.Add(time.Hour)) {
					t.Fatalf("SafeAfter = %v, want prepare + the leaf lifetime", st.Next.SafeAfter)
				}
				if _, err := w.r.Rotate(Activate, true); err != nil {
					t.Fatalf("forced activate: %v", err)
				}
			}
			if w.ca.Rotation().Stage != ca.StageActivated {
				t.Fatal("not activated")
			}
		})
	}
}

func TestPruneReadiness(t *testing.T) {
	tests := []struct {
		name      string
		noLedger  bool
		setup     func(t *testing.T, w *world, old map[string]*x509.Certificate)
		ready     bool
		reasonHas string
	}{
		{"every leaf re-issued", false, func(t *testing.T, w *world, old map[string]*x509.Certificate) {
			for svc, leaf := range old {
				w.connect(svc, true, w.issue(t, svc, leaf.SerialNumber.Text(16)))
			}
		}, true, "every leaf of the old roots"},
		{"one leaf not re-issued", false, func(t *testing.T, w *world, old map[string]*x509.Certificate) {
			w.issue(t, "orders", old["orders"].SerialNumber.Text(16))
		}, false, "1 leaves of old root"},
		{"the leaf not re-issued has expired", false, func(t *testing.T, w *world, old map[string]*x509.Certificate) {
			w.issue(t, "orders", old["orders"].SerialNumber.Text(16))
			w.now = w.now.Add(2 * time.Hour)
		}, true, "every leaf"},
		{"a connected sidecar still presents an old leaf", false, func(t *testing.T, w *world, old map[string]*x509.Certificate) {
			for svc, leaf := range old {
				w.issue(t, svc, leaf.SerialNumber.Text(16))
			}
			w.connect("billing", true, old["billing"])
		}, false, "1 connected sidecars still present a leaf of old root"},
		{"no ledger: wait for the longest leaf lifetime", true, func(*testing.T, *world, map[string]*x509.Certificate) {}, false, "no ledger of issued leaves"},
		{"no ledger, long after", true, func(_ *testing.T, w *world, _ map[string]*x509.Certificate) { w.now = w.now.Add(ca.DefaultMaxTTL) }, true, "every leaf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, !tt.noLedger)
			old := map[string]*x509.Certificate{}
			if !tt.noLedger {
				old["orders"], old["billing"] = w.issue(t, "orders", ""), w.issue(t, "billing", "")
			}
			if _, err := w.r.Rotate(Prepare, false); err != nil {
				t.Fatal(err)
			}
			if _, err := w.r.Rotate(Activate, true); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, w, old)
			st := w.r.Status()
			if st.Next.Action != Prune || st.Next.Ready != tt.ready || !strings.Contains(st.Next.Reason, tt.reasonHas) {
				t.Fatalf("next = %+v; want prune, ready %v, reason containing %q", st.Next, tt.ready, tt.reasonHas)
			}
			_, err := w.r.Rotate(Prune, false)
			if tt.ready != (err == nil) || (!tt.ready && !errors.Is(err, ErrNotReady)) {
				t.Fatalf("Rotate(prune) = %v; want ready=%v", err, tt.ready)
			}
			if !tt.ready {
				if _, err := w.r.Rotate(Prune, true); err != nil {
					t.Fatalf("forced prune: %v", err)
				}
			}
			if st := w.r.Status(); st.Stage != ca.StageStable || len(st.Roots) != 1 || !st.Roots[0].Signing {
				t.Fatalf("after prune: %+v", st)
			}
		})
	}
}

func TestLedgerStartedLate(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	dir := t.TempDir()
	c, _ := ca.LoadOrCreate(dir, td, ca.WithClock(clock))
	l, err := ledger.Open(filepath.Join(dir, ledger.FileName), ledger.WithClock(clock)) // an upgraded control plane
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, _ := New(Config{CA: c, Ledger: l, Log: quiet, Now: clock})
	_, _ = c.Rotate()
	st := r.Status()
	if st.Next.Ready || !strings.Contains(st.Next.Reason, "before the ledger started") || !st.Next.SafeAfter.Equal(now.Add(c.MaxTTL()).UTC()) {
		t.Fatalf("next = %+v; want not ready until the ledger's start + MaxTTL", st.Next)
	}
}

func TestStepsAndStatus(t *testing.T) {
	w := newWorld(t, true)
	for _, a := range []Action{Activate, Prune} {
		if _, err := w.r.Rotate(a, true); !errors.Is(err, ca.ErrStage) || !strings.Contains(err.Error(), "prepare starts a rotation") {
			t.Fatalf("%s when stable, even forced: %v; want ErrStage", a, err)
		}
	}
	if _, err := ParseAction("rollback"); err == nil {
		t.Fatal("ParseAction accepted rollback")
	}
	if a, err := ParseAction("ACTIVATE"); err != nil || a != Activate {
		t.Fatalf("ParseAction(ACTIVATE) = %v, %v", a, err)
	}
	oldLeaf := w.issue(t, "orders", "")
	w.connect("orders", true, oldLeaf)
	st, err := w.r.Rotate(Prepare, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.r.Rotate(Prepare, false); !errors.Is(err, ca.ErrStage) || !strings.Contains(err.Error(), "activate comes next") {
		t.Fatalf("prepare twice: %v", err)
	}
	if st.Stage != ca.StagePrepared || st.PreparedAt == nil || len(st.Roots) != 2 ||
		st.Roots[0].State != "signing" || st.Roots[0].Leaves != 1 || st.Roots[0].Connected != 1 ||
		st.Roots[1].State != "prepared" || st.Roots[1].Leaves != 0 || !strings.HasPrefix(st.Roots[1].Pin, "sha256:") {
		t.Fatalf("after prepare: %+v", st)
	}
	if st.Sidecars.Connected != 1 || st.Sidecars.CurrentBundle != 0 || len(st.Sidecars.Pending) != 1 {
		t.Fatalf("the sidecar acknowledged the old bundle, but: %+v", st.Sidecars)
	}
	st, err = w.r.Rotate(Activate, true)
	if err != nil {
		t.Fatal(err)
	}
	if st.Roots[0].State != "retiring" || st.Roots[1].State != "signing" || st.ActivatedAt == nil {
		t.Fatalf("after activate: %+v", st.Roots)
	}
}

func TestOperatorManaged(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "operator root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	c, err := ca.FromFiles(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), certPEM, td)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := New(Config{CA: c, Log: quiet})
	for _, a := range []Action{Prepare, Activate, Prune} {
		if _, err := r.Rotate(a, true); !errors.Is(err, ca.ErrOperatorManaged) {
			t.Fatalf("%s: %v, want ErrOperatorManaged", a, err)
		}
	}
	if st := r.Status(); st.Mode != "operator-managed" || st.Next != nil || len(st.Roots) != 1 || !st.Roots[0].Signing {
		t.Fatalf("status %+v", st)
	}
}
