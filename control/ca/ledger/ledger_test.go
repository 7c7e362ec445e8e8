package ledger

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordReplaceAndReopen(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	path := filepath.Join(t.TempDir(), FileName)
	l, err := Open(path, WithClock(clock), WithSince(time.Time{}))
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial, root string, ttl time.Duration) Leaf {
		return Leaf{Serial: serial, ID: "spiffe://mesh.local/ns/default/sa/orders", Root: root, NotAfter: now.Add(ttl)}
	}
	for _, lf := range []Leaf{leaf("a1", "old", time.Hour), leaf("a2", "old", 2*time.Hour), leaf("a3", "old", time.Minute)} {
		if err := l.Record(lf, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Record(leaf("b1", "new", time.Hour), "a1"); err != nil { // a1 renewed onto the new root
		t.Fatal(err)
	}
	if n, until := l.Outstanding("old"); n != 2 || !until.Equal(now.Add(2*time.Hour)) {
		t.Fatalf("Outstanding(old) = %d until %v; want 2 until +2h", n, until)
	}
	now = now.Add(10 * time.Minute) // a3 expires
	if n, _ := l.Outstanding("old"); n != 1 {
		t.Fatalf("Outstanding(old) after a3 expired = %d, want 1", n)
	}
	if got := l.Leaves(""); len(got) != 2 || got[0].Serial != "b1" || got[1].Serial != "a2" {
		t.Fatalf("Leaves = %+v; want b1 then a2, by expiry", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(leaf("x", "new", time.Hour), ""); err == nil {
		t.Fatal("Record after Close succeeded")
	}

	re, err := Open(path, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	if n, _ := re.Outstanding("old"); n != 1 {
		t.Fatalf("after reopening, Outstanding(old) = %d, want 1", n)
	}
	if n, _ := re.Outstanding("new"); n != 1 {
		t.Fatalf("after reopening, Outstanding(new) = %d, want 1", n)
	}
	if !re.Since().IsZero() {
		t.Fatalf("Since = %v after reopening, want zero (recorded from the beginning)", re.Since())
	}
	b, _ := os.ReadFile(path)
	if lines := strings.Count(string(b), "\n"); lines != 3 {
		t.Fatalf("reopened file has %d lines, want 3 (compacted: since + 2 live leaves):\n%s", lines, b)
	}
}

func TestSince(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), FileName)
	l, err := Open(path, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	if !l.Since().Equal(now) {
		t.Fatalf("Since = %v, want the time it was created", l.Since())
	}
	_ = l.Close()
	re, err := Open(path, WithSince(time.Time{}))
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	if !re.Since().Equal(now) {
		t.Fatal("WithSince changed an existing ledger")
	}
}

func TestReplayRefusals(t *testing.T) {
	since := `{"op":"since","since":"2026-05-01T12:00:00Z"}` + "\n"
	issue := `{"op":"issue","leaf":{"serial":"a1","id":"x","root":"r","notAfter":"2999-01-01T00:00:00Z"}}` + "\n"
	tests := []struct {
		name    string
		content string
		wantErr string // "" when the file opens
		leaves  int
	}{
		{"good", since + issue, "", 1},
		{"torn last line", since + issue + `{"op":"iss`, "", 1},
		{"malformed line in the middle", since + `{"op":` + "\n" + issue, "line 2", 0},
		{"unknown record in the middle", since + `{"op":"drop"}` + "\n" + issue, "unknown record", 0},
		{"no since line", issue, `want the "since" record`, 0},
		{"empty", "", `want the "since" record`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := Open(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if got := len(l.Leaves("")); got != tt.leaves {
				t.Fatalf("%d leaves, want %d", got, tt.leaves)
			}
		})
	}
}

func TestCompactsWhileRunning(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// One sidecar renewing again and again: one live leaf, many lines.
	prev := ""
	for i := range minCompact {
		serial := fmt.Sprintf("s%d", i)
		if err := l.Record(Leaf{Serial: serial, ID: "x", Root: "r", NotAfter: time.Now().Add(time.Hour)}, prev); err != nil {
			t.Fatal(err)
		}
		prev = serial
	}
	b, _ := os.ReadFile(path)
	if lines := strings.Count(string(b), "\n"); lines > minCompact+10 {
		t.Fatalf("the file has %d lines for 1 live leaf; it was not compacted", lines)
	}
	if n, _ := l.Outstanding("r"); n != 1 {
		t.Fatalf("Outstanding = %d, want 1", n)
	}
}
