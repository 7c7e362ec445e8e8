package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// ApplyFunc receives each new complete, consistent snapshot. It is called
// on the client's stream goroutine, one call at a time, and blocks the
// stream while it runs, so it should build and swap its state promptly. A
// non-nil error rejects the snapshot: its responses are NACKed with the
// error text and the previous snapshot stays the applied one. The Snapshot
// must not be modified.
type ApplyFunc func(ctx context.Context, s *Snapshot) error

// ModelApplier adapts a function that takes a Model into an ApplyFunc: it
// runs BuildModel so a semantically bad snapshot is NACKed with
// BuildModel's error and never reaches apply.
func ModelApplier(apply func(ctx context.Context, m *Model) error) ApplyFunc {
	return func(ctx context.Context, s *Snapshot) error {
		m, err := BuildModel(s)
		if err != nil {
			return err
		}
		return apply(ctx, m)
	}
}

// Config configures a Client. Fields marked required have no default.
type Config struct {
	// ServerAddr is the control plane's xDS address, HOST:PORT (required).
	ServerAddr string
	// NodeID is the xDS Node.Id, unique per sidecar (required).
	NodeID string
	// ServiceName is the sidecar's service, sent as Node.Cluster (required).
	ServiceName string
	// Zone and Version are sent in the node metadata ("zone", "version")
	// and Zone also as Node.Locality.Zone. Optional.
	Zone    string
	Version string
	// Apply receives every new snapshot (required).
	Apply ApplyFunc

	// Credentials secure the connection; nil means plaintext, which is
	// only appropriate on loopback or a trusted network.
	Credentials credentials.TransportCredentials
	// DialOptions are appended to the client's own options.
	DialOptions []grpc.DialOption
	// Keepalive pings the control plane to detect a dead peer; zero means
	// a ping every 30s, the connection declared dead 10s after an
	// unanswered ping, with or without an open stream. The control plane's
	// keepalive.EnforcementPolicy must allow it (MinTime ≤ Time,
	// PermitWithoutStream) or gRPC closes the connection with
	// "too_many_pings".
	Keepalive keepalive.ClientParameters
	// Backoff spaces reconnection attempts (default 500ms base, 30s cap,
	// full jitter).
	Backoff Backoff
	// StableStream is how long a stream must have lived for the back-off
	// to start again from Base; default 30s.
	StableStream time.Duration
	// RejectedResendDelay holds the NACK of a response that repeats an
	// already rejected version. A control plane that resends a NACKed
	// version at once (go-control-plane's snapshot cache does) otherwise
	// loops at network speed; default 1s.
	RejectedResendDelay time.Duration
	// Metrics are optional hooks.
	Metrics Metrics
	// Logger receives connection and update events; nil means
	// slog.Default().
	Logger *slog.Logger
}

