// Package svid checks X.509-SVIDs: workload certificates whose only name
// is a SPIFFE ID URI SAN. Both the control plane (authenticating a
// sidecar's renewal) and the sidecar (authenticating a peer) use it, so
// the two sides accept exactly the same certificates.
package svid

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// ID returns the SPIFFE ID of a leaf certificate: it must not be a CA and
// must carry exactly one URI SAN, a valid SPIFFE ID. It does not verify
// the certificate; see Verify.
func ID(leaf *x509.Certificate) (spiffeid.ID, error) {
	if leaf == nil {
		return spiffeid.ID{}, errors.New("no certificate")
	}
	if leaf.IsCA {
		return spiffeid.ID{}, errors.New("certificate is a CA, not a workload certificate")
	}
	if len(leaf.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(leaf.URIs))
	}
	id, err := spiffeid.FromURL(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("certificate: %w", err)
	}
	return id, nil
}

// Verify verifies chain (leaf first, then intermediates) against roots at
// time now for usage (x509.ExtKeyUsageClientAuth or ServerAuth) and
// returns the leaf's SPIFFE ID, which must belong to trustDomain. Errors
// say which check failed: no certificate, not an SVID, expired or not yet
// valid, unknown authority, wrong usage, or foreign trust domain.
func Verify(chain []*x509.Certificate, roots *x509.CertPool, trustDomain string, usage x509.ExtKeyUsage, now time.Time) (spiffeid.ID, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, errors.New("no certificate presented")
	}
	leaf := chain[0]
	id, err := ID(leaf)
	if err != nil {
		return spiffeid.ID{}, err
	}
	var inter *x509.CertPool
	if len(chain) > 1 {
		inter = x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{usage},
	}); err != nil {
		return spiffeid.ID{}, fmt.Errorf("certificate of %s: %w", id, err)
	}
	if !id.MemberOf(trustDomain) {
		return spiffeid.ID{}, fmt.Errorf("certificate of %s: trust domain %q is not %q", id, id.TrustDomain(), trustDomain)
	}
	return id, nil
}
