package resilience

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"

	"google.golang.org/grpc/codes"
)

// Outcome is what an attempt says about the endpoint's health.
type Outcome uint8

// Outcomes.
const (
	// Success: the endpoint answered well (including 1xx-4xx statuses and
	// gRPC application errors such as NOT_FOUND).
	Success Outcome = iota
	// Failure: the endpoint failed (connect failure, reset, timeout, a
	// 5xx status or a gRPC server-side failure status).
	Failure
	// Excluded: the result says nothing about the endpoint: the client went
	// away or sent a broken request. Breakers, outlier detection and retry
	// budgets ignore it.
	Excluded
)

func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Failure:
		return "failure"
	case Excluded:
		return "excluded"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Kind says why an attempt ended as it did. Metrics use its String as a
// label value.
type Kind uint8

// Kinds.
const (
	KindOK              Kind = iota // a response that is a success
	KindClientGone                  // the client cancelled or disconnected
	KindClientError                 // the client's request body was malformed or cut short
	KindConnectFailure              // no connection could be opened (dial error)
	KindRefusedStream               // HTTP/2 REFUSED_STREAM or GOAWAY before the stream was processed
	KindReset                       // connection or stream lost before a response
	KindTimeout                     // a per-try or overall deadline passed
	KindGateway                     // status 502, 503 or 504
	KindStatus5xx                   // another 5xx status
	KindGRPCUnavailable             // grpc-status UNAVAILABLE
	KindGRPCServerError             // grpc-status UNKNOWN, INTERNAL, DATA_LOSS or DEADLINE_EXCEEDED
	KindNotSent                     // the proxy did not send the attempt, or a peer refused it unprocessed: says nothing of the endpoint
)

var kindNames = [...]string{
	KindOK:              "ok",
	KindClientGone:      "client_gone",
	KindClientError:     "client_error",
	KindConnectFailure:  "connect_failure",
	KindRefusedStream:   "refused_stream",
	KindReset:           "reset",
	KindTimeout:         "timeout",
	KindGateway:         "gateway_error",
	KindStatus5xx:       "status_5xx",
	KindGRPCUnavailable: "grpc_unavailable",
	KindGRPCServerError: "grpc_server_error",
	KindNotSent:         "not_sent",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Attempt is what the proxy knows when an attempt ends.
type Attempt struct {
	// Status is the HTTP response status; 0 if no response arrived.
	Status int
	// GRPCStatus is the grpc-status from headers or trailers, when
	// HasGRPCStatus is set (see [GRPCStatusFrom]).
	GRPCStatus    codes.Code
	HasGRPCStatus bool
	// Err is the error from RoundTrip (or from reading the response), nil
	// if a response arrived.
	Err error
	// ClientGone is set when the downstream client's own context is done
	// (it cancelled or disconnected). A deadline the proxy set itself is
	// not the client going away: leave ClientGone false for it.
	ClientGone bool
	// ClientError is set when the client's request body failed (malformed
	// or cut short): the upstream is not to blame.
	ClientError bool
}

// Result is the classification of an attempt.
type Result struct {
	Outcome Outcome
	Kind    Kind
	// Status and GRPCStatus (if HasGRPCStatus) repeat the attempt's, for
	// retry conditions on configured statuses and codes.
	Status        int
	GRPCStatus    codes.Code
	HasGRPCStatus bool
	// Unsent is set when the request provably never reached the upstream
	// application (see [NeverReachedUpstream]); even a non-idempotent
	// request may then be retried.
	Unsent bool
}

// Classify decides an attempt's outcome and kind. The client's own
// cancellation and broken requests are Excluded, whatever error they
// caused; then errors (connect failure, refused stream, timeout, reset);
// then the gRPC status, then the HTTP status.
func Classify(a Attempt) Result {
	r := Result{Status: a.Status, GRPCStatus: a.GRPCStatus, HasGRPCStatus: a.HasGRPCStatus}
	switch {
	case a.ClientError:
		r.Outcome, r.Kind = Excluded, KindClientError
		return r
	case a.ClientGone:
		r.Outcome, r.Kind = Excluded, KindClientGone
		return r
	case a.Err != nil:
		r.Outcome = Failure
		r.Unsent = NeverReachedUpstream(a.Err)
		switch {
		case isDialError(a.Err):
			r.Kind = KindConnectFailure
		case r.Unsent:
			r.Kind = KindRefusedStream
		case isTimeout(a.Err):
			r.Kind = KindTimeout
		default:
			// Includes context.Canceled with ClientGone false: the proxy
			// abandoned the attempt mid-flight.
			r.Kind = KindReset
		}
		return r
	}
	if a.HasGRPCStatus {
		switch a.GRPCStatus {
		case codes.Unavailable:
			r.Outcome, r.Kind = Failure, KindGRPCUnavailable
			return r
		case codes.Unknown, codes.Internal, codes.DataLoss, codes.DeadlineExceeded:
			r.Outcome, r.Kind = Failure, KindGRPCServerError
			return r
		}
	}
	switch {
	case a.Status == http.StatusBadGateway || a.Status == http.StatusServiceUnavailable || a.Status == http.StatusGatewayTimeout:
		r.Outcome, r.Kind = Failure, KindGateway
	case a.Status >= 500:
		r.Outcome, r.Kind = Failure, KindStatus5xx
	default:
		r.Outcome, r.Kind = Success, KindOK
	}
	return r
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// GRPCStatusFrom reads grpc-status from a header or trailer map. It
// returns false when the field is absent or not a number.
func GRPCStatusFrom(h http.Header) (codes.Code, bool) {
	v := h["Grpc-Status"]
	if len(v) == 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(v[0], 10, 32)
	if err != nil {
		return 0, false
	}
	return codes.Code(n), true
}
