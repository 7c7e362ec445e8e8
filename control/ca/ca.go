// Package ca is the mesh's certificate authority. It signs short-lived
// X.509-SVIDs: leaf certificates whose only name is one SPIFFE ID URI SAN
// (spiffeid), usable for both sides of a TLS connection.
//
// The CA runs in one of two modes:
//
//   - Self-managed (LoadOrCreate): at first start it creates an ECDSA P-256
//     root valid for 10 years and keeps it, with its key, in the data
//     directory. Rotate creates a new root; the trust bundle then holds the
//     old and the new roots and new leaves are signed by the new one. Once
//     every leaf of the old root has expired (MaxTTL after the rotation),
//     PruneBundle drops it.
//   - Operator-managed (FromFiles): an intermediate CA certificate and key
//     given by the operator, with the bundle of roots it chains to. Rotation
//     is the operator's: replace the files and restart.
//
// Files in the data directory (self-managed):
//
//	ca-root.pem    the current root's certificate and PKCS#8 private key, mode 0600
//	ca-bundle.pem  the trust bundle: every root still trusted, mode 0644
//
// Both are replaced atomically (write, sync, rename, sync the directory). A
// rotation writes the bundle first, so a crash between the two writes leaves
// a bundle with an unused extra root and never a signer the bundle lacks.
//
// A CA is safe for concurrent use. Signing reads an immutable snapshot of
// the signer; Rotate builds a new snapshot and swaps it.
package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causeway-mesh/causeway/control/ca/internal/atomicfile"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/control/identity/svid"
)

// File names inside the data directory.
const (
	RootFile   = "ca-root.pem"
	BundleFile = "ca-bundle.pem"
)

// Defaults.
const (
	// DefaultTTL is the lifetime of a leaf when Sign is given ttl 0.
	DefaultTTL = 24 * time.Hour
	// DefaultMaxTTL is the longest leaf lifetime Sign accepts unless
	// WithMaxTTL says otherwise. It is also how long an old root stays in
	// the bundle after a rotation.
	DefaultMaxTTL = 7 * 24 * time.Hour
	// RootLifetime is the validity of a root created by LoadOrCreate or Rotate.
	RootLifetime = 10 * 365 * 24 * time.Hour

	// leafBackdate is how far a leaf's NotBefore is set in the past, to
	// tolerate peers whose clocks run a little behind.
	leafBackdate = 30 * time.Second
	// rootBackdate is the same for a root; a root's NotBefore plus
	// rootBackdate is when it was created (the rotation time).
	rootBackdate = time.Hour
	// maxRSABits bounds RSA keys in a CSR (verification cost).
	maxRSABits = 8192
)

// Errors.
var (
	// ErrOperatorManaged is returned by Rotate and PruneBundle of a CA made
	// by FromFiles: its roots belong to the operator.
	ErrOperatorManaged = errors.New("the CA is operator-managed: replace its files to rotate")
	// ErrTooEarly is returned by PruneBundle while leaves of an old root may
	// still be valid.
	ErrTooEarly = errors.New("old roots may still have valid leaves")
	// ErrBadCSR wraps every reason a CSR is refused.
	ErrBadCSR = errors.New("certificate signing request refused")
)

// Option configures a CA.
type Option func(*options)

type options struct {
	maxTTL time.Duration
	now    func() time.Time
}

// WithMaxTTL sets the longest leaf lifetime Sign accepts (default
// DefaultMaxTTL). It must be positive.
func WithMaxTTL(d time.Duration) Option { return func(o *options) { o.maxTTL = d } }

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// CA signs workload certificates for one trust domain.
type CA struct {
	trustDomain string
	dir         string // "" when operator-managed
	maxTTL      time.Duration
	now         func() time.Time

	mu    sync.Mutex // serialises Rotate and PruneBundle
	state atomic.Pointer[signer]
}

// signer is an immutable snapshot of the signing material.
type signer struct {
	cert  *x509.Certificate   // signs leaves
	key   crypto.Signer       // cert's key
	chain []*x509.Certificate // cert and those above it that are not roots (empty when cert is a root)
	roots []*x509.Certificate // the trust bundle
	pool  *x509.CertPool      // roots as a pool
	pem   []byte              // roots as PEM
}

