package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// DefaultServingTTL is the lifetime of the control plane's own serving
// certificate. ServerTLSConfig replaces it after two thirds of that, or as
// soon as the CA's issuer changes.
const DefaultServingTTL = 30 * 24 * time.Hour

// IssueServing issues a TLS server certificate for the control plane
// itself, with a fresh ECDSA P-256 key, for the DNS names and IP addresses
// in hosts. Its chain is the leaf and any intermediates, or with a
// self-managed CA the leaf and the issuing root, so that a sidecar holding
// only a pinned root key hash ("sha256:<hex of SubjectPublicKeyInfo>") can
// find the root it pinned; after a root rotation is activated and until
// it is pruned, also the new root cross-certified by the old one, so that
// a client that missed the new bundle still verifies the control plane
// and can learn it.
func (c *CA) IssueServing(hosts []string, ttl time.Duration) (*tls.Certificate, error) {
	dns, ips, err := splitHosts(hosts)
	if err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("ca: serving certificate lifetime %v must be positive", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: serving key: %w", err)
	}
	s := c.state.Load()
	now := c.now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"Causeway"}, CommonName: "causeway control plane"},
		DNSNames:              dns,
		IPAddresses:           ips,
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	leaf, err := s.issue(tmpl, key.Public(), now)
	if err != nil {
		return nil, fmt.Errorf("ca: serving certificate: %w", err)
	}
	out := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	chain := append([]*x509.Certificate{leaf}, s.chain...)
	if len(s.chain) == 0 {
		chain = append(chain, s.cert) // the self-managed root, for a pinning client
	}
	chain = append(chain, s.crossChain()...) // for a client still on the previous bundle
	for _, cert := range chain {
		out.Certificate = append(out.Certificate, cert.Raw)
	}
	return out, nil
}

// ServerTLSConfig is the TLS configuration for the control plane's xDS
// (gRPC) and HTTP API listeners. It serves a certificate for hosts from
// IssueServing, renewed in the background of a handshake when due. A
// client certificate is optional at the TLS layer (a sidecar's first
// Sign call has none, and meshctl uses a bearer token), but one that is
// presented must verify against the current trust bundle for client
// authentication and carry a SPIFFE ID of the trust domain, or the
// handshake fails. Handlers read the verified identity with Verify on the
// connection's peer certificates.
//
// NextProtos is left empty: grpc-go's credentials.NewTLS adds "h2", and
// net/http adds "h2" and "http/1.1". TLS 1.3 is the minimum.
func (c *CA) ServerTLSConfig(hosts []string) (*tls.Config, error) {
	if _, _, err := splitHosts(hosts); err != nil {
		return nil, err
	}
	sc := &servingCache{ca: c, hosts: append([]string(nil), hosts...), ttl: DefaultServingTTL}
	if _, err := sc.get(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return sc.get() },
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			if _, err := c.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth); err != nil {
				return fmt.Errorf("client certificate refused: %w", err)
			}
			return nil
		},
	}, nil
}

// servingCache holds the current serving certificate and replaces it when
// two thirds of its lifetime have passed or the CA's issuer changed.
type servingCache struct {
	ca    *CA
	hosts []string
	ttl   time.Duration

	mu     sync.Mutex
	cert   *tls.Certificate
	issuer *x509.Certificate
	renew  time.Time
}

func (sc *servingCache) get() (*tls.Certificate, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	issuer := sc.ca.Issuer()
	now := sc.ca.now()
	if sc.cert != nil && issuer.Equal(sc.issuer) && now.Before(sc.renew) {
		return sc.cert, nil
	}
	cert, err := sc.ca.IssueServing(sc.hosts, sc.ttl)
	if err != nil {
		if sc.cert != nil && now.Before(sc.cert.Leaf.NotAfter) {
			return sc.cert, nil // keep serving the valid one; retried next handshake
		}
		return nil, err
	}
	sc.cert, sc.issuer = cert, issuer
	sc.renew = now.Add(cert.Leaf.NotAfter.Sub(now) * 2 / 3)
	return cert, nil
}

// splitHosts sorts hosts into DNS names and IP addresses.
func splitHosts(hosts []string) (dns []string, ips []net.IP, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("ca: a serving certificate needs at least one DNS name or IP address")
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("ca: serving host %q is neither an IP address nor a DNS name", h)
		}
		dns = append(dns, strings.ToLower(h))
	}
	return dns, ips, nil
}

// validDNSName accepts host names of letters, digits and '-' in labels of
// at most 63, separated by dots, with an optional leading "*." wildcard.
func validDNSName(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if (ch < 'a' || ch > 'z') && (ch < 'A' || ch > 'Z') && (ch < '0' || ch > '9') && ch != '-' {
				return false
			}
		}
	}
	return true
}
