// Package fleet is the control plane's live view of the sidecars connected
// to the Identity service's WatchBundle stream: who each one is, which
// trust bundle it last acknowledged, and which root its current leaf
// chains to. A root rotation reads it to know when every connected sidecar
// trusts a new root (control/ca/rotation).
//
// Entries exist while their stream does; nothing is persisted. After a
// control-plane restart the view fills again as sidecars reconnect.
package fleet

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// Sidecar is one connected stream.
type Sidecar struct {
	// ID is the SPIFFE ID the sidecar authenticated with.
	ID string `json:"id"`
	// Addr is its address as the control plane sees it.
	Addr string `json:"addr"`
	// ConnectedAt is when the stream opened.
	ConnectedAt time.Time `json:"connectedAt"`
	// Bundle is the hex SHA-256 of the trust bundle it last acknowledged;
	// "" before its first acknowledgement.
	Bundle string `json:"bundle,omitempty"`
	// AckedAt is when it last acknowledged.
	AckedAt time.Time `json:"ackedAt,omitzero"`
	// LeafSerial is its current leaf's serial number (hex); LeafRoot the
	// fingerprint of the root that leaf chains to ("" when unknown);
	// LeafNotAfter its expiry.
	LeafSerial   string    `json:"leafSerial,omitempty"`
	LeafRoot     string    `json:"leafRoot,omitempty"`
	LeafNotAfter time.Time `json:"leafNotAfter,omitzero"`
}

// Registry holds the connected sidecars. It is safe for concurrent use;
// its methods never block on anything but a short mutex.
type Registry struct {
	mu    sync.Mutex
	next  uint64
	conns map[uint64]*Sidecar
}

// New returns an empty registry.
func New() *Registry { return &Registry{conns: map[uint64]*Sidecar{}} }

// Connect records a new stream; the caller must Close the returned Conn
// when the stream ends.
func (r *Registry) Connect(id, addr string, at time.Time) *Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.conns[r.next] = &Sidecar{ID: id, Addr: addr, ConnectedAt: at.UTC()}
	return &Conn{r: r, key: r.next}
}

// Snapshot returns every connected sidecar, by ID then address.
func (r *Registry) Snapshot() []Sidecar {
	r.mu.Lock()
	out := make([]Sidecar, 0, len(r.conns))
	for _, s := range r.conns {
		out = append(out, *s)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Sidecar) int {
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		if c := strings.Compare(a.Addr, b.Addr); c != 0 {
			return c
		}
		return a.ConnectedAt.Compare(b.ConnectedAt)
	})
	return out
}

// Conn is one stream's entry.
type Conn struct {
	r   *Registry
	key uint64
}

// Ack records what the sidecar acknowledged: the bundle digest (hex) and,
// when known, its current leaf.
func (c *Conn) Ack(bundle, leafSerial, leafRoot string, leafNotAfter, at time.Time) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	s, ok := c.r.conns[c.key]
	if !ok {
		return
	}
	s.Bundle, s.AckedAt = bundle, at.UTC()
	if leafSerial != "" {
		s.LeafSerial, s.LeafRoot, s.LeafNotAfter = leafSerial, leafRoot, leafNotAfter.UTC()
	}
}

// Close removes the entry. It is idempotent.
func (c *Conn) Close() {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	delete(c.r.conns, c.key)
}
