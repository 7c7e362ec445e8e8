package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/causeway-mesh/causeway/control/identity"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// Mutual TLS on the sidecar-to-sidecar hop.
//
// With mesh credentials (WithMeshIdentity), the mesh pool dials peers over
// TLS 1.3 with ALPN h2, presenting this sidecar's SPIFFE certificate and
// verifying the peer's against the current trust bundle; the inbound
// listener terminates TLS the same way and hands the caller's verified
// SPIFFE ID to the app in x-mesh-peer-identity (a copy sent by anyone else
// is removed). Certificates are read at each handshake, so rotation needs
// no restart and drops nothing.
//
// Modes (inbound): strict accepts only mutual TLS; permissive also accepts
// plaintext, whose callers have no identity; off is plaintext only (no
// credentials). The outbound side uses TLS whenever it has credentials.
// WebSocket and other HTTP/1.1 upgrades, which cannot ride an HTTP/2
// stream, go over a mutual-TLS connection of their own that negotiates
// ALPN http/1.1 on the same port; the inbound side serves it as HTTP/1,
// through the same framing guard as plaintext, with the caller's identity.

// HeaderPeerIdentity carries the caller's verified SPIFFE ID to the app.
const HeaderPeerIdentity = "X-Mesh-Peer-Identity"

// WithMeshIdentity turns mutual TLS on for the mesh hop with creds, and
// sets the inbound mode.
func WithMeshIdentity(creds *identity.Credentials, mode identity.Mode) Option {
	return func(s *Sidecar) {
		if mode == identity.ModeOff || creds == nil {
			return
		}
		s.meshCreds = creds
		s.mtlsMode = mode
	}
}

// meshTLS is the inbound listener's side of mutual TLS.
type meshTLS struct {
	creds *identity.Credentials
	mode  identity.Mode
}

var (
	errPlaintextRefused = errors.New("plaintext connection refused: this sidecar accepts mutual TLS only (strict mode)")
	errMTLSHandshake    = errors.New("mutual TLS handshake failed")
)

// accept reads the first bytes of c. A TLS handshake is completed and the
// TLS connection returned; plaintext returns the bytes read (for the
// HTTP sniffing that follows) when the mode allows it, else an error. The
// caller has set a read deadline.
func (t *meshTLS) accept(c net.Conn) ([]byte, *tls.Conn, error) {
	first := make([]byte, 3)
	n, err := io.ReadFull(c, first)
	first = first[:n]
	if !identity.LooksLikeTLS(first) {
		if err != nil && n == 0 {
			return nil, nil, err
		}
		if !t.mode.AcceptsPlaintext() {
			return nil, nil, errPlaintextRefused
		}
		return first, nil, nil
	}
	tc := tls.Server(&prefixConn{Conn: c, prefix: first}, t.creds.ServerTLSConfig())
	if err := tc.Handshake(); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errMTLSHandshake, err)
	}
	return nil, tc, nil
}

// reason labels a refused connection in mesh_rejected_requests_total.
func (t *meshTLS) reason(err error) string {
	switch {
	case errors.Is(err, errPlaintextRefused):
		return "plaintext_refused"
	case errors.Is(err, errMTLSHandshake):
		return "mtls_handshake"
	}
	return "read_error"
}

// peerIdentityKey holds the caller's SPIFFE ID in a request's context.
type peerIdentityKey struct{}

// peerIdentityOf is the verified SPIFFE ID of a TLS connection's peer, or
// "" (the handshake verified it; this only reads it back).
func peerIdentityOf(tc *tls.Conn) string {
	id, err := identity.PeerIdentity(tc.ConnectionState())
	if err != nil {
		return ""
	}
	return id.String()
}

// peerIdentity is the verified SPIFFE ID of the caller of an inbound
// request, or "" for a plaintext caller.
func peerIdentity(ctx context.Context) string {
	id, _ := ctx.Value(peerIdentityKey{}).(string)
	return id
}

// peerConn is an HTTP/1 mesh connection over mutual TLS: the caller's
// verified SPIFFE ID travels with it to the requests it carries.
type peerConn struct {
	net.Conn
	peer string
}

// clientTLS wraps a new mesh connection in TLS and completes the
// handshake. The server must present exactly expected (the service the
// routing table says lives at that address), or, when expected is zero,
// any SPIFFE ID of the trust domain.
// proto is the ALPN protocol to negotiate (identity.ALPN, or
// identity.ALPNUpgrade for an upgrade connection).
func clientTLS(ctx context.Context, creds *identity.Credentials, c net.Conn, expected spiffeid.ID, proto string) (net.Conn, error) {
	tc := tls.Client(c, creds.ClientTLSConfigFor(expected, proto))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("mesh mTLS to %s: %w", c.RemoteAddr(), err)
	}
	return tc, nil
}

// expectedPeer is the SPIFFE ID a mesh endpoint at addr must present: the
// service the routing table lists it under, in this sidecar's namespace,
// or zero when no service lists it (then any mesh identity is accepted).
// A certificate for another service at that address is refused, so a
// compromised instance cannot answer for a service it is not.
func (s *Sidecar) expectedPeer(addr string) spiffeid.ID {
	name, ok := s.serviceAt(addr)
	if !ok {
		return spiffeid.ID{}
	}
	ns := s.cfg.Load().MTLS.Namespace
	if ns == "" {
		ns = "default"
	}
	id, err := spiffeid.New(s.meshCreds.TrustDomain(), ns, name)
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}
