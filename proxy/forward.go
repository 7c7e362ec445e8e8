package proxy

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"time"
)

// observe creates the request's exchange and records metrics when the
// response is complete.
func (s *Sidecar) observe(direction string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ex := &exchange{ResponseWriter: w, start: time.Now(), bodyLeft: -1}
		r = r.WithContext(context.WithValue(r.Context(), exchangeKey{}, ex))
		if s.draining.Load() && r.ProtoMajor == 1 {
			// Tell keep-alive clients to move to another instance.
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(ex, r)
		src, dst := ex.src, ex.dst
		if direction == "outbound" {
			src = s.service
		} else {
			dst = s.service
		}
		if dst == "" {
			dst = "unknown"
		}
		s.m.observe(direction, src, dst, ex.status, time.Since(ex.start))
	})
}

// admit refuses requests that must not be forwarded and were not already
// refused by the HTTP/1 guard: CONNECT over HTTP/2, too many header
// fields, over HTTP/2 what the guard refuses on HTTP/1 (NUL in the path,
// '_' in header names), and streams of an HTTP/2 connection that resets
// them abusively. maxFields is the header-field limit of this direction.
func (s *Sidecar) admit(ew *errorWriter, maxFields int, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			if hc := h2ConnFrom(r.Context()); hc != nil {
				if !hc.begin(r.Context()) {
					return // reset before it started: never forwarded
				}
				defer hc.end(r.Context(), w.(*exchange))
			}
		}
		switch {
		case r.Method == http.MethodConnect:
			ew.write(w, r, ErrProtocolNotAllowed.with(errConnect))
		case headerFieldCount(r.Header)+headerFieldCount(r.Trailer) > maxFields:
			ew.write(w, r, ErrHeadersTooLarge.with(errTooManyFields))
		case r.ProtoMajor == 2 && (strings.Contains(r.URL.EscapedPath(), "%00") || underscoreInNames(r.Header)):
			ew.write(w, r, ErrBadRequest.with(errH2Refused))
		case encodedSeparator(r):
			ew.write(w, r, ErrBadRequest.with(errEncodedSeparator))
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// appHygiene removes headers the local app may not set and ensures a
// request id. An endpoint pin (x-mesh-endpoint) is kept on the exchange
// for route to honour.
func appHygiene(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header[HeaderEndpoint]; len(v) > 0 {
			exchangeFrom(r.Context()).pin = v
		}
		stripMeshOnly(r.Header)
		ensureRequestID(r.Header)
		next.ServeHTTP(w, r)
	})
}

// peerHygiene records the calling service and strips mesh-internal
// headers before the request reaches the app.
func (s *Sidecar) peerHygiene(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ex := exchangeFrom(r.Context())
		if v := r.Header.Get(HeaderSource); v != "" {
			if name, ok := serviceFromAuthority(v); ok && name == v {
				ex.src = s.m.sources.value(v)
			}
		}
		delete(r.Header, HeaderSource)
		delete(r.Header, "X-Mesh-Error")
		// Only a verified mutual-TLS peer is named to the app.
		if id := peerIdentity(r.Context()); id != "" {
			r.Header[HeaderPeerIdentity] = []string{id}
		} else {
			delete(r.Header, HeaderPeerIdentity)
		}
		ensureRequestID(r.Header)
		next.ServeHTTP(w, r)
	})
}

