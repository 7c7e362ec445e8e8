// Package ledger records the workload certificates the control plane has
// issued that may still be in use, with the root each chains to, so that a
// root rotation can tell when the last leaf of an old root has been
// re-issued by the new one or has expired (control/ca/rotation).
//
// A leaf stops being in use when it expires, or when the sidecar that held
// it renews over mutual TLS with it: the renewal proves the new leaf
// replaces it. A sidecar that restarts and bootstraps again leaves its old
// leaf counted until that leaf expires, since nothing proves the old key
// is gone.
//
// The ledger is a file of JSON lines in the data directory, appended and
// synced before the Identity service hands out the certificate it records,
// so a leaf is never in use without being on record. The file is rewritten
// (atomically) with only the live entries when it has grown to twice their
// number, and at every Open. A torn last line, from a crash in the middle
// of an append, is ignored.
package ledger

import (
	"bufio"
	"bytes"
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
)

// FileName is the ledger's file name inside the data directory.
const FileName = "ca-leaves.jsonl"

// minCompact is the number of lines below which the file is never
// compacted during a run.
const minCompact = 1024

// Leaf is one issued certificate.
type Leaf struct {
	// Serial is the certificate's serial number, hex.
	Serial string `json:"serial"`
	// ID is the SPIFFE ID it names.
	ID string `json:"id"`
	// Root is the fingerprint (ca.Fingerprint) of the root it chains to.
	Root string `json:"root"`
	// NotAfter is when it expires.
	NotAfter time.Time `json:"notAfter"`
}

// line is one record of the file: "since" (the first line), "issue" or
// "replace" (the Serial leaf was replaced by a renewal).
type line struct {
	Op     string    `json:"op"`
	Since  time.Time `json:"since,omitzero"`
	Leaf   *Leaf     `json:"leaf,omitempty"`
	Serial string    `json:"serial,omitempty"`
}

// Ledger is the set of leaves that may still be in use. It is safe for
// concurrent use.
type Ledger struct {
	path string
	now  func() time.Time

	mu       sync.Mutex
	f        *os.File // appends
	since    time.Time
	sinceSet bool
	leaves   map[string]Leaf // by serial
	lines    int             // lines in the file
}

// Option configures Open.
type Option func(*Ledger)

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return func(l *Ledger) { l.now = now } }

// WithSince sets when a new ledger starts recording: the zero time means
// from the beginning (the CA was created together with the ledger, so no
// leaf was issued before it). Without it a new ledger starts now, and
// Since says that earlier leaves may exist unrecorded. It does not change
// an existing ledger.
func WithSince(t time.Time) Option {
	return func(l *Ledger) { l.since = t; l.sinceSet = true }
}

