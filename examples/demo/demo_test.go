package main

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"
)

func TestNewTraceparent(t *testing.T) {
	valid := regexp.MustCompile(`^00-([0-9a-f]{32})-[0-9a-f]{16}-01$`)
	seen := map[string]bool{}
	for range 100 {
		header, id := newTraceparent()
		m := valid.FindStringSubmatch(header)
		if m == nil {
			t.Fatalf("traceparent %q is not a sampled W3C traceparent", header)
		}
		if m[1] != id {
			t.Errorf("trace id %q, want %q from %q", id, m[1], header)
		}
		if seen[id] {
			t.Errorf("trace id %q repeated", id)
		}
		seen[id] = true
	}
}

func TestPortAllocatorDistinct(t *testing.T) {
	var a portAllocator
	seen := map[string]bool{}
	for range 60 {
		p := a.next()
		if p == "" || seen[p] {
			t.Fatalf("port %q empty or handed out twice", p)
		}
		seen[p] = true
	}
	if err := a.release(); err != nil {
		t.Fatal(err)
	}
}

func TestEchoAttempt(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"headers":{"X-Mesh-Attempt":"2"}}`, "2"},
		{`{"headers":{}}`, "?"},
		{`503 injected failure`, "?"},
	}
	for _, tt := range tests {
		if got := echoAttempt([]byte(tt.body)); got != tt.want {
			t.Errorf("echoAttempt(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestSortedCounts(t *testing.T) {
	got := sortedCounts(map[string]int{"b": 2, "a": 1, "c": 30})
	if want := "a=1 b=2 c=30"; got != want {
		t.Errorf("sortedCounts = %q, want %q", got, want)
	}
}

func TestPoll(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	n := 0
	if err := poll(ctx, time.Second, time.Millisecond, func() (bool, error) { n++; return n == 3, nil }, nil); err != nil || n != 3 {
		t.Errorf("poll = %v after %d calls, want nil after 3", err, n)
	}
	err := poll(ctx, 20*time.Millisecond, time.Millisecond, func() (bool, error) { return false, nil }, func() string { return "never" })
	if !errors.Is(err, errTimeout) {
		t.Errorf("poll of a false condition = %v, want errTimeout", err)
	}
	boom := errors.New("boom")
	if err := poll(ctx, time.Second, time.Millisecond, func() (bool, error) { return false, boom }, nil); !errors.Is(err, boom) {
		t.Errorf("poll = %v, want the condition's error", err)
	}
}