// route resolves the target service from the authority and picks an
// endpoint.
func (s *Sidecar) route(ew *errorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ex := exchangeFrom(r.Context())
		name, ok := serviceFromAuthority(r.Host)
		if !ok {
			ew.write(w, r, ErrBadRequest.with(errNoAuthority))
			return
		}
		target := name
		if m := s.model.Load(); m != nil {
			if ms, ok := m.Services[name]; ok && len(ms.Routes) > 0 {
				rt := matchRoute(ms.Routes, r)
				if rt == nil {
					ew.write(w, r, ErrNoRoute.with(errNoRoute(name)))
					return
				}
				ex.route = rt
				target = pickBackend(rt.Backends)
			}
		}
		svc := s.table.Load().Lookup(target)
		if svc == nil {
			ew.write(w, r, ErrNoHealthyUpstream.with(errUnknownService(target)))
			return
		}
		ex.dst = target
		if len(svc.Endpoints) == 0 {
			ew.write(w, r, ErrNoHealthyUpstream.with(errNoEndpoints(target)))
			return
		}
		if ex.pin != nil {
			if len(ex.pin) != 1 {
				ew.write(w, r, ErrBadRequest.with(errPinRepeated))
				return
			}
			if svc = svc.Only(ex.pin[0]); svc == nil {
				ew.write(w, r, ErrNoHealthyUpstream.with(errNotAnEndpoint(target, ex.pin[0])))
				return
			}
		}
		ex.service = svc
		ex.policy = applyRoute(s.pols.Load().lookup(target), ex.route)
		if ex.route == nil { // no control-plane route: the file's, if any
			if fr := s.cfg.Load().RouteFor(target, r.Method, r.URL.Path); fr != nil {
				if pol, err := fr.Resilience.Apply(ex.policy); err == nil {
					ex.policy = pol
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// forwardOutbound proxies to the exchange's endpoint over the mesh hop.
func (s *Sidecar) forwardOutbound(ew *errorWriter) http.Handler {
	transport := &resilientTransport{s: s, next: s.meshTransport}
	modify := func(resp *http.Response) error {
		exchangeFrom(resp.Request.Context()).expectBody(resp)
		s.mergeResponseClock(resp)
		return closeOnRefusedUpgrade(resp)
	}
	upgrades := s.reverseProxy(ew, transport)
	upgrades.Rewrite = func(pr *httputil.ProxyRequest) {
		ex := exchangeFrom(pr.In.Context())
		pr.Out.URL.Scheme = "http"
		pr.Out.URL.Host = ex.dst // each attempt sets its endpoint's address
		pr.Out.Host = pr.In.Host
		pr.SetXForwarded()
		pr.Out.Header[HeaderSource] = []string{s.service}
		s.restoreMeshHeaders(pr)
	}
	upgrades.ModifyResponse = modify
	f := s.forwarder(ew, transport, upgrades, modify)
	f.rewrite = func(out, in *http.Request) {
		out.URL.Scheme = "http"
		out.URL.Host = exchangeFrom(in.Context()).dst // each attempt sets its endpoint's address
		out.Header[HeaderSource] = []string{s.service}
	}
	return s.bodyRecorder(f)
}

// forwardInbound proxies to the local app.
func (s *Sidecar) forwardInbound(ew *errorWriter) http.Handler {
	app := s.cfg.Load().App
	modify := func(resp *http.Response) error {
		exchangeFrom(resp.Request.Context()).expectBody(resp)
		delete(resp.Header, "X-Mesh-Error")
		s.stampResponse(resp)
		return closeOnRefusedUpgrade(resp)
	}
	upgrades := s.reverseProxy(ew, s.appTransport)
	upgrades.Rewrite = func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Scheme = "http"
		pr.Out.URL.Host = app
		pr.Out.Host = pr.In.Host
		// Keep the chain the calling sidecar built and append its address.
		if xff := pr.In.Header["X-Forwarded-For"]; len(xff) > 0 {
			pr.Out.Header["X-Forwarded-For"] = xff
		}
		pr.SetXForwarded()
		s.restoreMeshHeaders(pr)
	}
	upgrades.ModifyResponse = modify
	f := s.forwarder(ew, s.appTransport, upgrades, modify)
	f.keepForwardedFor = true // the chain the calling sidecar built
	f.rewrite = func(out, _ *http.Request) {
		out.URL.Scheme = "http"
		out.URL.Host = app
	}
	return s.bodyRecorder(f)
}

// forwarder returns the forwarder with the settings both directions
// share; the caller sets rewrite.
func (s *Sidecar) forwarder(ew *errorWriter, rt http.RoundTripper, upgrades http.Handler, modify func(*http.Response) error) *forwarder {
	return &forwarder{
		transport:      rt,
		modifyResponse: modify,
		errorHandler:   s.proxyError(ew),
		bodyFailed:     func(r *http.Request) error { return exchangeFrom(r.Context()).bodyErr(r.Context()) },
		keepListed:     s.meshSet,
		upgrades:       upgrades,
		log:            s.log,
	}
}

// bodyRecorder wraps a non-empty request body so that a read error is
// attributed to the client.
func (s *Sidecar) bodyRecorder(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			ex := exchangeFrom(r.Context())
			ex.body = &recordingBody{ReadCloser: r.Body}
			r.Body = ex.body
		}
		next.ServeHTTP(w, r)
	})
}

