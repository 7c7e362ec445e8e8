// Package spiffeid is the mesh's workload identity: a SPIFFE ID of the form
//
//	spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE
//
// Parsing is strict: exactly that shape, a trust domain of lower-case letters,
// digits, '.', '-' and '_' (SPIFFE ID spec §2.1, at most 255 bytes), and a
// namespace and service that are DNS labels (the names Causeway's policy
// accepts). No percent-encoding, query, fragment, port, user info or
// trailing slash is accepted, so one identity has exactly one spelling and
// comparing two IDs is comparing two values.
//
// The package has no dependencies beyond the standard library so that both
// the control plane and the sidecar's pure authorization code can import it.
package spiffeid

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Scheme is the URI scheme of every SPIFFE ID.
const Scheme = "spiffe"

// DefaultNamespace is the namespace of services that run outside Kubernetes.
const DefaultNamespace = "default"

// maxTrustDomain is the longest trust domain accepted (SPIFFE ID spec §2.1).
const maxTrustDomain = 255

// maxID bounds the whole URI (SPIFFE ID spec §2.3 recommends 2048 bytes).
const maxID = 2048

// ID is a workload identity. The zero value means "no identity" (see
// IsZero); any other value was produced by New or Parse and is valid.
type ID struct {
	trustDomain string
	namespace   string
	service     string
}

// ErrInvalid is wrapped by every validation error of this package.
var ErrInvalid = errors.New("invalid SPIFFE ID")

// New returns the ID of service in namespace (DefaultNamespace when empty)
// under trustDomain, or an error naming the part that is invalid.
func New(trustDomain, namespace, service string) (ID, error) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return build(trustDomain, namespace, service)
}

// build validates the three parts as given.
func build(trustDomain, namespace, service string) (ID, error) {
	if err := ValidateTrustDomain(trustDomain); err != nil {
		return ID{}, err
	}
	if !validLabel(namespace) {
		return ID{}, fmt.Errorf("%w: namespace %q must be a DNS label (lower-case letters, digits and '-', at most 63)", ErrInvalid, namespace)
	}
	if !validLabel(service) {
		return ID{}, fmt.Errorf("%w: service %q must be a DNS label (lower-case letters, digits and '-', at most 63)", ErrInvalid, service)
	}
	return ID{trustDomain: trustDomain, namespace: namespace, service: service}, nil
}

// Must is New for values known to be valid, such as constants in tests. It
// panics on an invalid ID.
func Must(trustDomain, namespace, service string) ID {
	id, err := New(trustDomain, namespace, service)
	if err != nil {
		panic(err)
	}
	return id
}

// Parse parses "spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE".
func Parse(s string) (ID, error) {
	if s == "" {
		return ID{}, fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(s) > maxID {
		return ID{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, maxID)
	}
	rest, ok := strings.CutPrefix(s, Scheme+"://")
	if !ok {
		return ID{}, fmt.Errorf("%w: %q does not start with %q (the scheme is lower-case)", ErrInvalid, s, Scheme+"://")
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, fmt.Errorf("%w: %q has no path; want spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE", ErrInvalid, s)
	}
	if err := ValidateTrustDomain(td); err != nil {
		return ID{}, err
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return ID{}, fmt.Errorf("%w: path %q of %q is not /ns/NAMESPACE/sa/SERVICE", ErrInvalid, "/"+path, s)
	}
	return build(td, parts[1], parts[3])
}

// FromURL returns the ID in u, as found in a certificate's URI SAN.
func FromURL(u *url.URL) (ID, error) {
	if u == nil {
		return ID{}, fmt.Errorf("%w: nil URI", ErrInvalid)
	}
	// Re-parsing the string form rejects what url.Parse tolerates (user
	// info, ports, queries, escapes): they survive String() and fail Parse.
	return Parse(u.String())
}

// ValidateTrustDomain reports whether td is a valid trust domain name:
// lower-case letters, digits, '.', '-' and '_', 1 to 255 bytes.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return fmt.Errorf("%w: empty trust domain", ErrInvalid)
	}
	if len(td) > maxTrustDomain {
		return fmt.Errorf("%w: trust domain longer than %d bytes", ErrInvalid, maxTrustDomain)
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' {
			continue
		}
		return fmt.Errorf("%w: trust domain %q: character %q is not allowed (lower-case letters, digits, '.', '-', '_')", ErrInvalid, td, c)
	}
	return nil
}

// ValidName reports whether s is a valid namespace or service name: a DNS
// label of 1 to 63 lower-case letters, digits and '-'.
func ValidName(s string) bool { return validLabel(s) }

// validLabel reports whether s is a DNS label: 1 to 63 lower-case letters,
// digits and '-', neither first nor last a '-'.
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// TrustDomain is the ID's trust domain ("" for the zero ID).
func (id ID) TrustDomain() string { return id.trustDomain }

// Namespace is the ID's namespace ("" for the zero ID).
func (id ID) Namespace() string { return id.namespace }

// Service is the ID's service ("" for the zero ID).
func (id ID) Service() string { return id.service }

// IsZero reports whether id is the zero value, meaning no identity.
func (id ID) IsZero() bool { return id == ID{} }

// MemberOf reports whether id belongs to trustDomain.
func (id ID) MemberOf(trustDomain string) bool {
	return !id.IsZero() && id.trustDomain == trustDomain
}

// String is the canonical URI form, or "" for the zero ID.
func (id ID) String() string {
	if id.IsZero() {
		return ""
	}
	return Scheme + "://" + id.trustDomain + "/ns/" + id.namespace + "/sa/" + id.service
}

// URL is the ID as a URI, to place in a certificate's URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: Scheme, Host: id.trustDomain, Path: "/ns/" + id.namespace + "/sa/" + id.service}
}

// TrustDomainURL is spiffe://TRUST_DOMAIN, the ID a signing certificate
// of that trust domain carries.
func TrustDomainURL(trustDomain string) *url.URL {
	return &url.URL{Scheme: Scheme, Host: trustDomain}
}

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; empty text gives the
// zero ID.
func (id *ID) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*id = ID{}
		return nil
	}
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
