// Package kvstore implements the state and the HTTP handler of the
// Causeway key-value example: an in-memory map plus an append-only history
// of every write the instance recorded, so that a test can check
// afterwards which instance accepted which write under which fencing
// epoch, and where it was replicated.
//
// A client writes through the mesh (PUT to its sidecar's outbound port
// with Host: kv), and the mesh decides which instance reachable from that
// side accepts it. On its own an instance does not replicate; package
// replication sends what it accepts to its peers, which apply it with
// PUT /replicate.
//
// # Conflict rule
//
// Every write has a rank, (Epoch, Version, Origin), compared in that
// order: the fencing epoch it was admitted under at its origin, the
// origin's Lamport-style version counter, and the origin's name as the
// tie-break. Versions are unique per origin, so no two writes share a
// rank, and a replica that holds a key keeps the write of the highest rank
// it has seen for it (last writer wins). Whatever order writes arrive in,
// replicas that have seen the same writes hold the same values. A replica
// accepting a client write first advances its counter past every version
// it has seen, so the write outranks all of them within its epoch; behind
// a sidecar a write cannot carry an epoch older than one the replica
// already holds (the sidecar refuses it as stale_epoch), so in the mesh
// the newest client write always wins. A store built without
// WithLastWriterWins (a single instance) lets every client write replace
// the value, as before replication existed.
//
// Endpoints:
//
//	PUT  /kv/{key}        body = value (at most MaxValueBytes); 200 with the
//	                      accepted Write as JSON; 400 for a bad key, value or
//	                      x-mesh-epoch header
//	GET  /kv/{key}        200 with the value as text/plain, 404 when absent
//	GET  /kv              200, JSON array of the keys, sorted
//	GET  /kv?dump=1       200, JSON object of every key and its value
//	GET  /history         200, JSON array of every recorded Write, in order
//	PUT  /replicate?key=K a peer's write (see ReplicatePath); 200 with an
//	                      ApplyResult; 400 for a bad key, value or identity
//	GET  /healthz         200 "ok"
//
// Every response carries the header x-kv-node with the instance name.
// Values are opaque; a client that wants to find its writes in the history
// makes each value unique (the netns test tier writes "NODE-SEQ").
package kvstore

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits on what a client may store.
const (
	// MaxKeyBytes is the longest key accepted.
	MaxKeyBytes = 256
	// MaxValueBytes is the largest value accepted.
	MaxValueBytes = 64 << 10
	// MaxNodeBytes is the longest instance name a replicated write may
	// name as its origin.
	MaxNodeBytes = 256
)

// Kinds of history entries.
const (
	// KindAccepted: a client write this instance accepted.
	KindAccepted = "accepted"
	// KindReplicated: a write another instance accepted, applied here.
	KindReplicated = "replicated"
)

// Write is one entry of an instance's history. The fields up to At keep
// the meaning and JSON names they had before replication, so readers of
// older histories (kvcheck) still work; an entry without a kind is an
// accepted write.
type Write struct {
	// Seq numbers the entries of this instance's history from 1, in order.
	Seq uint64 `json:"seq"`
	// Key and Value are what was written.
	Key   string `json:"key"`
	Value string `json:"value"`
	// Epoch is the x-mesh-epoch the write was admitted under at its
	// origin; 0 when it arrived without one (fencing off, or not through
	// a sidecar).
	Epoch uint64 `json:"epoch"`
	// Node is the instance that recorded this entry: for an accepted
	// write, the instance that accepted it.
	Node string `json:"node"`
	// At is when the instance recorded it (its wall clock).
	At time.Time `json:"at"`

	// Kind is KindAccepted or KindReplicated ("" in histories written
	// before replication existed: accepted).
	Kind string `json:"kind,omitempty"`
	// Origin is the instance that accepted the write (Node for an
	// accepted one) and OriginSeq its number among the writes Origin
	// accepted, from 1: together they identify the write everywhere.
	Origin    string `json:"origin,omitempty"`
	OriginSeq uint64 `json:"originSeq,omitempty"`
	// Version is the origin's version counter when it accepted the write.
	Version uint64 `json:"version,omitempty"`
	// Superseded is set when the write did not become this instance's
	// value because the one it held ranked higher (see the package
	// documentation's conflict rule).
	Superseded bool `json:"superseded,omitempty"`
}

// Accepted reports whether the entry is a write this instance accepted
// from a client (also true for entries of histories that predate kinds).
func (w Write) Accepted() bool { return w.Kind == "" || w.Kind == KindAccepted }

