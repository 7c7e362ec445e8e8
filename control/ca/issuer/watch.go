package issuer

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/fleet"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/control/identity/svid"
	"github.com/causeway-mesh/causeway/control/identitypb"
)

// resendInterval is the shortest time between two updates sent because an
// acknowledgement named a bundle other than the current one, so that a
// sidecar that keeps failing to apply a bundle cannot make the stream spin.
const resendInterval = time.Second

// WatchBundle implements identitypb.IdentityServer: it sends the current
// bundle when the stream opens and whenever the CA's bundle, signer or
// stage changes, and records each acknowledgement in the fleet registry.
// The handler runs on the stream's goroutine; one more goroutine receives
// acknowledgements and ends with the stream.
func (s *Server) WatchBundle(stream grpc.BidiStreamingServer[identitypb.BundleAck, identitypb.BundleUpdate]) error {
	ctx := stream.Context()
	id, err := PeerIdentity(ctx, s.ca)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "WatchBundle needs a mesh certificate: %v", err)
	}
	var conn *fleet.Conn
	if s.fleet != nil {
		conn = s.fleet.Connect(id.String(), peerAddr(ctx), s.now())
		defer conn.Close()
	}

	acks := make(chan *identitypb.BundleAck, 1)
	recvDone := make(chan struct{}) // closed when the sidecar's side ends
	go func() {
		defer close(recvDone)
		for {
			ack, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case acks <- ack:
			case <-ctx.Done():
				return
			}
		}
	}()

	var (
		last       ca.TrustState // what was sent
		sent       bool
		lastResend time.Time
		resend     <-chan time.Time // armed when a resend is due but rate-limited
	)
	for {
		changed := s.ca.Changed()
		cur := s.ca.TrustState()
		digest := cur.Digest
		if !sent || cur.Digest != last.Digest || !cur.Issuer.Equal(last.Issuer) || cur.Stage != last.Stage {
			if err := stream.Send(s.bundleUpdate(cur)); err != nil {
				return err
			}
			last, sent = cur, true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-recvDone:
			// The sidecar closed its side or went away: the stream is over.
			return nil
		case <-changed:
		case <-resend:
			resend = nil
			lastResend = s.now()
			sent = false
		case ack := <-acks:
			acked := s.recordAck(conn, id, ack)
			if acked == digest || resend != nil {
				continue
			}
			// The sidecar holds another bundle (it lost a race with a
			// renewal, or could not apply the update): send it again.
			if wait := resendInterval - s.now().Sub(lastResend); wait > 0 {
				resend = time.After(wait)
				continue
			}
			lastResend = s.now()
			sent = false
		}
	}
}

// bundleUpdate is st as an update.
func (s *Server) bundleUpdate(st ca.TrustState) *identitypb.BundleUpdate {
	return &identitypb.BundleUpdate{
		TrustBundlePem:    st.Bundle,
		BundleSha256:      st.Digest[:],
		IssuerCertificate: st.Issuer.Raw,
		RenewWindowMillis: s.renewWindow.Milliseconds(),
		Stage:             string(st.Stage),
	}
}

// recordAck notes an acknowledgement in the fleet registry and returns the
// digest it names. A leaf that is not an SVID of the stream's identity is
// ignored (the stream's identity was authenticated, the leaf is a claim).
func (s *Server) recordAck(conn *fleet.Conn, id spiffeid.ID, ack *identitypb.BundleAck) [sha256.Size]byte {
	var digest [sha256.Size]byte
	if len(ack.GetBundleSha256()) == sha256.Size {
		copy(digest[:], ack.GetBundleSha256())
	}
	if conn == nil {
		return digest
	}
	var serial, root string
	var notAfter time.Time
	if der := ack.GetLeafCertificate(); len(der) > 0 && len(der) <= MaxCSRBytes {
		if leaf, err := x509.ParseCertificate(der); err == nil {
			if got, err := svid.ID(leaf); err == nil && got == id {
				serial, notAfter = leaf.SerialNumber.Text(16), leaf.NotAfter
				if r, ok := s.ca.RootOf([]*x509.Certificate{leaf}); ok {
					root = ca.Fingerprint(r)
				}
			}
		}
	}
	bundle := ""
	if !bytes.Equal(digest[:], make([]byte, sha256.Size)) {
		bundle = hex.EncodeToString(digest[:])
	}
	conn.Ack(bundle, serial, root, notAfter, s.now())
	return digest
}
