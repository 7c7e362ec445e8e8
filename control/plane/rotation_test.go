package plane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/causeway-mesh/causeway/control/apiclient"
	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
	"github.com/causeway-mesh/causeway/control/ca/rotation"
	"github.com/causeway-mesh/causeway/control/identity"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/control/identitypb"
)

// meshSidecar is one sidecar's identity: its certificate manager and an
// HTTP/2 mutual-TLS server answering "ok" to any mesh peer.
type meshSidecar struct {
	m    *identity.Manager
	addr string
}

// startTLSPlane runs a control plane with --tls and the given renew window.
func startTLSPlane(t *testing.T, renewWindow time.Duration) *Plane {
	t.Helper()
	cfg := testConfig(t)
	cfg.TLS.Enabled = true
	cfg.TLS.RenewWindow.Duration = renewWindow
	return startPlane(t, cfg)
}

// caClient is an API client that trusts the plane's current bundle file
// (read again at every call, since a rotation changes it).
func caClient(t *testing.T, p *Plane) *apiclient.Client {
	t.Helper()
	c := &apiclient.Client{Server: "https://" + p.APIAddr(), Token: p.Token()}
	if err := c.TrustCAFile(filepath.Join(p.DataDir(), BundleFile)); err != nil {
		t.Fatal(err)
	}
	return c
}

func caStatus(t *testing.T, p *Plane) *rotation.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := caClient(t, p)
	defer c.HTTP.CloseIdleConnections()
	st, err := c.CAStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func rotate(t *testing.T, p *Plane, stage string, force bool) (*rotation.Status, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := caClient(t, p)
	defer c.HTTP.CloseIdleConnections()
	return c.RotateCA(ctx, stage, force)
}

// startSidecars runs one identity manager per service against p, each
// bootstrapped with its own token, and an mTLS server for each.
func startSidecars(t *testing.T, ctx context.Context, p *Plane, services ...string) []*meshSidecar {
	t.Helper()
	anchor, err := identity.AnchorFromBundle(p.CA().Bundle())
	if err != nil {
		t.Fatal(err)
	}
	var out []*meshSidecar
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	t.Cleanup(func() { stop(); wg.Wait() })
	for _, svc := range services {
		tok, _, err := p.Tokens().Create(bootstrap.Scope{Service: svc}, time.Hour, false)
		if err != nil {
			t.Fatal(err)
		}
		m, err := identity.New(identity.Config{
			ControlPlane: p.XDSAddr(), ServerName: "127.0.0.1", TrustDomain: p.cfg.TLS.TrustDomain,
			Service: svc, Token: tok, Anchor: anchor,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
			Log: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.Run(runCtx) }()
		select {
		case <-m.Ready():
		case <-ctx.Done():
			t.Fatalf("%s: no first certificate", svc)
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, err := identity.PeerIdentity(*r.TLS); err != nil || r.ProtoMajor != 2 {
					http.Error(w, "bad peer", http.StatusForbidden)
					return
				}
				_, _ = io.WriteString(w, "ok")
			}),
			TLSConfig:         m.Credentials().ServerTLSConfig(),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan struct{})
		go func() { defer close(served); _ = srv.ServeTLS(ln, "", "") }()
		t.Cleanup(func() { _ = srv.Close(); <-served })
		out = append(out, &meshSidecar{m: m, addr: ln.Addr().String()})
	}
	return out
}

// load sends requests between every ordered pair of sidecars, on a reused
// connection and on a fresh one per request, until stop is called.
type load struct {
	requests, failures atomic.Int64
	mu                 sync.Mutex
	errs               []string
	stop               func()
	done               sync.WaitGroup
}

func startLoad(ctx context.Context, sidecars []*meshSidecar) *load {
	l := &load{}
	ctx, l.stop = context.WithCancel(ctx)
	for _, from := range sidecars {
		for _, to := range sidecars {
			if from == to {
				continue
			}
			l.done.Add(1)
			go func() {
				defer l.done.Done()
				client := func(reuse bool) *http.Client {
					return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
						TLSClientConfig:   from.m.Credentials().ClientTLSConfig(to.m.ID()),
						ForceAttemptHTTP2: true, DisableKeepAlives: !reuse,
					}}
				}
				reused, fresh := client(true), client(false)
				defer reused.CloseIdleConnections()
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
					for name, c := range map[string]*http.Client{"reused": reused, "fresh": fresh} {
						err := meshGet(ctx, c, "https://"+to.addr+"/")
						if ctx.Err() != nil {
							return // stopped mid-request: not counted
						}
						l.requests.Add(1)
						if err != nil {
							l.failures.Add(1)
							l.mu.Lock()
							if len(l.errs) < 5 {
								l.errs = append(l.errs, fmt.Sprintf("%s → %s (%s): %v", from.m.ID().Service(), to.m.ID().Service(), name, err))
							}
							l.mu.Unlock()
						}
					}
				}
			}()
		}
	}
	return l
}

