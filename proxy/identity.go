package proxy

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"google.golang.org/grpc"

	"github.com/causeway-mesh/causeway/control/identity"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// NewIdentityManager builds the certificate manager for cfg.MTLS, or nil
// when mutual TLS is off. The bootstrap token comes from the token file or
// MESH_BOOTSTRAP_TOKEN (env).
func NewIdentityManager(cfg *config.Config, env func(string) (string, bool), log *slog.Logger) (*identity.Manager, identity.Mode, error) {
	// Mutual TLS is on as soon as the sidecar knows how to trust the
	// control plane's CA: strict unless the mode says otherwise.
	if cfg.MTLS.Mode == "" && cfg.MTLS.CABundle == "" && cfg.MTLS.CAPin == "" {
		return nil, identity.ModeOff, nil
	}
	mode, err := identity.ParseMode(cfg.MTLS.Mode)
	if err != nil || mode == identity.ModeOff {
		return nil, identity.ModeOff, err
	}
	var anchor identity.Anchor
	if cfg.MTLS.CABundle != "" {
		pem, err := os.ReadFile(cfg.MTLS.CABundle)
		if err != nil {
			return nil, 0, fmt.Errorf("mtls.caBundle: %w", err)
		}
		if anchor, err = identity.AnchorFromBundle(pem); err != nil {
			return nil, 0, fmt.Errorf("mtls.caBundle: %w", err)
		}
	} else if anchor, err = identity.AnchorFromPin(cfg.MTLS.CAPin); err != nil {
		return nil, 0, fmt.Errorf("mtls.caPin: %w", err)
	}
	token, _ := env("MESH_BOOTSTRAP_TOKEN")
	if cfg.MTLS.TokenFile != "" {
		b, err := os.ReadFile(cfg.MTLS.TokenFile)
		if err != nil {
			return nil, 0, fmt.Errorf("mtls.tokenFile: %w", err)
		}
		token = string(b)
	}
	td := cfg.MTLS.TrustDomain
	if td == "" {
		td = "causeway.local"
	}
	m, err := identity.New(identity.Config{
		ControlPlane: cfg.ControlPlane, TrustDomain: td, Service: cfg.Service,
		Namespace: cfg.MTLS.Namespace, Token: strings.TrimSpace(token), Anchor: anchor,
		ServiceAccountTokenFile: cfg.MTLS.K8sTokenFile,
		Log:                     log.With("component", "identity"),
	})
	if err != nil {
		return nil, 0, err
	}
	return m, mode, nil
}

// WithIdentityManager runs mutual TLS with certificates from m (see
// NewIdentityManager): the mesh hop, and the xDS and fencing connections
// to the control plane.
func WithIdentityManager(m *identity.Manager, mode identity.Mode) Option {
	return func(s *Sidecar) {
		if m == nil {
			return
		}
		s.idm = m
		WithMeshIdentity(m.Credentials(), mode)(s)
	}
}

// controlPlaneDialOptions secure the sidecar's control-plane connections
// when it has a mesh identity.
func (s *Sidecar) controlPlaneDialOptions() []grpc.DialOption {
	if s.idm == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(s.idm.ControlPlaneCredentials())}
}