// OriginNode is the instance that accepted the write: Origin, or Node for
// entries that predate replication.
func (w Write) OriginNode() string {
	if w.Origin != "" {
		return w.Origin
	}
	return w.Node
}

// Rank is a write's place in the conflict rule.
func (w Write) Rank() Rank {
	return Rank{Epoch: w.Epoch, Version: w.Version, Origin: w.OriginNode()}
}

// Rank orders writes of one key: by Epoch, then Version, then Origin. The
// write of the higher rank wins.
type Rank struct {
	Epoch, Version uint64
	Origin         string
}

// Compare returns -1, 0 or +1 as r ranks below, equal to or above o.
func (r Rank) Compare(o Rank) int {
	return cmp.Or(cmp.Compare(r.Epoch, o.Epoch), cmp.Compare(r.Version, o.Version), strings.Compare(r.Origin, o.Origin))
}

func (r Rank) String() string {
	return fmt.Sprintf("(epoch %d, version %d, %s)", r.Epoch, r.Version, r.Origin)
}

// ApplyResult is what Apply did with a replicated write.
type ApplyResult struct {
	// Duplicate: the write (same origin and origin seq) was applied or
	// accepted here before; nothing changed and nothing was recorded.
	Duplicate bool `json:"duplicate"`
	// Write is the history entry recorded (absent for a duplicate); its
	// Superseded field says whether it became the value.
	Write *Write `json:"write,omitempty"`
}

// Store is the in-memory state of one instance. The zero value is not
// usable; call New. Its methods are safe for concurrent use.
type Store struct {
	node string
	now  func() time.Time
	lww  bool

	mu       sync.Mutex
	values   map[string]Write // the write each key holds
	history  []Write
	clock    uint64 // the version counter: above every version seen
	accepted uint64 // client writes accepted here
	seen     map[string]*seqSet
	onAccept func(Write)
}

// Option configures a Store.
type Option func(*Store)

// WithClock replaces time.Now as the source of Write.At (tests).
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// WithLastWriterWins makes client writes follow the conflict rule too
// (the package documentation): a replica needs it so that replicas
// converge. Without it a client write always replaces the value, which is
// how a single instance behaves. Replicated writes follow the rule either
// way.
func WithLastWriterWins() Option {
	return func(s *Store) { s.lww = true }
}

