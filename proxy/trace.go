package proxy

import (
	"context"
	"errors"
	"net/http"

	"github.com/causeway-mesh/causeway/tracing"
	"github.com/causeway-mesh/causeway/tracing/clock"
)

// Tracing and logical clocks on the request path.
//
// Every sidecar keeps one clock (tracing/clock) for its node, shared by
// both directions, so what its app does after receiving a request is
// ordered after that request. The outbound side ticks and stamps each
// request it forwards (x-mesh-lamport, x-mesh-vclock) and merges the clocks
// the responder returns; the inbound side merges the caller's clocks,
// stamps the request it hands to the app, and stamps the response it
// returns. Each span records the stamp of the event it stands for: the
// send of a client span, the receive of a server span.

// WithTracing sets the span exporter configuration (nil: tracing off).
func WithTracing(p *tracing.Provider) Option { return func(s *Sidecar) { s.tracer = p } }

// traceOutbound starts the client span of an outbound request and stamps
// it with this node's clocks. Below route, so the matched route names the
// span.
func (s *Sidecar) traceOutbound(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ex := exchangeFrom(r.Context())
		ctx, span := s.tracer.StartClient(r.Context(), r, routeName(ex))
		ex.span = span
		stamp, err := s.clock.Send(r.Header)
		s.countClockError(err)
		span.SetClock(stamp)
		next.ServeHTTP(w, withContext(r, ctx))
		span.End(ex.status, errorType(w))
	})
}

// withContext returns r with ctx, copying r only when ctx is another
// context (with tracing off the span functions return r's own).
func withContext(r *http.Request, ctx context.Context) *http.Request {
	if ctx == r.Context() {
		return r
	}
	return r.WithContext(ctx)
}

// traceInbound merges the caller's clocks, starts the server span, and
// stamps the request handed to the app.
func (s *Sidecar) traceInbound(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ex := exchangeFrom(r.Context())
		stamp, err := s.clock.Receive(r.Header)
		s.countClockError(err)
		ctx, span := s.tracer.StartServer(r, "")
		span.SetClock(stamp)
		s.tracer.Inject(ctx, r.Header)
		_, err = s.clock.Send(r.Header)
		s.countClockError(err)
		next.ServeHTTP(w, withContext(r, ctx))
		span.End(ex.status, errorType(w))
	})
}

// mergeResponseClock merges the clocks a responding sidecar returned, so
// what the app does next is ordered after the reply.
func (s *Sidecar) mergeResponseClock(resp *http.Response) {
	if resp.Header.Get(clock.HeaderLamport) == "" && resp.Header.Get(clock.HeaderVector) == "" {
		return
	}
	_, err := s.clock.Receive(resp.Header)
	s.countClockError(err)
}

// stampResponse puts this node's clocks on a response returned to a
// calling sidecar.
func (s *Sidecar) stampResponse(resp *http.Response) {
	_, err := s.clock.Send(resp.Header)
	s.countClockError(err)
}

// countClockError counts clock headers that were ignored as malformed or
// implausible, and clock failures.
func (s *Sidecar) countClockError(err error) {
	switch {
	case err == nil:
	case errors.Is(err, clock.ErrMalformed):
		s.m.clockErrors.WithLabelValues("malformed").Inc()
	case errors.Is(err, clock.ErrJump):
		s.m.clockErrors.WithLabelValues("jump").Inc()
	default:
		s.m.clockErrors.WithLabelValues("clock").Inc()
		s.log.Warn("logical clock failed", "error", err)
	}
}

func routeName(ex *exchange) string {
	if ex != nil && ex.route != nil {
		return ex.route.Name
	}
	return ""
}

// errorType is the x-mesh-error code of a response the proxy generated,
// or "" (semconv error.type; 5xx from upstreams are typed by the span).
func errorType(w http.ResponseWriter) string { return w.Header().Get(HeaderError) }

// handleClock serves GET /clock.
func (s *Sidecar) handleClock(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.clock.Snapshot())
}