func meshGet(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		return fmt.Errorf("%d %q", resp.StatusCode, body)
	}
	return nil
}

// waitUntil polls cond every 10 ms until it holds or ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// TestRootRotationUnderLoad rotates the CA root of a control plane run
// with --tls through the API, prepare → activate → prune, each without
// force, while three sidecars' identity managers carry mutual-TLS traffic
// between them: no request may fail, every leaf ends on the new root, the
// bundle ends with the new root alone, and a leaf of the old root is then
// refused by peers and by the control plane.
func TestRootRotationUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := startTLSPlane(t, 2*time.Second)
	sidecars := startSidecars(t, ctx, p, "orders", "billing", "stock")
	oldRoot := p.CA().Issuer()
	oldLeaf := sidecars[0].m.Credentials().Certificate()

	l := startLoad(ctx, sidecars)
	defer func() { l.stop(); l.done.Wait() }()
	atLeast := func(n int64) func() bool { return func() bool { return l.requests.Load() >= n } }
	waitUntil(t, ctx, "traffic before the rotation", atLeast(60))
	st := caStatus(t, p)
	if st.Stage != ca.StageStable || st.Sidecars.Connected != 3 || st.Next == nil || st.Next.Action != rotation.Prepare {
		t.Fatalf("before the rotation: %+v", st)
	}

	// prepare: the new root reaches every sidecar without a renewal.
	if _, err := rotate(t, p, "prepare", false); err != nil {
		t.Fatal(err)
	}
	serials := map[*meshSidecar]string{}
	for _, s := range sidecars {
		serials[s] = s.m.Credentials().Certificate().Leaf.SerialNumber.String()
	}
	waitUntil(t, ctx, "every sidecar to acknowledge the new bundle", func() bool {
		st := caStatus(t, p)
		return st.Sidecars.CurrentBundle == 3 && st.Next.Ready
	})
	for _, s := range sidecars {
		if n := len(s.m.Credentials().Bundle()); n != 2 {
			t.Fatalf("%s holds %d roots after prepare, want 2", s.m.ID(), n)
		}
		if got := s.m.Credentials().Certificate().Leaf.SerialNumber.String(); got != serials[s] {
			t.Fatalf("%s renewed on prepare; the bundle should arrive without a renewal", s.m.ID())
		}
	}
	waitUntil(t, ctx, "traffic after prepare", atLeast(l.requests.Load()+60))

	// activate: every sidecar renews onto the new root within the window.
	activatedAt := time.Now()
	if _, err := rotate(t, p, "activate", false); err != nil {
		t.Fatal(err)
	}
	newRoot := p.CA().Issuer()
	if newRoot.Equal(oldRoot) {
		t.Fatal("activate did not change the signing root")
	}
	onNewRoot := func() bool {
		for _, s := range sidecars {
			if s.m.Credentials().Certificate().Leaf.CheckSignatureFrom(newRoot) != nil {
				return false
			}
		}
		return true
	}
	waitUntil(t, ctx, "every leaf re-issued by the new root", onNewRoot)
	reissued := time.Since(activatedAt)
	waitUntil(t, ctx, "prune to be ready", func() bool { st := caStatus(t, p); return st.Next.Action == rotation.Prune && st.Next.Ready })
	waitUntil(t, ctx, "traffic after activate", atLeast(l.requests.Load()+60))

	// prune: the old root leaves every bundle.
	if _, err := rotate(t, p, "prune", false); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, ctx, "every sidecar to drop the old root", func() bool {
		for _, s := range sidecars {
			if b := s.m.Credentials().Bundle(); len(b) != 1 || !b[0].Equal(newRoot) {
				return false
			}
		}
		return true
	})
	waitUntil(t, ctx, "traffic after prune", atLeast(l.requests.Load()+60))
	l.stop()
	l.done.Wait()

	if f := l.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed: %s", f, l.requests.Load(), strings.Join(l.errs, "; "))
	}
	if roots := p.CA().Roots(); len(roots) != 1 || !roots[0].Equal(newRoot) {
		t.Fatalf("the control plane's bundle holds %d roots, want the new one alone", len(roots))
	}
	st = caStatus(t, p)
	if st.Stage != ca.StageStable || len(st.Roots) != 1 || st.Roots[0].Leaves != 3 || st.Sidecars.CurrentBundle != 3 {
		t.Fatalf("after prune: %+v", st)
	}
	pool := x509.NewCertPool()
	pool.AddCert(newRoot)
	// The control plane's own serving certificate followed the new root.
	conn, err := tls.Dial("tcp", p.XDSAddr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("the control plane's serving certificate does not verify with the new root alone: %v", err)
	}
	_ = conn.Close()
	for _, s := range sidecars {
		leaf := s.m.Credentials().Certificate().Leaf
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("%s's leaf does not chain to the new root: %v", s.m.ID(), err)
		}
	}

	// A leaf of the old root is refused by a peer and by the control plane.
	if oldLeaf.Leaf.CheckSignatureFrom(oldRoot) != nil || time.Now().After(oldLeaf.Leaf.NotAfter) {
		t.Fatal("the kept leaf is not a valid leaf of the old root")
	}
	stale := sidecars[0].m.Credentials().ClientTLSConfig(sidecars[1].m.ID())
	stale.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return oldLeaf, nil }
	if err := handshakeAndRead(sidecars[1].addr, stale); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("a peer accepted a leaf of the pruned root: %v", err)
	}
	cpPool := x509.NewCertPool()
	cpPool.AddCert(newRoot)
	toCP := &tls.Config{RootCAs: cpPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"},
		Certificates: []tls.Certificate{*oldLeaf}}
	if err := handshakeAndRead(p.XDSAddr(), toCP); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("the control plane accepted a leaf of the pruned root: %v", err)
	}
	t.Logf("%d requests, 0 failed, across prepare → activate → prune; every leaf re-issued by the new root %v after activate (renew window 2s)",
		l.requests.Load(), reissued.Round(time.Millisecond))
}

