package clock

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Header names (canonical MIME form, so they index http.Header directly).
const (
	HeaderLamport = "X-Mesh-Lamport"
	HeaderVector  = "X-Mesh-Vclock"
)

// Defaults for Config.
const (
	DefaultMaxEntries   = 16
	DefaultReserveBlock = 1 << 20
)

// Config configures a node's Clock.
type Config struct {
	// NodeID names this sidecar (e.g. "orders-host1"). Required.
	NodeID string
	// DataDir, when set, holds the Lamport high-water mark (HighWaterFile) so
	// that Lamport values keep increasing across restarts. Empty: nothing is
	// persisted and the Lamport clock restarts at 0.
	DataDir string
	// MaxEntries bounds the vector clock, own entry included. 0 means
	// DefaultMaxEntries (16); at most MaxEntries (32).
	MaxEntries int
	// ReserveBlock is how many Lamport values are reserved per durable write.
	// 0 means DefaultReserveBlock (2^20). Ignored without DataDir.
	ReserveBlock uint64
	// Incarnation distinguishes this run of the node in vector clocks. 0
	// means a random value from crypto/rand (what production should use);
	// tests set it to get stable keys.
	Incarnation uint64
}

// Stamp is the clock value of one event, ready to be recorded on a span as
// mesh.lamport and mesh.vclock.
type Stamp struct {
	Lamport uint64
	// Vector is the encoded vector clock, owner entry first.
	Vector string
}

// Clock is one node's Lamport and vector clock. All methods are safe for
// concurrent use and are meant for the request path: Send and Receive take a
// mutex held for well under a microsecond, and allocate only the encoded
// header values.
type Clock struct {
	nodeID      string
	incarnation uint64
	key         Key
	keyStr      string
	max         int

	lamport *Lamport

	mu     sync.Mutex
	own    uint64 // own vector counter
	others []slot // sorted by key; never contains key
	spare  []slot // merge buffer, swapped with others
	pruned bool
	tail   string // cached encoding of others and the marker, with a leading ','
	tailOK bool
}

// slot is a vector entry with the own counter at which it last advanced; the
// least recently advanced entries are pruned first.
type slot struct {
	key     Key
	counter uint64
	touched uint64
}

// New returns the clock of cfg.NodeID. With cfg.DataDir it reads the stored
// high-water mark and durably reserves the first block before returning.
func New(cfg Config) (*Clock, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("clock: node id is required")
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxEntries < 1 || cfg.MaxEntries > MaxEntries {
		return nil, fmt.Errorf("clock: max entries %d not in [1,%d]", cfg.MaxEntries, MaxEntries)
	}
	if cfg.ReserveBlock == 0 {
		cfg.ReserveBlock = DefaultReserveBlock
	}
	if cfg.Incarnation == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("clock: incarnation: %w", err)
		}
		cfg.Incarnation = binary.BigEndian.Uint64(b[:]) | 1
	}
	c := &Clock{
		nodeID:      cfg.NodeID,
		incarnation: cfg.Incarnation,
		key:         NodeKey(cfg.NodeID, cfg.Incarnation),
		max:         cfg.MaxEntries,
		others:      make([]slot, 0, 2*MaxEntries),
		spare:       make([]slot, 0, 2*MaxEntries),
	}
	c.keyStr = c.key.String()
	var (
		res   Reserver
		start uint64
	)
	if cfg.DataDir != "" {
		fr, hw, err := OpenFileReserver(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		res, start = fr, hw
	}
	l, err := NewLamport(start, res, cfg.ReserveBlock)
	if err != nil {
		return nil, fmt.Errorf("clock: %w", err)
	}
	c.lamport = l
	return c, nil
}

// Key returns this incarnation's vector key.
func (c *Clock) Key() Key { return c.key }

// Tick records a local event and returns its stamp.
func (c *Clock) Tick() (Stamp, error) {
	lt, err := c.lamport.Tick()
	if err != nil {
		return Stamp{}, err
	}
	c.mu.Lock()
	v := c.tickLocked()
	c.mu.Unlock()
	return Stamp{Lamport: lt, Vector: v}, nil
}

// Send records a send event and stamps h with x-mesh-lamport and
// x-mesh-vclock, replacing any values already there. Call it for every
// request forwarded and every response returned. On error (the clock could
// not persist its high-water mark, or is exhausted) h is left without clock
// headers and the zero Stamp is returned.
func (c *Clock) Send(h http.Header) (Stamp, error) {
	st, err := c.Tick()
	if err != nil {
		delete(h, HeaderLamport)
		delete(h, HeaderVector)
		return Stamp{}, err
	}
	h[HeaderLamport] = []string{FormatLamport(st.Lamport)}
	h[HeaderVector] = []string{st.Vector}
	return st, nil
}

