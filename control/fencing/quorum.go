package fencing

import (
	"cmp"
	"slices"
)

// connectedGroups returns the connected components of the
// mutual-reachability graph: reach maps each reporting node to the nodes
// it reaches, and two nodes are connected when each lists the other. Only
// keys of reach are nodes of the graph. Groups are sorted by size
// (largest first), then by their first node id; members are sorted.
func connectedGroups(reach map[string]map[string]struct{}) [][]string {
	nodes := make([]string, 0, len(reach))
	for n := range reach {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	index := make(map[string]int, len(nodes))
	for i, n := range nodes {
		index[n] = i
	}
	parent := make([]int, len(nodes))
	for i := range parent {
		parent[i] = i
	}
	find := func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	for i, a := range nodes {
		for b := range reach[a] {
			j, ok := index[b]
			if !ok || j <= i {
				continue // not a reporter, itself, or already seen from b's side
			}
			ri, rj := find(i), find(j)
			if ri == rj {
				continue // already connected: skip the reverse lookup
			}
			if _, back := reach[b][a]; back {
				parent[max(ri, rj)] = min(ri, rj)
			}
		}
	}
	byRoot := map[int][]string{}
	for i, n := range nodes {
		r := find(i)
		byRoot[r] = append(byRoot[r], n) // nodes are sorted, so members are too
	}
	groups := make([][]string, 0, len(byRoot))
	for _, g := range byRoot {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(x, y []string) int {
		return cmp.Or(cmp.Compare(len(y), len(x)), cmp.Compare(x[0], y[0]))
	})
	return groups
}

// needed is the least group size that holds the quorum of a domain of
// expected members: more than half.
func needed(expected int) int { return expected/2 + 1 }

// quorumGroup returns the index of the group holding more than half of
// expected, or -1. When more than one group does (only possible when an
// explicit expected size is below the domain's real size), nobody holds
// it and ambiguous is true: two writable sides are what fencing exists to
// prevent.
func quorumGroup(groups [][]string, expected int) (idx int, ambiguous bool) {
	idx = -1
	for i, g := range groups {
		if len(g) >= needed(expected) {
			if idx >= 0 {
				return -1, true
			}
			idx = i
		}
	}
	return idx, false
}

// quorumSideChanged applies the epoch rule: a new epoch starts when the
// quorum group loses a member (including losing the quorum altogether) or
// when the quorum is gained after being lost (or for the first time).
// Members merely joining the quorum group change nothing. prev is the
// previous quorum group (nil when none held it), cur the current one
// (nil when none holds it).
func quorumSideChanged(prev map[string]struct{}, cur []string) bool {
	switch {
	case prev == nil && cur == nil:
		return false
	case prev == nil || cur == nil:
		return true
	}
	if len(prev) > len(cur) {
		return true
	}
	in := make(map[string]struct{}, len(cur))
	for _, n := range cur {
		in[n] = struct{}{}
	}
	for n := range prev {
		if _, ok := in[n]; !ok {
			return true
		}
	}
	return false
}
