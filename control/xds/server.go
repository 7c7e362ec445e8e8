// Package xds serves the translated policy to sidecars over gRPC ADS
// (state-of-the-world and delta) with go-control-plane's snapshot cache,
// and tracks what every proxy runs.
//
// Goroutines:
//   - Run owns the build loop: Trigger marks the mesh dirty; once changes
//     have been quiet for Debounce (default 100ms), and never later than
//     DebounceMax (default 1s) after the first, it builds one generation
//     (translate, then translate.Validate) and fans it out to every
//     connected node through at most FanOut concurrent SetSnapshot calls.
//     An invalid build is never served; the error is kept for status.
//   - go-control-plane's stream goroutines call the callbacks in
//     callbacks.go synchronously; they update node state under the node's
//     lock and never block on the build loop.
//
// NACKs (LIBRARIES.md §1.5): go-control-plane ignores error_detail and
// would resend a rejected version at once, in a loop. Here a NACK of the
// version a node currently has makes the callback, before the server
// creates the next watch, re-set that node's snapshot to the last
// generation it accepted under a new version ("…-rb<n>"), so the rejected
// version is never sent again. The node's status shows NACKED with the
// error; it gets the next generation when policy or membership change.
//
// The cache runs with ads=false: in ADS mode go-control-plane answers a
// named request only when the names cover every resource of the type, and
// a proxyless gRPC client naming one service would hang (§1.5).
package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"

	"github.com/causeway-mesh/causeway/control/translate"
)

// BuildFunc builds a complete resource set. services are the services of
// the connected nodes (xDS Node.Cluster), sorted. It is called from the
// build loop only.
type BuildFunc func(services []string) (*translate.Output, error)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Build produces each generation (required).
	Build BuildFunc
	// Debounce is how long changes must be quiet before a build; default
	// 100ms.
	Debounce time.Duration
	// DebounceMax bounds how long a build waits after the first change;
	// default 1s.
	DebounceMax time.Duration
	// FanOut is how many nodes are updated concurrently; default 16.
	FanOut int
	// Logger; default discards.
	Logger *slog.Logger
	// OnPush, if set, is called from the build loop after a generation
	// has been handed to every node (tests and metrics).
	OnPush func(version string, nodes int)
	// Authorize, if set, decides whether the peer of a stream (its
	// context: TLS peer, metadata) may fetch the configuration of node;
	// an error closes the stream. Called once per stream.
	Authorize func(ctx context.Context, node *corev3.Node) error
}

// generation is one built, validated resource set, shared by every node
// that runs it.
type generation struct {
	num     uint64
	version string
	out     *translate.Output
	snap    *cachev3.Snapshot
}

// Server is the xDS server and the proxies' status.
type Server struct {
	cfg       Config
	streamCtx sync.Map // stream id → context, until Authorize ran
	cache     cachev3.SnapshotCache
	ads       *adsService
	bootID    string

	dirty chan struct{}

	mu        sync.Mutex // guards nodes, streams, latest, buildErr
	nodes     map[string]*node
	streams   map[int64]*stream
	latest    *generation
	buildErr  error
	buildTime time.Time

	genCounter atomic.Uint64
}

// New creates a Server; Register it on a gRPC server and Run it.
func New(cfg Config) (*Server, error) {
	if cfg.Build == nil {
		return nil, errors.New("xds: Config.Build is required")
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.DebounceMax <= 0 {
		cfg.DebounceMax = time.Second
	}
	if cfg.FanOut <= 0 {
		cfg.FanOut = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		cache:   cachev3.NewSnapshotCache(false, cachev3.IDHash{}, logBridge{cfg.Logger}),
		bootID:  strconv.FormatInt(time.Now().UnixMilli(), 36),
		dirty:   make(chan struct{}, 1),
		nodes:   map[string]*node{},
		streams: map[int64]*stream{},
	}
	s.ads = newADS(s)
	return s, nil
}

// Register adds the aggregated discovery service (SotW and delta) to g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s.ads)
}

// Trigger asks for a rebuild; bursts are coalesced by the debounce. It
// never blocks.
func (s *Server) Trigger() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// Run builds the first generation at once (unless Rebuild already did),
// then rebuilds after each debounced burst of Triggers, until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.latestGen() == nil {
		s.rebuild()
	}
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	var first time.Time
	pending := false
	for {
		select {
		case <-ctx.Done():
			quiet.Stop()
			return nil
		case <-s.dirty:
			now := time.Now()
			if !pending {
				pending, first = true, now
			}
			quiet.Reset(max(min(s.cfg.Debounce, s.cfg.DebounceMax-now.Sub(first)), 0))
		case <-quiet.C:
			if pending {
				pending = false
				s.rebuild()
			}
		}
	}
}

