package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// traceSpans is how many spans the order of the trace step makes: web-1's client
// span, orders-1's server span, and for each of the two items a client
// span on orders-1 and a server span on an inventory sidecar.
const traceSpans = 6

// newTraceparent returns a sampled W3C traceparent with random ids, and
// its trace id.
func newTraceparent() (header, traceID string) {
	var ids [24]byte
	_, _ = rand.Read(ids[:]) // crypto/rand.Read never fails
	traceID = hex.EncodeToString(ids[:16])
	return "00-" + traceID + "-" + hex.EncodeToString(ids[16:]) + "-01", traceID
}

// stepTrace sends an order of two items with a traceparent the demo chose,
// waits for the sidecars' spans to reach the control plane, and shows the
// trace in causal order.
func (d *demo) stepTrace(ctx context.Context, m *mesh) error {
	fmt.Println("causal order: an order of two items; orders-1 reserves both at once (two concurrent gRPC calls)")
	if !d.tracesMounted {
		fmt.Println("   skipped: the control plane does not accept spans on POST /v1/traces, so there is nothing to show")
		return nil
	}
	if !d.meshctlHas(ctx, "trace") {
		fmt.Println("   skipped: this meshctl has no trace command")
		return nil
	}
	// Stopping echo-a changed the fencing epoch; a write is admitted
	// under the caller's epoch and refused by a callee that knows a newer
	// one, so let every sidecar learn the new epoch first.
	if _, err := waitUnfenced(ctx, m.admins()); err != nil {
		return err
	}
	tp, traceID := newTraceparent()
	body := `{"items":[{"sku":"widget","quantity":1},{"sku":"gadget","quantity":1}]}`
	fmt.Printf("   $ curl -H 'Host: orders' -H 'traceparent: %s' \\\n", tp)
	fmt.Printf("       -d '%s' http://%s/orders\n", body, m.web.outbound)
	r, err := call(ctx, m, http.MethodPost, "orders", "/orders", body, map[string]string{"traceparent": tp})
	if err != nil {
		return err
	}
	fmt.Printf("   %d %s\n", r.status, strings.TrimSpace(string(r.body)))

	// Sidecars export in batches (every 200 ms here); wait for all spans.
	start, got := time.Now(), 0
	err = poll(ctx, 15*time.Second, 100*time.Millisecond, func() (bool, error) {
		n, err := d.causalEvents(traceID)
		got = n
		return n >= traceSpans, err
	}, func() string { return "" })
	switch {
	case errors.Is(err, errTimeout):
		fmt.Printf("   only %d of %d spans arrived within 15s; showing what is there\n", got, traceSpans)
	case err != nil:
		return err
	default:
		fmt.Printf("   all %d spans reached the control plane %v after the response\n", got, time.Since(start).Round(10*time.Millisecond))
	}
	if err := d.meshctl(ctx, "trace", traceID); err != nil {
		return err
	}
	fmt.Println("   the order comes from the Lamport and vector clocks each sidecar adds to requests and responses")
	fmt.Println("   (x-mesh-lamport, x-mesh-vclock), not from wall clocks. The inventory server spans of the two")
	fmt.Println("   reservations are concurrent: neither vector clock dominates the other. orders-1's two client")
	fmt.Println("   spans are ordered, because one sidecar sent them, one after the other")
	return nil
}

// causalEvents returns how many spans of the trace the control plane has
// ordered so far (0 while it has none).
func (d *demo) causalEvents(traceID string) (int, error) {
	status, b, err := d.apiGet("/api/v1/traces/" + traceID + "/causal")
	switch {
	case err != nil:
		return 0, err
	case status == http.StatusNotFound:
		return 0, nil
	case status != http.StatusOK:
		return 0, fmt.Errorf("GET /api/v1/traces/%s/causal: %d %s", traceID, status, b)
	}
	var v struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, fmt.Errorf("GET /api/v1/traces/%s/causal: %w", traceID, err)
	}
	return len(v.Events), nil
}

// meshctlHas reports whether meshctl has the subcommand.
func (d *demo) meshctlHas(ctx context.Context, subcommand string) bool {
	_, err := d.meshctlOutput(ctx, subcommand, "--help")
	return err == nil
}
