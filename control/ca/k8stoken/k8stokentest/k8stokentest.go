// Package k8stokentest mints service-account tokens the way a Kubernetes
// API server does, for tests of code that verifies them: a fake cluster
// with an RSA (RS256) and a P-256 (ES256) signing key, its JWK set, and
// tokens with the standard and "kubernetes.io" claims. Raw crafts tokens
// no signer would make (alg "none", HS256 keyed with a public key).
package k8stokentest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Key ids of the cluster's keys.
const (
	RSAKeyID = "rsa-1"
	ECKeyID  = "ec-1"
)

// Cluster is a fake cluster's token issuer.
type Cluster struct {
	Issuer string
	rsa    *rsa.PrivateKey
	ec     *ecdsa.PrivateKey
}

// New makes a cluster whose tokens carry issuer.
func New(issuer string) (*Cluster, error) {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Cluster{Issuer: issuer, rsa: r, ec: e}, nil
}

// JWKS is the cluster's public keys as `kubectl get --raw /openid/v1/jwks`
// prints them.
func (c *Cluster) JWKS() []byte {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &c.rsa.PublicKey, KeyID: RSAKeyID, Algorithm: string(jose.RS256), Use: "sig"},
		{Key: &c.ec.PublicKey, KeyID: ECKeyID, Algorithm: string(jose.ES256), Use: "sig"},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// RSAPublicKeyPEM is the RSA public key as PEM: what an attacker would use
// as the HMAC secret in an algorithm-confusion attack (HS256 "signed" with
// the verifier's public key).
func (c *Cluster) RSAPublicKeyPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(&c.rsa.PublicKey)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Claims are a token's contents.
type Claims struct {
	Issuer         string // "" means the cluster's
	Subject        string // "" means system:serviceaccount:NAMESPACE:NAME
	Audience       []string
	Namespace      string
	ServiceAccount string
	Pod            string
	IssuedAt       time.Time
	NotBefore      time.Time
	Expiry         time.Time // zero: no "exp"
}

// Standard is the claims of a projected token for namespace/name with
// audience "causeway", issued at now and valid for an hour.
func Standard(namespace, name string, now time.Time) Claims {
	return Claims{
		Audience: []string{"causeway"}, Namespace: namespace, ServiceAccount: name, Pod: name + "-7d9f8-abcde",
		IssuedAt: now, NotBefore: now, Expiry: now.Add(time.Hour),
	}
}

// payload is the JSON object of cl.
func (c *Cluster) payload(cl Claims) map[string]any {
	iss := cl.Issuer
	if iss == "" {
		iss = c.Issuer
	}
	sub := cl.Subject
	if sub == "" {
		sub = "system:serviceaccount:" + cl.Namespace + ":" + cl.ServiceAccount
	}
	p := map[string]any{
		"iss": iss, "sub": sub, "aud": cl.Audience,
		"kubernetes.io": map[string]any{
			"namespace":      cl.Namespace,
			"serviceaccount": map[string]any{"name": cl.ServiceAccount, "uid": "3f0c2a1e-0000-4000-8000-000000000001"},
			"pod":            map[string]any{"name": cl.Pod, "uid": "3f0c2a1e-0000-4000-8000-000000000002"},
		},
	}
	if !cl.IssuedAt.IsZero() {
		p["iat"] = cl.IssuedAt.Unix()
	}
	if !cl.NotBefore.IsZero() {
		p["nbf"] = cl.NotBefore.Unix()
	}
	if !cl.Expiry.IsZero() {
		p["exp"] = cl.Expiry.Unix()
	}
	return p
}

// Token signs cl with the cluster's key for alg, RS256 or ES256.
func (c *Cluster) Token(cl Claims, alg jose.SignatureAlgorithm) (string, error) {
	var key jose.SigningKey
	switch alg {
	case jose.RS256:
		key = jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: c.rsa, KeyID: RSAKeyID}}
	case jose.ES256:
		key = jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: c.ec, KeyID: ECKeyID}}
	default:
		return "", fmt.Errorf("k8stokentest: algorithm %s: use Raw", alg)
	}
	signer, err := jose.NewSigner(key, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(c.payload(cl)).Serialize()
}

// Raw builds a compact token from a header, cl, and a signature made by
// sign over "header.payload" (nil: an empty signature, as alg "none").
func (c *Cluster) Raw(header map[string]any, cl Claims, sign func(signingInput []byte) []byte) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(c.payload(cl))
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + enc.EncodeToString(sig)
}

// HS256 signs with HMAC-SHA256 keyed with secret.
func HS256(secret []byte) func([]byte) []byte {
	return func(input []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(input)
		return m.Sum(nil)
	}
}
