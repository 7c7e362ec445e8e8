// Package h1client is a synchronous HTTP/1.1 client transport for the
// sidecar's hop to its local app.
//
// net/http's Transport runs a reader and a writer goroutine per connection
// and hands every request and response between them and the caller over
// channels. For a proxy that already owns a goroutine per request, those
// hand-offs and the extra reads they cause are a large share of the cost of
// a small request (BENCHMARKING.md §2.4). This transport writes the request
// and reads the response on the caller's goroutine.
//
// It takes only requests it can carry without full duplex and without
// risk: GET, HEAD, OPTIONS and TRACE without a body, no Expect, no protocol
// upgrade. Everything else goes to Fallback, a regular http.Transport. That
// rule also makes its one retry safe: a request written to a pooled
// connection that the app had already closed is sent again on a new
// connection only when no byte of a response was read and the method is
// idempotent by definition.
package h1client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"

	"github.com/causeway-mesh/causeway/proxy/h1wire"
)

// Transport is an http.RoundTripper. Set the fields before first use.
type Transport struct {
	// Dial opens a connection to the app. Required.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Fallback carries the requests this transport does not take. Required.
	Fallback http.RoundTripper
	// MaxIdle bounds idle connections kept per address. Default 64.
	MaxIdle int
	// MaxConns bounds open connections per address, idle or busy; a
	// request waits for one when the bound is reached. 0 means no bound.
	MaxConns int
	// IdleTimeout closes connections idle longer than this. Default 90 s.
	IdleTimeout time.Duration
	// MaxResponseHeaderBytes bounds the response head. Default 64 KiB.
	MaxResponseHeaderBytes int

	mu    sync.Mutex
	hosts map[string]*hostPool
}

// hostPool is the state of one address: idle connections (most recently
// used last) and the number of open ones.
type hostPool struct {
	idle    []*conn
	open    int
	waiters []chan struct{} // woken when a connection is returned or closed
}

// conn is one connection to the app.
type conn struct {
	nc     net.Conn
	cr     *countingReader
	br     *bufio.Reader
	bw     *bufio.Writer
	addr   string
	idleAt time.Time
	startN int64 // bytes read before the current exchange
}

// countingReader counts bytes read and, while limit > 0, refuses to read
// beyond it (the response-head limit).
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

var errHeadTooLarge = errors.New("h1client: response headers too large")

func (c *countingReader) Read(p []byte) (int, error) {
	if c.limit > 0 {
		left := c.limit - c.n
		if left <= 0 {
			return 0, errHeadTooLarge
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// RoundTrip sends r and returns the app's response.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !fast(r) {
		return t.Fallback.RoundTrip(r)
	}
	for attempt := 0; ; attempt++ {
		c, reused, err := t.get(r.Context(), r.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, err := t.exchange(c, r)
		if err == nil {
			return resp, nil
		}
		// A pooled connection the app closed while it sat idle: the
		// request never got an answer, so it may be sent once more.
		if reused && attempt == 0 && c.cr.n == c.startN && r.Context().Err() == nil {
			continue
		}
		return nil, err
	}
}

// fast reports whether r is a request this transport carries itself.
func fast(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		return false
	}
	if r.Body != nil && r.Body != http.NoBody {
		return false
	}
	if r.ContentLength > 0 || len(r.TransferEncoding) > 0 || r.Close {
		return false
	}
	if r.URL.Scheme != "http" || r.Header.Get("Expect") != "" || r.Header.Get("Upgrade") != "" || len(r.Trailer) > 0 {
		return false
	}
	return true
}

// exchange writes r on c and reads the response head. On error c is closed.
func (t *Transport) exchange(c *conn, r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	c.startN = c.cr.n
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		t.discard(c)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := writeRequest(c.bw, r); err != nil {
		return fail(fmt.Errorf("h1client: write request: %w", err))
	}
	c.cr.limit = c.cr.n + int64(t.maxHead())
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, r)
		if err != nil {
			return fail(fmt.Errorf("h1client: read response: %w", err))
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// Informational responses (103 Early Hints) go to whoever traces
		// the request; ReverseProxy forwards them to its client.
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
		c.cr.limit = c.cr.n + int64(t.maxHead())
	}
	c.cr.limit = 0
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("h1client: unexpected 101 Switching Protocols"))
	}
	reusable := !resp.Close && resp.ProtoAtLeast(1, 1)
	if resp.Body == http.NoBody || resp.Body == nil {
		stop()
		t.release(c, reusable)
		return resp, nil
	}
	resp.Body = &body{rc: resp.Body, t: t, c: c, stop: stop, reusable: reusable}
	return resp, nil
}

