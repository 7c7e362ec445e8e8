// Package issuer serves the Identity gRPC service (control/identitypb) on
// the control plane: it authenticates a sidecar by bootstrap token, by
// Kubernetes service-account token or by the certificate it presented over
// mutual TLS, and signs its CSR with the mesh CA; and it keeps connected
// sidecars' trust bundles current (WatchBundle, watch.go).
//
// Authorisation of Sign:
//
//   - With a bootstrap token: the token's scope (service, namespace) is the
//     identity signed. A single-use token is consumed only once the CSR
//     has been checked, so a malformed CSR does not burn it.
//   - With a service-account token (Config.ServiceAccounts set): the
//     token's namespace and service account are the identity signed,
//     spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICEACCOUNT.
//   - Without a token: the caller's TLS client certificate, verified again
//     here against the CA's current trust bundle (whatever the listener's
//     TLS configuration did), and its SPIFFE ID is the identity renewed.
//     An expired certificate cannot renew; the sidecar needs a token again.
//
// In every case, a SPIFFE ID URI SAN in the CSR (the service the sidecar
// claims to be) must equal the authorised identity (PERMISSION_DENIED
// otherwise), and the CA ignores every other name in the CSR.
//
// Every issued leaf is recorded in the ledger (Config.Ledger) before it is
// returned, with the leaf it replaces on a renewal, so a root rotation
// knows which leaves of an old root are still in use.
package issuer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
	"github.com/causeway-mesh/causeway/control/ca/fleet"
	"github.com/causeway-mesh/causeway/control/ca/k8stoken"
	"github.com/causeway-mesh/causeway/control/ca/ledger"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/control/identitypb"
)

// MaxCSRBytes bounds the CSR of a request.
const MaxCSRBytes = 16 << 10

// Redeemer checks a bootstrap token and returns its scope
// (*bootstrap.Store). Refusals should wrap bootstrap.ErrInvalid.
type Redeemer interface {
	Redeem(token string) (bootstrap.Scope, error)
}

// ServiceAccountVerifier checks a Kubernetes service-account token and
// returns its account (*k8stoken.Verifier). Refusals should wrap
// k8stoken.ErrInvalid.
type ServiceAccountVerifier interface {
	Verify(token string) (k8stoken.Account, error)
}

// DefaultRenewWindow is Config.RenewWindow's default.
const DefaultRenewWindow = 2 * time.Minute

// Config configures a Server.
type Config struct {
	// CA signs the certificates. Required.
	CA *ca.CA
	// Tokens redeems bootstrap tokens. Required.
	Tokens Redeemer
	// ServiceAccounts verifies Kubernetes service-account tokens; nil
	// refuses them.
	ServiceAccounts ServiceAccountVerifier
	// Ledger records every issued leaf; nil records nothing (a root
	// rotation then waits for old leaves to expire before pruning).
	Ledger *ledger.Ledger
	// Fleet tracks the sidecars connected to WatchBundle; nil tracks none
	// (the streams still work).
	Fleet *fleet.Registry
	// TTL is the lifetime of issued certificates; 0 means ca.DefaultTTL
	// (24 h). It must not exceed the CA's MaxTTL.
	TTL time.Duration
	// RenewWindow is sent to sidecars with every bundle update: once a new
	// root signs, each sidecar whose leaf it did not sign renews at a
	// random moment within this window, which bounds the signing load on
	// the control plane (a fleet of N sidecars makes N/RenewWindow
	// requests a second). Zero means DefaultRenewWindow (2 min); it must
	// not be negative.
	RenewWindow time.Duration
	// Log receives one line per issued or refused certificate; nil means
	// slog.Default(). Tokens are never logged, only their ids.
	Log *slog.Logger
}

// Server implements identitypb.IdentityServer.
type Server struct {
	identitypb.UnimplementedIdentityServer
	ca          *ca.CA
	tokens      Redeemer
	sa          ServiceAccountVerifier
	ledger      *ledger.Ledger
	fleet       *fleet.Registry
	ttl         time.Duration
	renewWindow time.Duration
	log         *slog.Logger
	now         func() time.Time
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.CA == nil {
		return nil, errors.New("issuer: CA is required")
	}
	if cfg.Tokens == nil {
		return nil, errors.New("issuer: token store is required")
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = ca.DefaultTTL
	}
	if ttl < 0 || ttl > cfg.CA.MaxTTL() {
		return nil, fmt.Errorf("issuer: TTL %v is outside (0, %v]", cfg.TTL, cfg.CA.MaxTTL())
	}
	if cfg.RenewWindow < 0 {
		return nil, fmt.Errorf("issuer: renew window %v is negative", cfg.RenewWindow)
	}
	window := cfg.RenewWindow
	if window == 0 {
		window = DefaultRenewWindow
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		ca: cfg.CA, tokens: cfg.Tokens, sa: cfg.ServiceAccounts, ledger: cfg.Ledger, fleet: cfg.Fleet,
		ttl: ttl, renewWindow: window, log: log, now: time.Now,
	}, nil
}

// TTL is the lifetime of the certificates the server issues.
func (s *Server) TTL() time.Duration { return s.ttl }

// Register registers s on a gRPC server (the control plane's xDS server,
// which must use TLS: see ca.CA.ServerTLSConfig).
func (s *Server) Register(r grpc.ServiceRegistrar) { identitypb.RegisterIdentityServer(r, s) }

