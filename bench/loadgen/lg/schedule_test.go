package lg

import (
	"testing"
	"time"
)

func TestNewSchedule(t *testing.T) {
	tests := []struct {
		name      string
		rate      float64
		span      time.Duration
		conns     int
		wantTotal int64
		wantErr   bool
	}{
		{"1000 rps 22s", 1000, 22 * time.Second, 16, 22000, false},
		{"5000 rps 11s", 5000, 11 * time.Second, 16, 55000, false},
		{"fractional rate", 333.3, 3 * time.Second, 4, 999, false},
		{"tiny span still one request", 10, time.Millisecond, 1, 1, false},
		{"zero rate", 0, time.Second, 1, 0, true},
		{"negative rate", -5, time.Second, 1, 0, true},
		{"zero conns", 100, time.Second, 0, 0, true},
		{"zero span", 100, 0, 1, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSchedule(tt.rate, tt.span, tt.conns)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && s.Total != tt.wantTotal {
				t.Fatalf("Total = %d, want %d", s.Total, tt.wantTotal)
			}
		})
	}
}

func TestScheduleOffsets(t *testing.T) {
	tests := []struct {
		rate float64
		i    int64
		want time.Duration
	}{
		{1000, 0, 0},
		{1000, 1, time.Millisecond},
		{5000, 3, 600 * time.Microsecond},
		{3, 1, 333333333}, // rounded to the nearest ns
		{3, 2, 666666667}, // computed from i, not accumulated
		{1000, 22000, 22 * time.Second},
		{1e6, 1e9, 1000 * time.Second},
	}
	for _, tt := range tests {
		s := Schedule{Rate: tt.rate, Conns: 1, Total: tt.i + 1}
		if got := s.Offset(tt.i); got != tt.want {
			t.Errorf("rate %v Offset(%d) = %v, want %v", tt.rate, tt.i, got, tt.want)
		}
	}
}

// Every global index must be owned by exactly one connection, in increasing
// order, and each connection's requests must be evenly spaced at Conns/Rate.
func TestSchedulePartition(t *testing.T) {
	tests := []struct {
		rate  float64
		span  time.Duration
		conns int
	}{
		{1000, time.Second, 16},
		{1000, time.Second, 1},
		{5000, 300 * time.Millisecond, 16},
		{100, 50 * time.Millisecond, 16}, // fewer requests than connections
		{777, time.Second, 7},
	}
	for _, tt := range tests {
		s, err := NewSchedule(tt.rate, tt.span, tt.conns)
		if err != nil {
			t.Fatal(err)
		}
		seen := make([]int, s.Total)
		var sum int64
		for c := 0; c < s.Conns; c++ {
			n := int64(0)
			prev := time.Duration(-1)
			for k := int64(0); ; k++ {
				i, ok := s.Index(c, k)
				if !ok {
					break
				}
				if i%int64(s.Conns) != int64(c) {
					t.Fatalf("%+v: conn %d got index %d", s, c, i)
				}
				seen[i]++
				off := s.Offset(i)
				if prev >= 0 {
					gap := off - prev
					want := time.Duration(float64(s.Conns) * 1e9 / s.Rate)
					if d := gap - want; d < -1 || d > 1 {
						t.Fatalf("%+v: conn %d gap %v, want %v", s, c, gap, want)
					}
				}
				prev = off
				n++
			}
			if n != s.CountFor(c) {
				t.Fatalf("%+v: conn %d walked %d requests, CountFor says %d", s, c, n, s.CountFor(c))
			}
			sum += n
		}
		if sum != s.Total {
			t.Fatalf("%+v: connections own %d requests in total, want %d", s, sum, s.Total)
		}
		for i, n := range seen {
			if n != 1 {
				t.Fatalf("%+v: index %d owned %d times", s, i, n)
			}
		}
		if s.CountFor(-1) != 0 || s.CountFor(s.Conns) != 0 {
			t.Fatalf("CountFor out of range should be 0")
		}
	}
}

func TestFirstAtOrAfter(t *testing.T) {
	tests := []struct {
		rate float64
		d    time.Duration
		want int64
	}{
		{1000, 0, 0},
		{1000, -time.Second, 0},
		{1000, 2 * time.Second, 2000},
		{1000, 2*time.Second + 1, 2001},
		{3, time.Second, 3},
		{3, 333333333, 1},
		{3, 333333334, 2},
		{5000, 1500 * time.Microsecond, 8},
	}
	for _, tt := range tests {
		s := Schedule{Rate: tt.rate, Conns: 16, Total: 1 << 40}
		got := s.FirstAtOrAfter(tt.d)
		if got != tt.want {
			t.Errorf("rate %v FirstAtOrAfter(%v) = %d, want %d", tt.rate, tt.d, got, tt.want)
		}
		if got > 0 && s.Offset(got-1) >= tt.d || s.Offset(got) < tt.d {
			t.Errorf("rate %v d %v: index %d is not the first at or after", tt.rate, tt.d, got)
		}
	}
}
