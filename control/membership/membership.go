// Package membership turns the gossip pool's member table into the
// control plane's view of the mesh: every instance of every service with
// the health the control plane's EDS reports for it.
//
// Which view wins: a sidecar's own gossip view decides endpoint liveness
// on its data path. The control plane's EDS is a starting point (and the
// whole story for proxyless gRPC clients); it can lag a sidecar's view by
// the push debounce plus the gossip propagation time.
package membership

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/causeway-mesh/causeway/discovery"
)

// Health is an instance's health as EDS reports it.
type Health string

// Health values, mapped from gossip state:
//
//	alive, ready, not leaving -> HEALTHY
//	alive, leaving or not ready -> DRAINING
//	failed (crashed or unreachable, not yet reaped) -> UNHEALTHY
//
// Members that left, members with unreadable metadata and watch-only
// members (no service, such as the control plane itself) are not
// instances.
const (
	Healthy   Health = "HEALTHY"
	Draining  Health = "DRAINING"
	Unhealthy Health = "UNHEALTHY"
)

// Instance is one instance of a mesh service.
type Instance struct {
	Node    string `json:"node"`
	Service string `json:"service"`
	// Addr is the instance's sidecar inbound HOST:PORT.
	Addr     string `json:"address"`
	Protocol string `json:"protocol,omitempty"`
	Zone     string `json:"zone,omitempty"`
	Version  string `json:"version,omitempty"`
	// Weight is the relative share of traffic, at least 1.
	Weight uint32 `json:"weight"`
	Health Health `json:"health"`
}

// FromMembers maps gossip members to instances, sorted by service, then
// address, then node.
func FromMembers(members []discovery.Member) []Instance {
	var out []Instance
	for _, m := range members {
		if m.MetaErr != "" || m.Meta.Service == "" || m.Meta.Inbound == "" {
			continue
		}
		var h Health
		switch {
		case m.State == discovery.StateFailed:
			h = Unhealthy
		case m.State != discovery.StateAlive:
			continue
		case m.Meta.Leaving || !m.Meta.Ready:
			h = Draining
		default:
			h = Healthy
		}
		out = append(out, Instance{
			Node: m.Name, Service: m.Meta.Service, Addr: m.Meta.Inbound, Protocol: m.Meta.Protocol,
			Zone: m.Meta.Zone, Version: m.Meta.Version, Weight: max(m.Meta.Weight, 1), Health: h,
		})
	}
	Sort(out)
	return out
}

// Sort orders instances by service, address and node.
func Sort(is []Instance) {
	slices.SortFunc(is, func(a, b Instance) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Addr, b.Addr), cmp.Compare(a.Node, b.Node))
	})
}

// Source is where the control plane learns the mesh's instances.
type Source interface {
	// Instances returns the current instances, sorted (see Sort). The
	// caller must not modify the slice.
	Instances() []Instance
	// Members returns the raw member table (for the API).
	Members() []discovery.Member
}

// Watcher is a watch-only gossip member: it joins the pool with empty
// service metadata, which discovery treats as a non-serving member
// (never routed to), and publishes the instances it sees.
type Watcher struct {
	agent    *discovery.Agent
	current  atomic.Pointer[[]Instance]
	mu       sync.Mutex
	onChange func()
}

// WatcherConfig configures NewWatcher.
type WatcherConfig struct {
	NodeName string   // the control plane's member name
	Bind     string   // gossip HOST:PORT
	Join     []string // seeds
	Label    string   // gossip label (must match the sidecars')
	Keys     [][]byte // gossip keyring, if the pool is encrypted
	Logger   *slog.Logger
	// OnChange is called, from the gossip agent's goroutine, after the
	// instance set changed. It must not block.
	OnChange func()
}

// NewWatcher binds the gossip listener; Run joins the pool.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	w := &Watcher{onChange: cfg.OnChange}
	empty := []Instance{}
	w.current.Store(&empty)
	agent, err := discovery.New(discovery.Config{
		NodeName: cfg.NodeName, Bind: cfg.Bind, Join: cfg.Join, Label: cfg.Label, Keys: cfg.Keys,
		Logger: cfg.Logger,
		OnChange: func(*discovery.Snapshot) {
			w.refresh()
		},
	}, discovery.Meta{})
	if err != nil {
		return nil, fmt.Errorf("gossip watcher: %w", err)
	}
	w.mu.Lock()
	w.agent = agent
	w.mu.Unlock()
	return w, nil
}

func (w *Watcher) refresh() {
	w.mu.Lock()
	agent := w.agent
	w.mu.Unlock()
	if agent == nil {
		return
	}
	next := FromMembers(agent.Members())
	if prev := *w.current.Load(); slices.Equal(prev, next) {
		return
	}
	w.current.Store(&next)
	if w.onChange != nil {
		w.onChange()
	}
}

// Run joins the pool and watches it until ctx ends, then leaves.
func (w *Watcher) Run(ctx context.Context) error { return w.agent.Run(ctx) }

// Addr is the gossip address others reach the watcher on.
func (w *Watcher) Addr() string { return w.agent.Addr() }

// Joined reports whether the start-up join succeeded.
func (w *Watcher) Joined() bool { return w.agent.Joined() }

// Instances implements Source.
func (w *Watcher) Instances() []Instance { return *w.current.Load() }

// Members implements Source.
func (w *Watcher) Members() []discovery.Member { return w.agent.Members() }

// Static is a fixed Source, for a control plane run without gossip
// (instances then come only from what is given here) and for tests.
type Static struct {
	mu        sync.Mutex
	instances []Instance
}

// NewStatic returns a Source holding instances.
func NewStatic(instances []Instance) *Static {
	s := &Static{}
	s.Set(instances)
	return s
}

// Set replaces the instances.
func (s *Static) Set(instances []Instance) {
	c := slices.Clone(instances)
	Sort(c)
	s.mu.Lock()
	s.instances = c
	s.mu.Unlock()
}

// Instances implements Source.
func (s *Static) Instances() []Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.instances
}

// Members implements Source; a static source has no gossip members.
func (s *Static) Members() []discovery.Member { return nil }