// Receive records a receive event for a message carrying h: the remote
// clocks are merged (Lamport max+1, vector element-wise max) and the own
// entries advanced. Missing headers are not an error. A header that is
// malformed, repeated or, for Lamport, more than MaxJump ahead is ignored and
// reported in the returned error (errors.Is ErrMalformed or ErrJump); the
// event is still recorded and the Stamp is valid. Only when the Stamp is zero
// did the clock fail to advance (see Send).
func (c *Clock) Receive(h http.Header) (Stamp, error) {
	var hdrErr error
	var lt uint64
	var lerr error
	ticked := false
	if vals, ok := h[HeaderLamport]; ok {
		remote, err := singleLamport(vals)
		if err == nil {
			lt, lerr = c.lamport.Witness(remote)
			if errors.Is(lerr, ErrJump) {
				hdrErr, lerr = lerr, nil
			} else {
				ticked = true
			}
		} else {
			hdrErr = err
		}
	}
	if !ticked && lerr == nil {
		lt, lerr = c.lamport.Tick()
	}
	if lerr != nil {
		return Stamp{}, errors.Join(lerr, hdrErr)
	}

	var buf [MaxEntries]Entry
	n, pruned := 0, false
	if vals, ok := h[HeaderVector]; ok {
		var err error
		if len(vals) != 1 {
			err = fmt.Errorf("%w: vclock: %d values", ErrMalformed, len(vals))
		} else {
			n, pruned, err = parseVector(vals[0], &buf)
		}
		if err != nil {
			hdrErr = errors.Join(hdrErr, err)
			n, pruned = 0, false
		}
	}
	c.mu.Lock()
	if n > 0 {
		c.mergeLocked(buf[:n], pruned)
	}
	v := c.tickLocked()
	c.mu.Unlock()
	return Stamp{Lamport: lt, Vector: v}, hdrErr
}

func singleLamport(vals []string) (uint64, error) {
	if len(vals) != 1 {
		return 0, fmt.Errorf("%w: lamport: %d values", ErrMalformed, len(vals))
	}
	return ParseLamport(vals[0])
}

// tickLocked advances the own entry and returns the encoded vector.
func (c *Clock) tickLocked() string {
	c.own++
	if !c.tailOK {
		c.tail = c.encodeTailLocked()
		c.tailOK = true
	}
	var b strings.Builder
	b.Grow(KeyLen + 1 + 20 + len(c.tail))
	b.WriteString(c.keyStr)
	b.WriteByte('=')
	var nb [20]byte
	b.Write(strconv.AppendUint(nb[:0], c.own, 10))
	b.WriteString(c.tail)
	return b.String()
}

func (c *Clock) encodeTailLocked() string {
	if len(c.others) == 0 && !c.pruned {
		return ""
	}
	var b strings.Builder
	b.Grow(len(c.others)*16 + 2)
	for _, s := range c.others {
		b.WriteByte(',')
		var kb [KeyLen]byte
		s.key.put(kb[:])
		b.Write(kb[:])
		b.WriteByte('=')
		var nb [20]byte
		b.Write(strconv.AppendUint(nb[:0], s.counter, 10))
	}
	if c.pruned {
		b.WriteString("," + prunedMarker)
	}
	return b.String()
}

// mergeLocked folds remote entries (owner first, the rest sorted by key)
// into the local vector and prunes it back to the bound.
func (c *Clock) mergeLocked(remote []Entry, pruned bool) {
	touched := c.own + 1 // the event being recorded
	changed := false
	if pruned && !c.pruned {
		c.pruned, changed = true, true
	}
	// The remote owner entry is out of key order; merge it on its own.
	rest := remote[1:]
	if c.mergeOne(remote[0], touched) {
		changed = true
	}
	out := c.spare[:0]
	i, j := 0, 0
	for i < len(c.others) || j < len(rest) {
		switch {
		case j == len(rest) || (i < len(c.others) && c.others[i].key < rest[j].Key):
			out = append(out, c.others[i])
			i++
		case i == len(c.others) || rest[j].Key < c.others[i].key:
			if rest[j].Key != c.key {
				out = append(out, slot{key: rest[j].Key, counter: rest[j].Counter, touched: touched})
				changed = true
			}
			j++
		default: // equal keys
			s := c.others[i]
			if rest[j].Counter > s.counter {
				s.counter, s.touched = rest[j].Counter, touched
				changed = true
			}
			out = append(out, s)
			i++
			j++
		}
	}
	c.spare, c.others = c.others[:0], out
	if len(c.others) > c.max-1 {
		c.pruneLocked()
		changed = true
	}
	if changed {
		c.tailOK = false
	}
}

