package plane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
	"github.com/causeway-mesh/causeway/control/ca/fleet"
	"github.com/causeway-mesh/causeway/control/ca/issuer"
	"github.com/causeway-mesh/causeway/control/ca/k8stoken"
	"github.com/causeway-mesh/causeway/control/ca/ledger"
	"github.com/causeway-mesh/causeway/control/ca/rotation"
	"github.com/causeway-mesh/causeway/control/identity"
)

// With --tls the control plane is the mesh's certificate authority: its
// root and key live in the data dir (ca-root.pem, 0600; the trust bundle
// in ca-bundle.pem); sidecars obtain SPIFFE certificates from the Identity
// service on the xDS port with a bootstrap token (created with
// POST /api/v1/bootstrap-tokens, scoped to a service) or a Kubernetes
// service-account token (--k8s-issuer, --k8s-jwks), renew them over mutual
// TLS, and keep a WatchBundle stream open through which trust-bundle
// changes reach them at once. Both listeners serve TLS with a certificate
// from that CA; sidecars trust it through the bundle or the pinned root
// hash the log prints, meshctl through --ca-file DATA_DIR/ca-bundle.pem.
//
// The root is rotated in stages through the API (POST /api/v1/ca/rotate,
// package control/ca/rotation): every issued leaf is recorded in
// DATA_DIR/ca-leaves.jsonl so that pruning the old root waits for the
// last of its leaves to be re-issued or to expire.

// BundleFile is the trust bundle's file name in the data dir.
const BundleFile = "ca-bundle.pem"

func (p *Plane) setUpTLS() (err error) {
	cfg := p.cfg
	// A CA created now has issued nothing yet, so a new ledger has seen
	// every leaf; one created beside an older CA has not.
	_, statErr := os.Stat(filepath.Join(cfg.DataDir, ca.RootFile))
	fresh := errors.Is(statErr, fs.ErrNotExist)
	authority, err := ca.LoadOrCreate(cfg.DataDir, cfg.TLS.TrustDomain)
	if err != nil {
		return fmt.Errorf("certificate authority: %w", err)
	}
	tokens, err := bootstrap.Open(filepath.Join(cfg.DataDir, bootstrap.FileName))
	if err != nil {
		return fmt.Errorf("bootstrap tokens: %w", err)
	}
	var ledgerOpts []ledger.Option
	if fresh {
		ledgerOpts = append(ledgerOpts, ledger.WithSince(time.Time{}))
	}
	leaves, err := ledger.Open(filepath.Join(cfg.DataDir, ledger.FileName), ledgerOpts...)
	if err != nil {
		return fmt.Errorf("certificate ledger: %w", err)
	}
	defer func() {
		if err != nil {
			_ = leaves.Close()
		}
	}()
	var accounts issuer.ServiceAccountVerifier
	if k := cfg.TLS.Kubernetes; k.Issuer != "" {
		jwks, err := os.ReadFile(k.JWKSFile)
		if err != nil {
			return fmt.Errorf("tls.kubernetes.jwksFile: %w", err)
		}
		v, err := k8stoken.New(k8stoken.Config{Issuer: k.Issuer, JWKS: jwks, Audience: k.Audience})
		if err != nil {
			return fmt.Errorf("tls.kubernetes: %w", err)
		}
		accounts = v
		p.log.Info("Kubernetes service-account tokens accepted for first certificates", "issuer", k.Issuer, "audience", k.Audience, "jwks", k.JWKSFile)
	}
	sidecars := fleet.New()
	iss, err := issuer.New(issuer.Config{
		CA: authority, Tokens: tokens, ServiceAccounts: accounts, Ledger: leaves, Fleet: sidecars,
		RenewWindow: cfg.TLS.RenewWindow.Duration, Log: p.log.With("component", "identity"),
	})
	if err != nil {
		return err
	}
	rot, err := rotation.New(rotation.Config{
		CA: authority, Ledger: leaves, Fleet: sidecars, LeafTTL: iss.TTL(), Log: p.log.With("component", "ca"),
	})
	if err != nil {
		return err
	}
	hosts := cfg.TLS.Hosts
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1"}
		if h, err := os.Hostname(); err == nil && h != "" {
			hosts = append(hosts, h)
		}
	}
	serve, err := authority.ServerTLSConfig(hosts)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	p.ca, p.tokens, p.issuer, p.serveTLS, p.leaves, p.rotator = authority, tokens, iss, serve, leaves, rot
	rs := authority.Rotation()
	p.log.Info("certificate authority ready: sidecars trust this control plane with --ca-pin or --ca-bundle",
		"trust_domain", cfg.TLS.TrustDomain, "ca_pin", identity.Pin(authority.Issuer()),
		"bundle", filepath.Join(cfg.DataDir, BundleFile), "hosts", hosts, "rotation_stage", rs.Stage)
	return nil
}

// Rotator runs and reports CA root rotations, nil without TLS.
func (p *Plane) Rotator() *rotation.Rotator { return p.rotator }

// httpHandler is the API, plus bootstrap-token issuance with TLS.
func (p *Plane) httpHandler() http.Handler {
	if p.tokens == nil {
		return p.api
	}
	bh, err := bootstrap.NewHandler(p.tokens, p.token, p.log.With("component", "bootstrap"))
	if err != nil { // only on a missing store or token, which New rules out
		p.log.Error("bootstrap token API unavailable", "error", err)
		return p.api
	}
	mux := http.NewServeMux()
	mux.Handle(bootstrap.Path, bh)
	mux.Handle("/", p.api)
	return mux
}

// CA is the mesh's certificate authority, nil without TLS.
func (p *Plane) CA() *ca.CA { return p.ca }

// Tokens is the bootstrap-token store, nil without TLS.
func (p *Plane) Tokens() *bootstrap.Store { return p.tokens }

// authorizeNode lets an xDS stream fetch a node's configuration only when
// its mesh certificate is for that node's service (Node.cluster). Without
// TLS every stream is allowed.
func (p *Plane) authorizeNode(ctx context.Context, node *corev3.Node) error {
	if p.ca == nil {
		return nil
	}
	id, err := issuer.PeerIdentity(ctx, p.ca)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "xDS needs a mesh certificate: %v", err)
	}
	if node.GetCluster() != id.Service() {
		return status.Errorf(codes.PermissionDenied, "certificate %s may not fetch the configuration of service %q", id, node.GetCluster())
	}
	return nil
}

// DataDir is the control plane's data directory (the CA bundle is
// BundleFile in it).
func (p *Plane) DataDir() string { return p.cfg.DataDir }
