// Package store keeps policy resources in an embedded bbolt database.
//
// Every write is one bbolt transaction (fsynced before it returns), so a
// crash loses nothing that was acknowledged and never leaves half a write.
// Each write takes the next value of a single revision counter, kept in
// the same transaction, as the resource's resourceVersion: resource
// versions grow monotonically across all resources and across restarts,
// like etcd's revisions.
//
// Writes are serialised by bbolt. An optional admission check sees the
// whole resulting set inside the write transaction, so cross-resource
// rules and policy translation are checked against exactly what will be
// stored.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/causeway-mesh/causeway/control/policy"
)

// FileName is the database's name inside the data directory.
const FileName = "policy.db"

var (
	bucketResources = []byte("resources")
	bucketMeta      = []byte("meta")
	keyRevision     = []byte("revision")
)

// Errors returned by the store; test with errors.Is.
var (
	ErrNotFound = errors.New("resource not found")
	ErrExists   = errors.New("resource already exists")
	ErrConflict = errors.New("resourceVersion conflict")
)

// AdmitFunc checks the complete set of resources a write would leave in
// the store. A non-nil error aborts the write and is returned (wrapped) to
// the caller. It runs inside the write transaction: it must not call the
// store.
type AdmitFunc func(next []*policy.Resource) error

// Store is the policy database. It is safe for concurrent use.
type Store struct {
	db       *bolt.DB
	admit    AdmitFunc
	onCommit func(revision uint64)
	now      func() time.Time
}

// Option configures a Store.
type Option func(*Store)

// WithAdmission installs the admission check run before every write.
func WithAdmission(f AdmitFunc) Option { return func(s *Store) { s.admit = f } }

// WithCommitHook calls f after every committed write, with the new
// revision, on the writer's goroutine. It must not block.
func WithCommitHook(f func(revision uint64)) Option { return func(s *Store) { s.onCommit = f } }

// Open opens (creating if needed) the database in dir, which is created
// with mode 0700. It fails after a second if another process holds the
// database.
func Open(dir string, opts ...Option) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketResources, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialise %s: %w", path, err)
	}
	s := &Store{db: db, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Revision is the resourceVersion of the latest write (0 before any).
func (s *Store) Revision() uint64 {
	var rev uint64
	_ = s.db.View(func(tx *bolt.Tx) error {
		rev = readRevision(tx)
		return nil
	})
	return rev
}

func readRevision(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyRevision); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func dbKey(k policy.Key) []byte { return []byte(k.String()) }

// Get returns the stored resource, or ErrNotFound.
func (s *Store) Get(k policy.Key) (*policy.Resource, error) {
	var out *policy.Resource
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketResources).Get(dbKey(k))
		if v == nil {
			return fmt.Errorf("%s: %w", k, ErrNotFound)
		}
		r, err := policy.Load(v)
		out = r
		return err
	})
	return out, err
}

// List returns the stored resources of kind (every kind when empty) in
// namespace (every namespace when empty), sorted by kind, namespace and
// name.
func (s *Store) List(kind policy.Kind, namespace string) ([]*policy.Resource, error) {
	var out []*policy.Resource
	err := s.db.View(func(tx *bolt.Tx) error {
		all, err := listTx(tx)
		for _, r := range all {
			k := r.Key()
			if (kind == "" || k.Kind == kind) && (namespace == "" || k.Namespace == namespace) {
				out = append(out, r)
			}
		}
		return err
	})
	return out, err
}