// handshakeAndRead dials addr with cfg and reads, which is where a TLS 1.3
// client learns that the server refused its certificate.
func handshakeAndRead(addr string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	if err == nil {
		return errors.New("the server sent data: the certificate was accepted")
	}
	return err
}

// TestRotationRefusals: each stage refuses, without force, what the mesh
// is not ready for, saying why; force overrides; and a sidecar whose
// certificate's root was pruned from under it bootstraps again with its
// token.
func TestRotationRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := startTLSPlane(t, time.Hour) // sidecars would take up to an hour to renew on their own
	for _, stage := range []string{"activate", "prune"} {
		if _, err := rotate(t, p, stage, false); err == nil || !strings.Contains(err.Error(), "409 Conflict") {
			t.Fatalf("%s before prepare: %v, want 409 Conflict", stage, err)
		}
	}
	if _, err := rotate(t, p, "rollback", false); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("unknown stage: %v, want 400", err)
	}
	sidecars := startSidecars(t, ctx, p, "orders", "stock")
	orders, stock := sidecars[0].m, sidecars[1].m

	// A sidecar that holds the stream open but never acknowledges a new
	// bundle (its certificate from a manager that does not watch).
	silent := silentWatcher(t, ctx, p, "billing")

	if _, err := rotate(t, p, "prepare", false); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, ctx, "the watching sidecars to acknowledge", func() bool {
		st := caStatus(t, p)
		return st.Sidecars.Connected == 3 && st.Sidecars.CurrentBundle == 2
	})
	_, err := rotate(t, p, "activate", false)
	if err == nil || !strings.Contains(err.Error(), "NotReady") || !strings.Contains(err.Error(), "1 of 3 connected sidecars have not acknowledged") ||
		!strings.Contains(err.Error(), silent.String()) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("activate with a sidecar behind: %v", err)
	}
	if st := caStatus(t, p); st.Stage != ca.StagePrepared || st.Next.Ready || st.Next.SafeAfter == nil {
		t.Fatalf("a refused activate changed something: %+v", st)
	}
	if _, err := rotate(t, p, "activate", true); err != nil {
		t.Fatalf("forced activate: %v", err)
	}
	newRoot := p.CA().Issuer()

	// Every leaf is still of the old root (the window is an hour).
	_, err = rotate(t, p, "prune", false)
	if err == nil || !strings.Contains(err.Error(), "NotReady") || !strings.Contains(err.Error(), "3 leaves of old root") {
		t.Fatalf("prune with old leaves in use: %v", err)
	}
	if err := orders.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	// orders' leaf is re-issued at once; its connections present the new
	// one once they are made again, which the refusal also counts.
	waitUntil(t, ctx, "prune to stop naming orders", func() bool {
		_, err = rotate(t, p, "prune", false)
		return err == nil || !strings.Contains(err.Error(), "sa/orders")
	})
	if err == nil || !strings.Contains(err.Error(), "2 leaves of old root") {
		t.Fatalf("prune after orders renewed: %v", err)
	}
	if _, err := rotate(t, p, "prune", true); err != nil {
		t.Fatalf("forced prune: %v", err)
	}
	// stock's certificate no longer chains to the bundle it is sent: it
	// bootstraps again with its token, onto the new root.
	waitUntil(t, ctx, "stock to re-bootstrap onto the new root", func() bool {
		b := stock.Credentials().Bundle()
		return len(b) == 1 && b[0].Equal(newRoot) && stock.Credentials().Certificate().Leaf.CheckSignatureFrom(newRoot) == nil
	})
}

