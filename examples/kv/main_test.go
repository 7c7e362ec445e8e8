package main

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitList(t *testing.T) {
	for in, want := range map[string][]string{
		"":                           nil,
		"a:1":                        {"a:1"},
		" a:1, b:2 ,,":               {"a:1", "b:2"},
		"10.0.0.1:15006,[::1]:15006": {"10.0.0.1:15006", "[::1]:15006"},
	} {
		if got := splitList(in); !slices.Equal(got, want) {
			t.Errorf("splitList(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPeersAndMeshTogether: a replica needs both flags; one alone is a
// mistake, refused before anything starts.
func TestPeersAndMeshTogether(t *testing.T) {
	for _, o := range []options{
		{listen: "127.0.0.1:0", name: "kv-1", peers: []string{"a:1"}},
		{listen: "127.0.0.1:0", name: "kv-1", mesh: "127.0.0.1:15001"},
	} {
		if err := run(o); err == nil || !strings.Contains(err.Error(), "go together") {
			t.Errorf("run(%+v) = %v, want the flags refused", o, err)
		}
	}
}
