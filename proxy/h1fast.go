package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/causeway-mesh/causeway/proxy/h1guard"
	"github.com/causeway-mesh/causeway/proxy/h1wire"
)

// The HTTP/1.1 fast lane.
//
// net/http's server spends, on every request, a cancelable context, a
// goroutine that reads ahead to notice a client that goes away (a read that
// finds nothing, then a deadline to stop it), a response with its own
// buffers and a copy of the header map. For the requests a sidecar carries
// most (GET and HEAD without a body) that is about a tenth of its CPU
// (BENCHMARKING.md §2.4). A cleartext HTTP/1 connection therefore starts on
// the fast lane: one goroutine reads each request head (already checked by
// the framing guard), and when the request is HTTP/1.1 GET or HEAD without
// a body, without Expect and not an upgrade, runs the handler with a
// lightweight ResponseWriter on the same goroutine. The first request that
// is anything else moves the connection, with every byte not yet handled,
// to the listener's net/http server for the rest of its life: request
// bodies, 100-continue, upgrades, HTTP/1.0 and malformed requests keep
// net/http's handling.
//
// The ResponseWriter frames responses as net/http does: Content-Length
// when the handler declares one or finishes within the first 2 KiB of
// body, chunked otherwise; trailers (declared, or with http.TrailerPrefix);
// 1xx responses written at once; no body for HEAD, 1xx, 204 and 304; Date
// added; Content-Type sniffed when the handler sets none; Connection: close
// when the client or the handler asks for it. Unlike net/http it does not
// copy the header map at WriteHeader: changes made between WriteHeader and
// the first body byte are sent too.
//
// A client that closes its connection while its request is in flight
// cancels the request, as with net/http, but the read that notices it is
// started only for requests still running after watchAfter (by one
// watchdog goroutine per listener): a request that ends sooner costs no
// goroutine and no read. A client that goes away is noticed within about
// twice watchAfter.

// fastConn is one connection on the fast lane.
type fastConn struct {
	l      *httpListener
	g      *h1guard.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	head   bytes.Reader  // the buffered head being parsed
	hb     *bufio.Reader // reads head for http.ReadRequest
	ctx    context.Context
	remote string
	active atomic.Bool // a request is being read or handled
	w      fastWriter

	// The request being handled, for the watchdog (watch):
	// guarded by wmu.
	wmu      sync.Mutex
	handling bool
	started  time.Time
	cancel   context.CancelFunc
	watcher  *fastWatcher
}

// fastWatcher reads ahead on a connection while its request is handled:
// a read error means the client went away, and cancels the request.
type fastWatcher struct {
	stopping atomic.Bool
	gone     atomic.Bool
	done     chan struct{}
}

// watchAfter is how long a fast-lane request runs before its connection
// is watched for the client going away.
const watchAfter = 100 * time.Millisecond

// fastBufSize is the read and write buffer of a fast-lane connection; a
// request head must fit in it, else the connection moves to net/http.
const fastBufSize = 4 << 10

// serveFast serves an HTTP/1 connection on the fast lane until it ends or
// moves to net/http.
func (l *httpListener) serveFast(g *h1guard.Conn) {
	fc := &fastConn{
		l:      l,
		g:      g,
		br:     bufio.NewReaderSize(g, fastBufSize),
		bw:     bufio.NewWriterSize(g, fastBufSize),
		remote: g.RemoteAddr().String(),
	}
	fc.hb = bufio.NewReaderSize(&fc.head, 16)
	fc.ctx = context.WithValue(context.WithValue(context.WithValue(context.Background(),
		http.ServerContextKey, l.h1), http.LocalAddrContextKey, g.LocalAddr()), guardKey{}, g)
	fc.w.c = fc
	if !l.trackFast(fc) {
		g.Close()
		return
	}
	moved := false
	defer func() {
		l.untrackFast(fc)
		if !moved {
			g.Close()
		}
	}()
	for !l.fastClosing.Load() {
		var idle time.Time // no limit when the listener has no idle timeout
		if l.h1.IdleTimeout > 0 {
			idle = time.Now().Add(l.h1.IdleTimeout)
		}
		_ = g.SetReadDeadline(idle)
		if _, err := fc.br.Peek(1); err != nil {
			return
		}
		fc.active.Store(true)
		if l.fastClosing.Load() {
			return
		}
		_ = g.SetReadDeadline(time.Now().Add(l.sniffT))
		n, err := fc.headLen()
		if err != nil {
			return
		}
		var req *http.Request
		if n > 0 {
			req = fc.parse(n)
		}
		if req == nil {
			moved = fc.moveToNetHTTP()
			return
		}
		_, _ = fc.br.Discard(n)
		_ = g.SetReadDeadline(time.Time{})
		if !fc.serve(req) {
			return
		}
		g.Idle()
		fc.active.Store(false)
	}
}

