package resilience

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// HeaderGRPCTimeout is the gRPC request header that carries the caller's
// remaining deadline.
const HeaderGRPCTimeout = "Grpc-Timeout"

// grpcUnits maps the gRPC timeout units to their length, largest first
// for formatting.
var grpcUnits = []struct {
	unit byte
	d    time.Duration
}{
	{'H', time.Hour}, {'M', time.Minute}, {'S', time.Second},
	{'m', time.Millisecond}, {'u', time.Microsecond}, {'n', time.Nanosecond},
}

// ParseGRPCTimeout parses a grpc-timeout value: 1 to 8 ASCII digits and a
// unit, H (hours), M (minutes), S (seconds), m (milliseconds), u
// (microseconds) or n (nanoseconds), as the gRPC over HTTP/2 spec defines
// it. Values beyond what a time.Duration holds saturate at its maximum.
func ParseGRPCTimeout(v string) (time.Duration, error) {
	if len(v) < 2 || len(v) > 9 {
		return 0, fmt.Errorf("grpc-timeout %q: want 1 to 8 digits and a unit", v)
	}
	digits, u := v[:len(v)-1], v[len(v)-1]
	var unit time.Duration
	for _, gu := range grpcUnits {
		if gu.unit == u {
			unit = gu.d
		}
	}
	if unit == 0 {
		return 0, fmt.Errorf("grpc-timeout %q: unknown unit %q (want H, M, S, m, u or n)", v, u)
	}
	var n int64
	for i := range len(digits) {
		c := digits[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("grpc-timeout %q: %q is not a digit", v, c)
		}
		n = n*10 + int64(c-'0')
	}
	if n > math.MaxInt64/int64(unit) {
		return time.Duration(math.MaxInt64), nil
	}
	return time.Duration(n) * unit, nil
}

// FormatGRPCTimeout formats d as a grpc-timeout value in the finest unit
// whose count fits in 8 digits. It rounds down, so a callee never gets
// more time than the caller has left; a positive d never formats as zero
// (at least "1n"), and d ≤ 0 formats as "0n".
func FormatGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	const maxCount = 99_999_999
	for i := len(grpcUnits) - 1; i >= 0; i-- {
		gu := grpcUnits[i]
		if n := d / gu.d; n <= maxCount {
			if n == 0 {
				n = 1
			}
			return strconv.FormatInt(int64(n), 10) + string(gu.unit)
		}
	}
	return strconv.Itoa(maxCount) + "H" // unreachable for time.Duration, kept for safety
}

// ErrMalformedGRPCTimeout is wrapped by RequestDeadline when the caller's
// grpc-timeout cannot be parsed; the proxy answers it as a bad request.
var ErrMalformedGRPCTimeout = errors.New("malformed grpc-timeout")

// RequestDeadline returns when the whole request must be answered (its
// response headers received): now + Overall, or the caller's grpc-timeout
// if that is sooner. The zero time means no deadline. A malformed
// grpc-timeout is an error wrapping [ErrMalformedGRPCTimeout].
func (t Timeouts) RequestDeadline(now time.Time, h http.Header) (time.Time, error) {
	var deadline time.Time
	if t.Overall > 0 {
		deadline = now.Add(t.Overall)
	}
	if v := h.Get(HeaderGRPCTimeout); v != "" {
		d, err := ParseGRPCTimeout(v)
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: %w", ErrMalformedGRPCTimeout, err)
		}
		if g := addSaturating(now, d); deadline.IsZero() || g.Before(deadline) {
			deadline = g
		}
	}
	return deadline, nil
}

// TryDeadline returns when one attempt started at now must end: now +
// PerTry, but never after the request's deadline (zero: none). The zero
// time means the attempt has no deadline.
func (t Timeouts) TryDeadline(now, requestDeadline time.Time) time.Time {
	if t.PerTry <= 0 {
		return requestDeadline
	}
	try := now.Add(t.PerTry)
	if !requestDeadline.IsZero() && requestDeadline.Before(try) {
		return requestDeadline
	}
	return try
}

// SetGRPCTimeout writes the time left until deadline into h as
// grpc-timeout, so the next hop works within the remaining budget. With a
// zero deadline it leaves h alone. It returns false when no time is left:
// the proxy should answer DEADLINE_EXCEEDED instead of forwarding.
func SetGRPCTimeout(h http.Header, now, deadline time.Time) bool {
	if deadline.IsZero() {
		return true
	}
	left := deadline.Sub(now)
	if left <= 0 {
		return false
	}
	h.Set(HeaderGRPCTimeout, FormatGRPCTimeout(left))
	return true
}

func addSaturating(t time.Time, d time.Duration) time.Time {
	const maxAhead = 100 * 365 * 24 * time.Hour
	return t.Add(min(d, maxAhead))
}
