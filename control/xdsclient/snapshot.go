package xdsclient

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Snapshot is one complete, consistent set of xDS resources, all received
// at the same version, decoded and validated (protoc-gen-validate rules).
// It is handed to Apply and must be treated as read-only: the client keeps
// it as the last applied state.
type Snapshot struct {
	// Version is the version_info shared by every type of the snapshot.
	Version string
	// Versions is the version_info of each type; under the contract they
	// all equal Version.
	Versions Versions

	Listeners        map[string]*listenerv3.Listener
	Routes           map[string]*routev3.RouteConfiguration
	Clusters         map[string]*clusterv3.Cluster
	Endpoints        map[string]*endpointv3.ClusterLoadAssignment // by cluster_name
	ExtensionConfigs map[string]*corev3.TypedExtensionConfig
}

// Versions holds the version_info of each xDS type.
type Versions struct {
	Listener, Route, Cluster, Endpoint, ExtensionConfig string
}

// kind is one of the five subscribed xDS types.
type kind int

const (
	kindCluster kind = iota
	kindEndpoint
	kindListener
	kindRoute
	kindExtension
	numKinds
)

// kindInfo describes how a kind is decoded. Subscriptions are sent in kind
// order: clusters and endpoints before listeners and routes, as Envoy warms.
var kindInfo = [numKinds]struct {
	typeURL string
	short   string
	newMsg  func() proto.Message
	name    func(proto.Message) string
}{
	kindCluster: {resourcev3.ClusterType, "cluster",
		func() proto.Message { return new(clusterv3.Cluster) },
		func(m proto.Message) string { return m.(*clusterv3.Cluster).GetName() }},
	kindEndpoint: {resourcev3.EndpointType, "cluster_load_assignment",
		func() proto.Message { return new(endpointv3.ClusterLoadAssignment) },
		func(m proto.Message) string { return m.(*endpointv3.ClusterLoadAssignment).GetClusterName() }},
	kindListener: {resourcev3.ListenerType, "listener",
		func() proto.Message { return new(listenerv3.Listener) },
		func(m proto.Message) string { return m.(*listenerv3.Listener).GetName() }},
	kindRoute: {resourcev3.RouteType, "route_configuration",
		func() proto.Message { return new(routev3.RouteConfiguration) },
		func(m proto.Message) string { return m.(*routev3.RouteConfiguration).GetName() }},
	kindExtension: {resourcev3.ExtensionConfigType, "extension_config",
		func() proto.Message { return new(corev3.TypedExtensionConfig) },
		func(m proto.Message) string { return m.(*corev3.TypedExtensionConfig).GetName() }},
}

// TypeURLs lists the type URLs the client subscribes to, in request order.
func TypeURLs() []string {
	out := make([]string, numKinds)
	for k := range numKinds {
		out[k] = kindInfo[k].typeURL
	}
	return out
}

func kindOf(typeURL string) (kind, bool) {
	for k := range numKinds {
		if kindInfo[k].typeURL == typeURL {
			return k, true
		}
	}
	return 0, false
}

type validator interface{ ValidateAll() error }

// decodeResources unmarshals and validates the resources of one response.
// Any bad resource fails the whole response, as SotW requires.
func decodeResources(k kind, typeURL string, anys []*anypb.Any) (map[string]proto.Message, error) {
	info := kindInfo[k]
	out := make(map[string]proto.Message, len(anys))
	for i, a := range anys {
		if a.GetTypeUrl() != typeURL {
			return nil, fmt.Errorf("resources[%d]: type %q in a %s response", i, a.GetTypeUrl(), info.short)
		}
		m := info.newMsg()
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("resources[%d]: decoding %s: %w", i, info.short, err)
		}
		name := info.name(m)
		if name == "" {
			return nil, fmt.Errorf("resources[%d]: %s without a name", i, info.short)
		}
		if err := m.(validator).ValidateAll(); err != nil {
			return nil, fmt.Errorf("%s %q: %w", info.short, name, err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s %q: listed twice", info.short, name)
		}
		if k == kindListener {
			if _, err := listenerRouteNames(m.(*listenerv3.Listener)); err != nil {
				return nil, fmt.Errorf("listener %q: %w", name, err)
			}
		}
		out[name] = m
	}
	return out, nil
}