// headLen waits until a whole request head is buffered and returns its
// length, or 0 when it does not fit in the buffer.
func (fc *fastConn) headLen() (int, error) {
	for {
		buf, err := fc.br.Peek(fc.br.Buffered())
		if i := bytes.Index(buf, crlfcrlf); i >= 0 {
			return i + len(crlfcrlf), nil
		}
		if err != nil {
			return 0, err
		}
		if len(buf) == fc.br.Size() {
			return 0, nil
		}
		if _, err := fc.br.Peek(len(buf) + 1); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return 0, err
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// parse parses the buffered head of n bytes, and returns the request when
// the fast lane takes it, else nil.
func (fc *fastConn) parse(n int) *http.Request {
	buf, _ := fc.br.Peek(n)
	fc.head.Reset(buf)
	fc.hb.Reset(&fc.head)
	req, err := http.ReadRequest(fc.hb)
	if err != nil || !fastRequest(req) {
		return nil
	}
	req.RemoteAddr = fc.remote
	return req
}

// fastRequest reports whether the fast lane takes r.
func fastRequest(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		r.ProtoMajor == 1 && r.ProtoMinor == 1 &&
		r.ContentLength == 0 && len(r.TransferEncoding) == 0 && r.Body == http.NoBody &&
		len(r.Header["Expect"]) == 0 && !isUpgrade(r) &&
		r.Host != "" && httpguts.ValidHostHeader(r.Host)
}

// moveToNetHTTP hands the connection, with the bytes buffered but not yet
// handled, to the listener's net/http server.
func (fc *fastConn) moveToNetHTTP() bool {
	var pending []byte
	if n := fc.br.Buffered(); n > 0 {
		buf, _ := fc.br.Peek(n)
		pending = bytes.Clone(buf)
	}
	return fc.l.h1Conn.push(&guardedConn{prefixConn: prefixConn{Conn: fc.g, prefix: pending}, g: fc.g})
}

// guardedConn is a connection moved from the fast lane: the bytes it had
// buffered, then the framing guard.
type guardedConn struct {
	prefixConn
	g *h1guard.Conn
}

// serve runs the handler for req and finishes its response. It reports
// whether the connection may carry another request.
func (fc *fastConn) serve(req *http.Request) (keep bool) {
	ctx, cancel := context.WithCancel(fc.ctx)
	defer cancel()
	req = req.WithContext(ctx)
	fc.wmu.Lock()
	fc.handling, fc.started, fc.cancel = true, time.Now(), cancel
	fc.wmu.Unlock()
	defer func() {
		if fc.unwatch() {
			keep = false // the client went away
		}
	}()
	w := &fc.w
	w.reset(req)
	defer func() {
		if v := recover(); v != nil {
			keep = false
			if err, ok := v.(error); !ok || !errors.Is(err, http.ErrAbortHandler) {
				fc.l.log.Debug("handler panic", "listener", fc.l.name, "panic", v)
			}
		}
	}()
	fc.l.h1.Handler.ServeHTTP(w, req)
	w.finish()
	return w.err == nil && !w.closeAfter && !fc.l.fastClosing.Load()
}

// unwatch ends the request's handling: a watcher started for it is
// stopped and waited for. It reports whether the client went away.
func (fc *fastConn) unwatch() bool {
	fc.wmu.Lock()
	fc.handling, fc.cancel = false, nil
	w := fc.watcher
	fc.watcher = nil
	fc.wmu.Unlock()
	if w == nil {
		return false
	}
	w.stopping.Store(true)
	_ = fc.g.SetReadDeadline(aLongTimeAgo)
	<-w.done
	_ = fc.g.SetReadDeadline(time.Time{})
	return w.gone.Load()
}

// watch starts a watcher for the request being handled when it has run
// longer than watchAfter.
func (fc *fastConn) watch(now time.Time) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	if !fc.handling || fc.watcher != nil || now.Sub(fc.started) < watchAfter {
		return
	}
	w := &fastWatcher{done: make(chan struct{})}
	fc.watcher = w
	cancel := fc.cancel
	go func() {
		defer close(w.done)
		// The handler does not read: a fast-lane request has no body.
		// A byte that arrives is the next request's and stays buffered.
		if _, err := fc.br.Peek(1); err != nil && !w.stopping.Load() {
			w.gone.Store(true)
			cancel()
		}
	}()
}

// watchFast runs the fast lane's watchdog until the listener has shut
// down.
func (l *httpListener) watchFast() {
	t := time.NewTicker(watchAfter)
	defer t.Stop()
	for now := range t.C {
		l.fastMu.Lock()
		if l.fastConns == nil {
			l.fastMu.Unlock()
			return
		}
		for fc := range l.fastConns {
			fc.watch(now)
		}
		l.fastMu.Unlock()
	}
}

// trackFast registers a fast-lane connection for shutdown; false when the
// listener is shutting down.
func (l *httpListener) trackFast(fc *fastConn) bool {
	l.fastMu.Lock()
	defer l.fastMu.Unlock()
	if l.fastConns == nil {
		return false
	}
	l.fastOnce.Do(func() { go l.watchFast() })
	l.fastConns[fc] = struct{}{}
	l.fastWG.Add(1)
	return true
}

func (l *httpListener) untrackFast(fc *fastConn) {
	l.fastMu.Lock()
	delete(l.fastConns, fc)
	l.fastMu.Unlock()
	l.fastWG.Done()
}

// closeIdleFast closes the fast-lane connections waiting for a request;
// the others close after their response (fastClosing is set).
func (l *httpListener) closeIdleFast() {
	l.fastMu.Lock()
	defer l.fastMu.Unlock()
	for fc := range l.fastConns {
		if !fc.active.Load() {
			fc.g.Close()
		}
	}
}

// closeAllFast closes every fast-lane connection and refuses new ones.
func (l *httpListener) closeAllFast() {
	l.fastMu.Lock()
	defer l.fastMu.Unlock()
	for fc := range l.fastConns {
		fc.g.Close()
	}
	l.fastConns = nil
}

// fastWriter is the ResponseWriter of a fast-lane request; one per
// connection, reset for every request.
type fastWriter struct {
	c          *fastConn
	req        *http.Request
	header     http.Header
	status     int   // 0 until WriteHeader
	committed  bool  // the head is in c.bw
	chunked    bool  // the body is chunked
	length     int64 // the declared or computed Content-Length, -1 if none
	written    int64
	held       []byte // body held before the head is committed
	closeAfter bool
	err        error // the first write error: the connection is done
}

// holdLimit is how much body is held before the head is sent: a handler
// that finishes within it gets a Content-Length (net/http's rule).
const holdLimit = 2 << 10

func (w *fastWriter) reset(req *http.Request) {
	w.req = req
	if w.header == nil {
		w.header = make(http.Header)
	} else {
		clear(w.header)
	}
	w.status, w.committed, w.chunked = 0, false, false
	w.length, w.written = -1, 0
	w.held = w.held[:0]
	w.closeAfter = req.Close
	w.err = nil
}

func (w *fastWriter) Header() http.Header { return w.header }

func (w *fastWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.writeInformational(code)
		return
	}
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.length = v
		} else {
			w.header.Del("Content-Length")
		}
	}
}

