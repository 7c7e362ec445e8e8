package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"github.com/causeway-mesh/causeway/control/identity"
	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// Upstream connection pools.
//
// Sidecar to sidecar ("mesh" pool): every request, whatever the app speaks,
// travels as an HTTP/2 stream on a few long-lived, multiplexed cleartext
// connections per peer (golang.org/x/net/http2, chosen over net/http's
// built-in unencrypted HTTP/2 because the latter showed multi-second tail
// latency under load on this class of machine; HARDENING.md §2). The dial
// function is the single place where mutual TLS (ALPN h2) slots in later.
// HTTP/1.1 upgrade requests (WebSocket) cannot ride an HTTP/2 stream, so
// they take a dedicated HTTP/1.1 connection to the peer's inbound port,
// which accepts both.
//
// Sidecar to local app ("app" pool): HTTP/1.1 keep-alive with limits, or
// h2c for h2c and gRPC apps.

// dialer opens upstream connections and counts them.
type dialer struct {
	pool    string
	timeout time.Duration
	m       *metrics
	// creds, when set, makes every connection mutual TLS (the mesh pool);
	// expect names the identity the peer at an address must present.
	creds  *identity.Credentials
	expect func(addr string) spiffeid.ID
	// slot, when set, takes a connection slot of the service at an
	// address (its MaxConnections), released when the connection closes,
	// and gives that service's connect timeout, which then bounds the dial
	// and the TLS handshake instead of timeout (0: timeout applies).
	slot func(addr string) (release func(), connect time.Duration, err error)
	// upgrade marks the dialer of HTTP/1.1 upgrade connections: with
	// mutual TLS they negotiate ALPN http/1.1 instead of h2.
	upgrade bool
}

func (d *dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	release, timeout := func() {}, d.timeout
	if d.slot != nil {
		rel, connect, err := d.slot(addr)
		if err != nil {
			d.m.upDials.WithLabelValues(d.pool, "overflow").Inc()
			return nil, err
		}
		release = rel
		if connect > 0 {
			timeout = connect
		}
	}
	// The connect timeout covers the TCP connect and, with mutual TLS, the
	// handshake: a peer cut off by a partition costs at most that long.
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nd := net.Dialer{KeepAlive: 30 * time.Second}
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		release()
		d.m.upDials.WithLabelValues(d.pool, "error").Inc()
		return nil, err
	}
	if d.creds != nil {
		var want spiffeid.ID
		if d.expect != nil {
			want = d.expect(addr)
		}
		proto := identity.ALPN
		if d.upgrade {
			proto = identity.ALPNUpgrade
		}
		if c, err = clientTLS(ctx, d.creds, c, want, proto); err != nil {
			release()
			d.m.upDials.WithLabelValues(d.pool, "tls_error").Inc()
			return nil, err
		}
	}
	d.m.upDials.WithLabelValues(d.pool, "ok").Inc()
	g := d.m.upConns.WithLabelValues(d.pool)
	g.Inc()
	return &countedConn{Conn: c, gauge: g, onClose: release}, nil
}

// newH2CTransport returns an HTTP/2 prior-knowledge cleartext transport.
func newH2CTransport(d *dialer, maxHeaderBytes int) *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return d.dial(ctx, network, addr)
		},
		DisableCompression: true,
		// Open another connection rather than queue when a peer's stream
		// limit is reached.
		StrictMaxConcurrentStreams: false,
		// Ping a connection that has been silent for 1 s and close it when
		// no answer comes within 1.5 s: a peer cut off by a partition is
		// noticed within about 2.5 s, and the requests waiting on it fail
		// (and, when idempotent, are retried elsewhere) instead of hanging.
		// A read on a fenced minority whose first two tries land on peers
		// across the cut is answered within the 10 s the partition tests
		// allow (with 3 s + 2 s, two tries took the whole 10 s). A busy
		// connection is never pinged; an idle one costs a PING a second.
		ReadIdleTimeout:   time.Second,
		PingTimeout:       1500 * time.Millisecond,
		IdleConnTimeout:   90 * time.Second,
		MaxHeaderListSize: uint32(maxHeaderBytes),
	}
}

// newH1Transport returns an HTTP/1.1 keep-alive transport. maxIdle bounds
// idle connections per host; maxConns bounds all (0: no bound).
func newH1Transport(d *dialer, maxIdle, maxConns, maxHeaderBytes int) *http.Transport {
	t := &http.Transport{
		DialContext:            d.dial,
		MaxIdleConns:           maxIdle,
		MaxIdleConnsPerHost:    maxIdle,
		MaxConnsPerHost:        maxConns,
		IdleConnTimeout:        90 * time.Second,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: int64(maxHeaderBytes),
		WriteBufferSize:        16 << 10,
		ReadBufferSize:         16 << 10,
	}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP1(true)
	return t
}

// splitTransport sends protocol upgrades over HTTP/1.1 and everything else
// over HTTP/2.
type splitTransport struct {
	h2 http.RoundTripper
	h1 http.RoundTripper
}

func (s *splitTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if isUpgrade(r) {
		return s.h1.RoundTrip(r)
	}
	return s.h2.RoundTrip(r)
}