func (c Config) validate() error {
	var missing []string
	if c.ServerAddr == "" {
		missing = append(missing, "ServerAddr")
	}
	if c.NodeID == "" {
		missing = append(missing, "NodeID")
	}
	if c.ServiceName == "" {
		missing = append(missing, "ServiceName")
	}
	if c.Apply == nil {
		missing = append(missing, "Apply")
	}
	if len(missing) > 0 {
		return fmt.Errorf("xdsclient: config: %s must be set", strings.Join(missing, ", "))
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Keepalive == (keepalive.ClientParameters{}) {
		c.Keepalive = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}
	}
	c.Backoff = c.Backoff.withDefaults()
	if c.StableStream <= 0 {
		c.StableStream = 30 * time.Second
	}
	if c.RejectedResendDelay <= 0 {
		c.RejectedResendDelay = time.Second
	}
	if c.Credentials == nil {
		c.Credentials = insecure.NewCredentials()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Client is a state-of-the-world ADS client. It subscribes to every type
// (wildcard), assembles responses into consistent snapshots, calls Apply
// and ACKs or NACKs. Create it with New, start it with Run, stop it by
// cancelling Run's context or with Close. Status is safe to call from any
// goroutine.
type Client struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	status  Status
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
	closed  bool

	// Owned by the Run goroutine.
	types          [numKinds]typeState
	rejected       map[string]string // version → error text of rejected versions
	appliedVersion string
	streamCount    int
}

// typeState is the client's view of one xDS type.
type typeState struct {
	// acked is the version_info sent in requests: the last accepted.
	acked string
	// applied and appliedRes are what the applied snapshot holds.
	applied    string
	appliedRes map[string]proto.Message
	// staged is a received, valid response not yet part of an applied
	// snapshot; nil when none.
	staged *stagedResponse
	// nonce is the last nonce received on the current stream.
	nonce string
	// heldNACK, when set, is due at heldAt (see RejectedResendDelay).
	heldNACK *discoveryv3.DiscoveryRequest
	heldAt   time.Time
}

type stagedResponse struct {
	version string
	res     map[string]proto.Message
}

// New checks cfg and returns a Client; it does not connect.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Client{cfg: cfg, log: cfg.Logger.With("component", "xdsclient", "server", cfg.ServerAddr), rejected: map[string]string{}}
	c.status = Status{ServerAddr: cfg.ServerAddr, ACKed: map[string]string{}}
	return c, nil
}

// Status returns a copy of the client's current status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status.clone()
}

// Run connects and keeps an ADS stream open, reconnecting with back-off,
// until ctx is cancelled or Close is called; then it returns nil. While
// disconnected the last applied snapshot stays in force (Apply is simply
// not called). Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.started || c.closed {
		c.mu.Unlock()
		return errors.New("xdsclient: Run called twice or after Close")
	}
	ctx, cancel := context.WithCancel(ctx)
	c.started, c.cancel, c.done = true, cancel, make(chan struct{})
	c.mu.Unlock()
	defer close(c.done)
	defer cancel()

	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(c.cfg.Credentials),
		grpc.WithKeepaliveParams(c.cfg.Keepalive),
	}, c.cfg.DialOptions...)
	cc, err := grpc.NewClient(c.cfg.ServerAddr, opts...)
	if err != nil {
		return fmt.Errorf("xdsclient: dial %s: %w", c.cfg.ServerAddr, err)
	}
	defer cc.Close()

	retry := 0
	for {
		began := time.Now()
		err := c.runStream(ctx, cc)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) >= c.cfg.StableStream {
			retry = 0
		}
		wait := c.cfg.Backoff.Delay(retry)
		retry++
		c.log.Warn("xds stream ended; reconnecting", "err", err, "retry", retry, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Close stops Run and waits for it to return. It is idempotent and safe
// to call whether or not Run was started.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

type recvResult struct {
	resp *discoveryv3.DiscoveryResponse
	err  error
}

// runStream runs one ADS stream until it fails or ctx ends.
func (c *Client) runStream(ctx context.Context, cc grpc.ClientConnInterface) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(sctx)
	if err != nil {
		return fmt.Errorf("open ADS stream: %w", err)
	}
	for k := range numKinds {
		ts := &c.types[k]
		ts.nonce, ts.heldNACK = "", nil
		req := &discoveryv3.DiscoveryRequest{TypeUrl: kindInfo[k].typeURL, VersionInfo: ts.acked}
		if k == 0 {
			req.Node = c.node()
		}
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("subscribe %s: %w", kindInfo[k].short, err)
		}
	}
	c.streamCount++
	reconnect := c.streamCount > 1
	c.update(func(s *Status) {
		s.Connected = true
		if reconnect {
			s.Reconnects++
		}
	})
	if reconnect && c.cfg.Metrics.Reconnect != nil {
		c.cfg.Metrics.Reconnect()
	}
	c.log.Info("xds stream open", "node", c.cfg.NodeID)
	defer c.update(func(s *Status) { s.Connected = false })

	recvCh := make(chan recvResult)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			resp, err := stream.Recv()
			select {
			case recvCh <- recvResult{resp, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() { cancel(); <-recvDone }()

	hold := time.NewTimer(time.Hour)
	hold.Stop()
	defer hold.Stop()
	for {
		select {
		case <-sctx.Done():
			return sctx.Err()
		case r := <-recvCh:
			if r.err != nil {
				return fmt.Errorf("receive: %w", r.err)
			}
			if err := c.handle(ctx, stream, r.resp); err != nil {
				return err
			}
		case <-hold.C:
		}
		if err := c.sendDueHeld(stream, hold); err != nil {
			return err
		}
	}
}

func (c *Client) node() *corev3.Node {
	md := map[string]any{}
	if c.cfg.Version != "" {
		md["version"] = c.cfg.Version
	}
	if c.cfg.Zone != "" {
		md["zone"] = c.cfg.Zone
	}
	st, _ := structpb.NewStruct(md) // strings only: cannot fail
	n := &corev3.Node{
		Id:                   c.cfg.NodeID,
		Cluster:              c.cfg.ServiceName,
		Metadata:             st,
		UserAgentName:        "causeway-sidecar",
		UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: c.cfg.Version},
	}
	if c.cfg.Zone != "" {
		n.Locality = &corev3.Locality{Zone: c.cfg.Zone}
	}
	return n
}

