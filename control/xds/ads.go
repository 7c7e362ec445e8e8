package xds

import (
	"context"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	deltav3 "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
)

// adsService is the AggregatedDiscoveryService: go-control-plane's SotW
// and delta stream handlers on one gRPC service. (pkg/server/v3 would do
// the same but also pulls in the rate-limit service's module.)
type adsService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	sotw  sotwv3.Server
	delta deltav3.Server
}

func newADS(s *Server) *adsService {
	return &adsService{
		sotw:  sotwv3.NewServer(context.Background(), s.cache, sotwCallbacks{s}),
		delta: deltav3.NewServer(context.Background(), s.cache, deltaCallbacks{s}),
	}
}

func (a *adsService) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.sotw.StreamHandler(st, resourcev3.AnyType)
}

func (a *adsService) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.delta.DeltaStreamHandler(st, resourcev3.AnyType)
}

// The two handlers number their streams independently; delta stream ids
// are negated so both fit one table.
func deltaID(id int64) int64 { return -id }

type sotwCallbacks struct{ s *Server }

func (c sotwCallbacks) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	c.s.openStream(ctx, id)
	return nil
}
func (c sotwCallbacks) OnStreamClosed(id int64, _ *corev3.Node) { c.s.closeStream(id) }
func (c sotwCallbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	if err := c.s.authorize(id, req.GetNode()); err != nil {
		return err
	}
	c.s.onRequest(id, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	return nil
}
func (c sotwCallbacks) OnStreamResponse(_ context.Context, id int64, req *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	c.s.onResponse(id, req.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

type deltaCallbacks struct{ s *Server }

func (c deltaCallbacks) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	c.s.openStream(ctx, deltaID(id))
	return nil
}
func (c deltaCallbacks) OnDeltaStreamClosed(id int64, _ *corev3.Node) { c.s.closeStream(deltaID(id)) }
func (c deltaCallbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	if err := c.s.authorize(deltaID(id), req.GetNode()); err != nil {
		return err
	}
	c.s.onRequest(deltaID(id), req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	return nil
}
func (c deltaCallbacks) OnStreamDeltaResponse(id int64, req *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	c.s.onResponse(deltaID(id), req.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// openStream remembers a stream's context until its node is authorized.
func (s *Server) openStream(ctx context.Context, id int64) {
	if s.cfg.Authorize != nil {
		s.streamCtx.Store(id, ctx)
	}
}

// authorize checks, on a stream's first request that names its node, that
// the peer may claim that node (Config.Authorize); an error closes the
// stream.
func (s *Server) authorize(id int64, node *corev3.Node) error {
	if s.cfg.Authorize == nil || node == nil {
		return nil
	}
	v, ok := s.streamCtx.LoadAndDelete(id)
	if !ok {
		return nil // authorized on an earlier request
	}
	if err := s.cfg.Authorize(v.(context.Context), node); err != nil {
		s.cfg.Logger.Warn("xds stream refused", "node", node.GetId(), "service", node.GetCluster(), "error", err)
		return err
	}
	return nil
}
