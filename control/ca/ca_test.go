package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

const td = "mesh.local"

func newCSR(t testing.TB, uris ...string) *x509.CertificateRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{DNSNames: []string{"evil.example"}}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func verifyLeaf(c *CA, chain []*x509.Certificate) error {
	_, err := c.Verify(chain, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	_, err = c.Verify(chain, x509.ExtKeyUsageServerAuth)
	return err
}

func TestLoadOrCreatePersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, RootFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("root file mode %v, want 0600", fi.Mode().Perm())
	}
	root := c.Issuer()
	if !root.IsCA || root.NotAfter.Sub(root.NotBefore) < 10*365*24*time.Hour {
		t.Fatalf("root: IsCA=%v lifetime=%v", root.IsCA, root.NotAfter.Sub(root.NotBefore))
	}
	if _, ok := root.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatalf("root key is %T, want ECDSA", root.PublicKey)
	}
	again, err := LoadOrCreate(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Issuer().Equal(root) || string(again.Bundle()) != string(c.Bundle()) {
		t.Fatal("a second LoadOrCreate did not load the same root and bundle")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}

func TestLoadOrCreateRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, td); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := LoadOrCreate(other, td); err != nil {
		t.Fatal(err)
	}
	// Certificate of one root with the key of another.
	a, _ := os.ReadFile(filepath.Join(dir, RootFile))
	b, _ := os.ReadFile(filepath.Join(other, RootFile))
	mixed := string(a[:strings.Index(string(a), "-----BEGIN PRIVATE KEY")]) + string(b[strings.Index(string(b), "-----BEGIN PRIVATE KEY"):])
	if err := os.WriteFile(filepath.Join(dir, RootFile), []byte(mixed), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, td); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched key: err = %v", err)
	}
	if _, err := LoadOrCreate(t.TempDir(), "Bad_Domain"); err == nil {
		t.Fatal("invalid trust domain accepted")
	}
}

