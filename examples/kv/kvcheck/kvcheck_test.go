package kvcheck_test

import (
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvcheck"
	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

// cut is one partition from 10 s to 20 s: n1-n3 | n4-n5.
var cut = []kvcheck.Partition{{From: at(10), To: at(20), Sides: [][]string{{"n1", "n2", "n3"}, {"n4", "n5"}}}}

func w(node, key, value string, epoch uint64, s int) kvstore.Write {
	return kvstore.Write{Node: node, Key: key, Value: value, Epoch: epoch, At: at(s)}
}

// copyOf is orig as replica recorded it when it applied it at s.
func copyOf(orig kvstore.Write, replica string, s int) kvstore.Write {
	c := orig
	c.Kind, c.Origin, c.Node, c.At = kvstore.KindReplicated, orig.Node, replica, at(s)
	return c
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name          string
		timeline      []kvcheck.Partition
		accepted      []kvstore.Write
		attempts      []kvcheck.Attempt
		grace         time.Duration
		wantConflicts int
		wantTolerated int
		wantLost      int
		wantForwarded int
		wantDups      int
		wantInSummary string
	}{
		{
			name:     "clean history",
			timeline: cut,
			accepted: []kvstore.Write{w("n1", "a", "v1", 1, 5), w("n4", "a", "v2", 1, 6), w("n2", "a", "v3", 2, 12), w("n5", "b", "v4", 1, 12)},
			attempts: []kvcheck.Attempt{
				{Node: "n1", Key: "a", Value: "v1", Start: at(5), Outcome: kvcheck.Acked},
				{Node: "n4", Key: "a", Value: "v5", Start: at(13), Outcome: kvcheck.Refused, Status: 503, MeshError: "fenced"},
				{Node: "n4", Key: "a", Value: "v6", Start: at(14), Outcome: kvcheck.Unknown},
			},
			wantInSummary: "split-brain writes (same key, same epoch, different sides): 0",
		},
		{
			name:          "same key same epoch on both sides of a cut",
			timeline:      cut,
			accepted:      []kvstore.Write{w("n1", "a", "v1", 3, 11), w("n4", "a", "v2", 3, 12), w("n5", "a", "v3", 3, 13)},
			wantConflicts: 1,
			wantInSummary: `key "a" epoch 3 partition #0: "v1" on n1`,
		},
		{
			name:          "conflict inside the detection grace is tolerated",
			timeline:      cut,
			accepted:      []kvstore.Write{w("n1", "a", "v1", 3, 11), w("n4", "a", "v2", 3, 14)},
			grace:         5 * time.Second,
			wantTolerated: 1,
			wantInSummary: "within the detection grace (tolerated): 1",
		},
		{
			name:          "conflict ending after the detection grace fails",
			timeline:      cut,
			accepted:      []kvstore.Write{w("n1", "a", "v1", 3, 11), w("n4", "a", "v2", 3, 15)},
			grace:         5 * time.Second,
			wantConflicts: 1,
		},
		{
			name:     "same key same epoch on one side is fine",
			timeline: cut,
			accepted: []kvstore.Write{w("n1", "a", "v1", 3, 11), w("n2", "a", "v2", 3, 12)},
		},
		{
			name:     "same epoch on both sides but different keys",
			timeline: cut,
			accepted: []kvstore.Write{w("n1", "a", "v1", 3, 11), w("n4", "b", "v2", 3, 12)},
		},
		{
			name:     "same key on both sides under different epochs",
			timeline: cut,
			accepted: []kvstore.Write{w("n1", "a", "v1", 4, 11), w("n4", "a", "v2", 3, 12)},
		},
		{
			name:     "same key same epoch, one before the cut",
			timeline: cut,
			accepted: []kvstore.Write{w("n1", "a", "v1", 3, 9), w("n4", "a", "v2", 3, 12)},
		},
		{
			name:     "a write at the heal instant is outside the partition",
			timeline: cut,
			accepted: []kvstore.Write{w("n1", "a", "v1", 3, 19), w("n4", "a", "v2", 3, 20)},
		},
		{
			name:          "a partition never healed stays in force",
			timeline:      []kvcheck.Partition{{From: at(10), Sides: cut[0].Sides}},
			accepted:      []kvstore.Write{w("n1", "a", "v1", 3, 100), w("n4", "a", "v2", 3, 200)},
			wantConflicts: 1,
		},
		{
			name:          "acknowledged write lost",
			accepted:      []kvstore.Write{w("n1", "a", "v1", 1, 1)},
			attempts:      []kvcheck.Attempt{{Node: "n1", Key: "a", Value: "v9", Start: at(1), Outcome: kvcheck.Acked, Status: 200}},
			wantLost:      1,
			wantInSummary: `"a"="v9" via n1`,
		},
		{
			name:          "refused write reached an app",
			accepted:      []kvstore.Write{w("n4", "a", "v1", 1, 12)},
			attempts:      []kvcheck.Attempt{{Node: "n4", Key: "a", Value: "v1", Start: at(12), Outcome: kvcheck.Refused, Status: 503, MeshError: "fenced"}},
			wantForwarded: 1,
		},
		{
			name:     "unknown outcome may or may not be held",
			attempts: []kvcheck.Attempt{{Node: "n4", Key: "a", Value: "v1", Start: at(12), Outcome: kvcheck.Unknown}},
		},
		{
			name:          "replicated copies are neither acceptances nor duplicates",
			timeline:      cut,
			accepted:      []kvstore.Write{w("n1", "a", "v1", 3, 11), copyOf(w("n1", "a", "v1", 3, 11), "n4", 12), copyOf(w("n1", "a", "v1", 3, 11), "n2", 12)},
			attempts:      []kvcheck.Attempt{{Node: "n1", Key: "a", Value: "v1", Start: at(11), Outcome: kvcheck.Acked, Status: 200}},
			wantInSummary: "accepted writes: 1, epochs seen: [3] (and 2 replicated copies)",
		},
		{
			name:          "an acknowledged write held only as a copy is lost",
			accepted:      []kvstore.Write{copyOf(w("n1", "a", "v1", 1, 1), "n2", 2)},
			attempts:      []kvcheck.Attempt{{Node: "n1", Key: "a", Value: "v1", Start: at(1), Outcome: kvcheck.Acked, Status: 200}},
			wantLost:      1,
			wantInSummary: `"a"="v1" via n1`,
		},
		{
			name:          "one write accepted twice",
			accepted:      []kvstore.Write{w("n1", "a", "v1", 1, 1), w("n2", "a", "v1", 1, 2)},
			wantDups:      1,
			wantInSummary: `"v1" accepted 2 times, on [n1 n2]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := kvcheck.Check(tt.timeline, tt.accepted, tt.attempts, kvcheck.Options{DetectionGrace: tt.grace})
			if r.FailingConflicts() != tt.wantConflicts || len(r.Conflicts)-r.FailingConflicts() != tt.wantTolerated || len(r.Lost) != tt.wantLost ||
				len(r.Forwarded) != tt.wantForwarded || len(r.Duplicates) != tt.wantDups {
				t.Errorf("got conflicts %d (%d tolerated), lost %d, forwarded %d, duplicates %d; want %d (%d), %d, %d, %d\n%s",
					r.FailingConflicts(), len(r.Conflicts)-r.FailingConflicts(), len(r.Lost), len(r.Forwarded), len(r.Duplicates),
					tt.wantConflicts, tt.wantTolerated, tt.wantLost, tt.wantForwarded, tt.wantDups, r.Summary(0))
			}
			wantOK := tt.wantConflicts+tt.wantLost+tt.wantForwarded+tt.wantDups == 0
			if r.OK() != wantOK {
				t.Errorf("OK: got %v, want %v", r.OK(), wantOK)
			}
			if s := r.Summary(0); !strings.Contains(s, tt.wantInSummary) {
				t.Errorf("summary does not mention %q:\n%s", tt.wantInSummary, s)
			}
		})
	}
}

func TestSideStats(t *testing.T) {
	accepted := []kvstore.Write{w("n1", "a", "v1", 1, 5), w("n2", "a", "v2", 2, 12), w("n3", "b", "v3", 2, 13)}
	attempts := []kvcheck.Attempt{
		{Node: "n1", Value: "v1", Start: at(5), Outcome: kvcheck.Acked},
		{Node: "n1", Value: "v2", Start: at(12), Outcome: kvcheck.Acked},
		{Node: "n3", Value: "v3", Start: at(13), Outcome: kvcheck.Acked},
		{Node: "n4", Value: "v4", Start: at(12), Outcome: kvcheck.Refused},
		{Node: "n5", Value: "v5", Start: at(14), Outcome: kvcheck.Unknown},
		{Node: "n9", Value: "v6", Start: at(14), Outcome: kvcheck.Unknown}, // on no side: ignored
	}
	r := kvcheck.Check(cut, accepted, attempts, kvcheck.Options{})
	type row struct{ p, s, acked, refused, unknown, accepted int }
	want := []row{{-1, 0, 1, 0, 0, 1}, {0, 0, 2, 0, 0, 2}, {0, 1, 0, 1, 1, 0}}
	if len(r.Sides) != len(want) {
		t.Fatalf("sides: got %d rows, want %d\n%s", len(r.Sides), len(want), r.Summary(0))
	}
	for i, s := range r.Sides {
		got := row{s.Partition, s.Side, s.Acked, s.Refused, s.Unknown, s.Accepted}
		if got != want[i] {
			t.Errorf("sides[%d]: got %+v, want %+v", i, got, want[i])
		}
	}
	if got := r.Sides[1].Epochs; len(got) != 1 || got[0] != 2 {
		t.Errorf("majority epochs: got %v, want [2]", got)
	}
}
