package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/causeway-mesh/causeway/control/ca/internal/atomicfile"
)

// Stage is where a self-managed CA is in a root rotation.
type Stage string

// The stages, in the order a rotation goes through them.
const (
	// StageStable: one root signs; nothing is pending. The bundle may
	// still hold roots an operator added by hand.
	StageStable Stage = "stable"
	// StagePrepared: a new root is in the trust bundle, so sidecars learn
	// to trust it, but the old root still signs every leaf.
	StagePrepared Stage = "prepared"
	// StageActivated: the new root signs new leaves; the old roots stay in
	// the bundle so that leaves they signed keep verifying until they are
	// re-issued or expire.
	StageActivated Stage = "activated"
)

// Rotation describes a CA's rotation state.
type Rotation struct {
	// Stage is the current stage; always StageStable for an
	// operator-managed CA.
	Stage Stage
	// Signing is the certificate that signs new leaves.
	Signing *x509.Certificate
	// Next is the prepared root (StagePrepared only).
	Next *x509.Certificate
	// Retiring are the roots in the bundle that no longer sign
	// (StageActivated: the roots that Prune removes).
	Retiring []*x509.Certificate
	// PreparedAt and ActivatedAt are when the current rotation reached
	// those stages (zero when it has not).
	PreparedAt, ActivatedAt time.Time
	// OperatorManaged reports a CA made by FromFiles, which cannot rotate.
	OperatorManaged bool
}

// Rotation returns the CA's rotation state.
func (c *CA) Rotation() Rotation {
	s := c.state.Load()
	r := Rotation{
		Stage: s.stage, Signing: s.cert, Next: s.next,
		PreparedAt: s.preparedAt, ActivatedAt: s.activatedAt, OperatorManaged: c.dir == "",
	}
	if s.stage == StageActivated {
		for _, root := range s.roots {
			if !root.Equal(s.cert) {
				r.Retiring = append(r.Retiring, root)
			}
		}
	}
	return r
}

