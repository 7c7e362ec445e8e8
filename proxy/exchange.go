package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/causeway-mesh/causeway/control/xdsclient"
	"github.com/causeway-mesh/causeway/proxy/cluster"
	"github.com/causeway-mesh/causeway/proxy/h1guard"
	"github.com/causeway-mesh/causeway/resilience"
	"github.com/causeway-mesh/causeway/tracing"
)

// exchange is what the layers of one request share: created by the
// outermost layer (observe), reachable from the request's context, and
// also the ResponseWriter the inner layers write to, so that the status
// is recorded wherever the response comes from.
type exchange struct {
	http.ResponseWriter

	start    time.Time
	status   int // final status written, 0 until then
	src, dst string
	service  *cluster.Service  // the target service (one endpoint of it when pinned)
	pin      []string          // x-mesh-endpoint values the local app sent
	route    *xdsclient.Route  // the control plane's matched route, or nil
	policy   resilience.Policy // resilience settings of the target service and route
	span     tracing.Span      // the outbound client span (retries are its events)
	body     *recordingBody
	guard    *bodyGuard // the body guard of this request (bodyguard.go), or nil

	// bodyLeft is the number of bytes of a proxied response with a
	// Content-Length still to be written, -1 when unknown or not proxied.
	bodyLeft int64
}

type exchangeKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// WriteHeader records the final status (1xx informational responses pass
// through unrecorded).
func (ex *exchange) WriteHeader(code int) {
	if code >= 200 && ex.status == 0 {
		ex.status = code
	}
	ex.ResponseWriter.WriteHeader(code)
}

func (ex *exchange) Write(p []byte) (int, error) {
	if ex.status == 0 {
		ex.status = http.StatusOK
	}
	n, err := ex.ResponseWriter.Write(p)
	if ex.bodyLeft > 0 && err == nil {
		if ex.bodyLeft -= int64(n); ex.bodyLeft > 0 {
			ex.Flush() // part of the body: the client gets it now
		}
	}
	return n, err
}

// expectBody records the length of the upstream response about to be
// copied, for Write's flushing (the forwarder flushes only bodies of
// unknown length and event streams itself).
func (ex *exchange) expectBody(resp *http.Response) {
	if resp.Request.Method != http.MethodHead {
		ex.bodyLeft = resp.ContentLength
	}
}

// Flush keeps streaming responses (SSE, gRPC) flowing through the wrapper.
func (ex *exchange) Flush() {
	if ex.status == 0 {
		ex.status = http.StatusOK
	}
	_ = http.NewResponseController(ex.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection (hijacking for
// upgrades, full duplex).
func (ex *exchange) Unwrap() http.ResponseWriter { return ex.ResponseWriter }

// recordingBody remembers the first error reading the client's body, so a
// forwarding failure caused by the client (a malformed or truncated body)
// is answered as the client's fault and never retried.
//
// The transport reads the body on its own goroutine while the error
// handler runs on the handler's, hence the atomic.
type recordingBody struct {
	io.ReadCloser
	err atomic.Pointer[error]
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// bodyErr returns the client's body error, if reading it failed. A body
// the body guard cut off or the HTTP/1 guard refused counts even if the
// transport has not reported its read yet.
func (ex *exchange) bodyErr(ctx context.Context) error {
	// A request the body guard cut off: its cause is set before the read
	// in flight fails, so it is known even when the transport reports the
	// cancelled request first.
	if ex.guard != nil {
		if c := ex.guard.cause.Load(); c != nil {
			return c
		}
	}
	if ex.body != nil {
		if e := ex.body.err.Load(); e != nil {
			return *e
		}
	}
	if g := guardFrom(ctx); g != nil && g.Refused() {
		return errMalformedBody
	}
	return nil
}

// guardFrom returns the HTTP/1 framing guard of the request's connection.
func guardFrom(ctx context.Context) *h1guard.Conn {
	g, _ := ctx.Value(guardKey{}).(*h1guard.Conn)
	return g
}

type guardKey struct{}

var errMalformedBody = errors.New("the request body is malformed")