// writeInformational sends a 1xx response at once.
func (w *fastWriter) writeInformational(code int) {
	bw := w.c.bw
	writeStatusLine(bw, code)
	h1wire.WriteFields(bw, w.header, func(name string) bool { return name == "Content-Length" || name == "Transfer-Encoding" })
	_, _ = bw.WriteString("\r\n")
	w.fail(bw.Flush())
}

func (w *fastWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if !w.committed {
		if w.length < 0 && len(w.held)+len(p) <= holdLimit {
			w.held = append(w.held, p...)
			return len(p), nil
		}
		w.commit(false)
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// writeBody writes p after the head, framed.
func (w *fastWriter) writeBody(p []byte) {
	if len(p) == 0 || w.err != nil {
		return
	}
	bw := w.c.bw
	if w.chunked {
		_, _ = bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
		_, _ = bw.Write(p)
		_, err := bw.WriteString("\r\n")
		w.fail(err)
		return
	}
	_, err := bw.Write(p)
	w.fail(err)
}

// Flush sends the head and what the body has so far.
func (w *fastWriter) Flush() { _ = w.FlushError() }

func (w *fastWriter) FlushError() error {
	if w.err != nil {
		return w.err
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(false)
	}
	w.fail(w.c.bw.Flush())
	return w.err
}

func (w *fastWriter) SetReadDeadline(t time.Time) error  { return w.c.g.SetReadDeadline(t) }
func (w *fastWriter) SetWriteDeadline(t time.Time) error { return w.c.g.SetWriteDeadline(t) }

func (w *fastWriter) fail(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

// finish completes the response after the handler returned.
func (w *fastWriter) finish() {
	if w.err != nil {
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true)
	}
	if w.chunked && w.err == nil {
		bw := w.c.bw
		_, _ = bw.WriteString("0\r\n")
		w.writeTrailers()
		_, _ = bw.WriteString("\r\n")
	}
	if w.length >= 0 && w.written != w.length && w.req.Method != http.MethodHead && bodyAllowed(w.status) {
		w.closeAfter = true // a short body: the client must not read the next response into it
	}
	w.fail(w.c.bw.Flush())
}

// writeTrailers writes the trailer fields: those declared in Trailer, and
// any set with http.TrailerPrefix.
func (w *fastWriter) writeTrailers() {
	bw := w.c.bw
	for _, v := range w.header["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k))
			if k == "" || strings.HasPrefix(k, http.TrailerPrefix) {
				continue
			}
			for _, tv := range w.header[k] {
				h1wire.WriteField(bw, k, tv)
			}
		}
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vv {
				h1wire.WriteField(bw, name, v)
			}
		}
	}
}