func listTx(tx *bolt.Tx) ([]*policy.Resource, error) {
	var out []*policy.Resource
	err := tx.Bucket(bucketResources).ForEach(func(k, v []byte) error {
		r, err := policy.Load(v)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	policy.SortResources(out)
	return out, err
}

// Mode says how Put treats an existing resource.
type Mode int

// Put modes.
const (
	Create Mode = iota // fail with ErrExists if the resource exists
	Update             // fail with ErrNotFound if it does not
	Apply              // create or update
)

// Put writes r. If r carries a resourceVersion, the write succeeds only
// if the stored resource has exactly that version (ErrConflict
// otherwise; on Create a resourceVersion is refused). It returns the
// stored resource with its new resourceVersion and timestamps, and
// whether it was created.
func (s *Store) Put(r *policy.Resource, mode Mode) (*policy.Resource, bool, error) {
	k := r.Key()
	var (
		stored  *policy.Resource
		created bool
		rev     uint64
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketResources)
		prevRaw := b.Get(dbKey(k))
		var prev *policy.Resource
		if prevRaw != nil {
			p, err := policy.Load(prevRaw)
			if err != nil {
				return err
			}
			prev = p
		}
		switch {
		case mode == Create && prev != nil:
			return fmt.Errorf("%s: %w", k, ErrExists)
		case mode == Update && prev == nil:
			return fmt.Errorf("%s: %w", k, ErrNotFound)
		case mode == Create && r.Metadata.ResourceVersion != "":
			return fmt.Errorf("%s: metadata.resourceVersion must be empty on create: %w", k, ErrConflict)
		}
		if want := r.Metadata.ResourceVersion; want != "" {
			if prev == nil {
				return fmt.Errorf("%s: resourceVersion %s given but the resource does not exist: %w", k, want, ErrNotFound)
			}
			if prev.Metadata.ResourceVersion != want {
				return fmt.Errorf("%s: stored resourceVersion is %s, not %s (someone else changed it; get it again and retry): %w",
					k, prev.Metadata.ResourceVersion, want, ErrConflict)
			}
		}
		rev = readRevision(tx) + 1
		next := *r
		next.Metadata.Namespace = k.Namespace
		next.Metadata.ResourceVersion = strconv.FormatUint(rev, 10)
		now := s.now().UTC().Truncate(time.Second)
		next.Metadata.UpdateTimestamp = &now
		next.Metadata.CreationTimestamp = &now
		if prev != nil {
			next.Metadata.CreationTimestamp = prev.Metadata.CreationTimestamp
		}
		if s.admit != nil {
			if err := s.admitWith(tx, k, &next); err != nil {
				return err
			}
		}
		raw, err := json.Marshal(&next)
		if err != nil {
			return fmt.Errorf("encode %s: %w", k, err)
		}
		if err := b.Put(dbKey(k), raw); err != nil {
			return err
		}
		stored, created = &next, prev == nil
		return putRevision(tx, rev)
	})
	if err != nil {
		return nil, false, err
	}
	if s.onCommit != nil {
		s.onCommit(rev)
	}
	return stored, created, nil
}

// Delete removes the resource. With a non-empty resourceVersion it
// succeeds only if the stored resource has that version. It returns the
// deleted resource.
func (s *Store) Delete(k policy.Key, resourceVersion string) (*policy.Resource, error) {
	var (
		gone *policy.Resource
		rev  uint64
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketResources)
		raw := b.Get(dbKey(k))
		if raw == nil {
			return fmt.Errorf("%s: %w", k, ErrNotFound)
		}
		prev, err := policy.Load(raw)
		if err != nil {
			return err
		}
		if resourceVersion != "" && prev.Metadata.ResourceVersion != resourceVersion {
			return fmt.Errorf("%s: stored resourceVersion is %s, not %s: %w", k, prev.Metadata.ResourceVersion, resourceVersion, ErrConflict)
		}
		if s.admit != nil {
			if err := s.admitWith(tx, k, nil); err != nil {
				return err
			}
		}
		if err := b.Delete(dbKey(k)); err != nil {
			return err
		}
		rev = readRevision(tx) + 1
		gone = prev
		return putRevision(tx, rev)
	})
	if err != nil {
		return nil, err
	}
	if s.onCommit != nil {
		s.onCommit(rev)
	}
	return gone, nil
}

// admitWith runs the admission check on the stored set with k replaced by
// next (removed when next is nil).
func (s *Store) admitWith(tx *bolt.Tx, k policy.Key, next *policy.Resource) error {
	all, err := listTx(tx)
	if err != nil {
		return err
	}
	set := make([]*policy.Resource, 0, len(all)+1)
	for _, r := range all {
		if r.Key() != k {
			set = append(set, r)
		}
	}
	if next != nil {
		set = append(set, next)
	}
	policy.SortResources(set)
	return s.admit(set)
}

func putRevision(tx *bolt.Tx, rev uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], rev)
	return tx.Bucket(bucketMeta).Put(keyRevision, b[:])
}

// Path is the database file inside dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// IsConflict reports whether err is a resourceVersion conflict or an
// existing resource on create (both HTTP 409).
func IsConflict(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrExists)
}
