package xds

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// SyncState is a proxy's configuration state.
type SyncState string

// Sync states.
const (
	// Synced: the proxy has ACKed the latest generation for every type it
	// was sent.
	Synced SyncState = "SYNCED"
	// Stale: the proxy runs an older generation (a push is in flight, it
	// is disconnected, or it was rolled back and nothing newer exists).
	Stale SyncState = "STALE"
	// Nacked: the proxy rejected the latest generation; Error says why.
	// It runs the last generation it accepted.
	Nacked SyncState = "NACKED"
)

// node is what the server knows about one xDS node id.
type node struct {
	mu       sync.Mutex
	id       string
	service  string
	streams  int
	lastSeen time.Time

	current *generation            // the generation set in the cache for this node
	version string                 // the version set (differs from current.version after a rollback)
	byVer   map[string]*generation // versions recently set on this node
	sent    map[string]string      // type URL -> last version sent
	acked   map[string]string      // type URL -> last version ACKed

	good, prevGood *generation // the newest generation ACKed, and the one before
	rejected       *generation // the newest generation NACKed
	nackErr        string
	nackType       string
	nackAt         time.Time
	rollbacks      int
}

func (n *node) setCurrent(g *generation) {
	n.current, n.version = g, g.version
	n.remember(g.version, g)
}

func (n *node) remember(version string, g *generation) {
	if n.byVer == nil {
		n.byVer = map[string]*generation{}
	}
	n.byVer[version] = g
	// Keep only versions that may still be ACKed or NACKed: the
	// current one and those of the last good generations.
	for v, old := range n.byVer {
		if v != n.version && old != n.good && old != n.prevGood && len(n.byVer) > 8 {
			delete(n.byVer, v)
		}
	}
}

// stream is one ADS stream.
type stream struct {
	node   *node
	nonces map[string]string // response nonce -> version (SotW) or system version (delta)
}

// onRequest runs on the stream's goroutine before the server creates the
// request's watch.
func (s *Server) onRequest(id int64, xnode *corev3.Node, typeURL, nonce, errMsg string, isNack bool) {
	st, n, isNew := s.streamFor(id, xnode)
	if n == nil {
		return // no node id yet: nothing to serve or track
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lastSeen = time.Now()
	if isNew {
		n.streams++
		if xnode.GetCluster() != "" && n.service != xnode.GetCluster() {
			n.service = xnode.GetCluster()
			defer s.Trigger() // a new service needs its resources
		}
		if n.current == nil || n.current != s.latestGen() {
			if g := s.latestGen(); g != nil {
				n.rejected = nil
				s.setLocked(n, g)
			}
		}
	}
	if nonce == "" {
		return // an initial request, not an ACK or NACK
	}
	version, ok := st.nonces[nonce]
	if !ok {
		return // a stale nonce; the server ignores the request too
	}
	delete(st.nonces, nonce)
	g := n.byVer[version]
	if !isNack {
		n.acked[typeURL] = version
		if g != nil && (n.rejected == nil || g.num > n.rejected.num) && (n.good == nil || g.num > n.good.num) {
			n.prevGood, n.good = n.good, g
		}
		return
	}
	n.nackErr, n.nackType, n.nackAt = errMsg, typeURL, time.Now()
	if g == nil || version != n.version {
		return // an older version; the node already has a newer one
	}
	n.rejected = g
	if n.good == g { // an ACK of another type promoted it before this NACK
		n.good, n.prevGood = n.prevGood, nil
	}
	s.rollbackLocked(n)
}

// rollbackLocked re-sets n to the last generation it accepted, under a
// new version, so the rejected version is not resent. A node that never
// accepted anything gets an empty snapshot.
func (s *Server) rollbackLocked(n *node) {
	n.rollbacks++
	target := n.good
	suffix := "-rb" + strconv.Itoa(n.rollbacks)
	var base uint64
	if target != nil {
		base = target.num
	}
	version := s.bootID + "-" + strconv.FormatUint(base, 10) + suffix
	res := emptyResources()
	if target != nil {
		res = target.out.Resources()
	}
	snap, err := newSnapshot(version, res)
	if err != nil {
		s.cfg.Logger.Error("xds: rollback snapshot", "node", n.id, "error", err)
		return
	}
	if err := s.cache.SetSnapshot(context.Background(), n.id, snap); err != nil {
		s.cfg.Logger.Error("xds: rollback", "node", n.id, "error", err)
		return
	}
	n.version = version
	n.remember(version, target)
	s.cfg.Logger.Warn("proxy rejected its configuration; rolled back to the last version it accepted",
		"node", n.id, "type", n.nackType, "error", n.nackErr, "rollback_version", version)
}

func (s *Server) onResponse(id int64, typeURL, nonce, version string) {
	s.mu.Lock()
	st := s.streams[id]
	s.mu.Unlock()
	if st == nil || st.node == nil {
		return
	}
	n := st.node
	n.mu.Lock()
	defer n.mu.Unlock()
	st.nonces[nonce] = version
	n.sent[typeURL] = version
	if len(st.nonces) > 64 { // unanswered nonces of a misbehaving client
		for k := range st.nonces {
			delete(st.nonces, k)
			if len(st.nonces) <= 32 {
				break
			}
		}
	}
}

// streamFor returns the stream's state and its node, creating both on
// the stream's first request with a node id.
func (s *Server) streamFor(id int64, xnode *corev3.Node) (*stream, *node, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	if st != nil && st.node != nil {
		return st, st.node, false
	}
	if xnode.GetId() == "" {
		return st, nil, false
	}
	n := s.nodes[xnode.GetId()]
	if n == nil {
		n = &node{id: xnode.GetId(), sent: map[string]string{}, acked: map[string]string{}}
		s.nodes[n.id] = n
	}
	if st == nil {
		st = &stream{nonces: map[string]string{}}
		s.streams[id] = st
	}
	st.node = n
	return st, n, true
}

func (s *Server) latestGen() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest
}

