package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/causeway-mesh/causeway/control/fencing"
)

// printFencing writes the fencing section of `meshctl status`: one row per
// domain (its quorum figures, connected groups and epoch), then the
// reporting sidecars and the verdict each was last given.
func (g *globals) printFencing(st *fencing.Status) error {
	fmt.Fprintln(g.stdout)
	if st.Error != "" {
		fmt.Fprintf(g.stdout, "fencing evaluation FAILED (showing the last good view): %s\n", oneLine(st.Error))
	}
	tw := g.table()
	fmt.Fprintln(tw, "FENCING-DOMAIN\tENABLED\tEXPECTED\tNEEDED\tGROUPS\tQUORUM\tEPOCH")
	for _, d := range st.Domains {
		expected := strconv.Itoa(d.Expected)
		if d.ExpectedFromPolicy {
			expected += " (policy)"
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%d\t%s\t%s\t%d\n", d.Name, d.Enabled, expected, d.Needed, groupSizes(d.Groups), quorumOf(d), d.Epoch)
	}
	if len(st.Domains) == 0 {
		fmt.Fprintln(tw, "(no fencing domains yet)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Nodes) == 0 {
		return nil
	}
	fmt.Fprintln(g.stdout)
	tw = g.table()
	fmt.Fprintln(tw, "NODE\tDOMAIN\tFRESH\tFENCED\tEPOCH\tREASON")
	for _, n := range st.Nodes {
		v := n.LastVerdict
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%d\t%s\n", n.Node, n.Domain, n.Fresh, v.Fenced, v.Epoch, orDash(oneLine(v.Reason)))
	}
	return tw.Flush()
}

// groupSizes renders the connected groups as their sizes, the quorum
// group marked: "3*,1".
func groupSizes(gs []fencing.GroupStatus) string {
	if len(gs) == 0 {
		return "-"
	}
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = strconv.Itoa(len(g.Members))
		if g.Quorum {
			parts[i] += "*"
		}
	}
	return strings.Join(parts, ",")
}

func quorumOf(d fencing.DomainStatus) string {
	switch {
	case !d.Enabled:
		return "-"
	case d.Ambiguous:
		return "ambiguous"
	case d.QuorumGroup >= 0 && d.QuorumGroup < len(d.Groups):
		return fmt.Sprintf("yes (%d members)", len(d.Groups[d.QuorumGroup].Members))
	default:
		return "none"
	}
}
