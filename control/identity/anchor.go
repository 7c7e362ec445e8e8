package identity

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
)

// PinPrefix starts a pinned public-key hash.
const PinPrefix = "sha256:"

// Anchor is how a sidecar trusts the control plane before it holds the
// mesh's trust bundle: either a CA bundle file (PEM), or a pin of the CA's
// public key, "sha256:<hex of SHA-256 of the DER SubjectPublicKeyInfo>"
// as kubeadm's --discovery-token-ca-cert-hash, given beside the bootstrap
// token. With a pin, a CA certificate presented in the control plane's
// chain whose key hashes to the pin serves as the root (the control plane
// sends its root for that purpose). The control plane's host name is
// checked in both cases.
type Anchor struct {
	roots []*x509.Certificate
	pin   []byte
}

// AnchorFromBundle trusts the CA certificates in pemBytes.
func AnchorFromBundle(pemBytes []byte) (Anchor, error) {
	roots, err := parseCertificates(pemBytes)
	if err != nil {
		return Anchor{}, fmt.Errorf("identity: control-plane CA bundle: %w", err)
	}
	if len(roots) == 0 {
		return Anchor{}, errors.New("identity: control-plane CA bundle: no certificate")
	}
	return Anchor{roots: roots}, nil
}

// AnchorFromPin trusts the CA whose public key hashes to pin
// ("sha256:" and 64 hex digits).
func AnchorFromPin(pin string) (Anchor, error) {
	h, ok := strings.CutPrefix(pin, PinPrefix)
	if !ok {
		return Anchor{}, fmt.Errorf("identity: pin %q must start with %q", pin, PinPrefix)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return Anchor{}, fmt.Errorf("identity: pin must be %q followed by %d hex digits", PinPrefix, 2*sha256.Size)
	}
	return Anchor{pin: b}, nil
}

// Pin is the pin of a CA certificate, for AnchorFromPin.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return PinPrefix + hex.EncodeToString(sum[:])
}

// IsZero reports whether a is the zero Anchor, which trusts nothing.
func (a Anchor) IsZero() bool { return len(a.roots) == 0 && len(a.pin) == 0 }

// verify checks the control plane's chain for serverName at now. extra
// roots (the mesh bundle once known) are trusted as well, so a rotated
// control-plane root is accepted once the sidecar has the new bundle.
func (a Anchor) verify(chain []*x509.Certificate, serverName string, extra []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("control plane presented no certificate")
	}
	roots := x509.NewCertPool()
	for _, r := range a.roots {
		roots.AddCert(r)
	}
	for _, r := range extra {
		roots.AddCert(r)
	}
	if a.pin != nil {
		for _, c := range chain[1:] {
			sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
			if c.IsCA && string(sum[:]) == string(a.pin) {
				roots.AddCert(c)
			}
		}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		DNSName: serverName, Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		if a.pin != nil {
			return fmt.Errorf("control plane certificate (pinned CA %s%x): %w", PinPrefix, a.pin, err)
		}
		return fmt.Errorf("control plane certificate: %w", err)
	}
	return nil
}

// controlPlaneTLS is the configuration of a connection to the control
// plane: the server verified by the anchor and the current bundle, and,
// when present is set, the current certificate as client certificate
// while it is valid (none otherwise, for a token-authenticated call: the
// control plane refuses the handshake of a client certificate it no
// longer trusts).
func (m *Manager) controlPlaneTLS(present bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: m.serverName,
		// Verified in VerifyConnection against the anchor (which may be a
		// pin rather than a pool) and the host name.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return m.anchor.verify(cs.PeerCertificates, m.serverName, m.creds.Bundle(), m.now())
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := m.creds.Certificate(); present && cert != nil && m.now().Before(cert.Leaf.NotAfter) {
				return cert, nil
			}
			return &tls.Certificate{}, nil // none: the call carries a token
		},
	}
}

// parseCertificates parses every PEM CERTIFICATE block of b; other block
// types are errors.
func parseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(strings.TrimSpace(string(b))) != 0 {
		return nil, errors.New("data that is not PEM after the last block")
	}
	return out, nil
}

// ControlPlaneCredentials are gRPC transport credentials for the sidecar's
// other connections to the control plane (xDS, fencing reports): the
// server verified as for Sign, and the current certificate presented, so
// the control plane knows which service is asking.
func (m *Manager) ControlPlaneCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(m.controlPlaneTLS(true))
}