// Prepare starts a rotation: it creates a new root and adds it to the trust
// bundle, while the current root keeps signing. Sidecars learn the new
// bundle (WatchBundle, or their next certificate) before Activate makes
// the new root sign. The current root also certifies the new root's key
// (a cross-certificate), which chains carry from activation to prune, so
// that a peer still holding only the old bundle verifies new leaves and
// the control plane's new serving certificate through the old root (a
// root made before roots allowed one intermediate, path length 0, cannot
// certify one, and its rotation goes without). It is allowed only in
// StageStable. Files: ca-next.pem and ca-cross.pem, then
// ca-rotation.json, then ca-bundle.pem.
func (c *CA) Prepare() (*x509.Certificate, error) {
	if c.dir == "" {
		return nil, ErrOperatorManaged
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.state.Load()
	if old.stage != StageStable {
		return nil, fmt.Errorf("ca: prepare: %w: a rotation is already %s (next: %s)", ErrStage, old.stage, nextStep(old.stage))
	}
	now := c.now()
	cert, key, err := newRoot(c.trustDomain, now)
	if err != nil {
		return nil, err
	}
	s, err := newSigner(old.cert, old.key, old.chain, appendUnique(append([]*x509.Certificate(nil), old.roots...), cert))
	if err != nil {
		return nil, err
	}
	var cross *x509.Certificate
	if canCertifyCA(old.cert) {
		if cross, err = crossCertify(old.cert, old.key, cert, now); err != nil {
			return nil, err
		}
	}
	s.stage, s.next, s.nextKey, s.preparedAt, s.cross = StagePrepared, cert, key, now.UTC(), cross
	if err := writeKeyPair(filepath.Join(c.dir, NextFile), cert, key); err != nil {
		return nil, err
	}
	if cross != nil {
		if err := atomicfile.Write(filepath.Join(c.dir, CrossFile), EncodeCertificates([]*x509.Certificate{cross}), 0o644); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	if err := writeRotation(c.dir, s); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(c.dir, BundleFile), s.pem, 0o644); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	c.swap(s)
	return cert, nil
}

// Activate makes the prepared root the signer of new leaves (and of the
// control plane's serving certificate). The old roots stay in the bundle.
// It is allowed only in StagePrepared. Files: ca-rotation.json, then
// ca-root.pem, then ca-next.pem is removed.
func (c *CA) Activate() (*x509.Certificate, error) {
	if c.dir == "" {
		return nil, ErrOperatorManaged
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.state.Load()
	if old.stage != StagePrepared {
		return nil, fmt.Errorf("ca: activate: %w: the CA is %s, not prepared (next: %s)", ErrStage, old.stage, nextStep(old.stage))
	}
	if now := c.now(); now.Before(old.next.NotBefore) || now.After(old.next.NotAfter) {
		return nil, fmt.Errorf("ca: activate: the prepared root is valid from %s to %s, not now", old.next.NotBefore.Format(time.RFC3339), old.next.NotAfter.Format(time.RFC3339))
	}
	s, err := newSigner(old.next, old.nextKey, nil, old.roots)
	if err != nil {
		return nil, err
	}
	s.stage, s.preparedAt, s.activatedAt, s.cross = StageActivated, old.preparedAt, c.now().UTC(), old.cross
	if err := writeRotation(c.dir, s); err != nil {
		return nil, err
	}
	if err := writeKeyPair(filepath.Join(c.dir, RootFile), s.cert, s.key); err != nil {
		return nil, err
	}
	if err := removeFile(filepath.Join(c.dir, NextFile)); err != nil {
		return nil, err
	}
	c.swap(s)
	return s.cert, nil
}

// Prune ends a rotation: every root other than the signing one leaves the
// trust bundle, so leaves they signed stop verifying anywhere the new
// bundle has arrived. It is allowed only in StageActivated; whether every
// leaf of the old roots has been re-issued or has expired is the caller's
// to judge (package control/ca/rotation). Chains stop carrying the
// cross-certificate. Files: ca-bundle.pem, then ca-rotation.json, then
// ca-cross.pem is removed.
func (c *CA) Prune() (removed []*x509.Certificate, err error) {
	if c.dir == "" {
		return nil, ErrOperatorManaged
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.state.Load()
	if old.stage != StageActivated {
		return nil, fmt.Errorf("ca: prune: %w: the CA is %s, not activated (next: %s)", ErrStage, old.stage, nextStep(old.stage))
	}
	for _, r := range old.roots {
		if !r.Equal(old.cert) {
			removed = append(removed, r)
		}
	}
	s, err := newSigner(old.cert, old.key, nil, []*x509.Certificate{old.cert})
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(c.dir, BundleFile), s.pem, 0o644); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if err := writeRotation(c.dir, s); err != nil {
		return nil, err
	}
	if err := removeFile(filepath.Join(c.dir, CrossFile)); err != nil {
		return nil, err
	}
	c.swap(s)
	return removed, nil
}

// Rotate is Prepare and Activate in one step: the new root signs at once,
// before any sidecar has learnt to trust it, so peers that have not yet
// received the new bundle refuse the new leaves until they do. Meant for
// an emergency (a compromised root) and for tests; the staged rotation is
// the safe way.
func (c *CA) Rotate() (*x509.Certificate, error) {
	if _, err := c.Prepare(); err != nil {
		return nil, err
	}
	return c.Activate()
}

// nextStep names what an operator does next in a stage.
func nextStep(s Stage) string {
	switch s {
	case StagePrepared:
		return "activate"
	case StageActivated:
		return "prune"
	}
	return "prepare"
}

// rotationFile is the content of ca-rotation.json.
type rotationFile struct {
	Version     int       `json:"version"`
	Stage       Stage     `json:"stage"`
	PreparedAt  time.Time `json:"preparedAt,omitzero"`
	ActivatedAt time.Time `json:"activatedAt,omitzero"`
	// Next is the fingerprint of the prepared root, cross-checked with
	// ca-next.pem at start.
	Next string `json:"next,omitempty"`
}

const rotationVersion = 1

// readRotation reads ca-rotation.json; a missing file is StageStable.
func readRotation(dir string) (rotationFile, error) {
	path := filepath.Join(dir, RotationFile)
	b, err := os.ReadFile(path) //nolint:gosec // inside the operator's data dir
	if errors.Is(err, fs.ErrNotExist) {
		return rotationFile{Version: rotationVersion, Stage: StageStable}, nil
	}
	if err != nil {
		return rotationFile{}, fmt.Errorf("ca: %w", err)
	}
	var f rotationFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return rotationFile{}, fmt.Errorf("ca: %s: %w", path, err)
	}
	if f.Version != rotationVersion {
		return rotationFile{}, fmt.Errorf("ca: %s: version %d is not %d", path, f.Version, rotationVersion)
	}
	switch f.Stage {
	case StageStable, StagePrepared, StageActivated:
	default:
		return rotationFile{}, fmt.Errorf("ca: %s: unknown stage %q", path, f.Stage)
	}
	return f, nil
}

// writeRotation records s's stage.
func writeRotation(dir string, s *signer) error {
	f := rotationFile{Version: rotationVersion, Stage: s.stage, PreparedAt: s.preparedAt, ActivatedAt: s.activatedAt}
	if s.next != nil {
		f.Next = Fingerprint(s.next)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, RotationFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

// readKeyPair reads a file of one CA certificate and its private key and
// checks that the key matches and the certificate may sign now. A missing
// file is an error wrapping fs.ErrNotExist.
func readKeyPair(path string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	b, err := os.ReadFile(path) //nolint:gosec // inside the operator's data dir
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	certs, key, err := parseCertsAndKey(b)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	if len(certs) != 1 || key == nil {
		return nil, nil, fmt.Errorf("ca: %s: want one certificate and one private key, found %d certificates", path, len(certs))
	}
	if err := checkIssuer(certs[0], key, now); err != nil {
		return nil, nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	return certs[0], key, nil
}

// writeKeyPair writes cert and its key (PKCS#8) to path, mode 0600.
func writeKeyPair(path string, cert *x509.Certificate, key crypto.Signer) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("ca: encode key: %w", err)
	}
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	_ = pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := atomicfile.Write(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

// removeFile deletes path (a missing file is fine) and syncs its
// directory, so the removal survives a crash.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ca: %w", err)
	}
	d, err := os.Open(filepath.Dir(path)) //nolint:gosec // the data dir
	if err != nil {
		return fmt.Errorf("ca: sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("ca: sync directory: %w", err)
	}
	return nil
}

// canCertifyCA reports whether root's path length allows a CA certificate
// below it.
func canCertifyCA(root *x509.Certificate) bool {
	return root.MaxPathLen != 0 || !root.MaxPathLenZero
}

// crossCertify certifies next's key and name with issuer (the current
// root): a CA certificate with next's subject, key, key identifier and
// constraints, valid while both are.
func crossCertify(issuer *x509.Certificate, issuerKey crypto.Signer, next *x509.Certificate, now time.Time) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: next.Subject, SubjectKeyId: next.SubjectKeyId, URIs: next.URIs,
		NotBefore: next.NotBefore, NotAfter: next.NotAfter,
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: next.KeyUsage,
	}
	if tmpl.NotBefore.Before(issuer.NotBefore) {
		tmpl.NotBefore = issuer.NotBefore
	}
	if tmpl.NotAfter.After(issuer.NotAfter) {
		tmpl.NotAfter = issuer.NotAfter
	}
	if !now.Before(tmpl.NotAfter) {
		return nil, fmt.Errorf("ca: the current root expires at %s: nothing to cross-certify", issuer.NotAfter.Format(time.RFC3339))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, next.PublicKey, issuerKey)
	if err != nil {
		return nil, fmt.Errorf("ca: cross-certify the new root: %w", err)
	}
	return x509.ParseCertificate(der)
}

// readCross reads a cross-certificate and checks that it certifies key.
func readCross(path string, key crypto.Signer) (*x509.Certificate, error) {
	if key == nil {
		return nil, errors.New("no key to match")
	}
	b, err := os.ReadFile(path) //nolint:gosec // inside the operator's data dir
	if err != nil {
		return nil, err
	}
	certs, err := ParseBundle(b)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if len(certs) != 1 || !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("%s does not certify the rotated root's key", path)
	}
	return certs[0], nil
}
