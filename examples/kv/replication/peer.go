package replication

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

// peer is one peer's queue and delivery figures. Lock order: the store's
// lock, then mu (enqueue runs under the store's lock); nothing takes the
// store's lock while holding mu.
type peer struct {
	addr  string
	limit int
	wake  chan struct{} // buffered 1: something to send
	log   *slog.Logger

	mu         sync.Mutex
	queue      []kvstore.Write // FIFO, at most limit
	needSync   bool            // the queue overflowed: send a snapshot next
	taking     bool            // the sender is taking that snapshot
	syncing    []kvstore.Write // the rest of the snapshot being sent
	inFlight   bool            // the sender holds a write it has not delivered
	failing    bool            // the last attempt failed
	nDelivered uint64
	nDups      uint64
	nFailures  uint64
	nRejects   uint64
	nSyncs     uint64
	lastErr    string
	lastErrAt  time.Time
	lastOKAt   time.Time
}

// enqueue queues w, or marks the peer for a full sync when the queue is
// full.
func (p *peer) enqueue(w kvstore.Write) {
	p.mu.Lock()
	switch {
	case p.needSync:
		// The snapshot the sender takes next holds w or a write that
		// outranks it.
	case len(p.queue) >= p.limit:
		p.queue, p.syncing, p.needSync = nil, nil, true
	default:
		p.queue = append(p.queue, w)
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// next returns the next write to send, waiting until there is one; false
// when ctx ended first. A due full sync comes first: the snapshot is taken
// here, after the mark was cleared, so it holds every write whose enqueue
// saw the mark.
func (p *peer) next(ctx context.Context, store *kvstore.Store) (kvstore.Write, bool) {
	for {
		p.mu.Lock()
		p.inFlight = false
		if p.needSync {
			p.needSync, p.syncing, p.taking = false, nil, true
			p.nSyncs++
			p.mu.Unlock()
			snap := store.Snapshot() // not under mu: the store's lock comes first
			p.log.Warn("replication queue overflowed: sending the peer the current write of every key instead",
				"peer", p.addr, "limit", p.limit, "keys", len(snap))
			p.mu.Lock()
			p.taking = false
			if !p.needSync { // else overflowed again meanwhile: take a new one
				p.syncing = snap
			}
			p.mu.Unlock()
			continue
		}
		var w kvstore.Write
		switch {
		case len(p.syncing) > 0:
			w, p.syncing = p.syncing[0], p.syncing[1:]
		case len(p.queue) > 0:
			w, p.queue = p.queue[0], p.queue[1:]
			if len(p.queue) == 0 {
				p.queue = nil // let the backing array go
			}
		default:
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return kvstore.Write{}, false
			case <-p.wake:
			}
			continue
		}
		p.inFlight = true
		p.mu.Unlock()
		return w, true
	}
}

// delivered counts an acknowledged write; it reports whether the peer was
// failing until now.
func (p *peer) delivered(duplicate bool) (recovered bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nDelivered++
	p.inFlight = false
	if duplicate {
		p.nDups++
	}
	p.lastOKAt = time.Now()
	recovered, p.failing = p.failing, false
	return recovered
}

// failed records a failed attempt; it reports whether it is the first
// since the last delivery.
func (p *peer) failed(err error) (first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nFailures++
	p.lastErr, p.lastErrAt = err.Error(), time.Now()
	first, p.failing = !p.failing, true
	return first
}

// rejected records a write the peer can never apply.
func (p *peer) rejected(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nRejects++
	p.inFlight = false
	p.lastErr, p.lastErrAt = err.Error(), time.Now()
}

// Status is GET /replication.
type Status struct {
	// Node is this replica; Service and Mesh how it reaches its peers.
	Node    string `json:"node"`
	Service string `json:"service,omitempty"`
	Mesh    string `json:"mesh,omitempty"`
	// QueueLimit is the most writes queued per peer.
	QueueLimit int          `json:"queueLimit,omitempty"`
	Peers      []PeerStatus `json:"peers"`
}

// Idle reports whether nothing is waiting to be sent to any peer.
func (s Status) Idle() bool {
	for _, p := range s.Peers {
		if !p.Idle() {
			return false
		}
	}
	return true
}

// PeerStatus is one peer's queue and delivery figures.
type PeerStatus struct {
	// Peer is the peer's mesh endpoint.
	Peer string `json:"peer"`
	// Queued counts the writes waiting for this peer: the queue, the rest
	// of a full sync in progress and the write in flight.
	Queued int `json:"queued"`
	// NeedsSync: the queue overflowed and a full sync is due (or its
	// snapshot is being taken).
	NeedsSync bool `json:"needsSync"`
	// Delivered counts acknowledged writes, Duplicates those of them the
	// peer already held; Failures counts failed attempts, Rejected writes
	// the peer refused for good (dropped); Syncs counts full syncs.
	Delivered  uint64 `json:"delivered"`
	Duplicates uint64 `json:"duplicates"`
	Failures   uint64 `json:"failures"`
	Rejected   uint64 `json:"rejected"`
	Syncs      uint64 `json:"syncs"`
	// LastError is the last failure or rejection, at LastErrorAt;
	// LastDeliveredAt is the last acknowledgement.
	LastError       string    `json:"lastError,omitempty"`
	LastErrorAt     time.Time `json:"lastErrorAt,omitzero"`
	LastDeliveredAt time.Time `json:"lastDeliveredAt,omitzero"`
}

// Idle reports whether nothing is waiting to be sent to the peer.
func (p PeerStatus) Idle() bool { return p.Queued == 0 && !p.NeedsSync }

func (p *peer) status() PeerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.queue) + len(p.syncing)
	if p.inFlight {
		n++
	}
	return PeerStatus{
		Peer: p.addr, Queued: n, NeedsSync: p.needSync || p.taking,
		Delivered: p.nDelivered, Duplicates: p.nDups, Failures: p.nFailures, Rejected: p.nRejects, Syncs: p.nSyncs,
		LastError: p.lastErr, LastErrorAt: p.lastErrAt, LastDeliveredAt: p.lastOKAt,
	}
}

// Status returns every peer's figures, in the order of Config.Peers.
func (r *Replicator) Status() Status {
	s := Status{Node: r.store.Node(), Service: r.cfg.Service, Mesh: r.cfg.Mesh, QueueLimit: r.cfg.QueueLimit,
		Peers: make([]PeerStatus, 0, len(r.peers))}
	for _, p := range r.peers {
		s.Peers = append(s.Peers, p.status())
	}
	return s
}

// StatusHandler serves GET /replication for r; a nil r (a replica
// without peers) answers with no peers. node names the replica in the
// x-kv-node header and, for a nil r, in the status.
func StatusHandler(r *Replicator, node string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := Status{Node: node, Peers: []PeerStatus{}}
		if r != nil {
			s = r.Status()
		}
		w.Header().Set(kvstore.NodeHeader, node)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	})
}
