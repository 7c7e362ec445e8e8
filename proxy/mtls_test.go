package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
	"github.com/causeway-mesh/causeway/control/identity"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/plane"
	"github.com/causeway-mesh/causeway/control/policy"
	"github.com/causeway-mesh/causeway/control/store"
	"github.com/causeway-mesh/causeway/proxy/config"
)

const testTrustDomain = "mesh.test"

// meshCredentials issues service's certificate from authority and returns
// credentials holding it.
func meshCredentials(t *testing.T, authority *ca.CA, service string) *identity.Credentials {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := authority.Sign(csr, spiffeid.Must(testTrustDomain, "default", service), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	creds, err := identity.NewCredentials(testTrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Update(cert, authority.Roots()); err != nil {
		t.Fatal(err)
	}
	return creds
}

// identityApp records the x-mesh-peer-identity of each request.
type identityApp struct {
	mu   sync.Mutex
	seen []string
}

func (a *identityApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, r.Header.Get(HeaderPeerIdentity))
	a.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (a *identityApp) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.seen
	a.seen = nil
	return s
}

// mtlsPair starts a server sidecar for "orders" (mode, server creds) and a
// client sidecar "web" (client creds, nil for plaintext) routing to it.
func mtlsPair(t *testing.T, app http.Handler, serverCreds *identity.Credentials, mode identity.Mode, clientCreds *identity.Credentials) (client, server *runningSidecar) {
	t.Helper()
	server = startSidecarWith(t, testConfig("orders", startApp(t, app), config.ProtocolHTTP1), WithMeshIdentity(serverCreds, mode))
	ccfg := testConfig("web", "127.0.0.1:1", config.ProtocolHTTP1)
	ccfg.Upstreams = map[string]config.Upstream{"orders": {Endpoints: []string{server.addr("inbound")}}}
	var opts []Option
	if clientCreds != nil {
		opts = append(opts, WithMeshIdentity(clientCreds, identity.ModeStrict))
	}
	client = startSidecarWith(t, ccfg, opts...)
	return client, server
}

func TestMutualTLSBetweenSidecars(t *testing.T) {
	authority, err := ca.LoadOrCreate(t.TempDir(), testTrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.LoadOrCreate(t.TempDir(), testTrustDomain) // an untrusted root
	if err != nil {
		t.Fatal(err)
	}
	app := &identityApp{}
	serverCreds := meshCredentials(t, authority, "orders")

	t.Run("strict: the app learns the verified caller, a forged header is replaced", func(t *testing.T) {
		client, _ := mtlsPair(t, app, serverCreds, identity.ModeStrict, meshCredentials(t, authority, "web"))
		resp, _ := send(t, "GET", "http://"+client.addr("outbound")+"/", "", map[string]string{HeaderPeerIdentity: "spiffe://mesh.test/ns/default/sa/admin"})
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := app.take(); len(got) != 1 || got[0] != "spiffe://mesh.test/ns/default/sa/web" {
			t.Fatalf("app saw identities %q, want the verified spiffe://mesh.test/ns/default/sa/web", got)
		}
	})
	t.Run("strict: a plaintext caller is refused", func(t *testing.T) {
		client, server := mtlsPair(t, app, serverCreds, identity.ModeStrict, nil)
		resp, _ := send(t, "GET", "http://"+client.addr("outbound")+"/", "", nil)
		if resp.StatusCode < 500 {
			t.Fatalf("status %d through a strict peer without a certificate", resp.StatusCode)
		}
		if got := app.take(); len(got) != 0 {
			t.Fatalf("app saw %d requests", len(got))
		}
		_, body := send(t, "GET", "http://"+server.addr("admin")+"/metrics", "", nil)
		if !containsLine(body, `mesh_rejected_requests_total{listener="inbound",reason="plaintext_refused"}`) {
			t.Error("the refused plaintext connection is not counted")
		}
	})
	t.Run("strict: a certificate from an untrusted root is refused", func(t *testing.T) {
		client, _ := mtlsPair(t, app, serverCreds, identity.ModeStrict, meshCredentials(t, other, "web"))
		resp, _ := send(t, "GET", "http://"+client.addr("outbound")+"/", "", nil)
		if resp.StatusCode < 500 {
			t.Fatalf("status %d with an untrusted client certificate", resp.StatusCode)
		}
		if got := app.take(); len(got) != 0 {
			t.Fatalf("app saw %d requests", len(got))
		}
	})
	t.Run("a certificate for another service at a service's address is refused", func(t *testing.T) {
		// The client believes "payments" lives where orders' sidecar is:
		// orders' certificate does not answer for payments.
		server := startSidecarWith(t, testConfig("orders", startApp(t, app), config.ProtocolHTTP1), WithMeshIdentity(serverCreds, identity.ModeStrict))
		ccfg := testConfig("web", "127.0.0.1:1", config.ProtocolHTTP1)
		ccfg.Upstreams = map[string]config.Upstream{"payments": {Endpoints: []string{server.addr("inbound")}}}
		client := startSidecarWith(t, ccfg, WithMeshIdentity(meshCredentials(t, authority, "web"), identity.ModeStrict))
		req, _ := http.NewRequestWithContext(testContext(t, 5*time.Second), "GET", "http://"+client.addr("outbound")+"/", nil)
		req.Host = "payments"
		resp, err := h1Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 500 {
			t.Fatalf("status %d from a peer presenting another service's certificate", resp.StatusCode)
		}
		if got := app.take(); len(got) != 0 {
			t.Fatalf("app saw %d requests", len(got))
		}
	})
	t.Run("permissive: plaintext callers pass without an identity", func(t *testing.T) {
		client, _ := mtlsPair(t, app, serverCreds, identity.ModePermissive, nil)
		resp, _ := send(t, "GET", "http://"+client.addr("outbound")+"/", "", map[string]string{HeaderPeerIdentity: "spiffe://mesh.test/ns/default/sa/admin"})
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := app.take(); len(got) != 1 || got[0] != "" {
			t.Fatalf("app saw identities %q, want none for a plaintext caller", got)
		}
	})
}

func containsLine(body, prefix string) bool {
	for i := 0; i+len(prefix) <= len(body); i++ {
		if body[i:i+len(prefix)] == prefix && (i == 0 || body[i-1] == '\n') {
			return true
		}
	}
	return false
}

// tlsControlPlane runs a control plane that is the mesh's CA, and returns
// it with a function starting a sidecar for service (mTLS strict) whose
// bootstrap token is scoped to tokenFor.
func tlsControlPlane(t *testing.T) (*plane.Plane, *membership.Static, func(service, app, tokenFor string) *runningSidecar) {
	t.Helper()
	dataDir := t.TempDir()
	cfg := plane.Default()
	cfg.DataDir, cfg.XDS, cfg.API, cfg.Gossip = dataDir, "127.0.0.1:0", "127.0.0.1:0", plane.GossipOff
	cfg.TLS.Enabled, cfg.TLS.TrustDomain = true, testTrustDomain
	cfg.Debounce.Duration, cfg.DebounceMax.Duration = 20*time.Millisecond, 200*time.Millisecond
	mesh := membership.NewStatic(nil)
	cp, err := plane.New(cfg, testLogger(), plane.WithMembership(mesh))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	start := func(service, app string, tokenFor string) *runningSidecar {
		token, _, err := cp.Tokens().Create(bootstrap.Scope{Service: tokenFor, Namespace: "default"}, time.Hour, false)
		if err != nil {
			t.Fatal(err)
		}
		c := cpConfig(service, app, cp.XDSAddr())
		c.MTLS = config.MTLS{Mode: "strict", TrustDomain: testTrustDomain, CABundle: filepath.Join(dataDir, plane.BundleFile)}
		idm, mode, err := NewIdentityManager(c, func(k string) (string, bool) { return token, k == "MESH_BOOTSTRAP_TOKEN" }, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		return startSidecarWith(t, c, WithIdentityManager(idm, mode))
	}
	return cp, mesh, start
}

// TestMutualTLSFromTheControlPlane: the control plane is the CA; sidecars
// obtain their certificates with bootstrap tokens, fetch xDS over TLS with
// them, and talk mutual TLS to each other; a token for another service
// yields no certificate, so that sidecar never becomes ready.
func TestMutualTLSFromTheControlPlane(t *testing.T) {
	cp, mesh, start := tlsControlPlane(t)
	dataDir := cp.DataDir()
	app := &identityApp{}
	orders := start("orders", startApp(t, app), "orders")
	web := start("web", "127.0.0.1:1", "web")
	mesh.Set([]membership.Instance{{Node: "orders-1", Service: "orders", Addr: orders.addr("inbound"), Weight: 1, Health: membership.Healthy}})
	cp.XDS().Trigger()
	waitFor(t, 10*time.Second, "web to reach orders over mutual TLS", func() bool {
		code, _ := cpGet(t, web.addr("outbound"), "orders", nil)
		return code == 200
	})
	if got := app.take(); len(got) == 0 || got[len(got)-1] != "spiffe://mesh.test/ns/default/sa/web" {
		t.Fatalf("orders' app saw identities %q, want the caller spiffe://mesh.test/ns/default/sa/web", got)
	}

	// A token for another service: the CA refuses the CSR, the sidecar
	// never gets a certificate and never reports ready.
	token, _, err := cp.Tokens().Create(bootstrap.Scope{Service: "orders", Namespace: "default"}, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	c := cpConfig("payments", startApp(t, app), cp.XDSAddr())
	c.MTLS = config.MTLS{Mode: "strict", TrustDomain: testTrustDomain, CABundle: filepath.Join(dataDir, plane.BundleFile)}
	idm, mode, err := NewIdentityManager(c, func(k string) (string, bool) { return token, k == "MESH_BOOTSTRAP_TOKEN" }, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(c, testLogger(), WithIdentityManager(idm, mode))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	sdone := make(chan struct{})
	go func() { defer close(sdone); _ = s.Serve(sctx) }()
	defer func() { scancel(); <-sdone }()
	time.Sleep(time.Second) // a negative: give it time to (wrongly) succeed
	if s.Ready() || s.readiness() != "waiting for the mesh certificate from the control plane" {
		t.Fatalf("a sidecar holding another service's token: ready=%v (%s)", s.Ready(), s.readiness())
	}
}

// TestAuthorizationPolicy: an AuthorizationPolicy applied to the control
// plane reaches the callee's sidecar, which allows and denies by the
// caller's verified identity, method and normalized path; encoding tricks
// do not reach a denied path.
func TestAuthorizationPolicy(t *testing.T) {
	cp, mesh, start := tlsControlPlane(t)
	app := &pathApp{}
	orders := start("orders", startApp(t, app), "orders")
	web := start("web", "127.0.0.1:1", "web")
	mesh.Set([]membership.Instance{{Node: "orders-1", Service: "orders", Addr: orders.addr("inbound"), Weight: 1, Health: membership.Healthy}})
	doc := []byte(`apiVersion: causeway.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: orders}
spec:
  targetRef: {kind: Service, name: orders}
  default: deny
  rules:
  - name: web-reads-orders
    action: ALLOW
    from: [{services: [web]}]
    to: [{paths: ["/orders/*"], methods: [GET]}]
`)
	r, err := policy.Decode(doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cp.Store().Put(r, store.Create); err != nil {
		t.Fatal(err)
	}
	out := web.addr("outbound")
	raw := func(method, target string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(testContext(t, 5*time.Second), method, "http://"+out+"/", nil)
		req.Host = "orders"
		req.URL.Opaque = target // sent as is, encoding tricks included
		resp, err := h1Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, 10*time.Second, "the policy in effect (a denied path answers 403)", func() bool {
		return raw("GET", "/admin") == 403
	})
	app.take()
	for _, tc := range []struct {
		method, target string
		want           int
		seen           string
	}{
		{"GET", "/orders/1", 200, "/orders/1"},
		{"GET", "/orders//1", 200, "/orders/1"},
		{"GET", "/orders/./1", 200, "/orders/1"},
		{"POST", "/orders/1", 403, ""},
		{"GET", "/admin", 403, ""},
		{"GET", "/orders/../admin", 403, ""},
		{"GET", "/%61dmin", 403, ""},
		{"GET", "/orders/..%2Fadmin", 400, ""},
		{"GET", "/orders/%5C..%5Cadmin", 400, ""},
	} {
		if got := raw(tc.method, tc.target); got != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.target, got, tc.want)
		}
		seen := app.take()
		switch {
		case tc.seen == "" && len(seen) != 0:
			t.Errorf("%s %s reached the app as %v", tc.method, tc.target, seen)
		case tc.seen != "" && (len(seen) != 1 || seen[0] != tc.seen):
			t.Errorf("%s %s: the app saw %v, want exactly the authorized path %s", tc.method, tc.target, seen, tc.seen)
		}
	}
}

// pathApp records the path of each request.
type pathApp struct {
	mu   sync.Mutex
	seen []string
}

func (a *pathApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, r.URL.EscapedPath())
	a.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (a *pathApp) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.seen
	a.seen = nil
	return s
}
