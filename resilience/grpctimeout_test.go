package resilience

import (
	"errors"
	"math"
	"net/http"
	"testing"
	"time"
)

func TestParseGRPCTimeout(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"1H", time.Hour, false},
		{"2M", 2 * time.Minute, false},
		{"30S", 30 * time.Second, false},
		{"100m", 100 * time.Millisecond, false},
		{"5u", 5 * time.Microsecond, false},
		{"7n", 7, false},
		{"0n", 0, false},
		{"99999999S", 99999999 * time.Second, false},
		{"99999999H", time.Duration(math.MaxInt64), false}, // saturates
		{"123456789S", 0, true},                            // 9 digits
		{"S", 0, true},
		{"", 0, true},
		{"10s", 0, true}, // lower-case s is not a unit
		{"1.5S", 0, true},
		{"-1S", 0, true},
		{"1 S", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseGRPCTimeout(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseGRPCTimeout(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormatGRPCTimeout(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{-time.Second, "0n"},
		{0, "0n"},
		{1, "1n"},
		{99_999_999, "99999999n"},
		{100_000_000, "100000u"},
		{1500 * time.Millisecond, "1500000u"},
		{100 * time.Second, "100000m"},
		{100*time.Second + 999_999, "100000m"}, // rounds down
		{30 * 24 * time.Hour, "2592000S"},
		{2000 * 24 * time.Hour, "2880000M"},
		{time.Duration(math.MaxInt64), "2562047H"},
	}
	for _, tt := range tests {
		got := FormatGRPCTimeout(tt.in)
		if got != tt.want {
			t.Errorf("FormatGRPCTimeout(%v) = %q, want %q", tt.in, got, tt.want)
		}
		if tt.in > 0 {
			back, err := ParseGRPCTimeout(got)
			if err != nil || back > tt.in {
				t.Errorf("round trip of %v: %v, %v (must not exceed)", tt.in, back, err)
			}
		}
	}
}

func TestDeadlines(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	to := Timeouts{Connect: time.Second, PerTry: 2 * time.Second, Overall: 5 * time.Second}
	h := http.Header{}
	d, err := to.RequestDeadline(now, h)
	if err != nil || !d.Equal(now.Add(5*time.Second)) {
		t.Fatalf("RequestDeadline = %v, %v; want now+5s", d, err)
	}
	h.Set("grpc-timeout", "1S")
	if d, _ = to.RequestDeadline(now, h); !d.Equal(now.Add(time.Second)) {
		t.Errorf("with grpc-timeout 1S: %v, want now+1s", d)
	}
	h.Set("grpc-timeout", "1000S")
	if d, _ = to.RequestDeadline(now, h); !d.Equal(now.Add(5 * time.Second)) {
		t.Errorf("with grpc-timeout 1000S: %v, want now+5s", d)
	}
	h.Set("grpc-timeout", "soon")
	if _, err = to.RequestDeadline(now, h); !errors.Is(err, ErrMalformedGRPCTimeout) {
		t.Errorf("malformed grpc-timeout: %v, want ErrMalformedGRPCTimeout", err)
	}
	if d, _ = (Timeouts{}).RequestDeadline(now, http.Header{}); !d.IsZero() {
		t.Errorf("no timeouts: %v, want zero", d)
	}

	req := now.Add(5 * time.Second)
	if got := to.TryDeadline(now, req); !got.Equal(now.Add(2 * time.Second)) {
		t.Errorf("TryDeadline = %v, want now+2s", got)
	}
	if got := to.TryDeadline(now.Add(4*time.Second), req); !got.Equal(req) {
		t.Errorf("TryDeadline near the end = %v, want the request deadline", got)
	}
	if got := (Timeouts{}).TryDeadline(now, time.Time{}); !got.IsZero() {
		t.Errorf("TryDeadline without timeouts = %v, want zero", got)
	}

	out := http.Header{}
	if !SetGRPCTimeout(out, now, now.Add(1500*time.Millisecond)) || out.Get("Grpc-Timeout") != "1500000u" {
		t.Errorf("SetGRPCTimeout wrote %q", out.Get("Grpc-Timeout"))
	}
	if SetGRPCTimeout(http.Header{}, now, now) {
		t.Errorf("SetGRPCTimeout with no time left = true, want false")
	}
}

func FuzzParseGRPCTimeout(f *testing.F) {
	for _, s := range []string{"1H", "99999999n", "0m", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseGRPCTimeout(s)
		if err == nil && d < 0 {
			t.Fatalf("ParseGRPCTimeout(%q) = %v, negative", s, d)
		}
	})
}
