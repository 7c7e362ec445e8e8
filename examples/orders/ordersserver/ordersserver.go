// Package ordersserver implements the HTTP handler of the Causeway orders
// example, which calls the Inventory gRPC service (normally through the
// local sidecar).
//
// Endpoints:
//
//	GET  /orders/{sku}   stock of sku via Inventory.GetStock (StockResponse)
//	POST /orders         reserve stock via Inventory.Reserve; body {"sku":..., "quantity":...}
//	                     (OrderResponse), or {"items":[{"sku":..., "quantity":...}, ...]}
//	                     to reserve several items concurrently (ItemsResponse)
//	GET  /healthz        200 "ok"
//
// A gRPC error from inventory becomes a 502 with an ErrorResponse body.
//
// Every call to inventory carries the request's PropagatedHeaders as gRPC
// metadata, so that the trace continues across this app and the mesh can
// route on them.
package ordersserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
)

// InventoryTimeout is the deadline of each call to the inventory service.
const InventoryTimeout = 2 * time.Second

// maxBodyBytes caps the size of a POST /orders body.
const maxBodyBytes = 1 << 20

// MaxItems caps the items of one POST /orders.
const MaxItems = 16

// PropagatedHeaders are the request headers copied, with every value, onto
// each call to inventory as gRPC metadata: the W3C trace context (so the
// sidecar's spans of this app's calls join the caller's trace) and
// x-canary (so a route can send an opted-in caller to a canary all the way
// down).
var PropagatedHeaders = []string{"traceparent", "tracestate", "baggage", "x-canary"}

// StockResponse is the body of a successful GET /orders/{sku}.
type StockResponse struct {
	// OrderInstance is the orders instance that answered.
	OrderInstance string `json:"order_instance"`
	// SKU is the requested SKU.
	SKU string `json:"sku"`
	// Quantity is the stock reported by inventory.
	Quantity int64 `json:"quantity"`
	// InventoryInstance is the inventory instance that answered.
	InventoryInstance string `json:"inventory_instance"`
}

// OrderRequest is the body of POST /orders: either SKU and Quantity, or
// Items.
type OrderRequest struct {
	// SKU is the SKU to reserve.
	SKU string `json:"sku,omitempty"`
	// Quantity is the number of units to reserve; it must be positive.
	Quantity int64 `json:"quantity,omitempty"`
	// Items are reserved concurrently, one Inventory.Reserve call each; at
	// most MaxItems. If one fails, the calls still in flight are cancelled
	// (inventory undoes a cancelled reservation); items already reserved
	// stay reserved and are listed in the ErrorResponse.
	Items []Item `json:"items,omitempty"`
}

// Item is one line of a several-item order.
type Item struct {
	// SKU is the SKU to reserve.
	SKU string `json:"sku"`
	// Quantity is the number of units to reserve; it must be positive.
	Quantity int64 `json:"quantity"`
}

// validate reports what is wrong with the request, or "".
func (o *OrderRequest) validate() string {
	if len(o.Items) == 0 {
		if o.SKU == "" || o.Quantity <= 0 {
			return "sku must be set and quantity must be positive"
		}
		return ""
	}
	if o.SKU != "" || o.Quantity != 0 {
		return "give either sku and quantity or items, not both"
	}
	if len(o.Items) > MaxItems {
		return fmt.Sprintf("at most %d items, got %d", MaxItems, len(o.Items))
	}
	for i, it := range o.Items {
		if it.SKU == "" || it.Quantity <= 0 {
			return fmt.Sprintf("items[%d]: sku must be set and quantity must be positive", i)
		}
	}
	return ""
}

// OrderResponse is the body of a successful POST /orders.
type OrderResponse struct {
	// OrderInstance is the orders instance that answered.
	OrderInstance string `json:"order_instance"`
	// SKU is the reserved SKU.
	SKU string `json:"sku"`
	// Reserved is the number of units inventory reserved.
	Reserved int64 `json:"reserved"`
	// InventoryInstance is the inventory instance that answered.
	InventoryInstance string `json:"inventory_instance"`
}

// ItemsResponse is the body of a successful POST /orders with items.
type ItemsResponse struct {
	// OrderInstance is the orders instance that answered.
	OrderInstance string `json:"order_instance"`
	// Items are the reservations, in the order of the request's items.
	Items []Reservation `json:"items"`
}

// Reservation is one reserved item.
type Reservation struct {
	// SKU is the reserved SKU.
	SKU string `json:"sku"`
	// Reserved is the number of units inventory reserved.
	Reserved int64 `json:"reserved"`
	// InventoryInstance is the inventory instance that answered.
	InventoryInstance string `json:"inventory_instance"`
}

// ErrorResponse is the body of every error response. Code and Message are
// the gRPC status code name (e.g. "NotFound") and message when inventory
// returned an error; Code is empty for errors in the HTTP request itself.
type ErrorResponse struct {
	// OrderInstance is the orders instance that answered.
	OrderInstance string `json:"order_instance"`
	// Error is a human-readable summary.
	Error string `json:"error"`
	// Code is the gRPC status code name, if the error came from inventory.
	Code string `json:"code,omitempty"`
	// Message is the gRPC status message, if the error came from inventory.
	Message string `json:"message,omitempty"`
	// Kept lists, for a several-item order that failed, the items that
	// were reserved anyway (they finished before the failure was known).
	Kept []Reservation `json:"kept,omitempty"`
}

