package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/control/identitypb"
)

// Why a stream and not a poll: a CA root rotation must reach every sidecar
// before the new root signs, and the control plane must know that it has.
// A WatchBundle stream (bidirectional, like xDS's ADS) delivers a new
// bundle within a round trip of the change, costs nothing while nothing
// changes, and carries the sidecar's acknowledgement back, which is what
// lets an operator activate a new root as soon as the fleet trusts it
// instead of after a fixed wait. A poll every ~30 s would add up to that
// much latency to every stage, a steady N/30 requests a second, and a
// separate channel for acknowledgements.

// watchBundle keeps a WatchBundle stream to the control plane open for as
// long as ctx lives, from the first certificate on (the stream
// authenticates with it), reconnecting after jittered backoff that starts
// at MinBackoff and doubles to MaxBackoff; a stream that lived longer than
// MaxBackoff starts the backoff over. It runs on its own goroutine, started
// by Run.
func (m *Manager) watchBundle(ctx context.Context) {
	select {
	case <-m.ready:
	case <-ctx.Done():
		return
	}
	var w watchState
	backoff := m.minBackoff
	unimplemented := false
	for {
		start := m.now()
		err := m.watchOnce(ctx, &w)
		if ctx.Err() != nil {
			return
		}
		if m.now().Sub(start) > m.maxBackoff {
			backoff = m.minBackoff
		}
		wait := jitter(backoff)
		if certRefused(err) && !m.orphaned.Load() {
			// The control plane no longer trusts the certificate's root (it
			// was pruned while this stream was down): renew with a token.
			m.log.Warn("the control plane refused this certificate; renewing at once", "id", m.id, "error", err)
			m.orphaned.Store(true)
			m.renewSoon(m.now())
		}
		if status.Code(err) == codes.Unimplemented {
			wait = m.maxBackoff
			if !unimplemented {
				m.log.Info("the control plane does not offer WatchBundle; trust-bundle changes arrive with each certificate", "id", m.id)
				unimplemented = true
			}
		} else {
			m.log.Debug("trust-bundle watch ended; reconnecting", "id", m.id, "in", wait.Round(time.Millisecond), "error", err)
		}
		backoff = min(2*backoff, m.maxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// watchState is what the watch goroutine remembers across streams.
type watchState struct {
	// renewingFor is the issuer (DER) a renewal was already asked for.
	renewingFor []byte
}

// watchOnce runs one stream until it fails or ctx ends. One goroutine
// receives updates; this one applies them and sends every
// acknowledgement (gRPC allows one sender and one receiver at a time).
func (m *Manager) watchOnce(ctx context.Context, w *watchState) error {
	conn, err := grpc.NewClient(m.addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(m.controlPlaneTLS(true))),
	}, m.dialOpts...)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := identitypb.NewIdentityClient(conn).WatchBundle(sctx)
	if err != nil {
		return err
	}
	updates := make(chan *identitypb.BundleUpdate)
	errc := make(chan error, 1)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			u, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case updates <- u:
			case <-sctx.Done():
				return
			}
		}
	}()
	defer func() { cancel(); <-recvDone }()

	select {
	case <-m.installed: // covered by the first acknowledgement
	default:
	}
	if err := stream.Send(m.ack()); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case u := <-updates:
			if !m.applyUpdate(u, w) {
				continue
			}
		case <-m.installed:
		}
		if err := stream.Send(m.ack()); err != nil {
			return err
		}
	}
}

// ack is the acknowledgement of what the Manager holds now.
func (m *Manager) ack() *identitypb.BundleAck {
	a := &identitypb.BundleAck{}
	if d := m.bundleDigest.Load(); d != nil {
		a.BundleSha256 = d[:]
	}
	if c := m.creds.Certificate(); c != nil {
		a.LeafCertificate = c.Leaf.Raw
	}
	return a
}

// applyUpdate installs the update's bundle with the current certificate
// (Credentials.Update: same key and certificate, new bundle) and, when the
// CA's signer did not sign the current certificate, asks Run to renew at a
// random moment within the update's window. It reports whether the update
// was applied, so that it is acknowledged.
func (m *Manager) applyUpdate(u *identitypb.BundleUpdate, w *watchState) bool {
	bundle, err := parseCertificates(u.GetTrustBundlePem())
	if err == nil && len(bundle) == 0 {
		err = errNoCert
	}
	if err != nil {
		m.log.Warn("trust-bundle update ignored", "id", m.id, "error", err)
		return false
	}
	sum := sha256.Sum256(u.GetTrustBundlePem())
	if d := u.GetBundleSha256(); len(d) > 0 && !bytes.Equal(d, sum[:]) {
		m.log.Warn("trust-bundle update ignored: its digest does not match", "id", m.id)
		return false
	}
	if d := m.bundleDigest.Load(); d == nil || *d != sum {
		m.installMu.Lock()
		err := m.creds.Update(m.creds.Certificate(), bundle)
		if err == nil {
			m.bundleDigest.Store(&sum)
		}
		m.installMu.Unlock()
		if err != nil {
			// The bundle no longer holds the root of the current
			// certificate (a forced prune): renew at once, with a token.
			m.log.Warn("the control plane no longer trusts this certificate's root; renewing at once", "id", m.id, "error", err)
			m.orphaned.Store(true)
			m.renewSoon(m.now())
			return false
		}
		m.log.Info("trust bundle updated", "id", m.id, "roots", len(bundle), "stage", u.GetStage())
	}
	issuer, err := x509.ParseCertificate(u.GetIssuerCertificate())
	cur := m.creds.Certificate()
	switch {
	case err != nil || cur == nil:
	case cur.Leaf.CheckSignatureFrom(issuer) == nil:
		w.renewingFor = nil
	case !bytes.Equal(w.renewingFor, issuer.Raw):
		window := min(max(time.Duration(u.GetRenewWindowMillis())*time.Millisecond, 0), maxRenewWindow)
		var delay time.Duration
		if window > 0 {
			delay = time.Duration(randInt63n(int64(window)))
		}
		m.log.Info("the CA signs with a new root; renewing onto it", "id", m.id, "in", delay.Round(time.Millisecond), "window", window)
		w.renewingFor = issuer.Raw
		m.renewSoon(m.now().Add(delay))
	}
	return true
}

// certRefused reports whether err says that the control plane refused the
// client certificate in the TLS handshake: Go's TLS server answers a
// certificate its verification rejects with a bad_certificate alert, and
// gRPC reports the alert only as text.
func certRefused(err error) bool {
	return err != nil && strings.Contains(err.Error(), "tls: bad certificate")
}
