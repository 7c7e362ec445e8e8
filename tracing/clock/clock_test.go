package clock

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func mustClock(t testing.TB, cfg Config) *Clock {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSendReceive(t *testing.T) {
	a := mustClock(t, Config{NodeID: "a", Incarnation: 1})
	b := mustClock(t, Config{NodeID: "b", Incarnation: 1})
	h := http.Header{}
	s1, err := a.Send(h)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Get("x-mesh-lamport"); got != "1" {
		t.Errorf("x-mesh-lamport = %q, want 1", got)
	}
	if got, want := h.Get("x-mesh-vclock"), a.Key().String()+"=1"; got != want {
		t.Errorf("x-mesh-vclock = %q, want %q", got, want)
	}
	r1, err := b.Receive(h)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Lamport != 2 {
		t.Errorf("receive lamport = %d, want 2", r1.Lamport)
	}
	want := b.Key().String() + "=1," + a.Key().String() + "=1"
	if r1.Vector != want {
		t.Errorf("receive vector = %q, want %q", r1.Vector, want)
	}
	va, _ := ParseVector(s1.Vector)
	vb, _ := ParseVector(r1.Vector)
	if got := Compare(va, vb); got != Before {
		t.Errorf("Compare(send, receive) = %v, want before", got)
	}
	// Response back to a.
	rh := http.Header{}
	if _, err := b.Send(rh); err != nil {
		t.Fatal(err)
	}
	r2, err := a.Receive(rh)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Lamport != 4 {
		t.Errorf("lamport after response = %d, want 4", r2.Lamport)
	}
	snap := a.Snapshot()
	if snap.Lamport != 4 || snap.NodeID != "a" || len(snap.Entries) != 2 || snap.Vector != r2.Vector {
		t.Errorf("snapshot = %+v", snap)
	}
}

func TestReceiveRejectsBadHeaders(t *testing.T) {
	c := mustClock(t, Config{NodeID: "n", Incarnation: 1})
	tests := []struct {
		name string
		h    http.Header
		want error
	}{
		{"garbage lamport", http.Header{HeaderLamport: {"x"}}, ErrMalformed},
		{"two lamports", http.Header{HeaderLamport: {"1", "2"}}, ErrMalformed},
		{"jump", http.Header{HeaderLamport: {"99999999999999"}}, ErrJump},
		{"garbage vclock", http.Header{HeaderVector: {"nope"}}, ErrMalformed},
		{"two vclocks", http.Header{HeaderVector: {"AAAAAAAB=1", "AAAAAAAC=1"}}, ErrMalformed},
	}
	for _, tt := range tests {
		before := c.Snapshot()
		st, err := c.Receive(tt.h)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
		if st.Lamport != before.Lamport+1 {
			t.Errorf("%s: lamport = %d, want local tick %d", tt.name, st.Lamport, before.Lamport+1)
		}
		if strings.Contains(st.Vector, ",") {
			t.Errorf("%s: rejected vector was merged: %q", tt.name, st.Vector)
		}
	}
	// A forged entry for our own key never raises our own counter.
	st, err := c.Receive(http.Header{HeaderVector: {c.Key().String() + "=1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := ParseVector(st.Vector); v.Entries[0].Counter > 100 || len(v.Entries) != 1 {
		t.Errorf("own entry adopted from remote: %q", st.Vector)
	}
}

func TestLamportBounds(t *testing.T) {
	l, err := NewLamport(MaxCounter-1, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := l.Tick(); err != nil || v != MaxCounter {
		t.Fatalf("Tick = %d, %v; want MaxCounter", v, err)
	}
	if _, err := l.Tick(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Tick past MaxCounter: err = %v, want ErrExhausted", err)
	}
	if l.Now() != MaxCounter {
		t.Fatalf("clock moved after exhaustion: %d", l.Now())
	}
	var z Lamport
	if _, err := z.Witness(MaxJump + 1); !errors.Is(err, ErrJump) {
		t.Errorf("Witness(MaxJump+1) err = %v, want ErrJump", err)
	}
	if v, err := z.Witness(MaxJump); err != nil || v != MaxJump+1 {
		t.Errorf("Witness(MaxJump) = %d, %v; want %d", v, err, uint64(MaxJump+1))
	}
	if v, err := z.Witness(5); err != nil || v != MaxJump+2 {
		t.Errorf("Witness(lower) = %d, %v; want %d", v, err, uint64(MaxJump+2))
	}
}

func TestLamportConcurrentTicksUnique(t *testing.T) {
	var l Lamport
	const workers, per = 8, 2000
	seen := make([][]uint64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				v, err := l.Tick()
				if err != nil {
					t.Error(err)
					return
				}
				seen[w] = append(seen[w], v)
			}
		}()
	}
	wg.Wait()
	all := map[uint64]bool{}
	for _, s := range seen {
		for i, v := range s {
			if i > 0 && v <= s[i-1] {
				t.Fatalf("non-increasing within a goroutine: %d after %d", v, s[i-1])
			}
			if all[v] {
				t.Fatalf("value %d handed out twice", v)
			}
			all[v] = true
		}
	}
	if l.Now() != workers*per {
		t.Fatalf("Now = %d, want %d", l.Now(), workers*per)
	}
}

func TestRestartNeverReuses(t *testing.T) {
	dir := t.TempDir()
	c1 := mustClock(t, Config{NodeID: "n", DataDir: dir, ReserveBlock: 10})
	var last Stamp
	for i := 0; i < 25; i++ {
		st, err := c1.Send(http.Header{})
		if err != nil {
			t.Fatal(err)
		}
		last = st
	}
	if got := c1.Snapshot().LamportReserved; got < last.Lamport {
		t.Fatalf("reserved %d below issued %d", got, last.Lamport)
	}
	// Simulated crash: c1 is abandoned without any shutdown.
	c2 := mustClock(t, Config{NodeID: "n", DataDir: dir, ReserveBlock: 10})
	st, err := c2.Send(http.Header{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Lamport <= last.Lamport {
		t.Fatalf("restarted clock issued %d, not above %d", st.Lamport, last.Lamport)
	}
	if c2.Key() == c1.Key() {
		t.Fatal("restart reused the vector key")
	}
	// Without a data dir the key still changes.
	if k1, k2 := mustClock(t, Config{NodeID: "n"}).Key(), mustClock(t, Config{NodeID: "n"}).Key(); k1 == k2 {
		t.Fatal("two incarnations share a key")
	}
	// A jump past the reservation reserves before handing the value out.
	h := http.Header{HeaderLamport: {FormatLamport(last.Lamport + 1000)}}
	st, err = c2.Receive(h)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, HighWaterFile))
	if err != nil {
		t.Fatal(err)
	}
	hw, err := ParseLamport(strings.TrimSpace(string(b)))
	if err != nil || hw < st.Lamport {
		t.Fatalf("stored mark %q below issued %d (%v)", b, st.Lamport, err)
	}
}

func TestCorruptHighWaterMark(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, HighWaterFile), []byte("banana\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{NodeID: "n", DataDir: dir}); err == nil || !strings.Contains(err.Error(), "corrupt high-water mark") {
		t.Fatalf("err = %v, want corrupt high-water mark", err)
	}
}

type failingReserver struct{}

func (failingReserver) Reserve(uint64) error { return errors.New("disk full") }

func TestReserveFailureStopsClock(t *testing.T) {
	if _, err := NewLamport(0, failingReserver{}, 10); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want disk full", err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{{}, {NodeID: "n", MaxEntries: 33}, {NodeID: "n", MaxEntries: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestPruningKeepsBoundAndMarks(t *testing.T) {
	const k = 4
	hub := mustClock(t, Config{NodeID: "hub", Incarnation: 1, MaxEntries: k})
	var last Stamp
	for i := 0; i < 10; i++ {
		n := mustClock(t, Config{NodeID: "n" + string(rune('a'+i)), Incarnation: 1})
		h := http.Header{}
		if _, err := n.Send(h); err != nil {
			t.Fatal(err)
		}
		st, err := hub.Receive(h)
		if err != nil {
			t.Fatal(err)
		}
		last = st
		v, err := ParseVector(st.Vector)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Entries) > k {
			t.Fatalf("%d entries, bound %d: %s", len(v.Entries), k, st.Vector)
		}
		if v.Pruned != (i+2 > k) {
			t.Fatalf("after %d peers pruned = %v: %s", i+1, v.Pruned, st.Vector)
		}
	}
	// The most recently advanced peers survive.
	if !strings.Contains(last.Vector, NodeKey("nj", 1).String()) || strings.Contains(last.Vector, NodeKey("na", 1).String()) {
		t.Errorf("pruned the wrong entries: %s", last.Vector)
	}
	// Pruned is sticky across merges.
	other := mustClock(t, Config{NodeID: "other", Incarnation: 1})
	h := http.Header{}
	if _, err := hub.Send(h); err != nil {
		t.Fatal(err)
	}
	st, err := other.Receive(h)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(st.Vector, ",~") {
		t.Errorf("pruned mark lost in merge: %s", st.Vector)
	}
}
