package clock

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

const (
	// MaxEntries is the most entries an x-mesh-vclock value may carry, and
	// the largest per-node bound (Config.MaxEntries) that may be configured.
	MaxEntries = 32
	// MaxVectorLen is the longest x-mesh-vclock value accepted (1 KiB).
	// MaxEntries entries with the longest counters (8+1+19+1 bytes each)
	// plus the pruned marker stay below it, so every vector this package
	// encodes is accepted.
	MaxVectorLen = 1024
	// KeyLen is the length of an encoded node key.
	KeyLen = 8
	// prunedMarker is the last item of a vector some of whose entries were
	// dropped somewhere in its history.
	prunedMarker = "~"
)

// Key identifies one incarnation of one node in a vector clock: 48 bits,
// written as 8 base64url characters.
type Key uint64

const keyBits = 6 * KeyLen

const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

var b64Index = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(b64); i++ {
		t[b64[i]] = int8(i)
	}
	return t
}()

// NodeKey derives the key of one incarnation of a node: the first 48 bits of
// SHA-256(nodeID || 0x00 || incarnation as 8 big-endian bytes). A restart
// picks a new incarnation and therefore a new key, so a vector entry is never
// reused even when nothing was persisted.
func NodeKey(nodeID string, incarnation uint64) Key {
	h := sha256.New()
	h.Write([]byte(nodeID))
	var b [9]byte
	binary.BigEndian.PutUint64(b[1:], incarnation)
	h.Write(b[:])
	sum := h.Sum(nil)
	return Key(binary.BigEndian.Uint64(sum[:8]) >> (64 - keyBits))
}

// String returns the 8-character base64url form of k.
func (k Key) String() string {
	var b [KeyLen]byte
	k.put(b[:])
	return string(b[:])
}

func (k Key) put(b []byte) {
	for i := KeyLen - 1; i >= 0; i-- {
		b[i] = b64[k&63]
		k >>= 6
	}
}

// ParseKey parses the 8-character base64url form of a key.
func ParseKey(s string) (Key, error) {
	k, ok := parseKey(s)
	if !ok {
		return 0, fmt.Errorf("%w: vclock key %q is not %d base64url characters", ErrMalformed, clip(s), KeyLen)
	}
	return k, nil
}

func parseKey(s string) (Key, bool) {
	if len(s) != KeyLen {
		return 0, false
	}
	var k Key
	for i := 0; i < KeyLen; i++ {
		d := b64Index[s[i]]
		if d < 0 {
			return 0, false
		}
		k = k<<6 | Key(d)
	}
	return k, true
}

// Entry is one node incarnation's counter.
type Entry struct {
	Key     Key
	Counter uint64
}

// Vector is a decoded x-mesh-vclock value.
//
// Entries[0] belongs to the node that produced the vector (the owner); its
// counter identifies the event. The remaining entries are sorted by key. A
// counter in a vector is a lower bound of the true one; a missing entry means
// zero unless Pruned is set, in which case it is unknown.
type Vector struct {
	Entries []Entry
	// Pruned reports that entries were dropped somewhere in this vector's
	// causal history (the bound MaxEntries was hit), so missing or low
	// counters are not exact.
	Pruned bool
}

// Owner returns the owner's entry; ok is false for an empty vector.
func (v Vector) Owner() (Entry, bool) {
	if len(v.Entries) == 0 {
		return Entry{}, false
	}
	return v.Entries[0], true
}

// Get returns the counter of k, or 0 when the vector has no entry for it.
func (v Vector) Get(k Key) uint64 {
	for _, e := range v.Entries {
		if e.Key == k {
			return e.Counter
		}
	}
	return 0
}

// String encodes v as an x-mesh-vclock value.
func (v Vector) String() string {
	var b strings.Builder
	b.Grow(len(v.Entries) * 16)
	for i, e := range v.Entries {
		if i > 0 {
			b.WriteByte(',')
		}
		var kb [KeyLen]byte
		e.Key.put(kb[:])
		b.Write(kb[:])
		b.WriteByte('=')
		var nb [20]byte
		b.Write(strconv.AppendUint(nb[:0], e.Counter, 10))
	}
	if v.Pruned {
		b.WriteString("," + prunedMarker)
	}
	return b.String()
}

