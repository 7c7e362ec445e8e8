package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestLoadConfigValidate(t *testing.T) {
	ok := loadConfig{url: "http://127.0.0.1:1/", rps: 20, duration: time.Second, timeout: time.Second}
	tests := []struct {
		name    string
		mutate  func(*loadConfig)
		wantErr string
	}{
		{"valid", func(*loadConfig) {}, ""},
		{"no url", func(c *loadConfig) { c.url = "" }, "--url is required"},
		{"zero rps", func(c *loadConfig) { c.rps = 0 }, "--rps"},
		{"rps too high", func(c *loadConfig) { c.rps = 1001 }, "--rps"},
		{"zero duration", func(c *loadConfig) { c.duration = 0 }, "--duration"},
		{"duration too long", func(c *loadConfig) { c.duration = 11 * time.Minute }, "--duration"},
		{"zero timeout", func(c *loadConfig) { c.timeout = 0 }, "--timeout"},
		{"negative max failures", func(c *loadConfig) { c.maxFailures = -1 }, "--max-failures"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mutate(&c)
			err := c.validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("validate() = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestField(t *testing.T) {
	tests := []struct {
		body, name, want string
	}{
		{`{"inventory_instance":"inventory-2"}`, "inventory_instance", "inventory-2"},
		{`{"inventory_instance":7}`, "inventory_instance", "?"},
		{`{"other":"x"}`, "inventory_instance", "?"},
		{`not json`, "inventory_instance", "?"},
	}
	for _, tt := range tests {
		if got := field([]byte(tt.body), tt.name); got != tt.want {
			t.Errorf("field(%s, %q) = %q, want %q", tt.body, tt.name, got, tt.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(d, 0.5); got != 50*time.Millisecond {
		t.Errorf("p50 = %s, want 50ms", got)
	}
	if got := percentile(d, 0.99); got != 99*time.Millisecond {
		t.Errorf("p99 = %s, want 99ms", got)
	}
	if got := percentile(d[:1], 0.99); got != time.Millisecond {
		t.Errorf("p99 of one = %s, want 1ms", got)
	}
}

// TestLoadCountsFailures runs a short load against a server that fails
// every third request and checks the count and the exit status.
func TestLoadCountsFailures(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1)%3 == 0 {
			http.Error(w, "fenced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"inventory_instance":"inventory-1"}`))
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"load", "--url", srv.URL, "--rps", "30", "--duration", "1s", "--tally", "inventory_instance"}, &out, &errOut)
	if code != 1 {
		t.Fatalf("exit %d, want 1; output:\n%s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"30 sent, 20 ok, 10 failed", "200=20, 503=10", "inventory-1=20", "status 503: fenced"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	errOut.Reset()
	code = run(ctx, []string{"load", "--url", srv.URL, "--rps", "30", "--duration", "1s", "--max-failures", "10"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("with --max-failures 10: exit %d, want 0; output:\n%s%s", code, out.String(), errOut.String())
	}
}

func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte("members"))
	}))
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "api-token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"with token", []string{"get", "--token-file", tok, srv.URL}, 0, "members"},
		{"without token", []string{"get", srv.URL}, 1, "unauthorized"},
		{"missing token file", []string{"get", "--token-file", tok + ".missing", srv.URL}, 1, ""},
		{"no url", []string{"get"}, 2, ""},
		{"unknown command", []string{"post", srv.URL}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(ctx, tt.args, &out, &errOut); code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.wantCode, errOut.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q lacks %q", out.String(), tt.wantOut)
			}
		})
	}
}
