// Package k8stoken verifies Kubernetes service-account tokens offline, so
// that a sidecar running in a cluster can obtain its first mesh
// certificate with the projected token the kubelet gives its pod instead
// of a bootstrap token.
//
// The control plane never calls the Kubernetes API. It is given, as the API
// server's OIDC discovery publishes them, the cluster's issuer
// (`kubectl get --raw /.well-known/openid-configuration`, field "issuer")
// and its service-account signing keys as a JWK set
// (`kubectl get --raw /openid/v1/jwks`). A token is accepted when:
//
//   - it is a compact JWS signed with RS256 or ES256 by a key of the set
//     (any other algorithm, "none" and every HMAC one included, is refused
//     before the signature is looked at, so a public key can never serve
//     as an HMAC secret);
//   - "iss" is the configured issuer, "aud" contains the configured
//     audience (default "causeway": a token minted for the API server or
//     another audience is refused), "exp" is present and not past, and
//     "nbf" and "iat" are not in the future, each with Leeway of clock
//     skew;
//   - the "kubernetes.io" claim names a namespace and a service account
//     that are DNS labels, and "sub", when present, is
//     system:serviceaccount:NAMESPACE:NAME.
//
// A token proves only the service account: whoever holds it can use it
// until it expires, so projected tokens should be short-lived (the
// kubelet's default is one hour, refreshed at 80 %).
package k8stoken

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// DefaultAudience is the audience a token must carry unless configured
// otherwise: the one a pod's projected token volume asks for.
const DefaultAudience = "causeway"

// Leeway is the clock skew tolerated on "exp", "nbf" and "iat".
const Leeway = 30 * time.Second

// MaxTokenBytes bounds a token, before anything is parsed.
const MaxTokenBytes = 16 << 10

// minRSABits is the smallest RSA key accepted in the key set.
const minRSABits = 2048

// algorithms are the only signature algorithms accepted.
var algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256}

// ErrInvalid wraps every reason a token is refused. The message says
// which, for the control plane's log; the sidecar is told only that its
// token was refused.
var ErrInvalid = errors.New("service-account token refused")

// Config configures a Verifier.
type Config struct {
	// Issuer is the cluster's service-account token issuer, compared
	// exactly with "iss" (such as https://kubernetes.default.svc.cluster.local).
	// Required.
	Issuer string
	// JWKS is the cluster's JWK set of public service-account signing keys.
	// Required: at least one RSA (2048 bits or more) or P-256 ECDSA public
	// key; private or symmetric keys are an error.
	JWKS []byte
	// Audience must be among the token's "aud"; empty means
	// DefaultAudience.
	Audience string
	// Now replaces time.Now, for tests.
	Now func() time.Time
}

// Account is the service account a token was issued for.
type Account struct {
	Namespace string
	Name      string
	// Pod is the pod the token was bound to, when it says ("" otherwise);
	// for the log.
	Pod string
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	issuer   string
	audience string
	keys     []jose.JSONWebKey
	now      func() time.Time
}

// New validates cfg and parses the key set.
func New(cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("k8stoken: an issuer is required")
	}
	v := &Verifier{issuer: cfg.Issuer, audience: cfg.Audience, now: cfg.Now}
	if v.audience == "" {
		v.audience = DefaultAudience
	}
	if v.now == nil {
		v.now = time.Now
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(cfg.JWKS, &set); err != nil {
		return nil, fmt.Errorf("k8stoken: JWK set: %w", err)
	}
	for i, k := range set.Keys {
		if err := checkKey(k); err != nil {
			return nil, fmt.Errorf("k8stoken: JWK set: key %d (kid %q): %w", i, k.KeyID, err)
		}
		v.keys = append(v.keys, k)
	}
	if len(v.keys) == 0 {
		return nil, errors.New("k8stoken: JWK set: no key")
	}
	return v, nil
}

