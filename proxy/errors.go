package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/causeway-mesh/causeway/proxy/h1guard"
)

// HeaderError is the response header that names the cause of a response
// the proxy generated itself.
const HeaderError = "X-Mesh-Error"

// Error is a failure the proxy answers itself. Every such response is
// produced by writeError from an *Error, in one place.
type Error struct {
	Status int        // HTTP status
	Code   string     // x-mesh-error value
	GRPC   codes.Code // status for gRPC callers
	Close  bool       // close the downstream connection after answering
	Err    error      // cause, for logs; never shown to the client
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Err.Error()
	}
	return e.Code
}

func (e *Error) Unwrap() error { return e.Err }

// with returns a copy of e that wraps cause.
func (e *Error) with(cause error) *Error {
	c := *e
	c.Err = cause
	return &c
}

// The errors the proxy answers with. Codes are part of the contract
// (PRODUCT.md, Headers).
var (
	ErrBadRequest         = &Error{Status: 400, Code: "bad_request", GRPC: codes.Internal, Close: true}
	ErrHeadersTooLarge    = &Error{Status: 431, Code: "bad_request", GRPC: codes.ResourceExhausted, Close: true}
	ErrNoHealthyUpstream  = &Error{Status: 503, Code: "no_healthy_upstream", GRPC: codes.Unavailable}
	ErrUpstreamConnect    = &Error{Status: 503, Code: "upstream_connect_failure", GRPC: codes.Unavailable}
	ErrUpstreamReset      = &Error{Status: 502, Code: "upstream_reset", GRPC: codes.Unavailable}
	ErrTimeout            = &Error{Status: 504, Code: "timeout", GRPC: codes.DeadlineExceeded}
	ErrMisdirected        = &Error{Status: 421, Code: "misdirected_request", GRPC: codes.Unimplemented}
	ErrProtocolNotAllowed = &Error{Status: 400, Code: "bad_request", GRPC: codes.Unimplemented, Close: true}
	// ErrNoRoute answers a request that no route of its service matches.
	ErrNoRoute = &Error{Status: 404, Code: "no_route", GRPC: codes.Unimplemented}
	// ErrFenced refuses a write on a side of a split without the quorum.
	ErrFenced = &Error{Status: 503, Code: "fenced", GRPC: codes.Unavailable}
	// ErrStaleEpoch refuses a write admitted under an epoch older than the
	// newest this sidecar knows: the caller has not heard of a split yet.
	ErrStaleEpoch = &Error{Status: 409, Code: "stale_epoch", GRPC: codes.Aborted}
	// ErrBodyTimeout answers a request whose body stalled for
	// limits.bodyIdleTimeout or arrived below limits.minBodyRate; the
	// upstream request was aborted before the body's end.
	ErrBodyTimeout = &Error{Status: 408, Code: "body_timeout", GRPC: codes.DeadlineExceeded, Close: true}
	// ErrBodyTooLarge answers a request whose body is over the cap
	// (limits.maxRequestBodyBytes, or the target service's): declared,
	// before anything is forwarded; streamed, with the upstream request
	// aborted at the cap.
	ErrBodyTooLarge = &Error{Status: 413, Code: "body_too_large", GRPC: codes.ResourceExhausted, Close: true}
)

// classify turns a forwarding error into the response to give. It returns
// nil when the client itself went away, in which case nothing is written.
func classify(r *http.Request, err error, bodyErr error) *Error {
	var me *Error
	switch {
	case errors.As(err, &me):
		return me
	case errors.As(bodyErr, &me):
		// The proxy cut the client's body off itself (bodyguard.go: too
		// slow, too large). The transport may report the cancelled
		// context instead: net/http cancels it on a connection read error.
		return me
	case bodyErr != nil || h1guard.IsRequestError(err):
		// The client's body was malformed or cut short: its fault, and the
		// upstream request was aborted before its end.
		if bodyErr == nil {
			bodyErr = err
		}
		return ErrBadRequest.with(bodyErr)
	case r.Context().Err() != nil:
		return nil //nolint:nilerr // the client went away: there is no one to answer
	case isDialError(err):
		// Before the timeout case: a connect that timed out is a connect
		// failure (503), as the attempt's classification says; a request
		// whose own deadline passed during a dial arrives as ErrTimeout.
		return ErrUpstreamConnect.with(err)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return ErrTimeout.with(err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrTimeout.with(err)
	}
	return ErrUpstreamReset.with(err)
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// isGRPC reports whether r is a gRPC call, which must be answered with a
// grpc-status rather than an HTTP error status.
func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// errorWriter answers with an *Error and logs it once.
type errorWriter struct {
	log       *slog.Logger
	metrics   *metrics
	direction string
	limiter   logLimiter
}

// write sends e as the response. gRPC callers get a trailers-only response
// (HTTP 200, grpc-status, grpc-message); others get e.Status with a short
// text body. Both carry x-mesh-error.
func (ew *errorWriter) write(w http.ResponseWriter, r *http.Request, e *Error) {
	ew.metrics.errors.WithLabelValues(ew.direction, e.Code).Inc()
	level := slog.LevelDebug
	if e.Status >= 500 && ew.limiter.allow(e.Code) {
		level = slog.LevelWarn
	}
	ew.log.Log(r.Context(), level, "proxy error", "direction", ew.direction, "code", e.Code,
		"status", e.Status, "method", r.Method, "authority", r.Host, "error", e.Err)

	h := w.Header()
	for k := range h { // drop anything a partial forward may have set
		delete(h, k)
	}
	h.Set(HeaderError, e.Code)
	// A refused upgrade closes too: the HTTP/1 guard stopped parsing the
	// connection after the upgrade request, so no further request on it
	// may be read.
	if r.ProtoMajor == 1 && (e.Close || isUpgrade(r)) {
		h.Set("Connection", "close")
	}
	if isGRPC(r) {
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(int(e.GRPC)))
		h.Set("Grpc-Message", e.Code)
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	fmt.Fprintf(w, "%s: %s\n", e.Code, http.StatusText(e.Status)) //nolint:gosec // text/plain with nosniff; both strings are the proxy's own
}

// logLimiter lets at most one warning per code per second through, so an
// outage does not flood the log (metrics still count every response).
type logLimiter struct{ last sync.Map } // code → time.Time

func (l *logLimiter) allow(code string) bool {
	now := time.Now()
	if v, ok := l.last.Load(code); ok && now.Sub(v.(time.Time)) < time.Second {
		return false
	}
	l.last.Store(code, now)
	return true
}

// Causes wrapped by the *Error responses above (for logs).
var (
	errConnect       = errors.New("CONNECT is not supported")
	errTooManyFields = errors.New("too many header fields")
	errNoAuthority   = errors.New("the authority (Host) does not name a service")
	errH2Refused     = errors.New("NUL in the path or '_' in a header name")
)

func errNoRoute(name string) error {
	return fmt.Errorf("no route of service %q matches the request", name)
}

func errUnknownService(name string) error {
	return fmt.Errorf("no endpoints known for service %q", name)
}

var errPinRepeated = errors.New("x-mesh-endpoint given more than once")

func errNotAnEndpoint(service, addr string) error {
	return fmt.Errorf("%q is not a live endpoint of service %q (x-mesh-endpoint)", addr, service)
}

func errNoEndpoints(name string) error { return fmt.Errorf("service %q has no live endpoint", name) }
