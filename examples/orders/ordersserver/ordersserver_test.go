package ordersserver_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
	"github.com/causeway-mesh/causeway/examples/inventory/inventoryserver"
	"github.com/causeway-mesh/causeway/examples/orders/ordersserver"
)

const (
	ordersName    = "orders-test"
	inventoryName = "inventory-test"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startInventory serves a fresh in-process inventory over bufconn and
// returns a client for it.
func startInventory(t *testing.T) (*inventoryserver.Server, inventorypb.InventoryClient) {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
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

// serve runs one request through h and decodes the JSON body into out.
func serve(t *testing.T, h http.Handler, method, target, body string, out any) *http.Response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequestWithContext(testContext(t), method, target, r)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	if out != nil {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("decoding %s %s response: %v", method, target, err)
		}
	}
	return resp
}

func TestGetStock(t *testing.T) {
	_, client := startInventory(t)
	h := ordersserver.New(ordersName, client)

	t.Run("known sku", func(t *testing.T) {
		var got ordersserver.StockResponse
		resp := serve(t, h, http.MethodGet, "/orders/gadget", "", &got)
		want := ordersserver.StockResponse{OrderInstance: ordersName, SKU: "gadget", Quantity: 42, InventoryInstance: inventoryName}
		if resp.StatusCode != http.StatusOK || got != want {
			t.Errorf("got %d %+v, want 200 %+v", resp.StatusCode, got, want)
		}
	})
	t.Run("unknown sku", func(t *testing.T) {
		var got ordersserver.ErrorResponse
		resp := serve(t, h, http.MethodGet, "/orders/nope", "", &got)
		if resp.StatusCode != http.StatusBadGateway || got.Code != "NotFound" ||
			!strings.Contains(got.Message, "nope") || got.OrderInstance != ordersName {
			t.Errorf("got %d %+v, want 502 NotFound", resp.StatusCode, got)
		}
	})
}

func TestReserve(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantCode   string
		wantOK     *ordersserver.OrderResponse
		wantStock  int64 // of widget afterwards
	}{
		{
			name:       "reserve",
			body:       `{"sku":"widget","quantity":30}`,
			wantStatus: http.StatusOK,
			wantOK:     &ordersserver.OrderResponse{OrderInstance: ordersName, SKU: "widget", Reserved: 30, InventoryInstance: inventoryName},
			wantStock:  70,
		},
		{name: "not enough stock", body: `{"sku":"widget","quantity":101}`, wantStatus: http.StatusBadGateway, wantCode: "FailedPrecondition", wantStock: 100},
		{name: "unknown sku", body: `{"sku":"nope","quantity":1}`, wantStatus: http.StatusBadGateway, wantCode: "NotFound", wantStock: 100},
		{name: "zero quantity", body: `{"sku":"widget","quantity":0}`, wantStatus: http.StatusBadRequest, wantStock: 100},
		{name: "missing sku", body: `{"quantity":1}`, wantStatus: http.StatusBadRequest, wantStock: 100},
		{name: "bad json", body: `{"sku":`, wantStatus: http.StatusBadRequest, wantStock: 100},
		{name: "unknown field", body: `{"sku":"widget","quantity":1,"extra":true}`, wantStatus: http.StatusBadRequest, wantStock: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, client := startInventory(t)
			h := ordersserver.New(ordersName, client)
			if tt.wantOK != nil {
				var got ordersserver.OrderResponse
				resp := serve(t, h, http.MethodPost, "/orders", tt.body, &got)
				if resp.StatusCode != tt.wantStatus || got != *tt.wantOK {
					t.Errorf("got %d %+v, want %d %+v", resp.StatusCode, got, tt.wantStatus, *tt.wantOK)
				}
			} else {
				var got ordersserver.ErrorResponse
				resp := serve(t, h, http.MethodPost, "/orders", tt.body, &got)
				if resp.StatusCode != tt.wantStatus || got.Code != tt.wantCode || got.Error == "" {
					t.Errorf("got %d %+v, want %d code %q", resp.StatusCode, got, tt.wantStatus, tt.wantCode)
				}
			}
			if got := inv.Stock()["widget"]; got != tt.wantStock {
				t.Errorf("widget stock = %d, want %d", got, tt.wantStock)
			}
		})
	}
}

func TestHealthzAndRouting(t *testing.T) {
	h := ordersserver.New(ordersName, nil) // no inventory call is made
	tests := []struct {
		method, target string
		want           int
	}{
		{http.MethodGet, "/healthz", http.StatusOK},
		{http.MethodGet, "/orders", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/orders/widget", http.StatusMethodNotAllowed},
		{http.MethodGet, "/nowhere", http.StatusNotFound},
	}
	for _, tt := range tests {
		resp := serve(t, h, tt.method, tt.target, "", nil)
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.target, resp.StatusCode, tt.want)
		}
	}
}

// fakeInventory fails every call with err and records the deadline it saw.
type fakeInventory struct {
	inventorypb.InventoryClient
	err      error
	deadline time.Time
}

func (f *fakeInventory) GetStock(ctx context.Context, _ *inventorypb.GetStockRequest, _ ...grpc.CallOption) (*inventorypb.Stock, error) {
	f.deadline, _ = ctx.Deadline()
	return nil, f.err
}

func (f *fakeInventory) Reserve(ctx context.Context, _ ...grpc.CallOption) (grpc.ClientStreamingClient[inventorypb.ReserveRequest, inventorypb.ReserveSummary], error) {
	f.deadline, _ = ctx.Deadline()
	return nil, f.err
}

func TestInventoryErrors(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode string
		wantMsg  string
	}{
		{"unavailable", status.Error(codes.Unavailable, "no healthy upstream"), "Unavailable", "no healthy upstream"},
		{"deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "DeadlineExceeded", "context deadline exceeded"},
		{"raw context error", context.DeadlineExceeded, "DeadlineExceeded", "context deadline exceeded"},
	}
	for _, tt := range tests {
		for _, call := range []struct{ method, target, body string }{
			{http.MethodGet, "/orders/widget", ""},
			{http.MethodPost, "/orders", `{"sku":"widget","quantity":1}`},
		} {
			t.Run(tt.name+" "+call.method, func(t *testing.T) {
				fake := &fakeInventory{err: tt.err}
				var got ordersserver.ErrorResponse
				resp := serve(t, ordersserver.New(ordersName, fake), call.method, call.target, call.body, &got)
				end := time.Now()
				if resp.StatusCode != http.StatusBadGateway || got.Code != tt.wantCode || got.Message != tt.wantMsg {
					t.Errorf("got %d %+v, want 502 %s %q", resp.StatusCode, got, tt.wantCode, tt.wantMsg)
				}
				if fake.deadline.IsZero() || fake.deadline.After(end.Add(ordersserver.InventoryTimeout)) {
					t.Errorf("inventory call deadline = %v after the request ended, want at most %v",
						fake.deadline.Sub(end), ordersserver.InventoryTimeout)
				}
			})
		}
	}
}

func TestMain(m *testing.M) {
	// The handler logs every failed inventory call; keep test output quiet.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