func newOptions(opts []Option) (options, error) {
	o := options{maxTTL: DefaultMaxTTL, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxTTL <= 0 {
		return o, fmt.Errorf("ca: max TTL %v must be positive", o.maxTTL)
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o, nil
}

// LoadOrCreate returns the self-managed CA kept in dir, creating dir (0700),
// a root and the bundle at first start. A root file whose key does not match
// its certificate, or a root that has expired, is an error: the operator
// must look, since every leaf in the mesh hangs on it.
func LoadOrCreate(dir, trustDomain string, opts ...Option) (*CA, error) {
	if err := spiffeid.ValidateTrustDomain(trustDomain); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: data directory %s: %w", dir, err)
	}
	c := &CA{trustDomain: trustDomain, dir: dir, maxTTL: o.maxTTL, now: o.now}

	rootPath := filepath.Join(dir, RootFile)
	rootPEM, err := os.ReadFile(rootPath) //nolint:gosec // inside the operator's data dir
	switch {
	case errors.Is(err, fs.ErrNotExist):
		cert, key, err := newRoot(trustDomain, o.now())
		if err != nil {
			return nil, err
		}
		s, err := newSigner(cert, key, nil, []*x509.Certificate{cert})
		if err != nil {
			return nil, err
		}
		if err := c.persist(s); err != nil {
			return nil, err
		}
		c.state.Store(s)
		return c, nil
	case err != nil:
		return nil, fmt.Errorf("ca: %w", err)
	}

	certs, key, err := parseCertsAndKey(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", rootPath, err)
	}
	if len(certs) != 1 || key == nil {
		return nil, fmt.Errorf("ca: %s: want one certificate and one private key, found %d certificates", rootPath, len(certs))
	}
	cert := certs[0]
	if err := checkIssuer(cert, key, o.now()); err != nil {
		return nil, fmt.Errorf("ca: %s: %w", rootPath, err)
	}

	bundlePath := filepath.Join(dir, BundleFile)
	var roots []*x509.Certificate
	bundlePEM, err := os.ReadFile(bundlePath) //nolint:gosec // inside the operator's data dir
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("ca: %w", err)
	default:
		if roots, err = ParseBundle(bundlePEM); err != nil {
			return nil, fmt.Errorf("ca: %s: %w", bundlePath, err)
		}
	}
	s, err := newSigner(cert, key, nil, appendUnique(roots, cert))
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(s.pem, bundlePEM) {
		// A crash before the bundle was first written, or a bundle lacking
		// the current root: repair it.
		if err := atomicfile.Write(bundlePath, s.pem, 0o644); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	c.state.Store(s)
	return c, nil
}

// FromFiles returns an operator-managed CA. certPEM holds the issuing CA
// certificate first, then any intermediates above it; keyPEM its private
// key (PKCS#8, SEC 1 or PKCS#1); bundlePEM the roots that the issuing
// certificate chains to, which become the trust bundle. The certificate
// must be a CA allowed to sign certificates, match the key, be valid now
// and chain to the bundle.
func FromFiles(certPEM, keyPEM, bundlePEM []byte, trustDomain string, opts ...Option) (*CA, error) {
	if err := spiffeid.ValidateTrustDomain(trustDomain); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	certs, _, err := parseCertsAndKey(certPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: certificate: %w", err)
	}
	if len(certs) == 0 {
		return nil, errors.New("ca: certificate: no CERTIFICATE block")
	}
	_, key, err := parseCertsAndKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: key: %w", err)
	}
	if key == nil {
		return nil, errors.New("ca: key: no private key block")
	}
	roots, err := ParseBundle(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("ca: bundle: %w", err)
	}
	now := o.now()
	cert := certs[0]
	if err := checkIssuer(cert, key, now); err != nil {
		return nil, fmt.Errorf("ca: certificate: %w", err)
	}
	s, err := newSigner(cert, key, nil, roots)
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	inter := x509.NewCertPool()
	if !s.isRoot(cert) {
		chain = append(chain, cert)
	}
	for _, c := range certs[1:] {
		if !s.isRoot(c) {
			chain = append(chain, c)
			inter.AddCert(c)
		}
	}
	if !s.isRoot(cert) {
		if _, err := cert.Verify(x509.VerifyOptions{
			Roots: s.pool, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}); err != nil {
			return nil, fmt.Errorf("ca: certificate does not chain to the bundle: %w", err)
		}
	}
	s.chain = chain
	c := &CA{trustDomain: trustDomain, maxTTL: o.maxTTL, now: o.now}
	c.state.Store(s)
	return c, nil
}

