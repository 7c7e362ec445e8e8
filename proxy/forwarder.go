package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// forwarder sends a request to its upstream and streams the response back:
// the part of httputil.ReverseProxy (with a Rewrite function) that every
// request takes, with the mesh's rewrite built in. Protocol upgrades go to
// upgrades, a ReverseProxy, which owns the hijack and the two-way copy.
//
// ReverseProxy deep-copies every request (URL, header map), adds a client
// trace through two more request copies, parses every response's media
// type and copies every response header value; at the sidecar's request
// rate that is a third of the bytes it allocates and a tenth of its CPU
// (BENCHMARKING.md). The forwarder instead edits the inbound request's
// header map in place: the handler owns it, and nothing reads it after the
// request is forwarded except through the outgoing request, which shares
// it. The behaviour is ReverseProxy's:
//   - hop-by-hop headers are removed both ways, including those named in
//     Connection (except, on requests, headers the mesh itself set, which
//     a client may not drop: keepListed);
//   - Te: trailers is kept when the client asked for it;
//   - Forwarded and X-Forwarded-* from the client are replaced: X-Forwarded-
//     For names the client's address (after the calling sidecar's chain
//     when keepForwardedFor), X-Forwarded-Host its Host, X-Forwarded-Proto
//     its scheme;
//   - query parameters that do not parse are dropped;
//   - no default User-Agent is added;
//   - 1xx responses are relayed as they arrive;
//   - bodies stream, flushed after every read when the length is unknown or
//     the response is an event stream; an error mid-body aborts the
//     client's response (http.ErrAbortHandler) rather than end it early;
//   - trailers are relayed, announced or not.
type forwarder struct {
	transport http.RoundTripper
	// rewrite sets the outgoing request's URL and any header of the
	// direction; in is the request as received, out its copy.
	rewrite func(out, in *http.Request)
	// modifyResponse edits the response before its head is written; an
	// error goes to errorHandler.
	modifyResponse func(*http.Response) error
	errorHandler   func(http.ResponseWriter, *http.Request, error)
	// bodyFailed returns the error of the client's request body, if
	// reading it failed (nil: never checked).
	bodyFailed func(*http.Request) error
	// keepListed reports whether a header named in the request's
	// Connection header is one the mesh set, and so stays.
	keepListed func(name string) bool
	// keepForwardedFor keeps the X-Forwarded-For chain of the request and
	// appends to it (inbound: the calling sidecar built it).
	keepForwardedFor bool
	upgrades         http.Handler
	log              *slog.Logger
}

// hopHeaders are removed from every forwarded request and response (RFC
// 9110 §7.6.1), with those named in Connection.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func (f *forwarder) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if isUpgrade(req) {
		f.upgrades.ServeHTTP(rw, req)
		return
	}
	h := req.Header
	if h == nil {
		h = make(http.Header)
		req.Header = h
	}
	wantsTrailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	removeHopByHop(h, f.keepListed)
	if wantsTrailers {
		h["Te"] = []string{"trailers"}
	}
	f.setForwarded(h, req)
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // no Go default
	}

	relay := &informational{rw: rw}
	relay.trace.Got1xxResponse = relay.got1xx
	out := req.WithContext(httptrace.WithClientTrace(req.Context(), &relay.trace))
	u := *req.URL
	u.RawQuery = cleanQuery(u.RawQuery)
	out.URL = &u
	out.Close = false
	if req.ContentLength == 0 {
		out.Body = nil // lets a transport retry a bodiless request
	} else if out.Body != nil {
		// The transport closes the body it is given; the client's body is
		// the server's to close. Once the handler returns, a transport
		// goroutine that still reads gets an error, not the server's body.
		body := &requestBody{rc: out.Body}
		defer body.Close()
		out.Body = body
	}
	f.rewrite(out, req)

	res, err := f.transport.RoundTrip(out)
	relay.finish()
	if err != nil {
		f.errorHandler(rw, out, err)
		return
	}
	if req.ContentLength != 0 && f.bodyFailed != nil {
		// The upstream answered a request whose body the client never
		// finished (cut off as too slow or too large, or malformed): that
		// answer is to a request nobody sent, so the client gets the
		// body's error instead, as when the transport reports it first.
		if berr := f.bodyFailed(out); berr != nil {
			res.Body.Close()
			f.errorHandler(rw, out, berr)
			return
		}
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		res.Body.Close()
		f.errorHandler(rw, out, errUnaskedUpgrade)
		return
	}
	removeHopByHop(res.Header, nil)
	if f.modifyResponse != nil {
		if err := f.modifyResponse(res); err != nil {
			res.Body.Close()
			f.errorHandler(rw, out, err)
			return
		}
	}

	dst := rw.Header()
	for k, vv := range res.Header {
		if len(dst[k]) == 0 {
			dst[k] = vv // the response is ours: its values need no copy
		} else {
			dst[k] = append(dst[k], vv...)
		}
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	rw.WriteHeader(res.StatusCode)

	if err := f.copyBody(rw, res); err != nil {
		defer res.Body.Close()
		// The head is sent: all that can be done is to abort the
		// response, so the client does not take a short body as whole.
		// Only a server recovers that panic.
		if req.Context().Value(http.ServerContextKey) != nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	res.Body.Close() // fills res.Trailer
	if len(res.Trailer) == 0 {
		return
	}
	// A trailer forces chunking, even of a short body.
	_ = http.NewResponseController(rw).Flush()
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			dst[k] = append(dst[k], vv...)
		}
		return
	}
	for k, vv := range res.Trailer {
		for _, v := range vv {
			dst.Add(http.TrailerPrefix+k, v)
		}
	}
}

