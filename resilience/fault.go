package resilience

import (
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
)

// Abort is an injected failure: answer with Status (gRPC callers with
// GRPC) instead of forwarding.
type Abort struct {
	Status int
	GRPC   codes.Code
}

// Decide draws whether this request is delayed (delay > 0) and whether it
// is aborted (abort non-nil), each with its configured share, from rnd (nil:
// the global source). A zero Fault never injects anything.
func (f Fault) Decide(rnd Rand) (delay time.Duration, abort *Abort) {
	if f.DelayPercent <= 0 && f.AbortPercent <= 0 {
		return 0, nil
	}
	rnd = orGlobal(rnd)
	if f.DelayPercent > 0 && rnd.Float64()*100 < f.DelayPercent {
		delay = f.Delay
	}
	if f.AbortPercent > 0 && rnd.Float64()*100 < f.AbortPercent {
		g := f.AbortGRPCStatus
		if g == 0 {
			g = grpcCodeForHTTP(f.AbortStatus)
		}
		abort = &Abort{Status: f.AbortStatus, GRPC: g}
	}
	return delay, abort
}

// grpcCodeForHTTP maps an HTTP status to a gRPC code as gRPC's "HTTP to
// gRPC status code mapping" document does.
func grpcCodeForHTTP(status int) codes.Code {
	switch status {
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Unknown
}