// TrustDomain is the trust domain the CA signs for.
func (c *CA) TrustDomain() string { return c.trustDomain }

// MaxTTL is the longest leaf lifetime Sign accepts.
func (c *CA) MaxTTL() time.Duration { return c.maxTTL }

// Bundle is the trust bundle as PEM: every root a valid leaf may chain to.
// The caller must not modify it.
func (c *CA) Bundle() []byte { return c.state.Load().pem }

// Roots is the trust bundle's certificates, oldest first.
func (c *CA) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), c.state.Load().roots...)
}

// Pool is the trust bundle as a new pool the caller may modify.
func (c *CA) Pool() *x509.CertPool { return c.state.Load().pool.Clone() }

// Issuer is the certificate that signs new leaves now.
func (c *CA) Issuer() *x509.Certificate { return c.state.Load().cert }

// Sign issues a leaf certificate for id to the key in csr, valid for ttl
// (DefaultTTL when 0, at most MaxTTL, and never past the issuer's expiry).
// It verifies the CSR's signature and key, and ignores every name the CSR
// asks for: the leaf's only name is id's URI SAN, because the caller
// authorised id, not the CSR. The leaf allows digital signatures for TLS
// client and server authentication, starts 30 s in the past, and has a
// random 128-bit serial number. chain is the leaf followed by any
// intermediates up to (not including) the bundle's roots.
func (c *CA) Sign(csr *x509.CertificateRequest, id spiffeid.ID, ttl time.Duration) (chain []*x509.Certificate, err error) {
	if !id.MemberOf(c.trustDomain) {
		return nil, fmt.Errorf("ca: identity %q is not in trust domain %q", id, c.trustDomain)
	}
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	switch {
	case ttl == 0:
		ttl = DefaultTTL
	case ttl < 0 || ttl > c.maxTTL:
		return nil, fmt.Errorf("ca: lifetime %v is outside (0, %v]", ttl, c.maxTTL)
	}
	s := c.state.Load()
	now := c.now()
	tmpl := &x509.Certificate{
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	leaf, err := s.issue(tmpl, csr.PublicKey, now)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s: %w", id, err)
	}
	return append([]*x509.Certificate{leaf}, s.chain...), nil
}

