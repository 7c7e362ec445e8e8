// Package ca is the mesh's certificate authority. It signs short-lived
// X.509-SVIDs: leaf certificates whose only name is one SPIFFE ID URI SAN
// (spiffeid), usable for both sides of a TLS connection.
//
// The CA runs in one of two modes:
//
//   - Self-managed (LoadOrCreate): at first start it creates an ECDSA P-256
//     root valid for 10 years and keeps it, with its key, in the data
//     directory. Its root is rotated in three stages (see Prepare,
//     Activate and Prune): a new root first joins the trust bundle while
//     the old one keeps signing, then signs new leaves, and finally the old
//     root leaves the bundle. The CA enforces the order of the stages;
//     whether the fleet is ready for the next one is judged by the caller
//     (package control/ca/rotation).
//   - Operator-managed (FromFiles): an intermediate CA certificate and key
//     given by the operator, with the bundle of roots it chains to. Rotation
//     is the operator's: replace the files and restart. Every rotation
//     method answers ErrOperatorManaged.
//
// Files in the data directory (self-managed):
//
//	ca-root.pem       the root that signs leaves, with its PKCS#8 private key, mode 0600
//	ca-bundle.pem     the trust bundle: every root still trusted, mode 0644
//	ca-next.pem       between prepare and activate: the new root and its key, mode 0600
//	ca-cross.pem      between prepare and prune: the new root's key certified by the old root
//	ca-rotation.json  the rotation stage and when it was reached, mode 0600
//
// Every file is replaced atomically (write, sync, rename, sync the
// directory), and each stage writes its files in an order that a restart
// after a crash at any point completes or ignores (see LoadOrCreate): a
// bundle never lacks the root that signs, and a new root never signs
// before the stage that allows it was recorded.
//
// A CA is safe for concurrent use. Signing reads an immutable snapshot of
// the signer; the rotation stages build a new snapshot and swap it, and
// Changed tells watchers (the Identity service's WatchBundle streams).
package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
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
	RootFile     = "ca-root.pem"
	BundleFile   = "ca-bundle.pem"
	NextFile     = "ca-next.pem"
	CrossFile    = "ca-cross.pem"
	RotationFile = "ca-rotation.json"
)

// Defaults.
const (
	// DefaultTTL is the lifetime of a leaf when Sign is given ttl 0.
	DefaultTTL = 24 * time.Hour
	// DefaultMaxTTL is the longest leaf lifetime Sign accepts unless
	// WithMaxTTL says otherwise. Every leaf an old root signed has expired
	// at most this long after the root stopped signing.
	DefaultMaxTTL = 7 * 24 * time.Hour
	// RootLifetime is the validity of a root created by LoadOrCreate or Prepare.
	RootLifetime = 10 * 365 * 24 * time.Hour

	// leafBackdate is how far a leaf's NotBefore is set in the past, to
	// tolerate peers whose clocks run a little behind.
	leafBackdate = 30 * time.Second
	// rootBackdate is the same for a root; a root's NotBefore plus
	// rootBackdate is when it was created.
	rootBackdate = time.Hour
	// maxRSABits bounds RSA keys in a CSR (verification cost).
	maxRSABits = 8192
)

// Errors.
var (
	// ErrOperatorManaged is returned by the rotation methods of a CA made
	// by FromFiles: its roots belong to the operator.
	ErrOperatorManaged = errors.New("the CA is operator-managed: replace its files and restart to rotate")
	// ErrStage wraps every refusal of a rotation step that the current
	// stage does not allow (activate before prepare, prepare twice, …).
	ErrStage = errors.New("not allowed in the current rotation stage")
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

	mu    sync.Mutex // serialises the rotation stages
	state atomic.Pointer[signer]

	notifyMu sync.Mutex
	changed  chan struct{} // closed and replaced at every change of state
}

