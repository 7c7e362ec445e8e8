package kvcheck_test

import (
	"strings"
	"testing"

	"github.com/causeway-mesh/causeway/examples/kv/kvcheck"
	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

// acc is an accepted write with a version.
func acc(node, key, value string, epoch, version uint64) kvstore.Write {
	return kvstore.Write{Node: node, Origin: node, Kind: kvstore.KindAccepted, Key: key, Value: value, Epoch: epoch, Version: version}
}

func acked(node, key, value string) kvcheck.Attempt {
	return kvcheck.Attempt{Node: node, Key: key, Value: value, Outcome: kvcheck.Acked, Status: 200}
}

func replicas(dumps ...map[string]string) []kvcheck.Replica {
	out := make([]kvcheck.Replica, len(dumps))
	for i, d := range dumps {
		out[i] = kvcheck.Replica{Node: "n" + string(rune('1'+i)), Dump: d}
	}
	return out
}

func TestCheckConvergence(t *testing.T) {
	history := []kvstore.Write{
		acc("n1", "a", "a1", 1, 1),
		acc("n2", "a", "a2", 1, 2), // same epoch, higher version
		acc("n3", "a", "a3", 2, 1), // newer epoch: wins
		acc("n1", "b", "b1", 1, 3),
		acc("n2", "b", "b2", 1, 3), // ties n1 on epoch and version: origin n2 wins
		// A copy of a1 recorded on n2 is not a write of its own.
		{Node: "n2", Origin: "n1", Kind: kvstore.KindReplicated, Key: "a", Value: "a1", Epoch: 1, Version: 1},
	}
	won := map[string]string{"a": "a3", "b": "b2"}
	attempts := []kvcheck.Attempt{acked("n1", "a", "a1"), acked("n2", "a", "a2"), acked("n3", "a", "a3"), acked("n2", "b", "b2"),
		acked("n1", "c", "c9"), // in no history: Check's lost write, not this check's
		{Node: "n1", Key: "b", Value: "b1", Outcome: kvcheck.Unknown}}
	tests := []struct {
		name          string
		replicas      []kvcheck.Replica
		wantIdentical bool
		wantDiverged  int
		wantNotHeld   int
		wantInSummary string
	}{
		{"converged", replicas(won, won, won), true, 0, 0, "replicas: 3, keys: 2, identical: true"},
		{"identical but not the highest rank", replicas(
			map[string]string{"a": "a2", "b": "b2"}, map[string]string{"a": "a2", "b": "b2"}), true, 2, 2,
			`key "a" on n1: holds "a2", want "a3" (epoch 2, version 1, n3) accepted on n3`},
		{"one replica behind", replicas(won, won, map[string]string{"a": "a1", "b": "b2"}), false, 1, 2,
			`"a"="a2" via n2`},
		{"a key missing on one replica", replicas(won, map[string]string{"a": "a3"}), false, 1, 1, `key "b" on n2: holds nothing`},
		{"a value from nowhere", replicas(won, map[string]string{"a": "a3", "b": "b2", "z": "?"}), false, 2, 0,
			`key "z" on n2: holds "?", but no history has an accepted write of the key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := kvcheck.CheckConvergence(tt.replicas, history, attempts)
			if c.Identical != tt.wantIdentical || len(c.Diverged) != tt.wantDiverged || len(c.NotHeld) != tt.wantNotHeld {
				t.Errorf("identical %v, diverged %d, not held %d; want %v, %d, %d\n%s",
					c.Identical, len(c.Diverged), len(c.NotHeld), tt.wantIdentical, tt.wantDiverged, tt.wantNotHeld, c.Summary(0))
			}
			wantOK := tt.wantIdentical && tt.wantDiverged == 0 && tt.wantNotHeld == 0
			if c.OK() != wantOK {
				t.Errorf("OK: %v, want %v", c.OK(), wantOK)
			}
			if s := c.Summary(0); !strings.Contains(s, tt.wantInSummary) {
				t.Errorf("summary does not mention %q:\n%s", tt.wantInSummary, s)
			}
		})
	}
}