// closeOnRefusedUpgrade closes the downstream HTTP/1 connection when an
// upgrade was asked for and refused: the framing guard stopped checking
// after the upgrade request, so no further request may be read from it.
func closeOnRefusedUpgrade(resp *http.Response) error {
	if isUpgrade(resp.Request) && resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Header.Set("Connection", "close")
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type bufferPool struct{}

func (bufferPool) Get() []byte  { return *(bufPool.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { bufPool.Put(&b) }

// reverseProxy returns the ReverseProxy that carries protocol upgrades,
// with the settings both directions share. Errors go through classify and
// the errorWriter. (Every other request takes the forwarder, whose
// streaming and flushing follow the same rules.)
func (s *Sidecar) reverseProxy(ew *errorWriter, rt http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport:  rt,
		BufferPool: bufferPool{},
		// Responses without a Content-Length (streams, gRPC, SSE) are
		// flushed after every read by ReverseProxy itself. Responses with
		// one are flushed by the exchange after every write that leaves the
		// body incomplete, so the tail of a chunk never waits for more data
		// (a client may be waiting for it while the upstream waits for the
		// client); the write that completes the body is not flushed, so the
		// server sends it with the end of the response: one write, one
		// HTTP/2 frame less, and no timer per response (a FlushInterval
		// starts one for every response).
		FlushInterval: 0,
		ErrorLog:      log.New(slogWriter{s.log}, "", 0),
		ErrorHandler:  s.proxyError(ew),
	}
}

// proxyError turns a failed forward into the mesh's error response
// (classify), unless the client's own body failed first.
func (s *Sidecar) proxyError(ew *errorWriter) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		ex := exchangeFrom(r.Context())
		if e := classify(r, err, ex.bodyErr(r.Context())); e != nil {
			ew.write(w, r, e)
		}
	}
}

// slogWriter sends ReverseProxy's internal log lines to slog at debug.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("reverse proxy", "msg", string(p))
	return len(p), nil
}

var _ io.Writer = slogWriter{}

// meshSetHeaders are the headers the mesh itself set on a request by the
// time it is forwarded (clocks, epoch, request id, the caller's
// identity); traceHeaders too when tracing is on (the mesh's span).
var (
	meshSetHeaders = []string{"X-Mesh-Lamport", "X-Mesh-Vclock", HeaderEpoch, HeaderEpochDomain, HeaderPeerIdentity, "X-Request-Id"}
	traceHeaders   = []string{"Traceparent", "Tracestate"}
)

// meshSet reports whether name is a header the mesh set on the request,
// which a client may not remove by naming it in Connection.
func (s *Sidecar) meshSet(name string) bool {
	return slices.Contains(meshSetHeaders, name) || (s.tracer.Enabled() && slices.Contains(traceHeaders, name))
}

// restoreMeshHeaders puts back, on the outgoing request, the headers the
// mesh set that ReverseProxy removed because the client named them in
// Connection: a client may drop its own hop-by-hop headers, never the
// mesh's (HARDENING.md §2, the Traefik CVE-2021-32813 class).
func (s *Sidecar) restoreMeshHeaders(pr *httputil.ProxyRequest) {
	restore := func(hs []string) {
		for _, h := range hs {
			if v, ok := pr.In.Header[h]; ok {
				if _, kept := pr.Out.Header[h]; !kept {
					pr.Out.Header[h] = v
				}
			}
		}
	}
	restore(meshSetHeaders)
	if s.tracer.Enabled() {
		restore(traceHeaders)
	}
}

// encodedSeparator reports whether the request path carries an encoded
// slash or backslash (%2F, %5C, any case): servers disagree on whether it
// separates segments, which lets a path slip past a rule written for the
// decoded form (HARDENING.md §5 A2), so the mesh refuses it.
func encodedSeparator(r *http.Request) bool {
	p := r.URL.RawPath
	if p == "" {
		p = r.RequestURI
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
	}
	for i := 0; i+2 < len(p); i++ {
		if p[i] == '%' && ((p[i+1] == '2' && (p[i+2] == 'f' || p[i+2] == 'F')) || (p[i+1] == '5' && (p[i+2] == 'c' || p[i+2] == 'C'))) {
			return true
		}
	}
	return false
}

var errEncodedSeparator = errors.New("an encoded slash or backslash (%2F, %5C) in the path")