// Open loads the ledger kept at path (normally DATA_DIR/FileName), or
// starts a new one, and compacts it. Close releases it.
func Open(path string, opts ...Option) (*Ledger, error) {
	l := &Ledger{path: path, now: time.Now, leaves: map[string]Leaf{}}
	for _, o := range opts {
		o(l)
	}
	b, err := os.ReadFile(path) //nolint:gosec // inside the operator's data dir
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !l.sinceSet {
			l.since = l.now().UTC()
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("ledger: %w", err)
	default:
		if err := l.replay(b); err != nil {
			return nil, fmt.Errorf("ledger: %s: %w", path, err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.compactLocked(); err != nil {
		return nil, err
	}
	return l, nil
}

// replay applies the file's lines. Only the last line may be malformed
// (an append cut short by a crash).
func (l *Ledger) replay(b []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	var bad error
	for sc.Scan() {
		n++
		if bad != nil {
			return bad // a malformed line that was not the last
		}
		var ln line
		if err := json.Unmarshal(sc.Bytes(), &ln); err != nil {
			bad = fmt.Errorf("line %d: %w", n, err)
			continue
		}
		switch {
		case n == 1 && ln.Op == "since":
			l.since = ln.Since
		case n == 1:
			return errors.New(`line 1: want the "since" record`)
		case ln.Op == "issue" && ln.Leaf != nil && ln.Leaf.Serial != "":
			l.leaves[ln.Leaf.Serial] = *ln.Leaf
		case ln.Op == "replace" && ln.Serial != "":
			delete(l.leaves, ln.Serial)
		default:
			bad = fmt.Errorf("line %d: unknown record %q", n, ln.Op)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if n == 0 {
		return errors.New(`empty file: want the "since" record`)
	}
	return nil // a malformed last line is a torn append: ignored
}

// Record adds leaf and, when replaces is not empty, removes the leaf with
// that serial (the one the sidecar renewed with). It returns once the
// change is on disk; on error nothing changed and the caller must not hand
// out the certificate.
func (l *Ledger) Record(leaf Leaf, replaces string) error {
	if leaf.Serial == "" {
		return errors.New("ledger: a leaf needs a serial number")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	_ = enc.Encode(line{Op: "issue", Leaf: &leaf})
	if replaces != "" {
		_ = enc.Encode(line{Op: "replace", Serial: replaces})
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("ledger: closed")
	}
	if _, err := l.f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("ledger: append: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("ledger: append: %w", err)
	}
	l.leaves[leaf.Serial] = leaf
	l.lines++
	if replaces != "" {
		delete(l.leaves, replaces)
		l.lines++
	}
	if l.lines > minCompact && l.lines > 2*len(l.leaves) {
		// The record is already durable; a failed compaction only leaves
		// the file longer.
		_ = l.compactLocked()
	}
	return nil
}

// Outstanding counts the unexpired leaves chaining to root and returns the
// latest expiry among them.
func (l *Ledger) Outstanding(root string) (n int, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, lf := range l.leaves {
		if lf.Root == root && now.Before(lf.NotAfter) {
			n++
			if lf.NotAfter.After(until) {
				until = lf.NotAfter
			}
		}
	}
	return n, until
}

// Leaves returns the unexpired leaves chaining to root ("" for all), by
// expiry.
func (l *Ledger) Leaves(root string) []Leaf {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var out []Leaf
	for _, lf := range l.leaves {
		if (root == "" || lf.Root == root) && now.Before(lf.NotAfter) {
			out = append(out, lf)
		}
	}
	slices.SortFunc(out, func(a, b Leaf) int {
		if c := a.NotAfter.Compare(b.NotAfter); c != 0 {
			return c
		}
		return strings.Compare(a.Serial, b.Serial)
	})
	return out
}

// Since is when the ledger started recording: leaves issued before it
// (by a control plane without a ledger) may be in use unrecorded until
// Since plus the CA's longest leaf lifetime. The zero time means the
// ledger has recorded every leaf.
func (l *Ledger) Since() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.since
}

// Close releases the file. Record fails afterwards.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// compactLocked rewrites the file with the live entries and reopens it
// for appending.
func (l *Ledger) compactLocked() error {
	now := l.now()
	live := make([]Leaf, 0, len(l.leaves))
	for serial, lf := range l.leaves {
		if !now.Before(lf.NotAfter) {
			delete(l.leaves, serial)
			continue
		}
		live = append(live, lf)
	}
	slices.SortFunc(live, func(a, b Leaf) int { return strings.Compare(a.Serial, b.Serial) })
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	_ = enc.Encode(line{Op: "since", Since: l.since})
	for i := range live {
		_ = enc.Encode(line{Op: "issue", Leaf: &live[i]})
	}
	if err := atomicfile.Write(l.path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("ledger: %w", err) // the old file and handle stay
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // inside the operator's data dir
	if err != nil {
		if l.f != nil {
			_ = l.f.Close() // appends to the replaced file would be lost
			l.f = nil
		}
		return fmt.Errorf("ledger: %w", err)
	}
	if l.f != nil {
		_ = l.f.Close()
	}
	l.f, l.lines = f, 1+len(live)
	return nil
}
