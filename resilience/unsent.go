package resilience

import (
	"errors"
	"strings"

	"golang.org/x/net/http2"
)

// NeverReachedUpstream reports whether a request whose RoundTrip failed
// with err provably never reached the upstream application, so that even a
// non-idempotent request may be sent again. It is true only for:
//
//   - a dial failure (*net.OpError with Op "dial", from net/http's
//     Transport or an x/net/http2 Transport's dial function): no connection
//     was made;
//   - an HTTP/2 stream reset with REFUSED_STREAM (http2.StreamError with
//     Code ErrCodeRefusedStream), which RFC 9113 §8.7 defines as "not
//     processed";
//   - an HTTP/2 GOAWAY whose last-stream-id is below the request's stream:
//     x/net/http2 aborts such a stream with its unexported
//     errClientConnGotGoAway ("received Server's graceful shutdown
//     GOAWAY"), or, when the first stream of a connection gets a GOAWAY
//     with an error code, "Transport received GOAWAY from server ErrCode";
//   - an x/net/http2 ClientConn that became unusable before the stream was
//     opened (errClientConnUnusable);
//   - x/net/http2's "cannot retry err [...] after Request.Body was written"
//     wrapper: the Transport produces it only for the three cases above
//     (its canRetryError), when it could not replay the body itself.
//
// It is false for everything else, notably timeouts, a GOAWAY that covers
// the stream (http2.GoAwayError: the server may have processed it),
// other stream resets and HTTP/1.1 connection loss after the request was
// written (net/http's Transport does not tell whether any bytes were sent
// once it has given up retrying, so a broken HTTP/1.1 connection never
// counts as unsent).
//
// The unexported x/net/http2 errors are matched by message because the
// package offers no other way; the tests exercise them against real
// x/net/http2 servers so a change of wording fails the build's tests.
func NeverReachedUpstream(err error) bool {
	if err == nil {
		return false
	}
	if isDialError(err) {
		return true
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream
	}
	var ga http2.GoAwayError
	if errors.As(err, &ga) {
		return false
	}
	msg := err.Error()
	for _, m := range unsentMessages {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// unsentMessages are the texts of x/net/http2's unexported errors that
// mean "the stream was not processed" (golang.org/x/net v0.62,
// http2/transport_common.go and transport.go).
var unsentMessages = []string{
	"http2: Transport received Server's graceful shutdown GOAWAY",
	"http2: Transport received GOAWAY from server ErrCode",
	"http2: client conn not usable",
	"http2: Transport: cannot retry err [",
}