// silentWatcher obtains a certificate for service with a manager that does
// not watch, then opens a WatchBundle stream with it that acknowledges
// nothing. It returns the identity.
func silentWatcher(t *testing.T, ctx context.Context, p *Plane, service string) spiffeid.ID {
	t.Helper()
	tok, _, err := p.Tokens().Create(bootstrap.Scope{Service: service}, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	anchor, _ := identity.AnchorFromBundle(p.CA().Bundle())
	m, err := identity.New(identity.Config{
		ControlPlane: p.XDSAddr(), ServerName: "127.0.0.1", TrustDomain: p.cfg.TLS.TrustDomain,
		Service: service, Token: tok, Anchor: anchor, NoBundleWatch: true, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(p.XDSAddr(), grpc.WithTransportCredentials(m.ControlPlaneCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	stream, err := identitypb.NewIdentityClient(conn).WatchBundle(sctx)
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { stop(); <-drained; _ = conn.Close() })
	waitUntil(t, ctx, service+" to connect", func() bool {
		for _, s := range p.Rotator().Status().Sidecars.Pending {
			if strings.HasPrefix(s, m.ID().String()+"@") {
				return true
			}
		}
		return false
	})
	return m.ID()
}

// TestRotationSurvivesRestart: the stage and the ledger of issued leaves
// are on disk.
func TestRotationSurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(t)
	cfg.TLS.Enabled = true
	p := startPlane(t, cfg)
	tok, _, err := p.Tokens().Create(bootstrap.Scope{Service: "orders"}, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	anchor, _ := identity.AnchorFromBundle(p.CA().Bundle())
	m, err := identity.New(identity.Config{
		ControlPlane: p.XDSAddr(), ServerName: "127.0.0.1", TrustDomain: cfg.TLS.TrustDomain,
		Service: "orders", Token: tok, Anchor: anchor, NoBundleWatch: true, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rotate(t, p, "prepare", false); err != nil {
		t.Fatal(err)
	}
	before := caStatus(t, p)
	<-stopPlane(t, p)

	cfg2 := testConfig(t)
	cfg2.TLS, cfg2.DataDir = cfg.TLS, cfg.DataDir
	p2 := startPlane(t, cfg2)
	after := caStatus(t, p2)
	if after.Stage != ca.StagePrepared || after.Bundle != before.Bundle || len(after.Roots) != 2 {
		t.Fatalf("after a restart: stage %s, %d roots; want prepared with the same bundle", after.Stage, len(after.Roots))
	}
	if after.Roots[0].Leaves != 1 || after.Roots[0].State != "signing" || after.Roots[1].State != "prepared" {
		t.Fatalf("after a restart: roots %+v; want the old one signing with 1 leaf in use", after.Roots)
	}
}
