package causal

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/causeway-mesh/causeway/tracing/clock"
)

func newClock(t *testing.T, node string) *clock.Clock {
	t.Helper()
	c, err := clock.New(clock.Config{NodeID: node, Incarnation: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// chain builds the spans of: A calls B and, in parallel, D; B calls C. C's
// host clock runs 2.1 ms behind, so its server span starts before the call
// that caused it.
func chain(t *testing.T) []Span {
	t.Helper()
	a, b, c, d := newClock(t, "a"), newClock(t, "b"), newClock(t, "c"), newClock(t, "d")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }
	send := func(c *clock.Clock) (clock.Stamp, http.Header) {
		h := http.Header{}
		st, err := c.Send(h)
		if err != nil {
			t.Fatal(err)
		}
		return st, h
	}
	recv := func(c *clock.Clock, h http.Header) clock.Stamp {
		st, err := c.Receive(h)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	span := func(id, parent, node, kind string, st clock.Stamp, start float64) Span {
		return Span{SpanID: id, ParentSpanID: parent, Name: "GET", Kind: kind, Service: node, Node: node,
			Lamport: st.Lamport, VClock: st.Vector, Start: at(start), End: at(start + 5)}
	}
	a1, h1 := send(a)
	b1 := recv(b, h1)
	a2, h2 := send(a)
	d1 := recv(d, h2)
	b2, h3 := send(b)
	c1 := recv(c, h3)
	return []Span{
		{SpanID: "root", Name: "app work", Kind: "internal", Service: "a", Start: at(-1), End: at(10)},
		span("c1", "b2", "c", "server", c1, 0.9),
		span("a1", "root", "a", "client", a1, 0),
		span("b2", "b1", "b", "client", b2, 3),
		span("a2", "root", "a", "client", a2, 1.5),
		span("b1", "a1", "b", "server", b1, 1),
		span("d1", "a2", "d", "server", d1, 2),
	}
}

func TestAnalyzeChainWithConcurrentCalls(t *testing.T) {
	r := Analyze("t1", chain(t))
	var order []string
	causes := map[string]int{}
	for _, e := range r.Events {
		order = append(order, e.SpanID)
		causes[e.SpanID] = e.Cause
	}
	if diff := cmp.Diff([]string{"a1", "b1", "a2", "d1", "b2", "c1"}, order); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	wantConc := []Pair{{2, 3}, {2, 4}, {3, 5}, {4, 5}, {3, 6}, {4, 6}}
	if diff := cmp.Diff(wantConc, r.Concurrent); diff != "" {
		t.Errorf("concurrent pairs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"a1": 0, "b1": 1, "a2": 1, "d1": 3, "b2": 2, "c1": 5}, causes); diff != "" {
		t.Errorf("causes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Skew{{Event: 6, Cause: 5, SkewMS: 2.1}}, r.Skews); diff != "" {
		t.Errorf("skews (-want +got):\n%s", diff)
	}
	if len(r.Unknown) != 0 || len(r.Inconsistent) != 0 {
		t.Errorf("unknown %v, inconsistent %v; want none", r.Unknown, r.Inconsistent)
	}
	if len(r.Skipped) != 1 || r.Skipped[0].SpanID != "root" {
		t.Errorf("skipped = %+v, want the app's root span", r.Skipped)
	}
	if r.Events[0].OffsetMS != 0 || r.Events[5].OffsetMS != 0.9 {
		t.Errorf("offsets: first %v, c1 %v", r.Events[0].OffsetMS, r.Events[5].OffsetMS)
	}

	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"6 events in causal order, 6 concurrent pairs, 1 clock-skew flags",
		"concurrent with #2, #5, #6",
		"clock skew: starts 2.1 ms before its cause #5",
		"skipped root",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

func TestAnalyzePrunedSaysUnknown(t *testing.T) {
	k1, k2 := clock.NodeKey("x", 1).String(), clock.NodeKey("y", 1).String()
	spans := []Span{
		{SpanID: "s1", Lamport: 1, VClock: k1 + "=1,~"},
		{SpanID: "s2", Lamport: 2, VClock: k2 + "=1"},
		{SpanID: "s3", Lamport: 3, VClock: "garbage"},
		{SpanID: "s4", ParentSpanID: "s1", Lamport: 4, VClock: k2 + "=2,~"},
	}
	r := Analyze("t", spans)
	if diff := cmp.Diff([]Pair{{1, 2}}, r.Unknown); diff != "" {
		t.Errorf("unknown (-want +got):\n%s", diff)
	}
	if len(r.Concurrent) != 0 {
		t.Errorf("concurrent = %v, want none (pruned)", r.Concurrent)
	}
	// s4 descends from s1 in the span tree: ordered although the vector lacks s1.
	if r.Events[2].SpanID != "s4" || r.Events[2].Cause != 2 {
		t.Errorf("s4 = %+v, want cause #2 (s2, same node)", r.Events[2])
	}
	if len(r.Skipped) != 1 || !strings.Contains(r.Skipped[0].Reason, "malformed") {
		t.Errorf("skipped = %+v", r.Skipped)
	}
}

func TestAnalyzeEmpty(t *testing.T) {
	r := Analyze("t", nil)
	if r.Events == nil || len(r.Events) != 0 {
		t.Errorf("events = %#v, want empty non-nil", r.Events)
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
}
