package ordersserver_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
	"github.com/causeway-mesh/causeway/examples/inventory/inventoryserver"
	"github.com/causeway-mesh/causeway/examples/orders/ordersserver"
)

// startInventoryWith is startInventory with server options (interceptors).
func startInventoryWith(t *testing.T, opts ...grpc.ServerOption) (*inventoryserver.Server, inventorypb.InventoryClient) {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(opts...)
	inv := inventoryserver.New(inventoryName)
	inv.Register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	conn, err := grpc.NewClient("passthrough:///inventory",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return inv, inventorypb.NewInventoryClient(conn)
}

func TestReserveItems(t *testing.T) {
	inv, client := startInventory(t)
	h := ordersserver.New(ordersName, client)
	var got ordersserver.ItemsResponse
	resp := serve(t, h, http.MethodPost, "/orders", `{"items":[{"sku":"widget","quantity":2},{"sku":"gadget","quantity":5}]}`, &got)
	want := ordersserver.ItemsResponse{OrderInstance: ordersName, Items: []ordersserver.Reservation{
		{SKU: "widget", Reserved: 2, InventoryInstance: inventoryName},
		{SKU: "gadget", Reserved: 5, InventoryInstance: inventoryName},
	}}
	if resp.StatusCode != http.StatusOK || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %d %+v, want 200 %+v", resp.StatusCode, got, want)
	}
	if s := inv.Stock(); s["widget"] != 98 || s["gadget"] != 37 {
		t.Errorf("stock = %v, want widget 98 and gadget 37", s)
	}
}

func TestReserveItemsValidation(t *testing.T) {
	many := strings.Repeat(`{"sku":"widget","quantity":1},`, ordersserver.MaxItems)
	tests := []struct {
		name, body, wantInError string
	}{
		{"both forms", `{"sku":"widget","quantity":1,"items":[{"sku":"gadget","quantity":1}]}`, "not both"},
		{"item without sku", `{"items":[{"quantity":1}]}`, "items[0]"},
		{"item with zero quantity", `{"items":[{"sku":"widget","quantity":1},{"sku":"gadget","quantity":0}]}`, "items[1]"},
		{"too many items", `{"items":[` + many + `{"sku":"widget","quantity":1}]}`, "at most"},
		{"unknown item field", `{"items":[{"sku":"widget","quantity":1,"color":"red"}]}`, "invalid JSON"},
		{"empty items and no sku", `{"items":[]}`, "sku must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, client := startInventory(t)
			var got ordersserver.ErrorResponse
			resp := serve(t, ordersserver.New(ordersName, client), http.MethodPost, "/orders", tt.body, &got)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(got.Error, tt.wantInError) {
				t.Errorf("got %d %q, want 400 containing %q", resp.StatusCode, got.Error, tt.wantInError)
			}
			if s := inv.Stock(); s["widget"] != 100 || s["gadget"] != 42 {
				t.Errorf("stock changed by a refused order: %v", s)
			}
		})
	}
}

// TestReserveItemsFailure checks that a failed item makes the order fail,
// and that whatever stayed reserved is exactly what the response lists.
func TestReserveItemsFailure(t *testing.T) {
	inv, client := startInventory(t)
	var got ordersserver.ErrorResponse
	resp := serve(t, ordersserver.New(ordersName, client), http.MethodPost, "/orders",
		`{"items":[{"sku":"widget","quantity":3},{"sku":"nope","quantity":1}]}`, &got)
	if resp.StatusCode != http.StatusBadGateway || got.Code != "NotFound" || !strings.Contains(got.Message, "nope") {
		t.Fatalf("got %d %+v, want 502 NotFound naming nope", resp.StatusCode, got)
	}
	wantWidget := int64(100)
	for _, k := range got.Kept {
		if k.SKU != "widget" || k.Reserved != 3 {
			t.Errorf("kept %+v, want only widget×3", k)
		}
		wantWidget -= k.Reserved
	}
	if s := inv.Stock()["widget"]; s != wantWidget {
		t.Errorf("widget stock = %d, want %d (kept: %+v)", s, wantWidget, got.Kept)
	}
}

// barrier is a stream interceptor that holds each Reserve call until n
// calls are in flight together (or the call's context ends), proving that
// the orders handler makes them concurrently.
type barrier struct {
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{}
}

func (b *barrier) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
	case <-ss.Context().Done():
		return ss.Context().Err()
	}
	return handler(srv, ss)
}

func TestReserveItemsConcurrently(t *testing.T) {
	b := &barrier{n: 3, all: make(chan struct{})}
	inv, client := startInventoryWith(t, grpc.StreamInterceptor(b.intercept))
	var got ordersserver.ItemsResponse
	resp := serve(t, ordersserver.New(ordersName, client), http.MethodPost, "/orders",
		`{"items":[{"sku":"widget","quantity":1},{"sku":"gadget","quantity":1},{"sku":"gizmo","quantity":1}]}`, &got)
	if resp.StatusCode != http.StatusOK || len(got.Items) != 3 {
		t.Fatalf("got %d %+v, want 200 with 3 items (were the calls made one after another?)", resp.StatusCode, got)
	}
	if s := inv.Stock(); s["widget"] != 99 || s["gadget"] != 41 || s["gizmo"] != 6 {
		t.Errorf("stock = %v", s)
	}
}

// metadataRecorder records the incoming metadata of every call.
type metadataRecorder struct {
	mu  sync.Mutex
	got []metadata.MD
}

func (m *metadataRecorder) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	m.mu.Lock()
	m.got = append(m.got, md)
	m.mu.Unlock()
}

func (m *metadataRecorder) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	m.record(ctx)
	return handler(ctx, req)
}

func (m *metadataRecorder) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	m.record(ss.Context())
	return handler(srv, ss)
}

func TestPropagatedHeaders(t *testing.T) {
	const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	rec := &metadataRecorder{}
	_, client := startInventoryWith(t, grpc.UnaryInterceptor(rec.unary), grpc.StreamInterceptor(rec.stream))
	h := ordersserver.New(ordersName, client)

	for _, call := range []struct{ method, body string }{
		{http.MethodGet, ""},
		{http.MethodPost, `{"items":[{"sku":"widget","quantity":1},{"sku":"gadget","quantity":1}]}`},
	} {
		target := "/orders"
		if call.method == http.MethodGet {
			target = "/orders/widget"
		}
		req := httptest.NewRequestWithContext(testContext(t), call.method, target, strings.NewReader(call.body))
		req.Header.Set("Traceparent", traceparent)
		req.Header.Set("X-Canary", "always")
		req.Header.Set("X-Not-Propagated", "1")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			t.Fatalf("%s %s: status %d: %s", call.method, target, w.Code, w.Body)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.got) != 3 {
		t.Fatalf("inventory saw %d calls, want 3", len(rec.got))
	}
	for i, md := range rec.got {
		if got := md.Get("traceparent"); len(got) != 1 || got[0] != traceparent {
			t.Errorf("call %d: traceparent = %v, want [%s]", i, got, traceparent)
		}
		if got := md.Get("x-canary"); len(got) != 1 || got[0] != "always" {
			t.Errorf("call %d: x-canary = %v, want [always]", i, got)
		}
		if got := md.Get("x-not-propagated"); len(got) != 0 {
			t.Errorf("call %d: x-not-propagated = %v, want absent", i, got)
		}
	}
}