// writeRequest writes the head of a request without a body.
func writeRequest(bw *bufio.Writer, r *http.Request) error {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	uri := r.URL.RequestURI()
	// A bufio.Writer keeps its first error and Flush returns it.
	_, _ = bw.WriteString(r.Method)
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(uri)
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = bw.WriteString(host)
	_, _ = bw.WriteString("\r\n")
	h1wire.WriteFields(bw, r.Header, func(name string) bool { return excludedHeaders[name] })
	_, _ = bw.WriteString("\r\n")
	return bw.Flush()
}

// excludedHeaders are written by writeRequest itself or never sent on a
// request without a body.
var excludedHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true, "Connection": true,
}

func (t *Transport) maxHead() int {
	if t.MaxResponseHeaderBytes > 0 {
		return t.MaxResponseHeaderBytes + 4096 // status line and slack, as net/http
	}
	return 64<<10 + 4096
}

// body returns the connection to the pool when the response has been read
// to its end, and closes it otherwise.
type body struct {
	rc       io.ReadCloser
	t        *Transport
	c        *conn
	stop     func() bool
	reusable bool
	done     bool
	mu       sync.Mutex
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(errors.Is(err, io.EOF) && b.reusable)
	}
	return n, err
}

func (b *body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.finish(false)
	}
	return nil
}

// finish gives the connection back (reuse) or closes it. Called once.
func (b *body) finish(reuse bool) {
	b.done = true
	stopped := b.stop()
	// If the context fired, the deadline on the connection is poisoned.
	b.t.release(b.c, reuse && stopped)
}

// get returns an idle connection to addr or a new one, waiting while
// MaxConns are open. reused reports whether the connection was pooled.
func (t *Transport) get(ctx context.Context, addr string) (c *conn, reused bool, err error) {
	for {
		t.mu.Lock()
		if t.hosts == nil {
			t.hosts = make(map[string]*hostPool)
		}
		hp := t.hosts[addr]
		if hp == nil {
			hp = &hostPool{}
			t.hosts[addr] = hp
		}
		now := time.Now()
		for len(hp.idle) > 0 {
			c := hp.idle[len(hp.idle)-1]
			hp.idle = hp.idle[:len(hp.idle)-1]
			if now.Sub(c.idleAt) < t.idleTimeout() {
				t.mu.Unlock()
				return c, true, nil
			}
			hp.open--
			c.nc.Close()
		}
		if t.MaxConns <= 0 || hp.open < t.MaxConns {
			hp.open++
			t.mu.Unlock()
			c, err := t.dial(ctx, addr)
			if err != nil {
				t.mu.Lock()
				hp.open--
				t.wakeLocked(hp)
				t.mu.Unlock()
				return nil, false, err
			}
			return c, false, nil
		}
		wait := make(chan struct{})
		hp.waiters = append(hp.waiters, wait)
		t.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

func (t *Transport) dial(ctx context.Context, addr string) (*conn, error) {
	nc, err := t.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cr := &countingReader{r: nc}
	return &conn{
		nc:   nc,
		cr:   cr,
		br:   bufio.NewReaderSize(cr, 4<<10),
		bw:   bufio.NewWriterSize(nc, 4<<10),
		addr: addr,
	}, nil
}

// release returns c to its pool, or closes it when it may not be reused or
// the pool is full.
func (t *Transport) release(c *conn, reuse bool) {
	if reuse && c.br.Buffered() > 0 {
		reuse = false // the app sent more than one response: not trustworthy
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	hp := t.hosts[c.addr]
	if reuse && len(hp.idle) < t.maxIdle() {
		c.idleAt = time.Now()
		hp.idle = append(hp.idle, c)
	} else {
		hp.open--
		c.nc.Close()
	}
	t.wakeLocked(hp)
}

// discard closes c after a failed exchange.
func (t *Transport) discard(c *conn) { t.release(c, false) }

// wakeLocked wakes one request waiting for a connection.
func (t *Transport) wakeLocked(hp *hostPool) {
	if len(hp.waiters) > 0 {
		close(hp.waiters[0])
		hp.waiters = hp.waiters[1:]
	}
}

// CloseIdleConnections closes every idle connection, here and in Fallback.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	for _, hp := range t.hosts {
		for _, c := range hp.idle {
			hp.open--
			c.nc.Close()
		}
		hp.idle = nil
	}
	t.mu.Unlock()
	if ic, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		ic.CloseIdleConnections()
	}
}

func (t *Transport) maxIdle() int {
	if t.MaxIdle > 0 {
		return t.MaxIdle
	}
	return 64
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return 90 * time.Second
}