// Sign implements identitypb.IdentityServer.
func (s *Server) Sign(ctx context.Context, req *identitypb.SignRequest) (*identitypb.SignResponse, error) {
	if len(req.GetCsr()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "csr is required")
	}
	if len(req.GetCsr()) > MaxCSRBytes {
		return nil, status.Errorf(codes.InvalidArgument, "csr is over %d bytes", MaxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr signature: %v", err)
	}
	asked, err := csrIdentity(csr)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}

	var id spiffeid.ID
	var replaces string // the serial of the leaf a renewal replaces
	via := "renewal"
	switch {
	case req.GetBootstrapToken() != "":
		via = "bootstrap token"
		scope, err := s.tokens.Redeem(req.GetBootstrapToken())
		if err != nil {
			s.log.Warn("certificate refused", "reason", err, "peer", peerAddr(ctx))
			return nil, status.Error(codes.Unauthenticated, "bootstrap token refused")
		}
		if id, err = spiffeid.New(s.ca.TrustDomain(), scope.Namespace, scope.Service); err != nil {
			return nil, status.Errorf(codes.Internal, "token scope: %v", err)
		}
	case req.GetServiceAccountToken() != "":
		via = "service-account token"
		if s.sa == nil {
			s.log.Warn("certificate refused", "reason", "service-account tokens are not configured (--k8s-issuer, --k8s-jwks)", "peer", peerAddr(ctx))
			return nil, status.Error(codes.Unauthenticated, "this control plane does not accept service-account tokens")
		}
		acct, err := s.sa.Verify(req.GetServiceAccountToken())
		if err != nil {
			s.log.Warn("certificate refused", "reason", err, "peer", peerAddr(ctx))
			return nil, status.Error(codes.Unauthenticated, "service-account token refused")
		}
		if id, err = spiffeid.New(s.ca.TrustDomain(), acct.Namespace, acct.Name); err != nil {
			s.log.Warn("certificate refused", "reason", err, "peer", peerAddr(ctx))
			return nil, status.Errorf(codes.PermissionDenied, "service account %s/%s is not a mesh identity: %v", acct.Namespace, acct.Name, err)
		}
		if acct.Pod != "" {
			via += " of pod " + acct.Namespace + "/" + acct.Pod
		}
	default:
		chain := peerChain(ctx)
		if len(chain) == 0 {
			return nil, status.Error(codes.Unauthenticated, "a bootstrap token, a service-account token or a client certificate is required")
		}
		if id, err = s.ca.Verify(chain, x509.ExtKeyUsageClientAuth); err != nil {
			s.log.Warn("certificate refused", "reason", err, "peer", peerAddr(ctx))
			return nil, status.Errorf(codes.Unauthenticated, "client certificate refused: %v", err)
		}
		replaces = chain[0].SerialNumber.Text(16)
	}
	if !asked.IsZero() && asked != id {
		s.log.Warn("certificate refused", "reason", "identity mismatch", "authorised", id, "asked", asked, "via", via, "peer", peerAddr(ctx))
		return nil, status.Errorf(codes.PermissionDenied, "caller is authorised for %s, not %s", id, asked)
	}

	chain, err := s.ca.Sign(csr, id, s.ttl)
	if err != nil {
		if errors.Is(err, ca.ErrBadCSR) {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		s.log.Error("certificate not signed", "id", id, "error", err)
		return nil, status.Error(codes.Internal, "signing failed")
	}
	root, _ := s.ca.RootOf(chain)
	if s.ledger != nil {
		lf := ledger.Leaf{Serial: chain[0].SerialNumber.Text(16), ID: id.String(), NotAfter: chain[0].NotAfter}
		if root != nil {
			lf.Root = ca.Fingerprint(root)
		}
		if err := s.ledger.Record(lf, replaces); err != nil {
			s.log.Error("certificate not recorded, so not issued", "id", id, "error", err)
			return nil, status.Error(codes.Internal, "the certificate could not be recorded")
		}
	}
	rootFP := ""
	if root != nil {
		rootFP = ca.Fingerprint(root)
	}
	s.log.Info("certificate issued", "id", id, "via", via, "serial", chain[0].SerialNumber.Text(16),
		"notAfter", chain[0].NotAfter.UTC().Format(time.RFC3339), "root", rootFP, "peer", peerAddr(ctx))
	return &identitypb.SignResponse{
		CertificateChainPem: ca.EncodeCertificates(chain),
		TrustBundlePem:      s.ca.Bundle(),
	}, nil
}

// csrIdentity returns the SPIFFE ID a CSR names, or the zero ID when it
// names none. A CSR naming more than one URI, or an invalid one, is refused.
func csrIdentity(csr *x509.CertificateRequest) (spiffeid.ID, error) {
	switch len(csr.URIs) {
	case 0:
		return spiffeid.ID{}, nil
	case 1:
		id, err := spiffeid.FromURL(csr.URIs[0])
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("csr URI SAN: %w", err)
		}
		return id, nil
	default:
		return spiffeid.ID{}, fmt.Errorf("csr names %d URIs; at most one SPIFFE ID is allowed", len(csr.URIs))
	}
}

// peerChain is the certificate chain the caller presented over TLS.
func peerChain(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.PeerCertificates
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// PeerIdentity returns the SPIFFE ID of the caller of a gRPC call on a
// server using ca.CA.ServerTLSConfig, verifying its certificate against
// c's current trust bundle. The xDS server uses it to serve a sidecar only
// its own configuration.
func PeerIdentity(ctx context.Context, c *ca.CA) (spiffeid.ID, error) {
	chain := peerChain(ctx)
	if len(chain) == 0 {
		return spiffeid.ID{}, errors.New("no client certificate")
	}
	return c.Verify(chain, x509.ExtKeyUsageClientAuth)
}
