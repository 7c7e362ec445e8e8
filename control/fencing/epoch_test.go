package fencing

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/fencingpb"
	"github.com/causeway-mesh/causeway/control/membership"
)

func TestQuorumSideChanged(t *testing.T) {
	set := func(ns ...string) map[string]struct{} {
		m := map[string]struct{}{}
		for _, n := range ns {
			m[n] = struct{}{}
		}
		return m
	}
	for _, tc := range []struct {
		name string
		prev map[string]struct{}
		cur  []string
		want bool
	}{
		{"no quorum before or after", nil, nil, false},
		{"quorum gained", nil, []string{"a", "b"}, true},
		{"quorum lost", set("a", "b"), nil, true},
		{"unchanged", set("a", "b"), []string{"a", "b"}, false},
		{"member joins", set("a", "b"), []string{"a", "b", "c"}, false},
		{"member lost", set("a", "b", "c"), []string{"a", "b"}, true},
		{"member swapped", set("a", "b", "c"), []string{"a", "b", "d"}, true},
	} {
		if got := quorumSideChanged(tc.prev, tc.cur); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestEpochRules(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	all := []string{"a", "b", "c", "d", "e"}
	s := newTestService(t, dir, clk, instances("orders", all...))
	reportAll := func(views map[string][]string) map[string]*fencingpb.Verdict {
		t.Helper()
		// Two rounds, so every verdict reflects every report.
		out := map[string]*fencingpb.Verdict{}
		for range 2 {
			for _, n := range all {
				if reach, ok := views[n]; ok {
					out[n] = mustReport(t, s, viewOf(n, "orders", reach...))
				}
			}
		}
		return out
	}
	epochOf := func(vs map[string]*fencingpb.Verdict, n string) uint64 {
		t.Helper()
		if vs[n].GetFenced() {
			t.Fatalf("%s is fenced: %s", n, vs[n].GetReason())
		}
		return vs[n].GetEpoch()
	}
	whole := map[string][]string{"a": all, "b": all, "c": all, "d": all, "e": all}
	e := epochOf(reportAll(whole), "a")
	if e != 1 {
		t.Fatalf("first quorum: epoch %d, want 1", e)
	}
	if got := epochOf(reportAll(whole), "e"); got != e {
		t.Errorf("nothing changed: epoch %d, want %d", got, e)
	}

	// Loss: d and e split off.
	split := map[string][]string{"a": {"a", "b", "c"}, "b": {"a", "b", "c"}, "c": {"a", "b", "c"}, "d": {"d", "e"}, "e": {"d", "e"}}
	vs := reportAll(split)
	if got := epochOf(vs, "a"); got != e+1 {
		t.Errorf("after losing d and e: epoch %d, want %d", got, e+1)
	}
	if !vs["d"].GetFenced() || vs["d"].GetEpoch() != e+1 {
		t.Errorf("minority: fenced %v epoch %d, want fenced with epoch %d", vs["d"].GetFenced(), vs["d"].GetEpoch(), e+1)
	}

	// Join: heal; the quorum group only grows.
	if got := epochOf(reportAll(whole), "d"); got != e+1 {
		t.Errorf("after the heal: epoch %d, want %d (joining does not bump)", got, e+1)
	}

	// Quorum lost (2|2|1), then regained. The old reports go stale first,
	// so that the side changes in one step rather than member by member.
	clk.advance(7 * time.Second)
	three := map[string][]string{"a": {"a", "b"}, "b": {"a", "b"}, "c": {"c", "d"}, "d": {"c", "d"}, "e": {"e"}}
	vs = reportAll(three)
	if !vs["a"].GetFenced() || vs["a"].GetEpoch() != e+2 {
		t.Errorf("quorum lost: fenced %v epoch %d, want fenced with epoch %d", vs["a"].GetFenced(), vs["a"].GetEpoch(), e+2)
	}
	if got := epochOf(reportAll(whole), "c"); got != e+3 {
		t.Errorf("quorum regained: epoch %d, want %d", got, e+3)
	}
	if m := s.Metrics(); m.EpochChanges != 4 || len(m.Domains) != 1 || m.Domains[0].Epoch != e+3 || m.Domains[0].WritableNodes != 5 {
		t.Errorf("metrics %+v, want 4 epoch changes and 5 writable nodes at epoch %d", m, e+3)
	}

	// Restart: the epoch survives; the first quorum after it starts a new
	// one (who held it before is not stored).
	s2 := newTestService(t, dir, clk, instances("orders", all...))
	if st := s2.Status(); st.Domains[0].Epoch != e+3 {
		t.Errorf("after a restart: epoch %d, want %d", st.Domains[0].Epoch, e+3)
	}
	s = s2
	if got := epochOf(reportAll(whole), "a"); got != e+4 {
		t.Errorf("first quorum after a restart: epoch %d, want %d", got, e+4)
	}
	b, err := os.ReadFile(filepath.Join(dir, EpochFileName))
	if err != nil || strings.TrimSpace(string(b)) != `{"version":1,"domains":{"mesh":5}}` {
		t.Errorf("epoch file: %q, %v", b, err)
	}
}

func TestEpochAboveReported(t *testing.T) {
	s := newTestService(t, t.TempDir(), newClock(), instances("orders", "a"))
	r := viewOf("a", "orders")
	r.NewestEpoch = 41 // the data directory was lost; the sidecar remembers
	if v := mustReport(t, s, r); v.GetEpoch() != 42 || v.GetFenced() {
		t.Errorf("epoch %d fenced %v, want 42 and writable", v.GetEpoch(), v.GetFenced())
	}
}

func TestEpochsAcrossDomainsAreUnique(t *testing.T) {
	s := newTestService(t, t.TempDir(), newClock(), append(instances("orders", "o1"), instances("web", "w1")...),
		servicePolicy("orders", "on", 0))
	mustReport(t, s, viewOf("o1", "orders", "w1"))
	w := mustReport(t, s, viewOf("w1", "web", "o1"))
	o := mustReport(t, s, viewOf("o1", "orders", "w1"))
	if w.GetEpoch() == o.GetEpoch() || w.GetFenced() || o.GetFenced() {
		t.Errorf("mesh epoch %d, orders epoch %d (fenced %v %v); want distinct epochs, both writable", w.GetEpoch(), o.GetEpoch(), w.GetFenced(), o.GetFenced())
	}
}

func TestEpochFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"not JSON", "{", "unexpected EOF"},
		{"unknown key", `{"version":1,"domains":{},"x":1}`, `unknown field "x"`},
		{"newer format", `{"version":2,"domains":{}}`, "format version 2, want 1"},
		{"bad domain", `{"version":1,"domains":{"service/Bad_Name":3}}`, `"service/Bad_Name" is not a fencing domain name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, EpochFileName), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(Config{DataDir: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestEpochNotStoredMeansNoVerdict(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := newTestService(t, dir, newClock(), instances("orders", "a"))
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Report(t.Context(), viewOf("a", "orders")); err == nil || !strings.Contains(err.Error(), "fencing epochs") {
		t.Fatalf("got %v, want UNAVAILABLE naming the epoch file", err)
	}
	if st := s.Status(); st.Error == "" {
		t.Error("status shows no error after a failed store")
	}
}

func TestEvaluationIsThrottled(t *testing.T) {
	clk := newClock()
	s, err := New(Config{DataDir: t.TempDir(), Members: membership.NewStatic(instances("orders", "a", "b", "c")),
		Now: clk.Now, Logger: quiet}) // EvaluateEvery: 2s / 4
	if err != nil {
		t.Fatal(err)
	}
	mustReport(t, s, viewOf("a", "orders", "b"))
	// A node's first report is evaluated at once: a sidecar that just
	// started is not fenced for a whole evaluation period.
	if v := mustReport(t, s, viewOf("b", "orders", "a")); v.GetFenced() || v.GetEpoch() != 1 {
		t.Fatalf("first report of b: fenced %v (%q) epoch %d, want writable at epoch 1", v.GetFenced(), v.GetReason(), v.GetEpoch())
	}
	// A changed view within the throttle is answered from the last
	// evaluation, and takes effect at the next one.
	clk.advance(100 * time.Millisecond)
	if v := mustReport(t, s, viewOf("a", "orders")); v.GetFenced() {
		t.Errorf("within the throttle: fenced (%q), want the last evaluation's writable verdict", v.GetReason())
	}
	clk.advance(500 * time.Millisecond)
	if v := mustReport(t, s, viewOf("a", "orders")); !v.GetFenced() {
		t.Errorf("after the throttle: writable, want fenced (a alone is 1 of 3)")
	}
}
