package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/control/identity/svid"
	"github.com/causeway-mesh/causeway/control/identitypb"
)

// Defaults of Config.
const (
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = 30 * time.Second
	DefaultCallTimeout = 10 * time.Second
	// DefaultServiceAccountTokenFile is where a Kubernetes pod's projected
	// service-account token for the mesh is mounted (a projected volume
	// with audience "causeway" at /var/run/secrets/causeway).
	DefaultServiceAccountTokenFile = "/var/run/secrets/causeway/token" //nolint:gosec // a path, not a credential
)

// maxRenewWindow caps the renewal window a control plane may ask for after
// a root rotation.
const maxRenewWindow = time.Hour

// renewFraction is the part of a certificate's remaining lifetime after
// which it is renewed; renewJitter the part of the lifetime by which that
// moment is moved earlier at random, so that sidecars started together do
// not renew together.
const (
	renewNum, renewDen = 2, 3
	renewJitterDen     = 20
)

// Config configures a Manager.
type Config struct {
	// ControlPlane is the host:port of the control plane's gRPC (xDS)
	// port, which serves the Identity service. Required.
	ControlPlane string
	// ServerName is the name checked in the control plane's certificate;
	// empty means the host of ControlPlane.
	ServerName string
	// TrustDomain is the mesh's trust domain. Required.
	TrustDomain string
	// Service is this workload's service, a DNS label. Required.
	Service string
	// Namespace is its namespace; empty means "default".
	Namespace string
	// Token is the bootstrap token for the first certificate, and again
	// whenever the current certificate has expired (after a long partition
	// from the control plane). Empty means the service-account token
	// below, or renewals only, which work only while a valid certificate
	// is held.
	Token string
	// ServiceAccountTokenFile is a Kubernetes service-account token (a
	// projected token with the audience the control plane expects), sent
	// in place of a bootstrap token when Token is empty. It is read again
	// at every use, since the kubelet replaces it before it expires. Empty
	// means DefaultServiceAccountTokenFile when that file exists.
	ServiceAccountTokenFile string
	// NoBundleWatch turns off the WatchBundle stream, through which the
	// control plane pushes trust-bundle changes (a CA root rotation) as
	// they happen; the bundle is then learnt only with each certificate.
	// Default false: the stream is on.
	NoBundleWatch bool
	// Anchor is how the control plane is trusted at bootstrap. Required.
	Anchor Anchor
	// MinBackoff and MaxBackoff bound the delay between failed attempts
	// (doubling, with jitter); zero means DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds one Sign call; zero means DefaultCallTimeout.
	CallTimeout time.Duration
	// DialOptions are added to the control-plane connection's options
	// (interceptors, for instance); transport credentials are the
	// Manager's own.
	DialOptions []grpc.DialOption
	// Log receives issuance and failure lines; nil means slog.Default().
	Log *slog.Logger
}

// Manager obtains and renews the workload's certificate. The private key
// (ECDSA P-256) is generated in memory for every request and never leaves
// the process. The first certificate is obtained with the bootstrap
// token (or a Kubernetes service-account token); renewals authenticate
// with the current certificate over mutual TLS, at two thirds of its
// lifetime (a little earlier at random), with retries and backoff, while
// the current certificate keeps serving. The TLS configurations of
// Credentials read the latest certificate and bundle at each handshake.
//
// Between renewals a WatchBundle stream (watch.go) installs the control
// plane's new trust bundles as they change, keeping the certificate, and
// when the CA starts signing with a new root, moves the renewal to a
// random moment within the window the control plane names.
type Manager struct {
	id         spiffeid.ID
	addr       string
	serverName string
	token      string
	saFile     string
	saExplicit bool // saFile was configured, so its absence is an error
	watch      bool
	anchor     Anchor
	minBackoff time.Duration
	maxBackoff time.Duration
	timeout    time.Duration
	dialOpts   []grpc.DialOption
	log        *slog.Logger
	now        func() time.Time

	creds     *Credentials
	ready     chan struct{}
	readyOnce sync.Once
	renewMu   sync.Mutex // one Sign call at a time
	installMu sync.Mutex // one installation (certificate or bundle) at a time

	// bundleDigest is the SHA-256 of the trust bundle PEM last installed.
	bundleDigest atomic.Pointer[[sha256.Size]byte]
	// orphaned is set when the control plane's bundle no longer holds the
	// root of the current certificate (a forced prune): the next renewal
	// uses a token, since the certificate can no longer authenticate.
	orphaned atomic.Bool
	// installed is signalled after every installation, for the watch
	// stream to acknowledge.
	installed chan struct{}
	// soon asks Run to renew earlier: soonAt is the moment, soonCh the
	// signal.
	soonMu sync.Mutex
	soonAt time.Time
	soonCh chan struct{}
}