func (s *Server) closeStream(id int64) {
	s.streamCtx.Delete(id)
	s.mu.Lock()
	st := s.streams[id]
	delete(s.streams, id)
	s.mu.Unlock()
	if st == nil || st.node == nil {
		return
	}
	n := st.node
	n.mu.Lock()
	defer n.mu.Unlock()
	n.streams--
	n.lastSeen = time.Now()
	if n.streams == 0 {
		// Free the snapshot; a reconnect is given the latest generation.
		s.cache.ClearSnapshot(n.id)
		n.current, n.version = nil, ""
		clear(n.sent)
	}
}

// ProxyStatus is one proxy's state, as the API reports it.
type ProxyStatus struct {
	Node    string    `json:"node"`
	Service string    `json:"service,omitempty"`
	State   SyncState `json:"state"`
	// Version is the snapshot version the proxy runs: the one it ACKed
	// for every type it was sent ("" while it has ACKed nothing).
	Version string `json:"version,omitempty"`
	// DesiredVersion is the latest generation.
	DesiredVersion string            `json:"desiredVersion,omitempty"`
	Acked          map[string]string `json:"acked,omitempty"`
	Error          string            `json:"error,omitempty"`
	ErrorType      string            `json:"errorType,omitempty"`
	ErrorAt        *time.Time        `json:"errorAt,omitempty"`
	Connected      bool              `json:"connected"`
	Streams        int               `json:"streams"`
	LastSeen       time.Time         `json:"lastSeen"`
	Rollbacks      int               `json:"rollbacks,omitempty"`
}

// Proxies returns the status of every node seen since start, sorted by
// node id.
func (s *Server) Proxies() []ProxyStatus {
	s.mu.Lock()
	latest := s.latest
	nodes := make([]*node, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.status(latest))
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int {
		if a.Node < b.Node {
			return -1
		}
		if a.Node > b.Node {
			return 1
		}
		return 0
	})
	return out
}

// Proxy returns one node's status.
func (s *Server) Proxy(id string) (ProxyStatus, bool) {
	s.mu.Lock()
	n, latest := s.nodes[id], s.latest
	s.mu.Unlock()
	if n == nil {
		return ProxyStatus{}, false
	}
	return n.status(latest), true
}

func (n *node) status(latest *generation) ProxyStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	ps := ProxyStatus{
		Node: n.id, Service: n.service, Connected: n.streams > 0, Streams: n.streams, LastSeen: n.lastSeen,
		Rollbacks: n.rollbacks,
	}
	if len(n.acked) > 0 {
		ps.Acked = map[string]string{}
		for k, v := range n.acked {
			ps.Acked[k] = v
		}
	}
	if latest != nil {
		ps.DesiredVersion = latest.version
	}
	allAcked := len(n.sent) > 0
	for typ, v := range n.sent {
		if n.acked[typ] != v {
			allAcked = false
		}
	}
	if allAcked {
		ps.Version = n.version
	}
	switch {
	case n.rejected != nil && latest != nil && n.rejected.num >= latest.num:
		ps.State = Nacked
	case ps.Connected && allAcked && latest != nil && n.version == latest.version:
		ps.State = Synced
	default:
		ps.State = Stale
	}
	if n.nackErr != "" {
		ps.Error, ps.ErrorType = n.nackErr, n.nackType
		at := n.nackAt
		ps.ErrorAt = &at
	}
	return ps
}
