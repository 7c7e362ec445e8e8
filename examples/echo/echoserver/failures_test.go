package echoserver_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/causeway-mesh/causeway/examples/echo/echoserver"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "0.3", want: 0.3},
		{in: " 1\n", want: 1},
		{in: "1.5", wantErr: true},
		{in: "-0.1", wantErr: true},
		{in: "NaN", wantErr: true},
		{in: "", wantErr: true},
		{in: "thirty", wantErr: true},
	}
	for _, tt := range tests {
		got, err := echoserver.ParseRate(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseRate(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && got != tt.want {
			t.Errorf("ParseRate(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// pattern sends n GETs to / and returns which failed with an injected 503.
func pattern(t *testing.T, c *http.Client, base string, n int) []bool {
	t.Helper()
	out := make([]bool, n)
	for i := range out {
		resp := do(t, c, http.MethodGet, base+"/x", nil)
		_, _ = io.Copy(io.Discard, resp.Body)
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(echoserver.InjectedFailureHeader) == "true":
			out[i] = true
		case resp.StatusCode != http.StatusOK:
			t.Fatalf("request %d: status %d, want 200 or an injected 503", i+1, resp.StatusCode)
		}
	}
	return out
}

func count(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

func TestFailuresPattern(t *testing.T) {
	tests := []struct {
		rate     float64
		requests int
		want     int
	}{
		{rate: 0, requests: 20, want: 0},
		{rate: 0.3, requests: 10, want: 3},
		{rate: 0.3, requests: 100, want: 30},
		{rate: 0.5, requests: 20, want: 10},
		{rate: 1, requests: 7, want: 7},
	}
	for _, tt := range tests {
		f, err := echoserver.NewFailures(tt.rate)
		if err != nil {
			t.Fatal(err)
		}
		base, c := newServerWith(t, echoserver.HandlerWithFailures(instance, f))
		got := pattern(t, c, base, tt.requests)
		if n := count(got); n != tt.want {
			t.Errorf("rate %v: %d of %d failed, want %d", tt.rate, n, tt.requests, tt.want)
		}
		if tt.rate <= 0.5 {
			for i := 1; i < len(got); i++ {
				if got[i] && got[i-1] {
					t.Errorf("rate %v: requests %d and %d both failed", tt.rate, i, i+1)
				}
			}
		}
		if f.Failed() != uint64(tt.want) {
			t.Errorf("rate %v: Failed() = %d, want %d", tt.rate, f.Failed(), tt.want)
		}
	}
}

func TestFailRateEndpoint(t *testing.T) {
	f, err := echoserver.NewFailures(0)
	if err != nil {
		t.Fatal(err)
	}
	base, c := newServerWith(t, echoserver.HandlerWithFailures(instance, f))

	body := func(resp *http.Response) string {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if resp := do(t, c, http.MethodGet, base+"/fail-rate", nil); resp.StatusCode != 200 || body(resp) != "0" {
		t.Fatalf("GET /fail-rate: %d, want 200 and 0", resp.StatusCode)
	}
	if resp := do(t, c, http.MethodPut, base+"/fail-rate", strings.NewReader("1")); resp.StatusCode != 200 || body(resp) != "1" {
		t.Fatalf("PUT /fail-rate 1: %d, want 200 and 1", resp.StatusCode)
	}
	if got := pattern(t, c, base, 3); count(got) != 3 {
		t.Errorf("after PUT 1: %v failed, want all", got)
	}
	// Health checks are never failed, so that a sidecar keeps the instance.
	if resp := do(t, c, http.MethodGet, base+"/healthz", nil); resp.StatusCode != 200 {
		t.Errorf("GET /healthz at rate 1: %d, want 200", resp.StatusCode)
	}
	for _, bad := range []string{"2", "x", strings.Repeat("0", 100)} {
		if resp := do(t, c, http.MethodPut, base+"/fail-rate", strings.NewReader(bad)); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT /fail-rate %.10q: %d, want 400", bad, resp.StatusCode)
		}
	}
	if resp := do(t, c, http.MethodPost, base+"/fail-rate", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /fail-rate: %d, want 405", resp.StatusCode)
	}
	if f.Rate() != 1 {
		t.Errorf("rate after bad PUTs = %v, want 1 (unchanged)", f.Rate())
	}
	if resp := do(t, c, http.MethodPut, base+"/fail-rate", strings.NewReader("0")); resp.StatusCode != 200 {
		t.Fatalf("PUT /fail-rate 0: %d", resp.StatusCode)
	}
	if got := pattern(t, c, base, 3); count(got) != 0 {
		t.Errorf("after PUT 0: %v failed, want none", got)
	}
}

// TestPlainHandlerHasNoFailRate checks that Handler echoes /fail-rate like
// any other path.
func TestPlainHandlerHasNoFailRate(t *testing.T) {
	base, c := newServer(t, false)
	resp := do(t, c, http.MethodPut, base+"/fail-rate", strings.NewReader("1"))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("PUT /fail-rate on Handler: %d %s, want the JSON echo", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestFailuresConcurrent(t *testing.T) {
	f, err := echoserver.NewFailures(0.25)
	if err != nil {
		t.Fatal(err)
	}
	base, c := newServerWith(t, echoserver.HandlerWithFailures(instance, f))
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, base+"/", nil)
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if got, want := f.Failed(), uint64(workers*each/4); got != want {
		t.Errorf("Failed() = %d after %d requests at 0.25, want %d", got, workers*each, want)
	}
}

func TestNewFailuresRejectsBadRate(t *testing.T) {
	for _, r := range []float64{-1, 1.01} {
		if _, err := echoserver.NewFailures(r); err == nil {
			t.Errorf("NewFailures(%v): no error", r)
		}
	}
}

// newServerWith starts h on a loopback HTTP/1.1 listener and returns its
// base URL and a client.
func newServerWith(t *testing.T, h http.Handler) (string, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, srv.Client()
}
