// Package causal orders the spans of one trace by happens-before, using the
// mesh.lamport and mesh.vclock attributes the sidecars record, and checks
// wall-clock timestamps against that order.
//
// The order is a linear extension of happens-before: spans are sorted by
// Lamport value (a→b implies L(a) < L(b)), then by start time. For every pair
// the relation comes from the vector clocks (clock.Compare), strengthened by
// the span tree (an ancestor span happened before its descendants). Pairs the
// vectors prove concurrent are listed; pairs they cannot decide (pruned
// vectors) are listed as unknown, never guessed. A span that starts, by its
// own host's wall clock, before a span that causally precedes it is flagged
// as clock skew.
package causal

import (
	"cmp"
	"slices"
	"time"

	"github.com/causeway-mesh/causeway/tracing/clock"
)

// Span is the part of a span the analysis needs.
type Span struct {
	SpanID       string    `json:"spanId"`
	ParentSpanID string    `json:"parentSpanId,omitempty"`
	Name         string    `json:"name"`
	Kind         string    `json:"kind"`
	Service      string    `json:"service"`
	Node         string    `json:"node"`    // mesh.node
	Lamport      uint64    `json:"lamport"` // mesh.lamport; 0 when absent
	VClock       string    `json:"vclock"`  // mesh.vclock; "" when absent
	Start        time.Time `json:"start"`
	End          time.Time `json:"end"`
}

// Result is the causal view of one trace.
type Result struct {
	TraceID string `json:"traceId"`
	// Events are the spans with clocks, in happens-before order.
	Events []Event `json:"events"`
	// Concurrent lists the pairs (by Order) that happened concurrently.
	Concurrent []Pair `json:"concurrent"`
	// Unknown lists the pairs whose relation the (pruned) vectors cannot
	// decide.
	Unknown []Pair `json:"unknown"`
	// Inconsistent lists pairs whose vectors contradict their Lamport order
	// (only possible with corrupt or forged clock values).
	Inconsistent []Pair `json:"inconsistent"`
	// Skews lists spans that start before a span that causally precedes them.
	Skews []Skew `json:"skews"`
	// Skipped are spans without mesh clocks (the apps' own spans, or a
	// malformed mesh.vclock); they are not ordered.
	Skipped []SkippedSpan `json:"skipped"`
}

// Event is one ordered span.
type Event struct {
	Order int `json:"order"` // 1-based position in the causal order
	Span
	// OffsetMS is the start relative to the earliest start in the trace.
	OffsetMS   float64 `json:"offsetMs"`
	DurationMS float64 `json:"durationMs"`
	// Cause is the latest event (by Order) that certainly happened before
	// this one, or 0.
	Cause          int   `json:"cause,omitempty"`
	ConcurrentWith []int `json:"concurrentWith,omitempty"`
	UnknownWith    []int `json:"unknownWith,omitempty"`
	// Skew is set when this event starts before one of its causes.
	Skew *Skew `json:"skew,omitempty"`
}

// Pair names two events by Order, A < B.
type Pair struct {
	A int `json:"a"`
	B int `json:"b"`
}

// Skew records that Event starts SkewMS milliseconds before Cause, which
// happened before it.
type Skew struct {
	Event  int     `json:"event"`
	Cause  int     `json:"cause"`
	SkewMS float64 `json:"skewMs"`
}

// SkippedSpan is a span left out of the order, with the reason.
type SkippedSpan struct {
	SpanID string `json:"spanId"`
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// MaxEvents bounds the pairwise analysis (O(n²)); spans past it, in Lamport
// order, are skipped.
const MaxEvents = 2000

// Analyze orders the spans of trace traceID.
func Analyze(traceID string, spans []Span) Result {
	res := Result{TraceID: traceID, Concurrent: []Pair{}, Unknown: []Pair{}, Inconsistent: []Pair{}, Skews: []Skew{}, Skipped: []SkippedSpan{}}
	type item struct {
		Span
		vec clock.Vector
	}
	var items []item
	for _, s := range spans {
		if s.Lamport == 0 || s.VClock == "" {
			res.Skipped = append(res.Skipped, SkippedSpan{SpanID: s.SpanID, Name: s.Name, Reason: "no mesh clock"})
			continue
		}
		v, err := clock.ParseVector(s.VClock)
		if err != nil {
			res.Skipped = append(res.Skipped, SkippedSpan{SpanID: s.SpanID, Name: s.Name, Reason: err.Error()})
			continue
		}
		items = append(items, item{Span: s, vec: v})
	}
	slices.SortStableFunc(items, func(a, b item) int {
		return cmp.Or(cmp.Compare(a.Lamport, b.Lamport), a.Start.Compare(b.Start), cmp.Compare(a.SpanID, b.SpanID))
	})
	if len(items) > MaxEvents {
		for _, it := range items[MaxEvents:] {
			res.Skipped = append(res.Skipped, SkippedSpan{SpanID: it.SpanID, Name: it.Name, Reason: "trace too large to analyse"})
		}
		items = items[:MaxEvents]
	}
	if len(items) == 0 {
		res.Events = []Event{}
		return res
	}

	parent := make(map[string]string, len(spans))
	for _, s := range spans {
		parent[s.SpanID] = s.ParentSpanID
	}
	isAncestor := func(anc, span string) bool {
		for i, p := 0, parent[span]; p != "" && i < len(spans); i, p = i+1, parent[p] {
			if p == anc {
				return true
			}
		}
		return false
	}

	t0 := items[0].Start
	for _, it := range items {
		if it.Start.Before(t0) {
			t0 = it.Start
		}
	}
	res.Events = make([]Event, len(items))
	for i, it := range items {
		res.Events[i] = Event{Order: i + 1, Span: it.Span, OffsetMS: ms(it.Start.Sub(t0)), DurationMS: ms(it.End.Sub(it.Start))}
	}
	for j := range items {
		ej := &res.Events[j]
		var worst *Skew
		for i := 0; i < j; i++ {
			rel := clock.Compare(items[i].vec, items[j].vec)
			if rel != clock.Before && isAncestor(items[i].SpanID, items[j].SpanID) {
				rel = clock.Before
			}
			ei := &res.Events[i]
			switch rel {
			case clock.Before:
				ej.Cause = i + 1
				if d := items[i].Start.Sub(items[j].Start); d > 0 && (worst == nil || ms(d) > worst.SkewMS) {
					worst = &Skew{Event: j + 1, Cause: i + 1, SkewMS: ms(d)}
				}
			case clock.Concurrent:
				res.Concurrent = append(res.Concurrent, Pair{A: i + 1, B: j + 1})
				ei.ConcurrentWith = append(ei.ConcurrentWith, j+1)
				ej.ConcurrentWith = append(ej.ConcurrentWith, i+1)
			case clock.Unknown:
				res.Unknown = append(res.Unknown, Pair{A: i + 1, B: j + 1})
				ei.UnknownWith = append(ei.UnknownWith, j+1)
				ej.UnknownWith = append(ej.UnknownWith, i+1)
			default: // After or Equal contradict the Lamport order.
				res.Inconsistent = append(res.Inconsistent, Pair{A: i + 1, B: j + 1})
			}
		}
		if worst != nil {
			ej.Skew = worst
			res.Skews = append(res.Skews, *worst)
		}
	}
	for i := range res.Events {
		slices.Sort(res.Events[i].ConcurrentWith)
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
