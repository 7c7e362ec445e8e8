package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/control/identitypb"
)

// Defaults of Config.
const (
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = 30 * time.Second
	DefaultCallTimeout = 10 * time.Second
)

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
	// from the control plane). Empty means renewals only, which works only
	// while a valid certificate is held, so in practice it is required.
	Token string
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
// token; renewals authenticate with the current certificate over mutual
// TLS, at two thirds of its lifetime (a little earlier at random), with
// retries and backoff, while the current certificate keeps serving. The
// TLS configurations of Credentials read the latest certificate and
// bundle at each handshake.
type Manager struct {
	id         spiffeid.ID
	addr       string
	serverName string
	token      string
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
		minBackoff: cfg.MinBackoff, maxBackoff: cfg.MaxBackoff, timeout: cfg.CallTimeout,
		dialOpts: cfg.DialOptions, log: cfg.Log, now: time.Now, ready: make(chan struct{}),
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
// renews it for as long as ctx lives. It returns nil when ctx is done.
func (m *Manager) Run(ctx context.Context) error {
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
	if cur := m.creds.Certificate(); cur == nil || !m.now().Before(cur.Leaf.NotAfter) {
		if m.token == "" {
			return errors.New("identity: no valid certificate to renew with and no bootstrap token")
		}
		req.BootstrapToken = m.token
	}

	conn, err := grpc.NewClient(m.addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(m.controlPlaneTLS())),
	}, m.dialOpts...)...)
	if err != nil {
		return fmt.Errorf("identity: control plane %s: %w", m.addr, err)
	}
	defer conn.Close()
	callCtx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	resp, err := identitypb.NewIdentityClient(conn).Sign(callCtx, req)
	if err != nil {
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
	if err := m.creds.Update(cert, bundle); err != nil {
		return err
	}
	if got := m.creds.ID(); got != m.id {
		return fmt.Errorf("identity: control plane issued %s, want %s", got, m.id)
	}
	m.log.Info("workload certificate installed", "id", m.id, "serial", chain[0].SerialNumber.Text(16),
		"notAfter", chain[0].NotAfter.UTC().Format(time.RFC3339), "roots", len(bundle), "bootstrap", req.BootstrapToken != "")
	m.readyOnce.Do(func() { close(m.ready) })
	return nil
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

func orNoCert(err error) error {
	if err != nil {
		return err
	}
	return errors.New("no certificate")
}

// EncodeCertificate returns cert's chain as PEM, for an admin endpoint.
func EncodeCertificate(cert *tls.Certificate) []byte {
	var out []byte
	for _, der := range cert.Certificate {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}
