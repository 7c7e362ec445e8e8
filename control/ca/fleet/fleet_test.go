package fleet

import (
	"testing"
	"time"
)

func TestRegistry(t *testing.T) {
	r := New()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	b := r.Connect("spiffe://mesh.local/ns/default/sa/billing", "10.0.0.2:5000", now)
	a := r.Connect("spiffe://mesh.local/ns/default/sa/orders", "10.0.0.1:5000", now)
	a.Ack("abcd", "1f", "sha256:root", now.Add(time.Hour), now.Add(time.Second))
	a.Ack("ef01", "", "", time.Time{}, now.Add(2*time.Second)) // a bundle ack without a leaf keeps the leaf
	got := r.Snapshot()
	if len(got) != 2 || got[0].ID != "spiffe://mesh.local/ns/default/sa/billing" || got[1].Bundle != "ef01" ||
		got[1].LeafSerial != "1f" || got[1].LeafRoot != "sha256:root" || !got[1].AckedAt.Equal(now.Add(2*time.Second)) {
		t.Fatalf("snapshot %+v", got)
	}
	if got[0].Bundle != "" {
		t.Fatalf("billing acknowledged nothing, but %q", got[0].Bundle)
	}
	b.Close()
	b.Close()
	b.Ack("abcd", "", "", time.Time{}, now) // after Close: ignored
	if got := r.Snapshot(); len(got) != 1 || got[0].Addr != "10.0.0.1:5000" {
		t.Fatalf("after close: %+v", got)
	}
}
