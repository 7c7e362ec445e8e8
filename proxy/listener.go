package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/netutil"

	"github.com/causeway-mesh/causeway/control/identity"
	"github.com/causeway-mesh/causeway/proxy/h1guard"
)

// httpListener serves HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on
// one port. Each accepted connection is classified by its first bytes: the
// HTTP/2 connection preface goes to an x/net/http2 server, anything else,
// wrapped in the HTTP/1 framing guard, to the HTTP/1 fast lane (h1fast.go),
// which hands connections it does not serve to a net/http server.
//
// Goroutines: one accept loop; one per connection while it is classified
// (bounded by the read-header timeout), which then serves it on the fast
// lane; one fast-lane watchdog; net/http's per-connection goroutines for
// HTTP/1 connections moved to it; one ServeConn goroutine per HTTP/2
// connection plus x/net's per-stream handler goroutines.
type httpListener struct {
	name   string
	ln     net.Listener
	h1     *http.Server
	h2     *http2.Server
	h1Conn *chanListener
	lim    h1guard.Limits
	sniffT time.Duration
	m      *metrics
	log    interface{ Debug(string, ...any) }

	h2wg    sync.WaitGroup
	h2mu    sync.Mutex
	h2conns map[net.Conn]struct{}

	// The HTTP/1.1 fast lane (h1fast.go): its connections, for shutdown.
	fastWG      sync.WaitGroup
	fastMu      sync.Mutex
	fastConns   map[*fastConn]struct{}
	fastClosing atomic.Bool
	fastOnce    sync.Once // starts the watchdog
	date        dateCache

	// mtls, when set, terminates mutual TLS on this listener (inbound).
	mtls *meshTLS
}

// h2Preface is what an HTTP/2 client sends first (RFC 9113 §3.4).
var h2Preface = []byte(http2.ClientPreface)

type listenerOptions struct {
	name              string
	maxConns          int
	maxHeaderBytes    int
	maxHeaderCount    int
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	maxStreams        uint32
}

func newHTTPListener(ln net.Listener, h http.Handler, o listenerOptions, m *metrics, errLog *log.Logger, debug interface{ Debug(string, ...any) }) *httpListener {
	l := &httpListener{
		name:    o.name,
		ln:      netutil.LimitListener(ln, o.maxConns),
		lim:     h1guard.Limits{MaxHeaderBytes: o.maxHeaderBytes, MaxHeaderCount: o.maxHeaderCount},
		sniffT:  o.readHeaderTimeout,
		m:       m,
		log:     debug,
		h2conns: map[net.Conn]struct{}{},
		h1Conn:  newChanListener(ln.Addr()),

		fastConns: map[*fastConn]struct{}{},
	}
	l.h1 = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.readHeaderTimeout,
		IdleTimeout:       o.idleTimeout,
		MaxHeaderBytes:    o.maxHeaderBytes,
		ErrorLog:          errLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if g := connGuard(c); g != nil {
				ctx = context.WithValue(ctx, guardKey{}, g)
				if pc, ok := g.Conn.(*peerConn); ok {
					ctx = context.WithValue(ctx, peerIdentityKey{}, pc.peer)
				}
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if g := connGuard(c); g != nil && st == http.StateIdle {
				g.Idle()
			}
		},
	}
	// HTTP/2 receive windows bound what a client can make the sidecar
	// buffer: 64 KiB per stream (HARDENING.md, Defaults to ship), 1 MiB
	// per connection; a stream's body is read on as the upstream takes it.
	l.h2 = &http2.Server{
		MaxConcurrentStreams:         o.maxStreams,
		MaxReadFrameSize:             16 << 10,
		IdleTimeout:                  o.idleTimeout,
		MaxUploadBufferPerConnection: 1 << 20,
		MaxUploadBufferPerStream:     64 << 10,
	}
	// Registers GOAWAY on h1.Shutdown for the HTTP/2 connections.
	_ = http2.ConfigureServer(l.h1, l.h2)
	return l
}

// serve runs until the listener is closed by shutdown.
func (l *httpListener) serve() error {
	errc := make(chan error, 1)
	go func() { errc <- l.h1.Serve(l.h1Conn) }()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			_ = l.h1Conn.Close()
			if serveErr := <-errc; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, net.ErrClosed) {
				return serveErr
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		l.m.accepted.WithLabelValues(l.name).Inc()
		g := l.m.active.WithLabelValues(l.name)
		g.Inc()
		go l.dispatch(&countedConn{Conn: c, gauge: g})
	}
}

// dispatch classifies a new connection by its first bytes: mutual TLS
// (when this listener takes it), HTTP/2 preface, or HTTP/1.
func (l *httpListener) dispatch(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(l.sniffT))
	var first []byte
	if l.mtls != nil {
		var tlsConn *tls.Conn
		var err error
		first, tlsConn, err = l.mtls.accept(c)
		_ = c.SetReadDeadline(time.Time{})
		switch {
		case err != nil:
			l.m.rejected.WithLabelValues(l.name, l.mtls.reason(err)).Inc()
			l.log.Debug("refused connection", "listener", l.name, "remote", c.RemoteAddr().String(), "error", err)
			c.Close()
			return
		case tlsConn != nil && tlsConn.ConnectionState().NegotiatedProtocol == identity.ALPNUpgrade:
			l.serveH1(&peerConn{Conn: tlsConn, peer: peerIdentityOf(tlsConn)}, false)
			return
		case tlsConn != nil:
			l.serveH2(tlsConn, peerIdentityOf(tlsConn))
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(l.sniffT))
	}
	prefix, isH2, err := sniffFrom(c, first)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil && len(prefix) == 0 {
		c.Close()
		return
	}
	pc := &prefixConn{Conn: c, prefix: prefix}
	if !isH2 {
		l.serveH1(pc, true)
		return
	}
	l.serveH2(pc, "")
}