// signer is an immutable snapshot of the signing material and of the
// rotation stage.
type signer struct {
	cert   *x509.Certificate   // signs leaves
	key    crypto.Signer       // cert's key
	chain  []*x509.Certificate // cert and those above it that are not roots (empty when cert is a root)
	roots  []*x509.Certificate // the trust bundle
	pool   *x509.CertPool      // roots as a pool
	pem    []byte              // roots as PEM
	digest [sha256.Size]byte   // SHA-256 of pem

	// Rotation (self-managed CAs only).
	stage       Stage
	next        *x509.Certificate // the prepared root (StagePrepared)
	nextKey     crypto.Signer
	preparedAt  time.Time
	activatedAt time.Time
	// cross is the signing root's key certified by the previous root
	// (StagePrepared: the prepared root's; StageActivated: the signing
	// root's). While the previous root is still trusted, chains carry it,
	// so a peer that has not yet received the new bundle still verifies
	// them through the previous root.
	cross *x509.Certificate
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
//
// It also completes or discards a rotation step that a crash interrupted:
// a prepared root whose stage was never recorded is deleted (it was in no
// bundle yet); an activation recorded but not finished is finished; a
// bundle missing the signing or the prepared root is repaired.
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
	c := &CA{trustDomain: trustDomain, dir: dir, maxTTL: o.maxTTL, now: o.now, changed: make(chan struct{})}

	rootPath := filepath.Join(dir, RootFile)
	cert, key, err := readKeyPair(rootPath, o.now())
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
		if err := atomicfile.Write(filepath.Join(dir, BundleFile), s.pem, 0o644); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		if err := writeKeyPair(rootPath, cert, key); err != nil {
			return nil, err
		}
		c.state.Store(s)
		return c, nil
	case err != nil:
		return nil, err
	}

	rot, err := readRotation(dir)
	if err != nil {
		return nil, err
	}
	nextPath := filepath.Join(dir, NextFile)
	next, nextKey, err := readKeyPair(nextPath, o.now())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	switch rot.Stage {
	case StagePrepared:
		if next == nil {
			return nil, fmt.Errorf("ca: %s records a prepared root but %s is missing", RotationFile, nextPath)
		}
		if rot.Next != "" && rot.Next != Fingerprint(next) {
			return nil, fmt.Errorf("ca: %s records prepared root %s but %s holds %s", RotationFile, rot.Next, nextPath, Fingerprint(next))
		}
	case StageActivated:
		if next != nil {
			// Activation was recorded, then interrupted: finish it.
			if !next.Equal(cert) {
				if err := writeKeyPair(rootPath, next, nextKey); err != nil {
					return nil, err
				}
				cert, key = next, nextKey
			}
			if err := removeFile(nextPath); err != nil {
				return nil, err
			}
			next, nextKey = nil, nil
		}
	case StageStable:
		if next != nil {
			// Prepared, then interrupted before the stage was recorded: the
			// root was in no bundle, so nothing can depend on it.
			if err := removeFile(nextPath); err != nil {
				return nil, err
			}
			next, nextKey = nil, nil
		}
	}

	crossPath := filepath.Join(dir, CrossFile)
	var cross *x509.Certificate
	if rot.Stage == StageStable {
		if err := removeFile(crossPath); err != nil {
			return nil, err
		}
	} else if cross, err = readCross(crossPath, map[Stage]crypto.Signer{StagePrepared: nextKey, StageActivated: key}[rot.Stage]); err != nil {
		// Chains go without it: only peers that missed the new bundle
		// notice.
		cross = nil
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
	roots = appendUnique(roots, cert)
	if next != nil {
		roots = appendUnique(roots, next)
	}
	s, err := newSigner(cert, key, nil, roots)
	if err != nil {
		return nil, err
	}
	s.stage, s.next, s.nextKey, s.preparedAt, s.activatedAt, s.cross = rot.Stage, next, nextKey, rot.PreparedAt, rot.ActivatedAt, cross
	if !bytes.Equal(s.pem, bundlePEM) {
		// A crash before the bundle was first written, or a bundle lacking
		// the current or the prepared root: repair it.
		if err := atomicfile.Write(bundlePath, s.pem, 0o644); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	if s.stage == StageActivated && len(s.roots) == 1 {
		// Pruned, then interrupted before the stage was recorded.
		s.stage, s.preparedAt, s.activatedAt, s.cross = StageStable, time.Time{}, time.Time{}, nil
		if err := writeRotation(dir, s); err != nil {
			return nil, err
		}
		if err := removeFile(crossPath); err != nil {
			return nil, err
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
	c := &CA{trustDomain: trustDomain, maxTTL: o.maxTTL, now: o.now, changed: make(chan struct{})}
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

// BundleDigest is the SHA-256 of Bundle, which is what a sidecar
// acknowledges when it has applied the bundle.
func (c *CA) BundleDigest() [sha256.Size]byte { return c.state.Load().digest }

// TrustState is one consistent view of what a sidecar is told about the
// CA: the bundle, its digest, the certificate that signs new leaves, and
// the rotation stage.
type TrustState struct {
	Bundle []byte
	Digest [sha256.Size]byte
	Issuer *x509.Certificate
	Stage  Stage
}

// TrustState returns the CA's current TrustState, read from one snapshot.
func (c *CA) TrustState() TrustState {
	s := c.state.Load()
	return TrustState{Bundle: s.pem, Digest: s.digest, Issuer: s.cert, Stage: s.stage}
}

// OperatorManaged reports whether the CA was made by FromFiles.
func (c *CA) OperatorManaged() bool { return c.dir == "" }

// Changed returns a channel that is closed at the next change of the
// bundle, the signing certificate or the rotation stage. Take a new
// channel after each change; read the state after taking the channel, so
// that no change is missed between the two.
func (c *CA) Changed() <-chan struct{} {
	c.notifyMu.Lock()
	defer c.notifyMu.Unlock()
	return c.changed
}

// swap installs s and wakes the watchers.
func (c *CA) swap(s *signer) {
	c.state.Store(s)
	c.notifyMu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.notifyMu.Unlock()
}

// RootOf returns the root of the bundle that chain (leaf first, then any
// intermediates) hangs from: the root that signed the leaf, else the one
// that signed the chain's last certificate (or that certificate itself
// when it is a root). It checks signatures only, not validity; use Verify
// for that.
func (c *CA) RootOf(chain []*x509.Certificate) (*x509.Certificate, bool) {
	if len(chain) == 0 {
		return nil, false
	}
	roots := c.state.Load().roots
	signedBy := func(c *x509.Certificate) *x509.Certificate {
		for _, r := range roots {
			if r.Equal(c) {
				return r
			}
		}
		for _, r := range roots {
			if bytes.Equal(c.RawIssuer, r.RawSubject) && c.CheckSignatureFrom(r) == nil {
				return r
			}
		}
		return nil
	}
	// The leaf first: a chain may end with a cross-certificate to an
	// older root, and the root that matters is the one that signed the leaf.
	if r := signedBy(chain[0]); r != nil {
		return r, true
	}
	if r := signedBy(chain[len(chain)-1]); r != nil {
		return r, true
	}
	return nil, false
}

// Fingerprint names a certificate: "sha256:" and the hex SHA-256 of its
// DER, as `openssl x509 -fingerprint -sha256` prints it (without colons).
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Sign issues a leaf certificate for id to the key in csr, valid for ttl
// (DefaultTTL when 0, at most MaxTTL, and never past the issuer's expiry).
// It verifies the CSR's signature and key, and ignores every name the CSR
// asks for: the leaf's only name is id's URI SAN, because the caller
// authorised id, not the CSR. The leaf allows digital signatures for TLS
// client and server authentication, starts 30 s in the past, and has a
// random 128-bit serial number. chain is the leaf followed by any
// intermediates up to (not including) the bundle's roots, and, in
// StageActivated, the signing root cross-certified by the previous one.
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
	return append(append([]*x509.Certificate{leaf}, s.chain...), s.crossChain()...), nil
}

// crossChain is what chains carry besides the leaf and the intermediates:
// the cross-certificate while the previous root is trusted and no longer
// signs (StageActivated), else nothing.
func (s *signer) crossChain() []*x509.Certificate {
	if s.stage == StageActivated && s.cross != nil {
		return []*x509.Certificate{s.cross}
	}
	return nil
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
	return &signer{
		cert: cert, key: key, chain: chain, roots: roots, pool: pool, pem: buf.Bytes(),
		digest: sha256.Sum256(buf.Bytes()), stage: StageStable,
	}, nil
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

// newRoot creates a self-signed ECDSA P-256 root for trustDomain, with a
// path length of one.
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
		// One intermediate below the root: the cross-certificate that
		// certifies its successor's key at the next rotation (see
		// Prepare). The CA signs no other CA certificate.
		MaxPathLen: 1,
		KeyUsage:   x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
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