// newSnapshot assembles a Snapshot from decoded resources of each kind.
func newSnapshot(version string, versions [numKinds]string, res [numKinds]map[string]proto.Message) *Snapshot {
	s := &Snapshot{
		Version: version,
		Versions: Versions{
			Listener: versions[kindListener], Route: versions[kindRoute], Cluster: versions[kindCluster],
			Endpoint: versions[kindEndpoint], ExtensionConfig: versions[kindExtension],
		},
		Listeners:        typedMap[*listenerv3.Listener](res[kindListener]),
		Routes:           typedMap[*routev3.RouteConfiguration](res[kindRoute]),
		Clusters:         typedMap[*clusterv3.Cluster](res[kindCluster]),
		Endpoints:        typedMap[*endpointv3.ClusterLoadAssignment](res[kindEndpoint]),
		ExtensionConfigs: typedMap[*corev3.TypedExtensionConfig](res[kindExtension]),
	}
	return s
}

// SnapshotFromResources decodes and validates resources, keyed by type URL
// (resourcev3.ClusterType, …), as if each type had arrived in one response
// at version: the way a sidecar would see the control plane's output. A
// type that is absent is empty; a type URL the client does not subscribe
// to, a resource of the wrong type, a resource that fails its
// protoc-gen-validate rules or a duplicate name is an error. The result is
// not checked for consistency: call Consistent, then BuildModel.
func SnapshotFromResources(version string, resources map[string][]*anypb.Any) (*Snapshot, error) {
	for typeURL := range resources {
		if _, ok := kindOf(typeURL); !ok {
			return nil, fmt.Errorf("type %q is not one of the subscribed types %v", typeURL, TypeURLs())
		}
	}
	var versions [numKinds]string
	var decoded [numKinds]map[string]proto.Message
	for k := range numKinds {
		typeURL := kindInfo[k].typeURL
		res, err := decodeResources(k, typeURL, resources[typeURL])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kindInfo[k].short, err)
		}
		versions[k], decoded[k] = version, res
	}
	return newSnapshot(version, versions, decoded), nil
}

func typedMap[T proto.Message](in map[string]proto.Message) map[string]T {
	out := make(map[string]T, len(in))
	for name, m := range in {
		out[name] = m.(T)
	}
	return out
}

// ErrIncomplete is wrapped by Consistent when a reference is not yet
// satisfied; the client waits for more responses instead of NACKing.
var ErrIncomplete = errors.New("incomplete snapshot")

// Consistent reports whether every EDS cluster has its
// ClusterLoadAssignment and every listener's RDS route configuration is
// present. The error wraps ErrIncomplete and names what is missing.
func (s *Snapshot) Consistent() error {
	var missing []string
	for _, name := range sortedKeys(s.Clusters) {
		c := s.Clusters[name]
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		cla := edsServiceName(c)
		if _, ok := s.Endpoints[cla]; !ok {
			missing = append(missing, fmt.Sprintf("cluster %q waits for cluster_load_assignment %q", name, cla))
		}
	}
	for _, name := range sortedKeys(s.Listeners) {
		routes, err := listenerRouteNames(s.Listeners[name])
		if err != nil {
			missing = append(missing, fmt.Sprintf("listener %q: %v", name, err))
			continue
		}
		for _, r := range routes {
			if _, ok := s.Routes[r]; !ok {
				missing = append(missing, fmt.Sprintf("listener %q waits for route_configuration %q", name, r))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrIncomplete, strings.Join(missing, "; "))
	}
	return nil
}

// edsServiceName is the ClusterLoadAssignment name of an EDS cluster.
func edsServiceName(c *clusterv3.Cluster) string {
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return c.GetName()
}

// listenerRouteNames returns the RDS route configuration names a listener
// references through its api_listener and its filter chains.
func listenerRouteNames(l *listenerv3.Listener) ([]string, error) {
	set := map[string]bool{}
	add := func(where string, a *anypb.Any) error {
		hcm := new(hcmv3.HttpConnectionManager)
		if err := a.UnmarshalTo(hcm); err != nil {
			return fmt.Errorf("%s: want an HttpConnectionManager: %w", where, err)
		}
		if n := hcm.GetRds().GetRouteConfigName(); n != "" {
			set[n] = true
		}
		return nil
	}
	if api := l.GetApiListener().GetApiListener(); api != nil {
		if err := add("api_listener", api); err != nil {
			return nil, err
		}
	}
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(append([]*listenerv3.FilterChain(nil), chains...), dc)
	}
	for i, fc := range chains {
		for j, f := range fc.GetFilters() {
			if tc := f.GetTypedConfig(); tc != nil && tc.MessageIs(new(hcmv3.HttpConnectionManager)) {
				if err := add(fmt.Sprintf("filter_chains[%d].filters[%d]", i, j), tc); err != nil {
					return nil, err
				}
			}
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}