var errUnaskedUpgrade = errors.New("upstream switched protocols without being asked to")

// setForwarded replaces the client's forwarding headers with the mesh's.
func (f *forwarder) setForwarded(h http.Header, in *http.Request) {
	var prior []string
	if f.keepForwardedFor {
		prior = h["X-Forwarded-For"]
	}
	delete(h, "Forwarded")
	delete(h, "X-Forwarded-For")
	if clientIP, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		if len(prior) > 0 {
			clientIP = strings.Join(prior, ", ") + ", " + clientIP
		}
		h["X-Forwarded-For"] = []string{clientIP}
	}
	h["X-Forwarded-Host"] = []string{in.Host}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	h["X-Forwarded-Proto"] = []string{proto}
}

// copyBody streams the response body to rw, flushing after every write
// when the length is unknown or the body is an event stream (otherwise the
// exchange decides, see reverseProxy's FlushInterval).
func (f *forwarder) copyBody(rw http.ResponseWriter, res *http.Response) error {
	var rc *http.ResponseController
	if res.ContentLength == -1 || isEventStream(res.Header) {
		rc = http.NewResponseController(rw)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			if _, werr := rw.Write(buf[:n]); werr != nil {
				return werr
			}
			if rc != nil {
				if werr := rc.Flush(); werr != nil && !errors.Is(werr, http.ErrNotSupported) {
					return werr
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			if !errors.Is(rerr, context.Canceled) {
				f.log.Debug("response body read failed", "error", rerr)
			}
			return rerr
		}
	}
}

// isEventStream reports whether the response is a server-sent event
// stream (text/event-stream, any parameters).
func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	if len(ct) == 0 || len(ct[0]) < len("text/event-stream") || !strings.EqualFold(ct[0][:len("text/event-stream")], "text/event-stream") {
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct[0])
	return mt == "text/event-stream"
}

// removeHopByHop deletes the hop-by-hop headers of h, and those named in
// its Connection header unless keep says otherwise.
func removeHopByHop(h http.Header, keep func(string) bool) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name == "" {
				continue
			}
			name = textproto.CanonicalMIMEHeaderKey(name)
			if keep == nil || !keep(name) {
				delete(h, name)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// cleanQuery drops a query that does not parse as net/url would (a ';'
// separator or a bad escape) and keeps the parameters that do, as
// ReverseProxy does: two servers must not read one query differently.
func cleanQuery(q string) string {
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// requestBody hides the client's request body's Close from the
// transport, and refuses reads once closed.
type requestBody struct {
	rc     io.ReadCloser
	closed atomic.Bool
}

var errBodyAfterReturn = errors.New("request body read after the handler returned")

func (b *requestBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyAfterReturn
	}
	return b.rc.Read(p)
}

func (b *requestBody) Close() error {
	b.closed.Store(true)
	return nil
}

// informational relays 1xx responses (103 Early Hints) to the client while
// the round trip is in progress, and never after it returned.
type informational struct {
	mu    sync.Mutex
	done  bool
	rw    http.ResponseWriter
	trace httptrace.ClientTrace
}

func (i *informational) got1xx(code int, header textproto.MIMEHeader) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.done {
		return nil
	}
	h := i.rw.Header()
	for k, vv := range header {
		h[k] = append(h[k], vv...)
	}
	i.rw.WriteHeader(code)
	clear(h) // WriteHeader keeps the map for the final response
	return nil
}

func (i *informational) finish() {
	i.mu.Lock()
	i.done = true
	i.mu.Unlock()
}
