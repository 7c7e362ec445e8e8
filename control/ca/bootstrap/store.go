// Package bootstrap holds the tokens with which a sidecar proves who it is
// the first time it asks the control plane for a certificate.
//
// A token reads "cwt.<id>.<secret>": id is 16 hex digits that name the
// token (safe to log and to revoke by), secret 43 base64url characters
// (256 random bits). The store keeps only SHA-256(secret), compares it in
// constant time, and writes its file (JSON, mode 0600) atomically. A token
// is scoped to one service in one namespace, expires, and may be single
// use: redeeming a single-use token deletes it, on disk too, before the
// redemption succeeds.
package bootstrap

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/causeway-mesh/causeway/control/ca/internal/atomicfile"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// FileName is the store's file name inside the data directory.
const FileName = "bootstrap-tokens.json"

// Token lifetimes.
const (
	// DefaultTTL is a token's lifetime when none is asked for.
	DefaultTTL = 24 * time.Hour
	// MaxTTL is the longest lifetime a token may have.
	MaxTTL = 30 * 24 * time.Hour
)

const (
	prefix    = "cwt"
	idBytes   = 8
	secBytes  = 32
	fileVerV1 = 1
)

// ErrInvalid is returned by Redeem for every token that is not accepted:
// malformed, unknown, wrong secret, expired or already used. The wrapped
// message says which, for the log; callers should not tell the client.
var ErrInvalid = errors.New("bootstrap token refused")

// ErrBadRequest wraps every reason Create refuses its arguments.
var ErrBadRequest = errors.New("invalid token request")

// Scope is what a token authorises: certificates for one service in one
// namespace.
type Scope struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
}

