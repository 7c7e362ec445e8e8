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

func TestRotate(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	dir := t.TempDir()
	c, err := LoadOrCreate(dir, td, WithClock(clock), WithMaxTTL(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.Must(td, "", "orders")
	oldRoot := c.Issuer()
	oldLeaf, err := c.Sign(newCSR(t), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	newRoot, err := c.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if newRoot.Equal(oldRoot) || !c.Issuer().Equal(newRoot) {
		t.Fatal("Rotate did not switch the issuer")
	}
	if n := len(c.Roots()); n != 2 {
		t.Fatalf("bundle has %d roots after rotation, want 2", n)
	}
	newLeaf, err := c.Sign(newCSR(t), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := newLeaf[0].CheckSignatureFrom(newRoot); err != nil {
		t.Fatalf("new leaf not signed by the new root: %v", err)
	}
	for name, chain := range map[string][]*x509.Certificate{"old": oldLeaf, "new": newLeaf} {
		if err := verifyLeaf(c, chain); err != nil {
			t.Fatalf("%s leaf does not verify with the bundle: %v", name, err)
		}
	}
	// Survives a restart.
	reloaded, err := LoadOrCreate(dir, td, WithClock(clock), WithMaxTTL(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !reloaded.Issuer().Equal(newRoot) || len(reloaded.Roots()) != 2 {
		t.Fatal("rotation not persisted")
	}
	// Pruning waits for the old leaves to expire.
	if _, err := c.PruneBundle(); !errors.Is(err, ErrTooEarly) {
		t.Fatalf("PruneBundle right after rotation: %v, want ErrTooEarly", err)
	}
	now = now.Add(25 * time.Hour)
	removed, err := c.PruneBundle()
	if err != nil || len(removed) != 1 || !removed[0].Equal(oldRoot) {
		t.Fatalf("PruneBundle = %d removed, %v; want the old root", len(removed), err)
	}
	if err := verifyLeaf(c, oldLeaf); err == nil {
		t.Fatal("old leaf still verifies after its root was pruned")
	}
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
	if _, err := c.Rotate(); !errors.Is(err, ErrOperatorManaged) {
		t.Fatalf("Rotate = %v, want ErrOperatorManaged", err)
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

func pemBlock(typ string, der []byte) []byte {
	return []byte("-----BEGIN " + typ + "-----\n" + base64Lines(der) + "-----END " + typ + "-----\n")
}