// New validates cfg and returns a Manager; nothing is contacted until Run
// or Renew.
func New(cfg Config) (*Manager, error) {
	id, err := spiffeid.New(cfg.TrustDomain, cfg.Namespace, cfg.Service)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	host, _, err := net.SplitHostPort(cfg.ControlPlane)
	if err != nil {
		return nil, fmt.Errorf("identity: control plane address %q: %w", cfg.ControlPlane, err)
	}
	if cfg.Anchor.IsZero() {
		return nil, errors.New("identity: a control-plane CA bundle or pinned CA hash is required")
	}
	m := &Manager{
		id: id, addr: cfg.ControlPlane, serverName: cfg.ServerName, token: cfg.Token, anchor: cfg.Anchor,
		saFile: cfg.ServiceAccountTokenFile, saExplicit: cfg.ServiceAccountTokenFile != "", watch: !cfg.NoBundleWatch,
		minBackoff: cfg.MinBackoff, maxBackoff: cfg.MaxBackoff, timeout: cfg.CallTimeout,
		dialOpts: cfg.DialOptions, log: cfg.Log, now: time.Now, ready: make(chan struct{}),
		installed: make(chan struct{}, 1), soonCh: make(chan struct{}, 1),
	}
	if m.saFile == "" {
		m.saFile = DefaultServiceAccountTokenFile
	}
	if m.serverName == "" {
		m.serverName = host
	}
	if m.minBackoff <= 0 {
		m.minBackoff = DefaultMinBackoff
	}
	if m.maxBackoff <= 0 {
		m.maxBackoff = DefaultMaxBackoff
	}
	if m.maxBackoff < m.minBackoff {
		return nil, fmt.Errorf("identity: max backoff %v is below min backoff %v", m.maxBackoff, m.minBackoff)
	}
	if m.timeout <= 0 {
		m.timeout = DefaultCallTimeout
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.creds, err = NewCredentials(cfg.TrustDomain); err != nil {
		return nil, err
	}
	return m, nil
}

// ID is the identity the Manager obtains certificates for.
func (m *Manager) ID() spiffeid.ID { return m.id }

// Credentials is the certificate and bundle the Manager keeps current,
// with the mesh hop's TLS configurations.
func (m *Manager) Credentials() *Credentials { return m.creds }

// Ready is closed once the first certificate is installed.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Run obtains the first certificate, retrying until it succeeds, then
// renews it for as long as ctx lives, and (unless Config.NoBundleWatch)
// keeps a WatchBundle stream open once it holds a certificate. It returns
// nil when ctx is done, after the stream's goroutine has ended.
func (m *Manager) Run(ctx context.Context) error {
	if m.watch {
		watchDone := make(chan struct{})
		go func() { defer close(watchDone); m.watchBundle(ctx) }()
		defer func() { <-watchDone }()
	}
	backoff := m.minBackoff
	next := m.now() // obtain at once
	if m.creds.Certificate() != nil {
		next = m.renewalTime(m.now(), m.creds.NotAfter())
	}
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.soonCh:
			if at := m.takeSoon(); !at.IsZero() && at.Before(next) {
				next = at
				timer.Reset(time.Until(next))
			}
			continue
		case <-timer.C:
		}
		err := m.Renew(ctx)
		switch {
		case err == nil:
			backoff = m.minBackoff
			next = m.renewalTime(m.now(), m.creds.NotAfter())
		case ctx.Err() != nil:
			return nil
		default:
			wait := jitter(backoff)
			m.log.Warn("workload certificate not obtained; retrying", "id", m.id, "in", wait.Round(time.Millisecond),
				"expires", m.creds.NotAfter(), "error", err)
			backoff = min(2*backoff, m.maxBackoff)
			next = m.now().Add(wait)
		}
		timer.Reset(time.Until(next))
	}
}

