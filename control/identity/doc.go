// Package identity is the sidecar's side of mesh identity: it obtains the
// workload's certificate from the control plane and keeps it current
// (Manager), and builds the TLS configurations of the sidecar-to-sidecar
// hop from it (Credentials).
//
// The mesh hop is TLS 1.3 with ALPN "h2". Both sides present an X.509-SVID
// (a certificate whose only name is the SPIFFE ID
// spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE, package spiffeid) and
// verify the peer's against the trust bundle current at handshake time.
// The client side also checks, when it knows it, that the server is the
// service it meant to reach; the inbound side learns the caller with
// PeerIdentity and hands it to authorization (proxy/authz).
//
// Trust at bootstrap: before the sidecar holds the mesh bundle it trusts
// the control plane through an Anchor, either a CA bundle file or a pinned
// CA key hash given beside the bootstrap token.
//
// Rotation: certificates are swapped atomically in Credentials. A
// handshake in progress finishes with the snapshot it read; established
// connections keep theirs until they close; new handshakes use the new
// one. Nothing is restarted, so rotation drops no request.
//
// CA root rotation: the Manager keeps a WatchBundle stream open to the
// control plane (watch.go). A new trust bundle is installed as soon as the
// control plane has one (same key and certificate, new bundle) and
// acknowledged, which is what lets the control plane start signing with a
// new root only once every connected sidecar trusts it. When the bundle
// update says another certificate now signs new leaves, the Manager renews
// at a random moment within the window the control plane names, so the
// fleet moves to the new root within minutes, not at two thirds of the
// leaf lifetime. If the control plane stops trusting the current
// certificate's root (a forced prune), the Manager renews at once with its
// bootstrap or service-account token.
//
// First certificate in Kubernetes: without a bootstrap token, the Manager
// sends the pod's projected service-account token (Config.
// ServiceAccountTokenFile, default /var/run/secrets/causeway/token, read
// again at every use), and is issued the identity of its service account.
package identity

import (
	"fmt"
	"strings"
)

// Mode is a service's inbound mTLS mode.
type Mode uint8

// The modes. The zero value is ModeStrict, so an unset mode is the safe one.
const (
	// ModeStrict accepts only mutual TLS from a mesh peer.
	ModeStrict Mode = iota
	// ModePermissive accepts mutual TLS and plaintext (during migration);
	// a plaintext caller has no identity.
	ModePermissive
	// ModeOff accepts plaintext only.
	ModeOff
)

// ParseMode parses "strict", "permissive" or "off" (any case); "" is strict.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "", "strict":
		return ModeStrict, nil
	case "permissive":
		return ModePermissive, nil
	case "off":
		return ModeOff, nil
	}
	return 0, fmt.Errorf("identity: mTLS mode %q is not strict, permissive or off", s)
}

// String is the mode's name.
func (m Mode) String() string {
	switch m {
	case ModeStrict:
		return "strict"
	case ModePermissive:
		return "permissive"
	case ModeOff:
		return "off"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// AcceptsTLS reports whether the mode accepts mutual TLS connections.
func (m Mode) AcceptsTLS() bool { return m == ModeStrict || m == ModePermissive }

// AcceptsPlaintext reports whether the mode accepts plaintext connections.
func (m Mode) AcceptsPlaintext() bool { return m == ModePermissive || m == ModeOff }

// LooksLikeTLS reports whether the first bytes a client sent start a TLS
// handshake (a handshake record, 0x16, of TLS major version 3), which is
// how a permissive listener tells mutual TLS from plaintext on one port.
// It needs at least 3 bytes; fewer report false.
func LooksLikeTLS(first []byte) bool {
	return len(first) >= 3 && first[0] == 0x16 && first[1] == 0x03 && first[2] <= 0x04
}
