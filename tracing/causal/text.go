package causal

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteText renders r as a timeline table for meshctl: one row per event in
// causal order with its node, span, kind, Lamport value, vector clock, start
// offset and markers (concurrency, undecidable pairs, clock skew), followed
// by the skipped spans.
func WriteText(w io.Writer, r Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "trace %s: %d events in causal order, %d concurrent pairs, %d clock-skew flags\n",
		r.TraceID, len(r.Events), len(r.Concurrent), len(r.Skews))
	fmt.Fprintln(tw, "#\tNODE\tSPAN\tKIND\tLAMPORT\tVCLOCK\tSTART\tNOTES")
	for _, e := range r.Events {
		node := e.Node
		if node == "" {
			node = e.Service
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t+%.3fms\t%s\n",
			e.Order, node, e.Name, e.Kind, e.Lamport, e.VClock, e.OffsetMS, notes(e))
	}
	for _, p := range r.Inconsistent {
		fmt.Fprintf(tw, "!\tinconsistent clocks: #%d and #%d contradict their Lamport order\n", p.A, p.B)
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(tw, "-\tskipped %s %q: %s\n", s.SpanID, s.Name, s.Reason)
	}
	return tw.Flush()
}

func notes(e Event) string {
	var parts []string
	if e.Cause > 0 {
		parts = append(parts, "after #"+strconv.Itoa(e.Cause))
	}
	if len(e.ConcurrentWith) > 0 {
		parts = append(parts, "concurrent with "+refs(e.ConcurrentWith))
	}
	if len(e.UnknownWith) > 0 {
		parts = append(parts, "order unknown vs "+refs(e.UnknownWith))
	}
	if e.Skew != nil {
		parts = append(parts, fmt.Sprintf("clock skew: starts %.1f ms before its cause #%d", e.Skew.SkewMS, e.Skew.Cause))
	}
	return strings.Join(parts, "; ")
}

func refs(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = "#" + strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