// commit writes the response head, and the body held so far. final: the
// handler has returned, so a body held whole gets its length. The fields
// the writer decides itself (Content-Length it computed, a sniffed
// Content-Type, Date, Transfer-Encoding, Connection: close) are written
// after the handler's, never put in its header map.
func (w *fastWriter) commit(final bool) {
	w.committed = true
	h := w.header
	bw := w.c.bw
	code := w.status
	isHEAD := w.req.Method == http.MethodHead
	trailers := len(h["Trailer"]) > 0
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			trailers = true
			break
		}
	}
	te := h.Get("Transfer-Encoding")
	computedLength := final && !trailers && te == "" && bodyAllowed(code) && w.length < 0 && (!isHEAD || len(w.held) > 0)
	if computedLength {
		w.length = int64(len(w.held))
	}
	var sniffed string
	if bodyAllowed(code) {
		if _, ok := h["Content-Type"]; !ok && h.Get("Content-Encoding") == "" && len(w.held) > 0 {
			sniffed = http.DetectContentType(w.held)
		}
	} else {
		w.length = -1
	}
	switch {
	case isHEAD || !bodyAllowed(code):
	case w.length >= 0:
	case te == "identity":
		w.closeAfter = true
	default:
		w.chunked = true
	}
	if httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		w.closeAfter = true
	}

	writeStatusLine(bw, code)
	h1wire.WriteFields(bw, h, w.skipField)
	if computedLength {
		h1wire.WriteField(bw, "Content-Length", strconv.FormatInt(w.length, 10))
	}
	if sniffed != "" {
		h1wire.WriteField(bw, "Content-Type", sniffed)
	}
	if _, ok := h["Date"]; !ok {
		h1wire.WriteField(bw, "Date", w.c.l.dateNow())
	}
	if w.chunked {
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closeAfter {
		_, _ = bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	w.fail(err)
	held := w.held
	w.held = w.held[:0]
	w.writeBody(held)
}

// skipField reports whether a field of the handler's header map stays out
// of the committed head: trailers, the framing the writer sets itself, and
// what a response without a body must not carry (RFC 9110 §8.6, §15.4.5).
func (w *fastWriter) skipField(name string) bool {
	switch name {
	case "Transfer-Encoding":
		return true
	case "Connection":
		return w.closeAfter
	case "Content-Length":
		return !bodyAllowed(w.status)
	case "Content-Type":
		return w.status == http.StatusNotModified
	}
	return strings.HasPrefix(name, http.TrailerPrefix)
}

func writeStatusLine(bw *bufio.Writer, code int) {
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.WriteString(strconv.Itoa(code))
	_ = bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		_, _ = bw.WriteString(text)
	} else {
		_, _ = bw.WriteString("status code ")
		_, _ = bw.WriteString(strconv.Itoa(code))
	}
	_, _ = bw.WriteString("\r\n")
}

// bodyAllowed reports whether a response with this status has a body
// (RFC 9110 §6.4.1).
func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// dateCache formats the Date header once a second.
type dateCache struct {
	mu   sync.Mutex
	sec  int64
	date string
}

func (l *httpListener) dateNow() string {
	now := time.Now()
	d := &l.date
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := now.Unix(); s != d.sec || d.date == "" {
		d.sec = s
		d.date = now.UTC().Format(http.TimeFormat)
	}
	return d.date
}

var _ net.Conn = (*guardedConn)(nil)
