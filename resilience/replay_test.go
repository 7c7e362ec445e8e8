package resilience

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

func TestReplaySmallBody(t *testing.T) {
	want := bytes.Repeat([]byte("0123456789"), 1000) // 10 kB
	src := &closeCounter{Reader: bytes.NewReader(want)}
	b := NewReplayBody(src, 64<<10)
	v1, ok := b.NewAttempt()
	if !ok {
		t.Fatal("first attempt refused")
	}
	part := make([]byte, 3000)
	if _, err := io.ReadFull(v1, part); err != nil {
		t.Fatal(err)
	}
	v1.Close()
	if src.closed != 0 {
		t.Fatal("closing a view closed the original")
	}
	for i := range 3 {
		v, ok := b.NewAttempt()
		if !ok {
			t.Fatalf("replay %d refused", i)
		}
		got, err := io.ReadAll(v)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("replay %d: %d bytes, %v; want the %d original bytes", i, len(got), err, len(want))
		}
	}
	if _, err := v1.Read(part); !errors.Is(err, ErrBodyDetached) {
		t.Fatalf("read on a replaced view = %v, want ErrBodyDetached", err)
	}
	if err := b.Close(); err != nil || src.closed != 1 {
		t.Fatalf("Close = %v, original closed %d times", err, src.closed)
	}
	if _, ok := b.NewAttempt(); ok {
		t.Fatal("attempt after Close allowed")
	}
}

func TestReplayRefusesBeyondLimit(t *testing.T) {
	body := strings.Repeat("x", 100)
	b := NewReplayBody(io.NopCloser(strings.NewReader(body)), 64)
	v, _ := b.NewAttempt()
	buf := make([]byte, 64)
	if _, err := io.ReadFull(v, buf); err != nil {
		t.Fatal(err)
	}
	if !b.Replayable() {
		t.Fatal("not replayable after reading exactly the limit")
	}
	rest, err := io.ReadAll(v)
	if err != nil || len(rest) != 36 {
		t.Fatalf("rest = %d bytes, %v; want the remaining 36 (streaming passes through)", len(rest), err)
	}
	if b.Replayable() {
		t.Fatal("replayable after reading beyond the limit")
	}
	if _, ok := b.NewAttempt(); ok {
		t.Fatal("replay allowed after reading beyond the limit")
	}

	// A body exactly at the limit stays replayable after EOF.
	b = NewReplayBody(io.NopCloser(strings.NewReader(body[:64])), 64)
	v, _ = b.NewAttempt()
	if got, _ := io.ReadAll(v); len(got) != 64 {
		t.Fatalf("read %d bytes", len(got))
	}
	v, ok := b.NewAttempt()
	if got, _ := io.ReadAll(v); !ok || string(got) != body[:64] {
		t.Fatalf("replay of a body at the limit: %v %q", ok, got)
	}
}

// TestReplayDetachesConcurrentReader: the transport goroutine of a failed
// attempt is blocked reading the original when the next attempt starts;
// the bytes it then receives go to the new attempt, not to it.
func TestReplayDetachesConcurrentReader(t *testing.T) {
	pr, pw := io.Pipe()
	b := NewReplayBody(pr, 1024)
	v1, _ := b.NewAttempt()
	oldErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := v1.Read(buf); err != nil {
				oldErr <- err
				return
			}
		}
	}()
	if _, err := pw.Write([]byte("head-")); err != nil { // attempt 1 reads it
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !b.readingNow() || b.kept() < 5 {
		if time.Now().After(deadline) {
			t.Fatal("attempt 1 never started its second read")
		}
		time.Sleep(time.Millisecond)
	}
	v2, ok := b.NewAttempt()
	if !ok {
		t.Fatal("replay refused while the old attempt's read was within the limit")
	}
	got := make(chan string, 1)
	go func() {
		all, _ := io.ReadAll(v2)
		got <- string(all)
	}()
	if _, err := pw.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case err := <-oldErr:
		if !errors.Is(err, ErrBodyDetached) {
			t.Errorf("old view read = %v, want ErrBodyDetached", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("old view never returned")
	}
	select {
	case s := <-got:
		if s != "head-tail" {
			t.Errorf("new attempt read %q, want %q", s, "head-tail")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("new view never finished")
	}
	b.Close()
}

// readingNow and kept expose internal state to the tests.
func (b *ReplayBody) readingNow() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.reading }
func (b *ReplayBody) kept() int        { b.mu.Lock(); defer b.mu.Unlock(); return len(b.buf) }