// issue signs tmpl for pub, filling in the serial number and keeping the
// validity inside the issuer's.
func (s *signer) issue(tmpl *x509.Certificate, pub any, now time.Time) (*x509.Certificate, error) {
	if now.After(s.cert.NotAfter) {
		return nil, fmt.Errorf("the issuing certificate expired at %s", s.cert.NotAfter.Format(time.RFC3339))
	}
	if tmpl.NotBefore.Before(s.cert.NotBefore) {
		tmpl.NotBefore = s.cert.NotBefore
	}
	if tmpl.NotAfter.After(s.cert.NotAfter) {
		tmpl.NotAfter = s.cert.NotAfter
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, pub, s.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Verify checks a chain presented by a workload (leaf first) against the
// current trust bundle, for the given usage (x509.ExtKeyUsageClientAuth
// for a client), and returns the leaf's SPIFFE ID, which must belong to
// the CA's trust domain. It is how the control plane authenticates a
// sidecar from the certificate it presented over TLS.
func (c *CA) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (spiffeid.ID, error) {
	return svid.Verify(chain, c.state.Load().pool, c.trustDomain, usage, c.now())
}

// Rotate makes a new root the signer of new leaves. The trust bundle keeps
// every previous root, so leaves already issued still verify; sidecars
// learn the new bundle with their next certificate. Both files are
// rewritten before the new root signs anything.
func (c *CA) Rotate() (*x509.Certificate, error) {
	if c.dir == "" {
		return nil, ErrOperatorManaged
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.state.Load()
	cert, key, err := newRoot(c.trustDomain, c.now())
	if err != nil {
		return nil, err
	}
	s, err := newSigner(cert, key, nil, appendUnique(append([]*x509.Certificate(nil), old.roots...), cert))
	if err != nil {
		return nil, err
	}
	if err := c.persist(s); err != nil {
		return nil, err
	}
	c.state.Store(s)
	return cert, nil
}

// PruneBundle removes from the bundle every root other than the current
// one, once MaxTTL has passed since the current root was created (so no
// valid leaf of an older root can remain), and any expired root. Before
// that it returns ErrTooEarly, naming when pruning becomes safe.
func (c *CA) PruneBundle() (removed []*x509.Certificate, err error) {
	if c.dir == "" {
		return nil, ErrOperatorManaged
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.state.Load()
	now := c.now()
	safe := old.cert.NotBefore.Add(rootBackdate).Add(c.maxTTL)
	if now.Before(safe) {
		return nil, fmt.Errorf("ca: %w: prune after %s", ErrTooEarly, safe.Format(time.RFC3339))
	}
	keep := []*x509.Certificate{old.cert}
	for _, r := range old.roots {
		if !r.Equal(old.cert) {
			removed = append(removed, r)
		}
	}
	if len(removed) == 0 {
		return nil, nil
	}
	s, err := newSigner(old.cert, old.key, nil, keep)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(c.dir, BundleFile), s.pem, 0o644); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	c.state.Store(s)
	return removed, nil
}

// persist writes the bundle, then the root and its key.
func (c *CA) persist(s *signer) error {
	if err := atomicfile.Write(filepath.Join(c.dir, BundleFile), s.pem, 0o644); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(s.key)
	if err != nil {
		return fmt.Errorf("ca: encode key: %w", err)
	}
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: s.cert.Raw})
	_ = pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := atomicfile.Write(filepath.Join(c.dir, RootFile), buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

func newSigner(cert *x509.Certificate, key crypto.Signer, chain []*x509.Certificate, roots []*x509.Certificate) (*signer, error) {
	if len(roots) == 0 {
		return nil, errors.New("ca: the trust bundle is empty")
	}
	pool := x509.NewCertPool()
	var buf bytes.Buffer
	for _, r := range roots {
		pool.AddCert(r)
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})
	}
	return &signer{cert: cert, key: key, chain: chain, roots: roots, pool: pool, pem: buf.Bytes()}, nil
}

func (s *signer) isRoot(c *x509.Certificate) bool {
	for _, r := range s.roots {
		if r.Equal(c) {
			return true
		}
	}
	return false
}

func appendUnique(list []*x509.Certificate, c *x509.Certificate) []*x509.Certificate {
	for _, x := range list {
		if x.Equal(c) {
			return list
		}
	}
	return append(list, c)
}

// newRoot creates a self-signed ECDSA P-256 root for trustDomain.
func newRoot(trustDomain string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"Causeway"},
			CommonName:   fmt.Sprintf("Causeway mesh root %s %s", trustDomain, now.UTC().Format("2006-01-02T15:04:05Z")),
		},
		URIs:                  []*url.URL{spiffeid.TrustDomainURL(trustDomain)},
		NotBefore:             now.Add(-rootBackdate),
		NotAfter:              now.Add(RootLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create root: %w", err)
	}
	return cert, key, nil
}

// randomSerial is a non-zero random 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("ca: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// checkIssuer verifies that cert may sign leaves with key at now.
func checkIssuer(cert *x509.Certificate, key crypto.Signer, now time.Time) error {
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return errors.New("certificate is not a CA")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("certificate's key usage does not allow signing certificates")
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return fmt.Errorf("certificate is valid from %s to %s, not now", cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339))
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("private key does not match the certificate")
	}
	return nil
}

// checkCSR verifies a CSR's signature and that its key is one the mesh
// accepts: ECDSA P-256/P-384, Ed25519, or RSA of 2048 to 8192 bits.
func checkCSR(csr *x509.CertificateRequest) error {
	if csr == nil {
		return fmt.Errorf("%w: no CSR", ErrBadCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s is not P-256 or P-384", ErrBadCSR, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > maxRSABits {
			return fmt.Errorf("%w: RSA key of %d bits is outside [2048, %d]", ErrBadCSR, n, maxRSABits)
		}
	default:
		return fmt.Errorf("%w: key type %T is not accepted", ErrBadCSR, csr.PublicKey)
	}
	return nil
}