// checkKey accepts public RSA keys of 2048 bits or more and P-256 ECDSA
// public keys, meant for signatures.
func checkKey(k jose.JSONWebKey) error {
	switch k.Key.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return fmt.Errorf("key of type %T: want a public RSA or P-256 ECDSA key", k.Key)
	}
	if !k.Valid() {
		return errors.New("invalid key")
	}
	if k.Use != "" && k.Use != "sig" {
		return fmt.Errorf("use %q is not \"sig\"", k.Use)
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		if key.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits is under %d", key.N.BitLen(), minRSABits)
		}
		if k.Algorithm != "" && k.Algorithm != string(jose.RS256) {
			return fmt.Errorf("algorithm %q: an RSA key must be for RS256", k.Algorithm)
		}
	case *ecdsa.PublicKey:
		if key.Curve != elliptic.P256() {
			return fmt.Errorf("ECDSA curve %s is not P-256", key.Curve.Params().Name)
		}
		if k.Algorithm != "" && k.Algorithm != string(jose.ES256) {
			return fmt.Errorf("algorithm %q: a P-256 key must be for ES256", k.Algorithm)
		}
	}
	return nil
}

// kubernetesClaims is the private claim the API server adds.
type kubernetesClaims struct {
	K8s *struct {
		Namespace      string `json:"namespace"`
		ServiceAccount *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
		Pod *struct {
			Name string `json:"name"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

// Verify checks token and returns its service account. Refusals wrap
// ErrInvalid.
func (v *Verifier) Verify(token string) (Account, error) {
	if len(token) > MaxTokenBytes {
		return Account{}, fmt.Errorf("%w: over %d bytes", ErrInvalid, MaxTokenBytes)
	}
	tok, err := jwt.ParseSigned(token, algorithms)
	if err != nil {
		return Account{}, fmt.Errorf("%w: %w (only RS256 and ES256 are accepted)", ErrInvalid, err)
	}
	if len(tok.Headers) != 1 {
		return Account{}, fmt.Errorf("%w: %d signatures, want 1", ErrInvalid, len(tok.Headers))
	}
	hdr := tok.Headers[0]
	var std jwt.Claims
	var priv kubernetesClaims
	verified := false
	for _, k := range v.keys {
		if hdr.KeyID != "" && k.KeyID != hdr.KeyID {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != hdr.Algorithm {
			continue
		}
		if err := tok.Claims(k.Key, &std, &priv); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		if hdr.KeyID != "" {
			return Account{}, fmt.Errorf("%w: no key with id %q in the JWK set verifies its %s signature", ErrInvalid, hdr.KeyID, hdr.Algorithm)
		}
		return Account{}, fmt.Errorf("%w: no key in the JWK set verifies its %s signature", ErrInvalid, hdr.Algorithm)
	}
	if std.Expiry == nil {
		return Account{}, fmt.Errorf("%w: no expiry (a legacy non-expiring token?); use a projected token", ErrInvalid)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: v.issuer, AnyAudience: jwt.Audience{v.audience}, Time: v.now()}, Leeway); err != nil {
		switch {
		case errors.Is(err, jwt.ErrInvalidIssuer):
			return Account{}, fmt.Errorf("%w: issuer %q is not %q", ErrInvalid, std.Issuer, v.issuer)
		case errors.Is(err, jwt.ErrInvalidAudience):
			return Account{}, fmt.Errorf("%w: audience %q does not include %q", ErrInvalid, []string(std.Audience), v.audience)
		case errors.Is(err, jwt.ErrExpired):
			return Account{}, fmt.Errorf("%w: expired at %s", ErrInvalid, std.Expiry.Time().UTC().Format(time.RFC3339))
		}
		return Account{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	k := priv.K8s
	if k == nil || k.Namespace == "" || k.ServiceAccount == nil || k.ServiceAccount.Name == "" {
		return Account{}, fmt.Errorf("%w: no kubernetes.io namespace and service account", ErrInvalid)
	}
	if !spiffeid.ValidName(k.Namespace) || !spiffeid.ValidName(k.ServiceAccount.Name) {
		return Account{}, fmt.Errorf("%w: namespace %q or service account %q is not a DNS label (a mesh service name)", ErrInvalid, k.Namespace, k.ServiceAccount.Name)
	}
	if want := "system:serviceaccount:" + k.Namespace + ":" + k.ServiceAccount.Name; std.Subject != "" && std.Subject != want {
		return Account{}, fmt.Errorf("%w: subject %q does not match the kubernetes.io claim (%s)", ErrInvalid, std.Subject, want)
	}
	acct := Account{Namespace: k.Namespace, Name: k.ServiceAccount.Name}
	if k.Pod != nil {
		acct.Pod = k.Pod.Name
	}
	return acct, nil
}
