package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/causeway-mesh/causeway/tracing/causal"
	"github.com/causeway-mesh/causeway/tracing/receiver"
)

// Traces is the embedded trace receiver (*receiver.Receiver) as the API
// uses it: its OTLP/HTTP handler for ingest and its store for queries.
type Traces interface {
	// Handler serves POST /v1/traces (OTLP/HTTP).
	Handler() http.Handler
	Traces(limit int) []receiver.TraceSummary
	Trace(traceID string) ([]receiver.Span, bool)
	Causal(traceID string) (causal.Result, bool)
}

// Trace list bounds of GET /api/v1/traces?limit=N.
const (
	DefaultTraceLimit = 50
	MaxTraceLimit     = 1000
)

// TraceList is the body of GET /api/v1/traces.
type TraceList struct {
	Traces []receiver.TraceSummary `json:"traces"`
}

// TraceSpans is the body of GET /api/v1/traces/{traceID}.
type TraceSpans struct {
	TraceID string          `json:"traceId"`
	Spans   []receiver.Span `json:"spans"`
}

// mountTraces adds the OTLP ingest path (open) and the query paths (behind
// the token).
func (h *Handler) mountTraces(api func(string, http.HandlerFunc)) {
	// Sidecars export spans here and hold no API token; the receiver
	// bounds the body and the memory it keeps.
	h.mux.Handle("POST /v1/traces", h.cfg.Traces.Handler())
	api("GET /api/v1/traces", h.traceList)
	api("GET /api/v1/traces/{traceID}", h.traceSpans)
	api("GET /api/v1/traces/{traceID}/causal", h.traceCausal)
}

func (h *Handler) traceList(w http.ResponseWriter, r *http.Request) {
	limit := DefaultTraceLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxTraceLimit {
			writeError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("limit %q: want an integer from 1 to %d", v, MaxTraceLimit), nil)
			return
		}
		limit = n
	}
	writeJSON(w, http.StatusOK, TraceList{Traces: h.cfg.Traces.Traces(limit)})
}

func (h *Handler) traceSpans(w http.ResponseWriter, r *http.Request) {
	id, ok := traceIDOf(w, r)
	if !ok {
		return
	}
	spans, found := h.cfg.Traces.Trace(id)
	if !found {
		noTrace(w, id)
		return
	}
	writeJSON(w, http.StatusOK, TraceSpans{TraceID: id, Spans: spans})
}

func (h *Handler) traceCausal(w http.ResponseWriter, r *http.Request) {
	id, ok := traceIDOf(w, r)
	if !ok {
		return
	}
	res, found := h.cfg.Traces.Causal(id)
	if !found {
		noTrace(w, id)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// NoTraceMessage is the 404 message for a trace with no stored spans.
func NoTraceMessage(traceID string) string {
	return "no spans for trace " + traceID + " yet: spans are exported in batches; retry in a few seconds, " +
		"or check OTEL_EXPORTER_OTLP_ENDPOINT on the sidecars points at the control plane"
}

func noTrace(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, "NotFound", NoTraceMessage(id), nil)
}

// traceIDOf reads the {traceID} path value: 32 hex digits, either case
// (stored ids are lower case).
func traceIDOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := strings.ToLower(r.PathValue("traceID"))
	if !ValidTraceID(id) {
		writeError(w, http.StatusBadRequest, "BadRequest",
			fmt.Sprintf("trace id %q: want 32 hex digits (the second field of a traceparent header)", r.PathValue("traceID")), nil)
		return "", false
	}
	return id, true
}

// ValidTraceID reports whether id is 32 lower-case hex digits and not all
// zero (the W3C invalid trace id).
func ValidTraceID(id string) bool {
	if len(id) != 32 || id == strings.Repeat("0", 32) {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