// New returns an empty store for the instance called node.
func New(node string, opts ...Option) *Store {
	s := &Store{node: node, now: time.Now, values: make(map[string]Write), seen: make(map[string]*seqSet)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Node returns the instance name.
func (s *Store) Node() string { return s.node }

// OnAccept registers fn to be called with every client write the store
// accepts, in the order it accepted them. fn runs under the store's lock,
// so it must be quick, must not block and must not call the store; a
// replicator queues the write and returns. A later call replaces fn.
func (s *Store) OnAccept(fn func(Write)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onAccept = fn
}

// Put accepts a client write: it stores value under key (unless the
// conflict rule keeps the held value, with WithLastWriterWins), appends
// the write to the history and hands it to the OnAccept function.
func (s *Store) Put(key, value string, epoch uint64) Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock++
	s.accepted++
	w := Write{
		Seq: uint64(len(s.history)) + 1, Key: key, Value: value,
		Epoch: epoch, Node: s.node, At: s.now(),
		Kind: KindAccepted, Origin: s.node, OriginSeq: s.accepted, Version: s.clock,
	}
	s.markSeenLocked(w.Origin, w.OriginSeq)
	if held, ok := s.values[key]; ok && s.lww && held.Rank().Compare(w.Rank()) > 0 {
		w.Superseded = true
	} else {
		s.values[key] = w
	}
	s.history = append(s.history, w)
	if s.onAccept != nil {
		s.onAccept(w)
	}
	return w
}

// Apply records a write another instance accepted, identified by its
// Origin and OriginSeq and ranked by its Epoch, Version and Origin (the
// other fields of w are ignored). A write applied before is a no-op
// (Duplicate). Otherwise it is appended to the history as replicated and
// becomes the key's value when it outranks the held one. Applying a write
// never hands it to the OnAccept function: its origin replicates it.
func (s *Store) Apply(w Write) (ApplyResult, error) {
	if err := validateReplicated(w); err != nil {
		return ApplyResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.markSeenLocked(w.Origin, w.OriginSeq) {
		return ApplyResult{Duplicate: true}, nil
	}
	s.clock = max(s.clock, w.Version)
	rec := Write{
		Seq: uint64(len(s.history)) + 1, Key: w.Key, Value: w.Value,
		Epoch: w.Epoch, Node: s.node, At: s.now(),
		Kind: KindReplicated, Origin: w.Origin, OriginSeq: w.OriginSeq, Version: w.Version,
	}
	if held, ok := s.values[w.Key]; ok && held.Rank().Compare(rec.Rank()) >= 0 {
		rec.Superseded = true
	} else {
		s.values[w.Key] = rec
	}
	s.history = append(s.history, rec)
	return ApplyResult{Write: &rec}, nil
}

// markSeenLocked records (origin, seq) and reports whether it is new.
func (s *Store) markSeenLocked(origin string, seq uint64) bool {
	set := s.seen[origin]
	if set == nil {
		set = &seqSet{}
		s.seen[origin] = set
	}
	return set.add(seq)
}

func validateReplicated(w Write) error {
	switch {
	case w.Origin == "":
		return errors.New("replicated write names no origin")
	case len(w.Origin) > MaxNodeBytes:
		return fmt.Errorf("origin is %d bytes, at most %d allowed", len(w.Origin), MaxNodeBytes)
	case strings.ContainsFunc(w.Origin, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("origin contains a control character")
	case w.OriginSeq == 0:
		return errors.New("replicated write has no origin seq (numbered from 1)")
	case w.Version == 0:
		return errors.New("replicated write has no version (numbered from 1)")
	case len(w.Value) > MaxValueBytes:
		return fmt.Errorf("value is larger than %d bytes", MaxValueBytes)
	}
	return ValidateKey(w.Key)
}

// Get returns the value under key and whether there is one.
func (s *Store) Get(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.values[key]
	return w.Value, ok
}

// Dump returns a copy of every key and its value.
func (s *Store) Dump() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.values))
	for k, w := range s.values {
		out[k] = w.Value
	}
	return out
}

// Snapshot returns, sorted by key, the write each key holds, with the
// identity and rank of its origin (a peer applying them all with Apply
// ends up holding at least these writes: a full sync).
func (s *Store) Snapshot() []Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Write, 0, len(s.values))
	for _, k := range slices.Sorted(maps.Keys(s.values)) {
		w := s.values[k]
		out = append(out, Write{Key: w.Key, Value: w.Value, Epoch: w.Epoch, Origin: w.OriginNode(), OriginSeq: w.OriginSeq, Version: w.Version})
	}
	return out
}

// History returns a copy of the recorded writes, oldest first.
func (s *Store) History() []Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.history)
}

// ValidateKey reports why key cannot be stored, or nil.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return errors.New("key is empty")
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("key is %d bytes, at most %d allowed", len(key), MaxKeyBytes)
	case strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("key contains a control character")
	}
	return nil
}

// ParseEpoch parses an x-mesh-epoch header value: absent (empty) is epoch
// 0, otherwise a decimal unsigned 64-bit number.
func ParseEpoch(v string) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	e, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want a decimal epoch", EpochHeader, v)
	}
	return e, nil
}

// seqSet is the set of sequence numbers seen from one origin, as sorted,
// disjoint, non-adjacent closed intervals. An origin sends in order, so
// its numbers extend the last interval; only a gap (writes a full sync
// replaced) starts another. Memory grows with the gaps, not the writes.
type seqSet struct {
	spans []span
}

type span struct{ lo, hi uint64 }

// add inserts n and reports whether it was new.
func (q *seqSet) add(n uint64) bool {
	// i is the first span that ends at or after n.
	i, _ := slices.BinarySearchFunc(q.spans, n, func(s span, n uint64) int { return cmp.Compare(s.hi, n) })
	if i < len(q.spans) && q.spans[i].lo <= n {
		return false
	}
	joinsPrev := i > 0 && q.spans[i-1].hi+1 == n
	joinsNext := i < len(q.spans) && q.spans[i].lo == n+1
	switch {
	case joinsPrev && joinsNext:
		q.spans[i-1].hi = q.spans[i].hi
		q.spans = slices.Delete(q.spans, i, i+1)
	case joinsPrev:
		q.spans[i-1].hi = n
	case joinsNext:
		q.spans[i].lo = n
	default:
		q.spans = slices.Insert(q.spans, i, span{n, n})
	}
	return true
}