// Rebuild builds and pushes a generation now, bypassing the debounce.
func (s *Server) Rebuild() error {
	s.rebuild()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buildErr
}

func (s *Server) rebuild() {
	out, err := s.cfg.Build(s.connectedServices())
	if err == nil {
		err = translate.Validate(out)
	}
	var gen *generation
	if err == nil {
		gen, err = s.newGeneration(out, "")
	}
	s.mu.Lock()
	s.buildErr, s.buildTime = err, time.Now()
	if err == nil {
		s.latest = gen
	}
	nodes := make([]*node, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	if err != nil {
		s.cfg.Logger.Error("xds build failed; proxies keep their current configuration", "error", err)
		return
	}
	for _, w := range out.Warnings {
		s.cfg.Logger.Warn("xds build", "warning", w)
	}
	s.fanOut(gen, nodes)
	if s.cfg.OnPush != nil {
		s.cfg.OnPush(gen.version, len(nodes))
	}
}

func (s *Server) newGeneration(out *translate.Output, suffix string) (*generation, error) {
	num := s.genCounter.Add(1)
	version := s.bootID + "-" + strconv.FormatUint(num, 10) + suffix
	snap, err := cachev3.NewSnapshot(version, out.Resources())
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot %s is not consistent: %w", version, err)
	}
	// Delta hashes every resource once here, not once per node (and not
	// concurrently from several nodes' goroutines).
	if err := snap.ConstructVersionMap(); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", version, err)
	}
	return &generation{num: num, version: version, out: out, snap: snap}, nil
}

// fanOut sets gen on every connected node, at most FanOut at a time.
func (s *Server) fanOut(gen *generation, nodes []*node) {
	sem := make(chan struct{}, s.cfg.FanOut)
	var wg sync.WaitGroup
	for _, n := range nodes {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			n.mu.Lock()
			defer n.mu.Unlock()
			if n.streams > 0 {
				s.setLocked(n, gen)
			}
		}()
	}
	wg.Wait()
}

// setLocked gives n the generation gen (n.mu held). A node that rejected
// gen is not sent it again.
func (s *Server) setLocked(n *node, gen *generation) {
	if n.current == gen || (n.rejected != nil && n.rejected.num >= gen.num) {
		return
	}
	if err := s.cache.SetSnapshot(context.Background(), n.id, gen.snap); err != nil {
		s.cfg.Logger.Error("xds: set snapshot", "node", n.id, "error", err)
		return
	}
	n.setCurrent(gen)
}

// connectedServices lists the services of connected nodes.
func (s *Server) connectedServices() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, n := range s.nodes {
		n.mu.Lock()
		if n.streams > 0 && n.service != "" {
			out = append(out, n.service)
		}
		n.mu.Unlock()
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// BuildStatus is the state of the latest build.
type BuildStatus struct {
	Version string    `json:"version,omitempty"`
	Error   string    `json:"error,omitempty"`
	At      time.Time `json:"at"`
}

// Build reports the latest generation and the latest build's error.
func (s *Server) Build() BuildStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := BuildStatus{At: s.buildTime}
	if s.latest != nil {
		b.Version = s.latest.version
	}
	if s.buildErr != nil {
		b.Error = s.buildErr.Error()
	}
	return b
}

// NodeConfig is what one node has been given: its snapshot version and
// the resources, keyed by type URL.
type NodeConfig struct {
	Node      string
	Version   string
	Resources map[string][]types.Resource
}

// ProxyConfig returns the configuration currently set for node.
func (s *Server) ProxyConfig(nodeID string) (*NodeConfig, bool) {
	snap, err := s.cache.GetSnapshot(nodeID)
	if err != nil {
		return nil, false
	}
	nc := &NodeConfig{Node: nodeID, Resources: map[string][]types.Resource{}}
	for _, typ := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ExtensionConfigType} {
		nc.Version = snap.GetVersion(typ)
		for _, name := range sortedNames(snap.GetResources(typ)) {
			nc.Resources[typ] = append(nc.Resources[typ], snap.GetResources(typ)[name])
		}
	}
	return nc, true
}

func sortedNames(m map[string]types.Resource) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// logBridge sends go-control-plane's log lines to slog at debug level
// (warnings at warn).
type logBridge struct{ l *slog.Logger }

func (b logBridge) Debugf(f string, a ...any) { b.l.Debug(fmt.Sprintf(f, a...), "component", "xds") }
func (b logBridge) Infof(f string, a ...any)  { b.l.Debug(fmt.Sprintf(f, a...), "component", "xds") }
func (b logBridge) Warnf(f string, a ...any)  { b.l.Warn(fmt.Sprintf(f, a...), "component", "xds") }
func (b logBridge) Errorf(f string, a ...any) { b.l.Error(fmt.Sprintf(f, a...), "component", "xds") }
