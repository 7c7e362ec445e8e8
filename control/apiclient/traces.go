package apiclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/causeway-mesh/causeway/control/api"
	"github.com/causeway-mesh/causeway/control/fencing"
	"github.com/causeway-mesh/causeway/tracing/causal"
	"github.com/causeway-mesh/causeway/tracing/receiver"
)

// Traces lists up to limit recent traces, newest first (limit ≤ 0 means
// the API's default, 50).
func (c *Client) Traces(ctx context.Context, limit int) ([]receiver.TraceSummary, error) {
	var q url.Values
	if limit > 0 {
		q = url.Values{"limit": {strconv.Itoa(limit)}}
	}
	var out api.TraceList
	_, err := c.do(ctx, http.MethodGet, "/api/v1/traces", q, nil, &out)
	return out.Traces, err
}

// TraceSpans reads one trace's spans, by start time. A trace with no spans
// yet is a 404 (IsNotFound).
func (c *Client) TraceSpans(ctx context.Context, traceID string) (*api.TraceSpans, error) {
	out := new(api.TraceSpans)
	_, err := c.do(ctx, http.MethodGet, "/api/v1/traces/"+url.PathEscape(traceID), nil, nil, out)
	return out, err
}

// Causal reads one trace in happens-before order. A trace with no spans
// yet is a 404 (IsNotFound).
func (c *Client) Causal(ctx context.Context, traceID string) (*causal.Result, error) {
	out := new(causal.Result)
	_, err := c.do(ctx, http.MethodGet, "/api/v1/traces/"+url.PathEscape(traceID)+"/causal", nil, nil, out)
	return out, err
}

// Fencing reads the control plane's fencing view (GET /api/v1/fencing). A
// control plane without fencing answers 404 (IsNotFound).
func (c *Client) Fencing(ctx context.Context) (*fencing.Status, error) {
	out := new(fencing.Status)
	_, err := c.do(ctx, http.MethodGet, "/api/v1/fencing", nil, nil, out)
	return out, err
}