// New returns the orders handler for the instance called name, which calls
// inventory through client.
func New(name string, client inventorypb.InventoryClient) http.Handler {
	h := &handler{name: name, client: client}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{sku}", h.getStock)
	mux.HandleFunc("POST /orders", h.reserve)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok")
	})
	return mux
}

type handler struct {
	name   string
	client inventorypb.InventoryClient
}

func (h *handler) getStock(w http.ResponseWriter, r *http.Request) {
	sku := r.PathValue("sku")
	ctx, cancel := context.WithTimeout(outgoing(r), InventoryTimeout)
	defer cancel()

	stock, err := h.client.GetStock(ctx, &inventorypb.GetStockRequest{Sku: sku})
	if err != nil {
		h.grpcError(w, "GetStock", err)
		return
	}
	h.writeJSON(w, http.StatusOK, StockResponse{
		OrderInstance:     h.name,
		SKU:               stock.GetSku(),
		Quantity:          stock.GetQuantity(),
		InventoryInstance: stock.GetInstance(),
	})
}

func (h *handler) reserve(w http.ResponseWriter, r *http.Request) {
	var req OrderRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		h.badRequest(w, "invalid JSON body: "+err.Error())
		return
	}
	if msg := req.validate(); msg != "" {
		h.badRequest(w, msg)
		return
	}

	ctx, cancel := context.WithTimeout(outgoing(r), InventoryTimeout)
	defer cancel()
	if len(req.Items) > 0 {
		h.reserveItems(ctx, w, req.Items)
		return
	}
	summary, err := h.reserveOnce(ctx, Item{SKU: req.SKU, Quantity: req.Quantity})
	if err != nil {
		h.grpcError(w, "Reserve", err)
		return
	}
	h.writeJSON(w, http.StatusOK, OrderResponse{
		OrderInstance:     h.name,
		SKU:               req.SKU,
		Reserved:          summary.GetReserved(),
		InventoryInstance: summary.GetInstance(),
	})
}

// reserveItems reserves every item in its own Reserve call, all at once,
// and waits for every call to end. A failure does not cancel the others: a
// call cancelled after the inventory applied it would look failed here
// while its stock stayed reserved, and the response must list exactly what
// stayed reserved.
func (h *handler) reserveItems(ctx context.Context, w http.ResponseWriter, items []Item) {
	out := make([]Reservation, len(items))
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Go(func() {
			summary, err := h.reserveOnce(ctx, it)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = Reservation{SKU: it.SKU, Reserved: summary.GetReserved(), InventoryInstance: summary.GetInstance()}
		})
	}
	wg.Wait()

	// Report the first item that failed for a reason of its own, rather
	// than one that was cancelled because of it.
	var first error
	var kept []Reservation
	for i, err := range errs {
		switch {
		case err == nil:
			kept = append(kept, out[i])
		case first == nil || (isCanceled(first) && !isCanceled(err)):
			first = err
		}
	}
	if first != nil {
		h.grpcErrorKept(w, "Reserve", first, kept)
		return
	}
	h.writeJSON(w, http.StatusOK, ItemsResponse{OrderInstance: h.name, Items: out})
}

func isCanceled(err error) bool {
	return errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled
}

// outgoing returns the request's context carrying its PropagatedHeaders as
// outgoing gRPC metadata.
func outgoing(r *http.Request) context.Context {
	var kv []string
	for _, k := range PropagatedHeaders {
		for _, v := range r.Header.Values(k) {
			kv = append(kv, k, v)
		}
	}
	if len(kv) == 0 {
		return r.Context()
	}
	return metadata.AppendToOutgoingContext(r.Context(), kv...)
}

// reserveOnce runs a Reserve client stream carrying a single message.
func (h *handler) reserveOnce(ctx context.Context, req Item) (*inventorypb.ReserveSummary, error) {
	stream, err := h.client.Reserve(ctx)
	if err != nil {
		return nil, err
	}
	// io.EOF from Send means the server already ended the call; the real
	// status is returned by CloseAndRecv.
	if err := stream.Send(&inventorypb.ReserveRequest{Sku: req.SKU, Quantity: req.Quantity}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.CloseAndRecv()
}

func (h *handler) badRequest(w http.ResponseWriter, msg string) {
	h.writeJSON(w, http.StatusBadRequest, ErrorResponse{OrderInstance: h.name, Error: msg})
}

// grpcError answers 502 with the gRPC status of err.
func (h *handler) grpcError(w http.ResponseWriter, rpc string, err error) {
	h.grpcErrorKept(w, rpc, err, nil)
}

// grpcErrorKept answers 502 with the gRPC status of err and the items that
// stayed reserved.
func (h *handler) grpcErrorKept(w http.ResponseWriter, rpc string, err error, kept []Reservation) {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err) // Unknown unless err is a context error
	}
	slog.Warn("inventory call failed", "rpc", rpc, "code", st.Code().String(), "message", st.Message())
	h.writeJSON(w, http.StatusBadGateway, ErrorResponse{
		OrderInstance: h.name,
		Error:         fmt.Sprintf("inventory %s failed", rpc),
		Code:          st.Code().String(),
		Message:       st.Message(),
		Kept:          kept,
	})
}

func (h *handler) writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("writing JSON response", "err", err)
	}
}
