package xdsclient

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"
)

// fakeStream records what the client sends.
type fakeStream struct {
	sent []*discoveryv3.DiscoveryRequest
}

func (f *fakeStream) SendMsg(m any) error {
	f.sent = append(f.sent, m.(*discoveryv3.DiscoveryRequest))
	return nil
}
func (f *fakeStream) RecvMsg(any) error            { return io.EOF }
func (f *fakeStream) Header() (metadata.MD, error) { return nil, nil }
func (f *fakeStream) Trailer() metadata.MD         { return nil }
func (f *fakeStream) CloseSend() error             { return nil }
func (f *fakeStream) Context() context.Context     { return context.Background() }

var _ grpc.ClientStream = (*fakeStream)(nil)

func response(t *testing.T, typeURL, version, nonce string, res []types.Resource) *discoveryv3.DiscoveryResponse {
	r := &discoveryv3.DiscoveryResponse{TypeUrl: typeURL, VersionInfo: version, Nonce: nonce}
	for _, m := range res {
		r.Resources = append(r.Resources, mustAny(t, m))
	}
	return r
}

func newTestClient(t *testing.T, apply ApplyFunc) *Client {
	c, err := New(Config{ServerAddr: "127.0.0.1:1", NodeID: "n", ServiceName: "orders", Apply: apply,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEndpointsArrivingLastCompleteTheSnapshot feeds the five types with
// EDS last and checks that Apply runs exactly once, after it, and that
// every response is ACKed with its version and nonce.
func TestEndpointsArrivingLastCompleteTheSnapshot(t *testing.T) {
	var applied []*Snapshot
	c := newTestClient(t, func(_ context.Context, s *Snapshot) error { applied = append(applied, s); return nil })
	res := meshResources(t)
	fs := &fakeStream{}
	order := []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType,
		resourcev3.ExtensionConfigType, resourcev3.EndpointType}
	for i, typeURL := range order {
		if len(applied) != 0 {
			t.Fatalf("Apply called before %s arrived", typeURL)
		}
		if err := c.handle(context.Background(), fs, response(t, typeURL, "v1", string(rune('a'+i)), res[typeURL])); err != nil {
			t.Fatal(err)
		}
	}
	if len(applied) != 1 || applied[0].Version != "v1" || len(applied[0].Endpoints) != 2 {
		t.Fatalf("got %d applies, want one of v1 with 2 CLAs", len(applied))
	}
	if len(fs.sent) != 5 {
		t.Fatalf("sent %d requests, want 5 ACKs", len(fs.sent))
	}
	for i, req := range fs.sent {
		if req.GetErrorDetail() != nil || req.GetVersionInfo() != "v1" || req.GetResponseNonce() != string(rune('a'+i)) || req.GetTypeUrl() != order[i] {
			t.Errorf("request %d: got %v, want ACK of %s v1 nonce %c", i, req, order[i], 'a'+i)
		}
	}
}

// TestApplyErrorNACKsEveryResponseOfTheVersion checks the NACK fields.
func TestApplyErrorNACKsEveryResponseOfTheVersion(t *testing.T) {
	fail := errors.New("route table rejected")
	c := newTestClient(t, func(context.Context, *Snapshot) error { return fail })
	res := meshResources(t)
	fs := &fakeStream{}
	for i, typeURL := range TypeURLs() {
		if err := c.handle(context.Background(), fs, response(t, typeURL, "v1", string(rune('a'+i)), res[typeURL])); err != nil {
			t.Fatal(err)
		}
	}
	// 4 ACKs while staging, then 5 NACKs (one per type of v1).
	if len(fs.sent) != 9 {
		t.Fatalf("sent %d requests, want 4 ACKs and 5 NACKs", len(fs.sent))
	}
	nacked := map[string]bool{}
	for _, req := range fs.sent[4:] {
		d := req.GetErrorDetail()
		if d == nil || d.GetCode() != 3 || d.GetMessage() != fail.Error() || req.GetVersionInfo() != "" {
			t.Errorf("NACK: got %v, want code 3, message %q and the last accepted version \"\"", req, fail)
		}
		nacked[req.GetTypeUrl()] = true
	}
	if len(nacked) != 5 {
		t.Errorf("NACKed types: got %v, want all five", nacked)
	}
	st := c.Status()
	if st.LastNACK == nil || st.LastNACK.Version != "v1" || st.AppliedVersion != "" || st.NACKs != 5 {
		t.Errorf("status: got %+v, want v1 NACKed 5 times and nothing applied", st)
	}

	// The server resends v1: it is NACKed again, but held, not re-applied.
	if err := c.handle(context.Background(), fs, response(t, resourcev3.ClusterType, "v1", "z", res[resourcev3.ClusterType])); err != nil {
		t.Fatal(err)
	}
	if len(fs.sent) != 9 || c.types[kindCluster].heldNACK == nil {
		t.Fatalf("resent rejected version: sent %d, held %v; want the NACK held", len(fs.sent), c.types[kindCluster].heldNACK)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	c.types[kindCluster].heldAt = time.Now()
	if err := c.sendDueHeld(fs, timer); err != nil {
		t.Fatal(err)
	}
	if last := fs.sent[len(fs.sent)-1]; len(fs.sent) != 10 || last.GetResponseNonce() != "z" || last.GetErrorDetail() == nil {
		t.Errorf("held NACK: got %v, want a NACK for nonce z", last)
	}
}

func TestBadAnyIsNACKed(t *testing.T) {
	c := newTestClient(t, func(context.Context, *Snapshot) error { t.Fatal("Apply called"); return nil })
	fs := &fakeStream{}
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.ClusterType, VersionInfo: "v1", Nonce: "a",
		Resources: []*anypb.Any{{TypeUrl: resourcev3.ClusterType, Value: []byte{0xff, 0xff}}}}
	if err := c.handle(context.Background(), fs, resp); err != nil {
		t.Fatal(err)
	}
	if len(fs.sent) != 1 || fs.sent[0].GetErrorDetail() == nil || fs.sent[0].GetResponseNonce() != "a" {
		t.Fatalf("sent %v, want one NACK for nonce a", fs.sent)
	}
	const wantPrefix = "resources[0]: decoding cluster: "
	if msg := fs.sent[0].GetErrorDetail().GetMessage(); len(msg) < len(wantPrefix) || msg[:len(wantPrefix)] != wantPrefix {
		t.Errorf("NACK message: got %q, want prefix %q", msg, wantPrefix)
	}
}

func TestBackoffFullJitterBounds(t *testing.T) {
	b := Backoff{}.withDefaults()
	for n, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second} {
		if got := b.ceiling(n); got != want {
			t.Errorf("ceiling(%d): got %s, want %s", n, got, want)
		}
		for range 100 {
			if d := b.Delay(n); d < 0 || d >= want {
				t.Fatalf("Delay(%d) = %s, want in [0, %s)", n, d, want)
			}
		}
	}
	if got := b.ceiling(1000); got != 30*time.Second {
		t.Errorf("ceiling(1000): got %s, want the 30s cap", got)
	}
}
