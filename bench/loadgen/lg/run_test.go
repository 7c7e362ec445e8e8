package lg

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// Short end-to-end runs against an in-process server. They assert counts and
// bookkeeping, never timing, so they are not sensitive to a noisy machine.
func TestRunAgainstServer(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Host == "teapot" {
			w.WriteHeader(http.StatusTeapot)
		}
		_, _ = w.Write([]byte("Hello, World!"))
	}))
	defer srv.Close()

	tests := []struct {
		name     string
		client   ClientKind
		pacer    PacerKind
		host     string
		rate     float64
		body     []byte
		wantN2xx bool
	}{
		{"open raw timerfd", ClientRaw, PacerTimerfd, "", 400, nil, false},
		{"open raw nanosleep", ClientRaw, PacerNanosleep, "", 400, nil, false},
		{"open nethttp gosleep", ClientNetHTTP, PacerGoSleep, "", 400, []byte("body"), false},
		{"open raw non-2xx", ClientRaw, PacerTimerfd, "teapot", 400, nil, true},
		{"closed raw", ClientRaw, "", "", 0, []byte("b"), false},
		{"closed nethttp", ClientNetHTTP, "", "", 0, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := ParseTarget(srv.URL+"/x", tt.host, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(Config{
				Target: tg, Client: tt.client, Pacer: tt.pacer, Conns: 4, Rate: tt.rate,
				Duration: 250 * time.Millisecond, Warmup: 50 * time.Millisecond, Grace: 2 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.Timeouts != 0 || res.Unsent != 0 {
				t.Fatalf("errors %d timeouts %d unsent %d (%s)", res.Errors, res.Timeouts, res.Unsent, res.FirstError)
			}
			if tt.wantN2xx != (res.Non2xx > 0) || (tt.wantN2xx && res.Non2xx != res.Requests) {
				t.Fatalf("non-2xx %d of %d", res.Non2xx, res.Requests)
			}
			if res.Svc.Count != res.Requests || res.Requests == 0 {
				t.Fatalf("svc count %d, requests %d", res.Svc.Count, res.Requests)
			}
			if res.CompletedTotal < res.Requests {
				t.Fatalf("completed_total %d < requests %d", res.CompletedTotal, res.Requests)
			}
			if tt.rate > 0 {
				// 400 rps over a 250 ms window is exactly 100 measured requests.
				if res.Requests != 100 {
					t.Fatalf("open loop measured %d requests, want 100", res.Requests)
				}
				if res.Co == nil || res.Co.Count != 100 || res.SendLag == nil {
					t.Fatalf("open loop must report co and send lag: %+v", res)
				}
				// co includes svc plus the send lag, so it can never be smaller.
				if res.Co.Max < res.Svc.Max*0.99 || res.Co.Min < res.Svc.Min*0.99 {
					t.Fatalf("co %+v smaller than svc %+v", *res.Co, res.Svc)
				}
				if res.Mode != "open" {
					t.Fatalf("mode %q", res.Mode)
				}
			} else if res.Co != nil || res.Mode != "closed" {
				t.Fatalf("closed loop reported co or wrong mode: %+v", res)
			}
		})
	}
	if hits.Load() == 0 {
		t.Fatal("server saw no requests")
	}
}

func TestRunErrorsAreCountedAndBounded(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more: every dial is refused
	tg, err := ParseTarget(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := Run(Config{Target: tg, Conns: 2, Rate: 200, Duration: 200 * time.Millisecond, Grace: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors+res.Unsent != 40 || res.Requests != 0 || res.FirstError == "" {
		t.Fatalf("want 40 failed requests, got errors %d unsent %d requests %d (%q)",
			res.Errors, res.Unsent, res.Requests, res.FirstError)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("run took %v, should be bounded by duration+grace", el)
	}
}

func TestConfigValidation(t *testing.T) {
	tg, _ := ParseTarget("http://127.0.0.1:1/", "", nil)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no target", Config{Conns: 1, Duration: time.Second}},
		{"no conns", Config{Target: tg, Duration: time.Second}},
		{"too long", Config{Target: tg, Conns: 1, Duration: time.Hour}},
		{"negative rate", Config{Target: tg, Conns: 1, Duration: time.Second, Rate: -1}},
		{"bad client", Config{Target: tg, Conns: 1, Duration: time.Second, Client: "curl"}},
	}
	for _, tt := range tests {
		if _, err := Run(tt.cfg); err == nil {
			t.Errorf("%s: expected an error", tt.name)
		}
	}
}
