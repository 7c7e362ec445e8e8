// Package ordersserver implements the HTTP handler of the Causeway orders
// example, which calls the Inventory gRPC service (normally through the
// local sidecar).
//
// Endpoints:
//
//	GET  /orders/{sku}   stock of sku via Inventory.GetStock (StockResponse)
//	POST /orders         reserve stock via Inventory.Reserve; body {"sku":..., "quantity":...}
//	GET  /healthz        200 "ok"
//
// A gRPC error from inventory becomes a 502 with an ErrorResponse body.
package ordersserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
)

// InventoryTimeout is the deadline of each call to the inventory service.
const InventoryTimeout = 2 * time.Second

// maxBodyBytes caps the size of a POST /orders body.
const maxBodyBytes = 1 << 20

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

// OrderRequest is the body of POST /orders.
type OrderRequest struct {
	// SKU is the SKU to reserve.
	SKU string `json:"sku"`
	// Quantity is the number of units to reserve; it must be positive.
	Quantity int64 `json:"quantity"`
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
	ctx, cancel := context.WithTimeout(r.Context(), InventoryTimeout)
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
	if req.SKU == "" || req.Quantity <= 0 {
		h.badRequest(w, "sku must be set and quantity must be positive")
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), InventoryTimeout)
	defer cancel()
	summary, err := h.reserveOnce(ctx, req)
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

// reserveOnce runs a Reserve client stream carrying a single message.
func (h *handler) reserveOnce(ctx context.Context, req OrderRequest) (*inventorypb.ReserveSummary, error) {
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
	})
}

func (h *handler) writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("writing JSON response", "err", err)
	}
}