// handle processes one response: decode, stage, and either apply a now
// complete snapshot or ACK and wait for the rest.
func (c *Client) handle(ctx context.Context, stream grpc.ClientStream, resp *discoveryv3.DiscoveryResponse) error {
	k, ok := kindOf(resp.GetTypeUrl())
	if !ok {
		c.log.Warn("xds response for a type not subscribed; ignored", "type", resp.GetTypeUrl())
		return nil
	}
	ts := &c.types[k]
	ts.nonce = resp.GetNonce()
	version := resp.GetVersionInfo()

	if errText, bad := c.rejected[version]; bad {
		// A resend of a version already rejected: NACK again, later.
		ts.heldNACK = c.nack(k, errText)
		ts.heldAt = time.Now().Add(c.cfg.RejectedResendDelay)
		return nil
	}
	res, err := decodeResources(k, resp.GetTypeUrl(), resp.GetResources())
	if err != nil {
		return c.reject(stream, k, version, err.Error())
	}
	ts.staged = &stagedResponse{version: version, res: res}

	snap, waiting := c.candidate(version)
	if snap == nil {
		c.update(func(s *Status) { s.Waiting = waiting })
		return c.ack(stream, k, version)
	}
	if version == c.appliedVersion {
		// A resend of what is applied (for example after a reconnect to
		// a server that ignores the version we sent): nothing changes.
		c.commit(version)
		return c.ack(stream, k, version)
	}
	if err := snap.Consistent(); err != nil {
		c.log.Info("xds snapshot incomplete; waiting", "version", version, "reason", err)
		c.update(func(s *Status) { s.Waiting = err.Error() })
		return c.ack(stream, k, version)
	}
	if err := c.cfg.Apply(ctx, snap); err != nil {
		return c.reject(stream, k, version, err.Error())
	}
	c.commit(version)
	c.appliedVersion = version
	now := time.Now()
	c.update(func(s *Status) {
		s.AppliedVersion, s.LastUpdate, s.Waiting = version, now, ""
		s.UpdatesApplied++
	})
	if c.cfg.Metrics.UpdateApplied != nil {
		c.cfg.Metrics.UpdateApplied(version)
	}
	c.log.Info("xds snapshot applied", "version", version,
		"clusters", len(snap.Clusters), "listeners", len(snap.Listeners), "routes", len(snap.Routes))
	return c.ack(stream, k, version)
}