// serveH1 serves an HTTP/1 connection behind the framing guard: on the
// fast lane (h1fast.go) when fast, else with the listener's net/http
// server. Upgrade connections of mutual TLS go straight to net/http.
func (l *httpListener) serveH1(c net.Conn, fast bool) {
	g := h1guard.NewConn(c, l.lim)
	g.OnReject = func(e *h1guard.RequestError) {
		l.m.rejected.WithLabelValues(l.name, e.Reason).Inc()
		l.log.Debug("refused malformed request", "listener", l.name, "remote", c.RemoteAddr().String(), "reason", e.Reason)
	}
	if fast {
		l.serveFast(g)
		return
	}
	if !l.h1Conn.push(g) {
		c.Close()
	}
}

// connGuard returns the framing guard of an HTTP/1 connection served by
// net/http, or nil.
func connGuard(c net.Conn) *h1guard.Conn {
	switch c := c.(type) {
	case *h1guard.Conn:
		return c
	case *guardedConn:
		return c.g
	}
	return nil
}

// serveH2 serves an HTTP/2 connection until it ends. peer is the caller's
// verified SPIFFE ID on a mutual-TLS connection, else "".
func (l *httpListener) serveH2(c net.Conn, peer string) {
	c = newFrameWatch(c, l.m, l.name)
	l.h2mu.Lock()
	if l.h2conns == nil { // shutting down
		l.h2mu.Unlock()
		c.Close()
		return
	}
	l.h2conns[c] = struct{}{}
	l.h2wg.Add(1)
	l.h2mu.Unlock()
	defer func() {
		l.h2mu.Lock()
		delete(l.h2conns, c)
		l.h2mu.Unlock()
		l.h2wg.Done()
	}()
	hc := &h2Conn{c: c, m: l.m}
	ctx := context.WithValue(context.Background(), h2ConnKey{}, hc)
	if peer != "" {
		ctx = context.WithValue(ctx, peerIdentityKey{}, peer)
	}
	l.h2.ServeConn(c, &http2.ServeConnOpts{
		Context:    ctx,
		BaseConfig: l.h1,
		Handler:    l.h1.Handler,
	})
}

// shutdown stops accepting, sends GOAWAY to HTTP/2 connections, closes
// idle HTTP/1 connections, and waits for in-flight requests until ctx
// ends; then closes whatever remains.
func (l *httpListener) shutdown(ctx context.Context) error {
	l.ln.Close()
	l.fastClosing.Store(true)
	l.closeIdleFast()
	err := l.h1.Shutdown(ctx) // also starts GOAWAY on HTTP/2 connections
	done := make(chan struct{})
	go func() { l.h2wg.Wait(); l.fastWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.h2mu.Lock()
	for c := range l.h2conns {
		c.Close()
	}
	l.h2conns = nil
	l.h2mu.Unlock()
	l.closeAllFast()
	if err != nil {
		_ = l.h1.Close()
	}
	return err
}

// sniffFrom reads until the bytes (starting with first, already read)
// either match the whole HTTP/2 preface or diverge from it, and returns
// what it read.
func sniffFrom(c net.Conn, first []byte) ([]byte, bool, error) {
	buf := make([]byte, 0, len(h2Preface))
	buf = append(buf, first...)
	if !bytes.HasPrefix(h2Preface, buf) {
		return buf, false, nil
	}
	tmp := make([]byte, len(h2Preface))
	for len(buf) < len(h2Preface) {
		n, err := c.Read(tmp[:len(h2Preface)-len(buf)])
		buf = append(buf, tmp[:n]...)
		if !bytes.HasPrefix(h2Preface, buf) {
			return buf, false, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
	return buf, true, nil
}

// prefixConn replays bytes already read from the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// chanListener hands classified connections to http.Server.Serve.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// h2Conn watches one HTTP/2 connection for abusive stream resets (the
// "rapid reset" attack, CVE-2023-44487): once it has opened
// minStreamsForVerdict streams, it is closed if more than half of them were
// reset by the client within a second of opening. A stream reset before
// its handler ran is never forwarded.
type h2Conn struct {
	c         io.Closer
	m         *metrics
	streams   atomic.Int64
	premature atomic.Int64
	closed    atomic.Bool
}

type h2ConnKey struct{}

func h2ConnFrom(ctx context.Context) *h2Conn {
	hc, _ := ctx.Value(h2ConnKey{}).(*h2Conn)
	return hc
}

const (
	minStreamsForVerdict = 100
	prematureWindow      = time.Second
)

// begin counts a new stream; false means it was already reset.
func (hc *h2Conn) begin(ctx context.Context) bool {
	hc.streams.Add(1)
	if ctx.Err() != nil {
		hc.prematureReset()
		return false
	}
	return true
}

// end counts the stream as premature if the client reset it early.
func (hc *h2Conn) end(ctx context.Context, ex *exchange) {
	if ctx.Err() != nil && time.Since(ex.start) < prematureWindow {
		hc.prematureReset()
	}
}

func (hc *h2Conn) prematureReset() {
	p := hc.premature.Add(1)
	n := hc.streams.Load()
	if n >= minStreamsForVerdict && p*2 > n && hc.closed.CompareAndSwap(false, true) {
		hc.m.h2Resets.Inc()
		hc.c.Close()
	}
}