// Info describes a stored token; it never holds the secret.
type Info struct {
	ID        string    `json:"id"`
	Scope     Scope     `json:"scope"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
	SingleUse bool      `json:"singleUse"`
}

type record struct {
	Info
	Hash string `json:"sha256"` // hex SHA-256 of the secret
}

type file struct {
	Version int       `json:"version"`
	Tokens  []*record `json:"tokens"`
}

// Store is the set of live tokens, kept in one file. It is safe for
// concurrent use.
type Store struct {
	path string
	now  func() time.Time

	mu     sync.Mutex
	tokens map[string]*record
}

// Option configures a Store.
type Option func(*Store)

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Open loads the store kept at path (normally DATA_DIR/FileName), or
// starts an empty one if the file does not exist yet. Expired tokens are
// dropped at the next write.
func Open(path string, opts ...Option) (*Store, error) {
	s := &Store{path: path, now: time.Now, tokens: map[string]*record{}}
	for _, o := range opts {
		o(s)
	}
	b, err := os.ReadFile(path) //nolint:gosec // inside the operator's data dir
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("bootstrap tokens: %w", err)
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("bootstrap tokens: %w", err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("bootstrap tokens: %s: %w", path, err)
	}
	if f.Version != fileVerV1 {
		return nil, fmt.Errorf("bootstrap tokens: %s: version %d is not %d", path, f.Version, fileVerV1)
	}
	for i, r := range f.Tokens {
		if r == nil || r.ID == "" || len(r.Hash) != 2*sha256.Size {
			return nil, fmt.Errorf("bootstrap tokens: %s: token %d is malformed", path, i)
		}
		s.tokens[r.ID] = r
	}
	return s, nil
}

// Create makes a token for scope (namespace defaults to "default") that
// expires after ttl (DefaultTTL when 0, at most MaxTTL). The returned
// token is the only copy of the secret.
func (s *Store) Create(scope Scope, ttl time.Duration, singleUse bool) (token string, info Info, err error) {
	if scope.Namespace == "" {
		scope.Namespace = spiffeid.DefaultNamespace
	}
	if !spiffeid.ValidName(scope.Service) {
		return "", Info{}, fmt.Errorf("%w: service %q must be a DNS label (lower-case letters, digits and '-', at most 63)", ErrBadRequest, scope.Service)
	}
	if !spiffeid.ValidName(scope.Namespace) {
		return "", Info{}, fmt.Errorf("%w: namespace %q must be a DNS label (lower-case letters, digits and '-', at most 63)", ErrBadRequest, scope.Namespace)
	}
	switch {
	case ttl == 0:
		ttl = DefaultTTL
	case ttl < time.Second || ttl > MaxTTL:
		return "", Info{}, fmt.Errorf("%w: ttl %v is outside [1s, %v]", ErrBadRequest, ttl, MaxTTL)
	}
	raw := make([]byte, idBytes+secBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", Info{}, fmt.Errorf("bootstrap token: %w", err)
	}
	id := hex.EncodeToString(raw[:idBytes])
	secret := base64.RawURLEncoding.EncodeToString(raw[idBytes:])
	sum := sha256.Sum256([]byte(secret))
	now := s.now()
	r := &record{
		Info: Info{ID: id, Scope: scope, CreatedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC(), SingleUse: singleUse},
		Hash: hex.EncodeToString(sum[:]),
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.tokens[id]; dup {
		return "", Info{}, errors.New("bootstrap token: id collision; try again")
	}
	s.tokens[id] = r
	if err := s.saveLocked(); err != nil {
		delete(s.tokens, id)
		return "", Info{}, err
	}
	return prefix + "." + id + "." + secret, r.Info, nil
}

// Redeem checks token and returns its scope. A single-use token is deleted
// (and the deletion written) before Redeem returns its scope; if that
// write fails, the redemption fails too. Refusals wrap ErrInvalid.
func (s *Store) Redeem(token string) (Scope, error) {
	id, secret, ok := split(token)
	if !ok {
		return Scope{}, fmt.Errorf("%w: not of the form cwt.<id>.<secret>", ErrInvalid)
	}
	sum := sha256.Sum256([]byte(secret))

	s.mu.Lock()
	defer s.mu.Unlock()
	r, found := s.tokens[id]
	want := make([]byte, sha256.Size)
	if found {
		if _, err := hex.Decode(want, []byte(r.Hash)); err != nil {
			return Scope{}, fmt.Errorf("%w: stored hash of %s is corrupt", ErrInvalid, id)
		}
	}
	// Compare even for an unknown id, so both refusals cost the same.
	match := subtle.ConstantTimeCompare(sum[:], want) == 1
	switch {
	case !found:
		return Scope{}, fmt.Errorf("%w: unknown token id %s", ErrInvalid, id)
	case !match:
		return Scope{}, fmt.Errorf("%w: wrong secret for token %s", ErrInvalid, id)
	case !s.now().Before(r.ExpiresAt):
		return Scope{}, fmt.Errorf("%w: token %s expired at %s", ErrInvalid, id, r.ExpiresAt.Format(time.RFC3339))
	}
	if r.SingleUse {
		delete(s.tokens, id)
		if err := s.saveLocked(); err != nil {
			s.tokens[id] = r
			return Scope{}, fmt.Errorf("single-use token %s not consumed: %w", id, err)
		}
	}
	return r.Scope, nil
}

// Revoke deletes the token with the given id. It reports whether there was
// one.
func (s *Store) Revoke(id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.tokens[id]
	if !ok {
		return false, nil
	}
	delete(s.tokens, id)
	if err := s.saveLocked(); err != nil {
		s.tokens[id] = r
		return false, err
	}
	return true, nil
}

// List returns the live tokens, by expiry.
func (s *Store) List() []Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []Info
	for _, r := range s.tokens {
		if now.Before(r.ExpiresAt) {
			out = append(out, r.Info)
		}
	}
	slices.SortFunc(out, func(a, b Info) int { return a.ExpiresAt.Compare(b.ExpiresAt) })
	return out
}

// saveLocked drops expired tokens and writes the file.
func (s *Store) saveLocked() error {
	now := s.now()
	f := file{Version: fileVerV1, Tokens: []*record{}}
	for id, r := range s.tokens {
		if !now.Before(r.ExpiresAt) {
			delete(s.tokens, id)
			continue
		}
		f.Tokens = append(f.Tokens, r)
	}
	slices.SortFunc(f.Tokens, func(a, b *record) int { return strings.Compare(a.ID, b.ID) })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("bootstrap tokens: %w", err)
	}
	if err := atomicfile.Write(s.path, b, 0o600); err != nil {
		return fmt.Errorf("bootstrap tokens: %w", err)
	}
	return nil
}

// split parses "cwt.<id>.<secret>".
func split(token string) (id, secret string, ok bool) {
	p, rest, ok := strings.Cut(token, ".")
	if !ok || p != prefix {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, ".")
	if !ok || len(id) != 2*idBytes || len(secret) != base64.RawURLEncoding.EncodedLen(secBytes) {
		return "", "", false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	return id, secret, true
}