func TestSign(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir(), td)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.Must(td, "prod", "orders")
	before := time.Now()
	chain, err := c.Sign(newCSR(t, "spiffe://mesh.local/ns/prod/sa/admin", "https://evil.example"), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Fatalf("URIs = %v, want only %s (the CSR's names must be ignored)", leaf.URIs, id)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Fatalf("leaf carries names from the CSR: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Fatalf("KeyUsage = %v, want digitalSignature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 {
		t.Fatalf("ExtKeyUsage = %v, want server and client auth", leaf.ExtKeyUsage)
	}
	if leaf.IsCA {
		t.Fatal("leaf is a CA")
	}
	if !leaf.NotBefore.Before(before) || leaf.NotAfter.Sub(before) > time.Hour+time.Second {
		t.Fatalf("validity %s .. %s, want backdated start and 1h lifetime", leaf.NotBefore, leaf.NotAfter)
	}
	if leaf.SerialNumber.BitLen() < 64 || leaf.SerialNumber.BitLen() > 128 {
		t.Fatalf("serial has %d bits", leaf.SerialNumber.BitLen())
	}
	if err := verifyLeaf(c, chain); err != nil {
		t.Fatalf("chain does not verify against the bundle: %v", err)
	}
	got, err := c.Verify(chain, x509.ExtKeyUsageClientAuth)
	if err != nil || got != id {
		t.Fatalf("Verify = %v, %v; want %v", got, err, id)
	}

	def, err := c.Sign(newCSR(t), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if life := def[0].NotAfter.Sub(def[0].NotBefore); life < DefaultTTL || life > DefaultTTL+time.Minute {
		t.Fatalf("default lifetime %v, want %v (+ backdate)", life, DefaultTTL)
	}
}

func TestSignRefusals(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir(), td, WithMaxTTL(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.Must(td, "", "orders")
	bad := newCSR(t)
	bad.Signature[len(bad.Signature)-1] ^= 0xff
	tests := []struct {
		name    string
		csr     *x509.CertificateRequest
		id      spiffeid.ID
		ttl     time.Duration
		wantErr string
	}{
		{"bad signature", bad, id, 0, "signature"},
		{"nil csr", nil, id, 0, "no CSR"},
		{"other trust domain", newCSR(t), spiffeid.Must("other.local", "", "orders"), 0, "not in trust domain"},
		{"zero id", newCSR(t), spiffeid.ID{}, 0, "not in trust domain"},
		{"ttl too long", newCSR(t), id, 49 * time.Hour, "outside"},
		{"negative ttl", newCSR(t), id, -time.Second, "outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Sign(tt.csr, tt.id, tt.ttl); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Sign error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStagedRotation(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	dir := t.TempDir()
	load := func() *CA {
		t.Helper()
		c, err := LoadOrCreate(dir, td, WithClock(clock), WithMaxTTL(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := load()
	id := spiffeid.Must(td, "", "orders")
	oldRoot := c.Issuer()
	oldLeaf, err := c.Sign(newCSR(t), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := c.RootOf(oldLeaf); !ok || !r.Equal(oldRoot) {
		t.Fatal("RootOf does not find the issuing root")
	}
	if st := c.Rotation().Stage; st != StageStable {
		t.Fatalf("stage %q at first start, want stable", st)
	}
	for name, step := range map[string]func() error{
		"activate": func() error { _, err := c.Activate(); return err },
		"prune":    func() error { _, err := c.Prune(); return err },
	} {
		if err := step(); !errors.Is(err, ErrStage) {
			t.Fatalf("%s before prepare: %v, want ErrStage", name, err)
		}
	}

	// Prepare: the new root joins the bundle, the old one keeps signing.
	changed := c.Changed()
	next, err := c.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by Prepare")
	}
	if !c.Issuer().Equal(oldRoot) || len(c.Roots()) != 2 || !c.Rotation().Next.Equal(next) {
		t.Fatalf("after prepare: issuer changed=%v, %d roots", !c.Issuer().Equal(oldRoot), len(c.Roots()))
	}
	prepLeaf, _ := c.Sign(newCSR(t), id, 0)
	if err := prepLeaf[0].CheckSignatureFrom(oldRoot); err != nil {
		t.Fatalf("a leaf signed after prepare is not from the old root: %v", err)
	}
	if _, err := c.Prepare(); !errors.Is(err, ErrStage) {
		t.Fatalf("second prepare: %v, want ErrStage", err)
	}
	if r := load().Rotation(); r.Stage != StagePrepared || !r.Next.Equal(next) || !r.Signing.Equal(oldRoot) {
		t.Fatalf("prepare not persisted: %+v", r)
	}

	// Activate: the new root signs; the old one stays trusted.
	now = now.Add(time.Minute)
	if _, err := c.Activate(); err != nil {
		t.Fatal(err)
	}
	newLeaf, _ := c.Sign(newCSR(t), id, 0)
	if err := newLeaf[0].CheckSignatureFrom(next); err != nil {
		t.Fatalf("a leaf signed after activate is not from the new root: %v", err)
	}
	for name, chain := range map[string][]*x509.Certificate{"old": oldLeaf, "new": newLeaf} {
		if err := verifyLeaf(c, chain); err != nil {
			t.Fatalf("%s leaf does not verify after activate: %v", name, err)
		}
	}
	// A peer that still trusts only the old root verifies a new leaf
	// through the cross-certificate its chain carries.
	if len(newLeaf) != 2 || !newLeaf[1].IsCA {
		t.Fatalf("a leaf signed after activate has a chain of %d, want the leaf and the cross-certificate", len(newLeaf))
	}
	if err := verifyWith(now, newLeaf, oldRoot); err != nil {
		t.Fatalf("a peer on the old bundle refuses a new leaf: %v", err)
	}
	if r, ok := c.RootOf(newLeaf); !ok || !r.Equal(next) {
		t.Fatal("RootOf attributes a new leaf to the old root")
	}
	r := c.Rotation()
	if r.Stage != StageActivated || len(r.Retiring) != 1 || !r.Retiring[0].Equal(oldRoot) || r.ActivatedAt.IsZero() {
		t.Fatalf("after activate: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(dir, NextFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s left after activate: %v", NextFile, err)
	}
	if re := load(); !re.Issuer().Equal(next) || re.Rotation().Stage != StageActivated || len(re.Roots()) != 2 {
		t.Fatal("activate not persisted")
	} else if chain, _ := re.Sign(newCSR(t), id, 0); len(chain) != 2 {
		t.Fatal("the cross-certificate was not kept across a restart")
	}

	// Prune: only the new root is left.
	removed, err := c.Prune()
	if err != nil || len(removed) != 1 || !removed[0].Equal(oldRoot) {
		t.Fatalf("Prune = %d removed, %v; want the old root", len(removed), err)
	}
	if err := verifyLeaf(c, oldLeaf); err == nil {
		t.Fatal("old leaf still verifies after its root was pruned")
	}
	if err := verifyLeaf(c, newLeaf); err != nil {
		t.Fatal(err)
	}
	if chain, _ := c.Sign(newCSR(t), id, 0); len(chain) != 1 {
		t.Fatalf("a leaf signed after prune carries %d certificates, want the leaf alone", len(chain))
	}
	if _, err := os.Stat(filepath.Join(dir, CrossFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s left after prune: %v", CrossFile, err)
	}
	if re := load(); re.Rotation().Stage != StageStable || len(re.Roots()) != 1 || !re.Issuer().Equal(next) {
		t.Fatal("prune not persisted")
	}

	// Rotate does both first steps at once.
	if _, err := c.Rotate(); err != nil || c.Issuer().Equal(next) || c.Rotation().Stage != StageActivated {
		t.Fatalf("Rotate: %v", err)
	}
}

// TestRotationCrashRecovery leaves the files as a crash between two writes
// of a step would, and checks what the next start makes of them.
func TestRotationCrashRecovery(t *testing.T) {
	read := func(t *testing.T, dir, name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write := func(t *testing.T, dir, name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("prepared root written, stage not recorded", func(t *testing.T) {
		dir := t.TempDir()
		c, _ := LoadOrCreate(dir, td)
		bundle := read(t, dir, BundleFile)
		if _, err := c.Prepare(); err != nil {
			t.Fatal(err)
		}
		write(t, dir, BundleFile, bundle)
		if err := os.Remove(filepath.Join(dir, RotationFile)); err != nil {
			t.Fatal(err)
		}
		re, err := LoadOrCreate(dir, td)
		if err != nil {
			t.Fatal(err)
		}
		if re.Rotation().Stage != StageStable || len(re.Roots()) != 1 {
			t.Fatalf("stage %s with %d roots, want stable with 1", re.Rotation().Stage, len(re.Roots()))
		}
		if _, err := os.Stat(filepath.Join(dir, NextFile)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("the orphaned prepared root was not removed")
		}
	})
	t.Run("prepare recorded, bundle not written", func(t *testing.T) {
		dir := t.TempDir()
		c, _ := LoadOrCreate(dir, td)
		bundle := read(t, dir, BundleFile)
		next, err := c.Prepare()
		if err != nil {
			t.Fatal(err)
		}
		write(t, dir, BundleFile, bundle)
		re, err := LoadOrCreate(dir, td)
		if err != nil {
			t.Fatal(err)
		}
		if re.Rotation().Stage != StagePrepared || len(re.Roots()) != 2 || !re.Roots()[1].Equal(next) {
			t.Fatal("the bundle was not repaired to hold the prepared root")
		}
		if string(read(t, dir, BundleFile)) != string(re.Bundle()) {
			t.Fatal("the repaired bundle was not written")
		}
	})
	t.Run("activation recorded, root not replaced", func(t *testing.T) {
		dir := t.TempDir()
		c, _ := LoadOrCreate(dir, td)
		oldRoot := read(t, dir, RootFile)
		next, err := c.Prepare()
		if err != nil {
			t.Fatal(err)
		}
		nextFile := read(t, dir, NextFile)
		if _, err := c.Activate(); err != nil {
			t.Fatal(err)
		}
		write(t, dir, RootFile, oldRoot)
		write(t, dir, NextFile, nextFile)
		re, err := LoadOrCreate(dir, td)
		if err != nil {
			t.Fatal(err)
		}
		if !re.Issuer().Equal(next) || re.Rotation().Stage != StageActivated || len(re.Roots()) != 2 {
			t.Fatal("the interrupted activation was not finished")
		}
		if _, err := os.Stat(filepath.Join(dir, NextFile)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("the prepared root file was left")
		}
	})
	t.Run("pruned, stage not recorded", func(t *testing.T) {
		dir := t.TempDir()
		c, _ := LoadOrCreate(dir, td)
		if _, err := c.Rotate(); err != nil {
			t.Fatal(err)
		}
		state := read(t, dir, RotationFile)
		if _, err := c.Prune(); err != nil {
			t.Fatal(err)
		}
		write(t, dir, RotationFile, state)
		re, err := LoadOrCreate(dir, td)
		if err != nil {
			t.Fatal(err)
		}
		if re.Rotation().Stage != StageStable || len(re.Roots()) != 1 {
			t.Fatalf("stage %s with %d roots, want stable with 1", re.Rotation().Stage, len(re.Roots()))
		}
	})
	t.Run("prepared root missing", func(t *testing.T) {
		dir := t.TempDir()
		c, _ := LoadOrCreate(dir, td)
		if _, err := c.Prepare(); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, NextFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreate(dir, td); err == nil || !strings.Contains(err.Error(), "is missing") {
			t.Fatalf("LoadOrCreate = %v, want an error naming the missing prepared root", err)
		}
	})
}

func TestFromFilesIntermediate(t *testing.T) {
	// An operator's root (allowing one intermediate) and an intermediate
	// signed by it.
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootSerial, _ := randomSerial()
	rootTmpl := &x509.Certificate{
		SerialNumber: rootSerial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	rootCA := struct{ Bundle func() []byte }{func() []byte { return EncodeCertificates([]*x509.Certificate{root}) }}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := pemBlock("PRIVATE KEY", keyDER)
	certPEM := EncodeCertificates([]*x509.Certificate{inter})

	c, err := FromFiles(certPEM, keyPEM, rootCA.Bundle(), td)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.Sign(newCSR(t), spiffeid.Must(td, "", "orders"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !chain[1].Equal(inter) {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(chain))
	}
	if err := verifyLeaf(c, chain); err != nil {
		t.Fatal(err)
	}
	for name, step := range map[string]func() error{
		"rotate":   func() error { _, err := c.Rotate(); return err },
		"prepare":  func() error { _, err := c.Prepare(); return err },
		"activate": func() error { _, err := c.Activate(); return err },
		"prune":    func() error { _, err := c.Prune(); return err },
	} {
		if err := step(); !errors.Is(err, ErrOperatorManaged) {
			t.Fatalf("%s = %v, want ErrOperatorManaged", name, err)
		}
	}
	if !c.OperatorManaged() || c.Rotation().Stage != StageStable {
		t.Fatal("an operator-managed CA does not say so")
	}

	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(otherKey)
	unrelated, _ := LoadOrCreate(t.TempDir(), td)
	for name, args := range map[string][3][]byte{
		"wrong key":      {certPEM, pemBlock("PRIVATE KEY", otherDER), rootCA.Bundle()},
		"foreign bundle": {certPEM, keyPEM, unrelated.Bundle()},
		"key in bundle":  {certPEM, keyPEM, append(rootCA.Bundle(), keyPEM...)},
		"no key":         {certPEM, nil, rootCA.Bundle()},
		"garbage":        {[]byte("not pem"), keyPEM, rootCA.Bundle()},
		"leaf as CA":     {EncodeCertificates(chain[:1]), keyPEM, rootCA.Bundle()},
		"empty bundle":   {certPEM, keyPEM, nil},
	} {
		if _, err := FromFiles(args[0], args[1], args[2], td); err == nil {
			t.Errorf("%s: FromFiles succeeded", name)
		}
	}
}

// verifyWith verifies chain against roots alone.
func verifyWith(at time.Time, chain []*x509.Certificate, roots ...*x509.Certificate) error {
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func pemBlock(typ string, der []byte) []byte {
	return []byte("-----BEGIN " + typ + "-----\n" + base64Lines(der) + "-----END " + typ + "-----\n")
}