// candidate returns the snapshot at version when every type has a
// response at that version (staged, or already applied), or else nil and
// what is missing.
func (c *Client) candidate(version string) (*Snapshot, string) {
	var versions [numKinds]string
	var res [numKinds]map[string]proto.Message
	var missing []string
	for k := range numKinds {
		ts := &c.types[k]
		switch {
		case ts.staged != nil && ts.staged.version == version:
			versions[k], res[k] = version, ts.staged.res
		case ts.staged == nil && ts.appliedRes != nil && ts.applied == version:
			versions[k], res[k] = version, ts.appliedRes
		default:
			missing = append(missing, kindInfo[k].short)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Sprintf("version %q: waiting for %s", version, strings.Join(missing, ", "))
	}
	return newSnapshot(version, versions, res), ""
}

// commit makes every staged response at version the applied state.
func (c *Client) commit(version string) {
	for k := range numKinds {
		ts := &c.types[k]
		if ts.staged != nil && ts.staged.version == version {
			ts.applied, ts.appliedRes, ts.staged = version, ts.staged.res, nil
			ts.acked = version
		}
	}
	clear(c.rejected)
}

// reject NACKs version for type k and for every other type staged at it,
// and remembers the version as rejected.
func (c *Client) reject(stream grpc.ClientStream, k kind, version, errText string) error {
	if len(c.rejected) >= 16 {
		clear(c.rejected)
	}
	c.rejected[version] = errText
	now := time.Now()
	c.log.Warn("xds update rejected", "version", version, "type", kindInfo[k].short, "err", errText)
	c.update(func(s *Status) {
		s.LastNACK = &NACKInfo{Version: version, TypeURL: kindInfo[k].typeURL, Error: errText, Time: now}
		s.Waiting = ""
	})
	for o := range numKinds {
		ts := &c.types[o]
		if o != k && (ts.staged == nil || ts.staged.version != version || ts.nonce == "") {
			continue
		}
		ts.staged = nil
		ts.acked = ts.applied
		if err := c.send(stream, c.nack(o, errText)); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) nack(k kind, errText string) *discoveryv3.DiscoveryRequest {
	ts := &c.types[k]
	return &discoveryv3.DiscoveryRequest{
		TypeUrl:       kindInfo[k].typeURL,
		VersionInfo:   ts.acked,
		ResponseNonce: ts.nonce,
		ErrorDetail:   &statuspb.Status{Code: int32(codes.InvalidArgument), Message: errText},
	}
}

func (c *Client) ack(stream grpc.ClientStream, k kind, version string) error {
	ts := &c.types[k]
	ts.acked = version
	return c.send(stream, &discoveryv3.DiscoveryRequest{
		TypeUrl: kindInfo[k].typeURL, VersionInfo: version, ResponseNonce: ts.nonce,
	})
}

func (c *Client) send(stream grpc.ClientStream, req *discoveryv3.DiscoveryRequest) error {
	if err := stream.SendMsg(req); err != nil {
		return fmt.Errorf("send %s: %w", req.GetTypeUrl(), err)
	}
	if req.GetErrorDetail() != nil {
		c.update(func(s *Status) { s.NACKs++ })
		if c.cfg.Metrics.NACKSent != nil {
			c.cfg.Metrics.NACKSent(req.GetTypeUrl())
		}
		return nil
	}
	c.update(func(s *Status) { s.ACKed[req.GetTypeUrl()] = req.GetVersionInfo() })
	return nil
}

// sendDueHeld sends held NACKs that are due and re-arms the timer for the
// next one.
func (c *Client) sendDueHeld(stream grpc.ClientStream, timer *time.Timer) error {
	now := time.Now()
	var next time.Time
	for k := range numKinds {
		ts := &c.types[k]
		if ts.heldNACK == nil {
			continue
		}
		if !ts.heldAt.After(now) {
			req := ts.heldNACK
			ts.heldNACK = nil
			if err := c.send(stream, req); err != nil {
				return err
			}
			continue
		}
		if next.IsZero() || ts.heldAt.Before(next) {
			next = ts.heldAt
		}
	}
	timer.Stop()
	if !next.IsZero() {
		timer.Reset(time.Until(next))
	}
	return nil
}

func (c *Client) update(f func(*Status)) {
	c.mu.Lock()
	f(&c.status)
	c.mu.Unlock()
}