// ParseVector parses an x-mesh-vclock value (see the package documentation
// for the grammar). Input longer than MaxVectorLen or with more than
// MaxEntries entries is rejected before anything is allocated; a key may
// appear only once and the entries after the first must be sorted by key.
func ParseVector(s string) (Vector, error) {
	var buf [MaxEntries]Entry
	n, pruned, err := parseVector(s, &buf)
	if err != nil {
		return Vector{}, err
	}
	return Vector{Entries: append([]Entry(nil), buf[:n]...), Pruned: pruned}, nil
}

// parseVector decodes s into dst without allocating on success.
func parseVector(s string, dst *[MaxEntries]Entry) (n int, pruned bool, err error) {
	if len(s) == 0 || len(s) > MaxVectorLen {
		return 0, false, fmt.Errorf("%w: vclock: length %d not in [1,%d]", ErrMalformed, len(s), MaxVectorLen)
	}
	rest := s
	for len(rest) > 0 {
		item := rest
		if i := strings.IndexByte(rest, ','); i >= 0 {
			item, rest = rest[:i], rest[i+1:]
			if rest == "" {
				return 0, false, fmt.Errorf("%w: vclock: trailing comma", ErrMalformed)
			}
		} else {
			rest = ""
		}
		if item == prunedMarker {
			if rest != "" || n == 0 {
				return 0, false, fmt.Errorf("%w: vclock: %q must follow the last entry", ErrMalformed, prunedMarker)
			}
			pruned = true
			break
		}
		if n == MaxEntries {
			return 0, false, fmt.Errorf("%w: vclock: more than %d entries", ErrMalformed, MaxEntries)
		}
		if len(item) < KeyLen+2 || item[KeyLen] != '=' {
			return 0, false, fmt.Errorf("%w: vclock: entry %q is not KEY=COUNTER", ErrMalformed, clip(item))
		}
		k, ok := parseKey(item[:KeyLen])
		if !ok {
			return 0, false, fmt.Errorf("%w: vclock: key %q is not %d base64url characters", ErrMalformed, clip(item[:KeyLen]), KeyLen)
		}
		c, ok := parseCounter(item[KeyLen+1:])
		if !ok {
			return 0, false, fmt.Errorf("%w: vclock: counter %q is not a decimal in [1,2^63-1] without leading zeros", ErrMalformed, clip(item[KeyLen+1:]))
		}
		if n >= 2 && k <= dst[n-1].Key {
			return 0, false, fmt.Errorf("%w: vclock: entries after the first must have increasing keys", ErrMalformed)
		}
		if n >= 1 && k == dst[0].Key {
			return 0, false, fmt.Errorf("%w: vclock: key %s repeated", ErrMalformed, k)
		}
		dst[n] = Entry{Key: k, Counter: c}
		n++
	}
	return n, pruned, nil
}

// Order is the causal relation between two events.
type Order int

const (
	// Unknown: the vectors cannot tell (entries were pruned, or the input is
	// inconsistent). Never a guess.
	Unknown Order = iota
	// Before: the first event happened before the second.
	Before
	// After: the second event happened before the first.
	After
	// Concurrent: neither happened before the other.
	Concurrent
	// Equal: both vectors describe the same event.
	Equal
)

var orderNames = [...]string{"unknown", "before", "after", "concurrent", "equal"}

// String returns the lower-case name of o.
func (o Order) String() string {
	if o < 0 || int(o) >= len(orderNames) {
		return "Order(" + strconv.Itoa(int(o)) + ")"
	}
	return orderNames[o]
}

// MarshalText implements encoding.TextMarshaler.
func (o Order) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Compare returns the causal relation between the events that produced a and
// b. It relies on the owner-first rule: for a on node p with counter c,
// a happened before b exactly when b's entry for p is at least c. Because
// counters in a vector are lower bounds, "before" and "after" are certain
// whenever they are reported; "concurrent" is reported only when neither
// vector was pruned (so both are exact), and Unknown otherwise.
func Compare(a, b Vector) Order {
	oa, ok1 := a.Owner()
	ob, ok2 := b.Owner()
	if !ok1 || !ok2 {
		return Unknown
	}
	if oa.Key == ob.Key {
		switch {
		case oa.Counter < ob.Counter:
			return Before
		case oa.Counter > ob.Counter:
			return After
		default:
			return Equal
		}
	}
	ab := b.Get(oa.Key) >= oa.Counter
	ba := a.Get(ob.Key) >= ob.Counter
	switch {
	case ab && ba:
		return Unknown // a cycle: forged or corrupt input
	case ab:
		return Before
	case ba:
		return After
	case !a.Pruned && !b.Pruned:
		return Concurrent
	default:
		return Unknown
	}
}