// Renew obtains a new certificate now: over mutual TLS with the current
// certificate while it is valid, with the bootstrap token otherwise. On
// success the new certificate and bundle are installed; on failure the
// current ones stay. Run calls it on schedule; calling it directly forces
// a renewal (after a CA root rotation, to learn the new bundle early).
func (m *Manager) Renew(ctx context.Context) error {
	m.renewMu.Lock()
	defer m.renewMu.Unlock()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("identity: generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{m.id.URL()}}, key)
	if err != nil {
		return fmt.Errorf("identity: CSR: %w", err)
	}
	req := &identitypb.SignRequest{Csr: csr}
	withToken := false
	if cur := m.creds.Certificate(); cur == nil || !m.now().Before(cur.Leaf.NotAfter) || m.orphaned.Load() {
		if req.BootstrapToken, req.ServiceAccountToken, err = m.credential(); err != nil {
			if cur == nil || !m.now().Before(cur.Leaf.NotAfter) {
				return err
			}
			// Orphaned, but still valid: try it anyway, the control plane
			// may still trust its root.
			m.log.Warn("the control plane no longer trusts this certificate's root and no token is at hand; renewing with the certificate", "id", m.id, "error", err)
		} else {
			withToken = true
		}
	}

	conn, err := grpc.NewClient(m.addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(m.controlPlaneTLS(!withToken))),
	}, m.dialOpts...)...)
	if err != nil {
		return fmt.Errorf("identity: control plane %s: %w", m.addr, err)
	}
	defer conn.Close()
	callCtx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	resp, err := identitypb.NewIdentityClient(conn).Sign(callCtx, req)
	if err != nil {
		if !withToken && certRefused(err) {
			// Its root was pruned: the next attempt uses a token.
			m.orphaned.Store(true)
		}
		return fmt.Errorf("identity: sign at %s: %w", m.addr, err)
	}

	chain, err := parseCertificates(resp.GetCertificateChainPem())
	if err != nil || len(chain) == 0 {
		return fmt.Errorf("identity: certificate chain from control plane: %w", orNoCert(err))
	}
	bundle, err := parseCertificates(resp.GetTrustBundlePem())
	if err != nil || len(bundle) == 0 {
		return fmt.Errorf("identity: trust bundle from control plane: %w", orNoCert(err))
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	if got, err := svid.ID(chain[0]); err != nil {
		return fmt.Errorf("identity: certificate from control plane: %w", err)
	} else if got != m.id {
		return fmt.Errorf("identity: control plane issued %s, want %s", got, m.id)
	}
	if err := m.install(cert, bundle, resp.GetTrustBundlePem()); err != nil {
		return err
	}
	m.orphaned.Store(false)
	via := "renewal"
	switch {
	case req.BootstrapToken != "":
		via = "bootstrap token"
	case req.ServiceAccountToken != "":
		via = "service-account token"
	}
	m.log.Info("workload certificate installed", "id", m.id, "serial", chain[0].SerialNumber.Text(16),
		"notAfter", chain[0].NotAfter.UTC().Format(time.RFC3339), "roots", len(bundle), "via", via)
	m.readyOnce.Do(func() { close(m.ready) })
	return nil
}

// install swaps in a certificate and bundle (bundlePEM as received, whose
// digest the watch stream acknowledges) and signals the watch stream.
func (m *Manager) install(cert *tls.Certificate, bundle []*x509.Certificate, bundlePEM []byte) error {
	m.installMu.Lock()
	defer m.installMu.Unlock()
	if err := m.creds.Update(cert, bundle); err != nil {
		return err
	}
	sum := sha256.Sum256(bundlePEM)
	m.bundleDigest.Store(&sum)
	select {
	case m.installed <- struct{}{}:
	default:
	}
	return nil
}

// credential is what a token-authenticated Sign call carries: the
// bootstrap token when one was given, else the service-account token read
// now from its file.
func (m *Manager) credential() (bootstrapToken, serviceAccountToken string, err error) {
	if m.token != "" {
		return m.token, "", nil
	}
	b, err := os.ReadFile(m.saFile)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !m.saExplicit:
		return "", "", fmt.Errorf("identity: no valid certificate to renew with, no bootstrap token, and no service-account token at %s", m.saFile)
	case err != nil:
		return "", "", fmt.Errorf("identity: service-account token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", "", fmt.Errorf("identity: service-account token file %s is empty", m.saFile)
	}
	return "", tok, nil
}

// renewSoon asks Run to renew at at, unless a renewal is due earlier.
func (m *Manager) renewSoon(at time.Time) {
	m.soonMu.Lock()
	if m.soonAt.IsZero() || at.Before(m.soonAt) {
		m.soonAt = at
	}
	m.soonMu.Unlock()
	select {
	case m.soonCh <- struct{}{}:
	default:
	}
}

// takeSoon returns and clears the moment renewSoon asked for.
func (m *Manager) takeSoon() time.Time {
	m.soonMu.Lock()
	defer m.soonMu.Unlock()
	at := m.soonAt
	m.soonAt = time.Time{}
	return at
}

// renewalTime is two thirds of the way from now to notAfter, moved
// earlier by up to a twentieth of that span at random.
func (m *Manager) renewalTime(now, notAfter time.Time) time.Time {
	span := notAfter.Sub(now)
	if span <= 0 {
		return now
	}
	at := now.Add(span * renewNum / renewDen)
	if j := int64(span / renewJitterDen); j > 0 {
		at = at.Add(-time.Duration(randInt63n(j)))
	}
	return at
}

// jitter is d scaled by a random factor in [0.5, 1).
func jitter(d time.Duration) time.Duration {
	half := int64(d / 2)
	if half <= 0 {
		return d
	}
	return time.Duration(half + randInt63n(half))
}

func randInt63n(n int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		return 0
	}
	return v.Int64()
}

// errNoCert is a PEM input without a certificate.
var errNoCert = errors.New("no certificate")

func orNoCert(err error) error {
	if err != nil {
		return err
	}
	return errNoCert
}

// EncodeCertificate returns cert's chain as PEM, for an admin endpoint.
func EncodeCertificate(cert *tls.Certificate) []byte {
	var out []byte
	for _, der := range cert.Certificate {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}