// mergeOne merges a single entry into the sorted others.
func (c *Clock) mergeOne(e Entry, touched uint64) bool {
	if e.Key == c.key {
		// Our own entry is authoritative; a larger remote value can only be
		// forged and is ignored.
		return false
	}
	lo, hi := 0, len(c.others)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if c.others[m].key < e.Key {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(c.others) && c.others[lo].key == e.Key {
		if e.Counter > c.others[lo].counter {
			c.others[lo].counter, c.others[lo].touched = e.Counter, touched
			return true
		}
		return false
	}
	c.others = append(c.others, slot{})
	copy(c.others[lo+1:], c.others[lo:])
	c.others[lo] = slot{key: e.Key, counter: e.Counter, touched: touched}
	return true
}

// pruneLocked drops the least recently advanced entries (ties: smaller
// counter, then smaller key) until the vector fits, and marks it pruned.
func (c *Clock) pruneLocked() {
	drop := len(c.others) - (c.max - 1)
	if drop <= 0 {
		return
	}
	// Rank a copy by recency; the drop-th smallest is the threshold, and the
	// order is total (keys are unique), so "at or below it" is exactly the
	// victims. The sort runs on a stack array: no allocation.
	var buf [2 * MaxEntries]slot
	ranked := buf[:copy(buf[:], c.others)]
	// Insertion sort: at most 63 entries, no calls through a comparator.
	for i := 1; i < len(ranked); i++ {
		x := ranked[i]
		j := i
		for ; j > 0 && staler(x, ranked[j-1]) < 0; j-- {
			ranked[j] = ranked[j-1]
		}
		ranked[j] = x
	}
	limit := ranked[drop-1]
	kept := c.others[:0]
	for _, s := range c.others {
		if staler(s, limit) > 0 {
			kept = append(kept, s)
		}
	}
	c.others = kept
	c.pruned = true
}

// staler orders slots from least to most recently advanced.
func staler(a, b slot) int {
	switch {
	case a.touched != b.touched:
		return cmp.Compare(a.touched, b.touched)
	case a.counter != b.counter:
		return cmp.Compare(a.counter, b.counter)
	default:
		return cmp.Compare(a.key, b.key)
	}
}

// SnapshotEntry is one vector entry in a Snapshot.
type SnapshotEntry struct {
	Key     string `json:"key"`
	Counter uint64 `json:"counter"`
}

// Snapshot is the state served by the admin endpoint GET /clock.
type Snapshot struct {
	NodeID      string `json:"node_id"`
	Incarnation uint64 `json:"incarnation"`
	// Key is this incarnation's vector key.
	Key string `json:"key"`
	// Lamport is the last Lamport value handed out.
	Lamport uint64 `json:"lamport"`
	// LamportReserved is the durable high-water mark (0 without a data dir).
	LamportReserved uint64 `json:"lamport_reserved"`
	// Vector is the current vector clock as it would be sent (without the
	// tick a send adds).
	Vector     string          `json:"vclock"`
	Entries    []SnapshotEntry `json:"entries"`
	Pruned     bool            `json:"pruned"`
	MaxEntries int             `json:"max_entries"`
}

// Snapshot returns the current state without advancing the clock.
func (c *Clock) Snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := Vector{Entries: make([]Entry, 0, len(c.others)+1), Pruned: c.pruned}
	snap := Snapshot{
		NodeID:          c.nodeID,
		Incarnation:     c.incarnation,
		Key:             c.keyStr,
		Lamport:         c.lamport.Now(),
		LamportReserved: c.lamport.Reserved(),
		Pruned:          c.pruned,
		MaxEntries:      c.max,
	}
	if c.own > 0 {
		v.Entries = append(v.Entries, Entry{Key: c.key, Counter: c.own})
	}
	for _, s := range c.others {
		v.Entries = append(v.Entries, Entry{Key: s.key, Counter: s.counter})
	}
	for _, e := range v.Entries {
		snap.Entries = append(snap.Entries, SnapshotEntry{Key: e.Key.String(), Counter: e.Counter})
	}
	if len(v.Entries) > 0 {
		snap.Vector = v.String()
	}
	return snap
}
