package echoserver

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// InjectedFailureHeader marks a 503 that the echo server answered on
// purpose (see Failures), so tests and demos can tell it from a real one.
const InjectedFailureHeader = "X-Echo-Injected-Failure"

// maxRateBody caps the body of PUT /fail-rate.
const maxRateBody = 64

// Failures makes an echo server answer 503 to a share of its requests, so
// that a caller's retries, circuit breakers and outlier detection can be
// watched. The share is applied deterministically rather than at random: of
// every 1000 requests counted from the last SetRate, exactly
// round(rate × 1000) fail, spread evenly (request n fails when
// ⌊n·p/1000⌋ > ⌊(n−1)·p/1000⌋ for p = rate in thousandths). With a rate of at
// most 0.5 two requests in a row never both fail, so a single retry always
// succeeds; rate 1 fails every request, rate 0 none.
//
// A Failures is safe for concurrent use; the zero value fails nothing.
type Failures struct {
	mu       sync.Mutex
	perMille int64  // failing requests per 1000
	n        int64  // requests counted since the last SetRate
	failed   uint64 // requests failed since the server started
}

// NewFailures returns a Failures that fails the share rate of requests.
func NewFailures(rate float64) (*Failures, error) {
	f := &Failures{}
	if err := f.SetRate(rate); err != nil {
		return nil, err
	}
	return f, nil
}

// ParseRate parses a failure rate: a decimal between 0 and 1, such as 0.3.
func ParseRate(s string) (float64, error) {
	r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("fail rate %q: want a number between 0 and 1", s)
	}
	if r < 0 || r > 1 || r != r { // r != r: NaN
		return 0, fmt.Errorf("fail rate %q: want a number between 0 and 1", s)
	}
	return r, nil
}

// SetRate changes the failing share (0 to 1, rounded to thousandths) and
// restarts the pattern, so the next request is the first of a new
// sequence.
func (f *Failures) SetRate(rate float64) error {
	if rate < 0 || rate > 1 || rate != rate {
		return fmt.Errorf("fail rate %v: want a number between 0 and 1", rate)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.perMille = int64(rate*1000 + 0.5)
	f.n = 0
	return nil
}

// Rate returns the failing share.
func (f *Failures) Rate() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return float64(f.perMille) / 1000
}

// Failed returns how many requests were failed on purpose so far.
func (f *Failures) Failed() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// next counts one request and reports whether it is to fail.
func (f *Failures) next() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.perMille == 0 {
		return false
	}
	f.n++
	fail := f.n*f.perMille/1000 > (f.n-1)*f.perMille/1000
	if f.n == 1000 {
		f.n = 0 // the pattern repeats every 1000 requests; keep n small
	}
	if fail {
		f.failed++
	}
	return fail
}

// wrap answers GET and PUT /fail-rate itself, fails the configured share of
// every other request except GET /healthz with 503, and passes the rest to
// next.
func (f *Failures) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/fail-rate":
			f.serveRate(w, r)
		case r.URL.Path == "/healthz" || !f.next():
			next.ServeHTTP(w, r)
		default:
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxBodyDrain))
			w.Header().Set(InjectedFailureHeader, "true")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "503 injected failure (fail rate %g)\n", f.Rate())
		}
	})
}

// maxBodyDrain bounds how much of a failed request's body is read before
// answering, so that the connection can be reused.
const maxBodyDrain = 1 << 20

// serveRate answers GET /fail-rate with the current rate and PUT /fail-rate
// (body: the new rate) by setting it.
func (f *Failures) serveRate(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRateBody+1))
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(body) > maxRateBody {
			http.Error(w, "body too long: want a number between 0 and 1", http.StatusBadRequest)
			return
		}
		rate, err := ParseRate(string(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = f.SetRate(rate) // ParseRate checked the range
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT")
		http.Error(w, "use GET or PUT", http.StatusMethodNotAllowed)
		return
	}
	_, _ = fmt.Fprintf(w, "%g\n", f.Rate())
}
