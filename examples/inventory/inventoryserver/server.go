// Package inventoryserver implements the Inventory gRPC example service
// (causeway.examples.inventory.v1.Inventory) with an in-memory stock map.
//
// Every RPC sends the response header metadata x-inventory-instance and the
// trailer metadata x-inventory-served-by, both set to the instance name, so
// that tests can tell which instance served a call through the sidecar.
package inventoryserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
)

// Metadata keys set on every RPC.
const (
	// InstanceHeader is the response header metadata key carrying the instance name.
	InstanceHeader = "x-inventory-instance"
	// ServedByTrailer is the trailer metadata key carrying the instance name.
	ServedByTrailer = "x-inventory-served-by"
)

const (
	// DefaultWatchInterval is the delay between two WatchStock messages.
	DefaultWatchInterval = 100 * time.Millisecond
	// MaxWatchUpdates caps WatchStockRequest.updates.
	MaxWatchUpdates = 1000
)

// InitialStock returns the stock a new Server starts with.
func InitialStock() map[string]int64 {
	return map[string]int64{
		"widget": 100,
		"gadget": 42,
		"gizmo":  7,
	}
}

// Server implements inventorypb.InventoryServer. It is safe for concurrent use.
type Server struct {
	inventorypb.UnimplementedInventoryServer

	name string

	mu            sync.Mutex
	stock         map[string]int64
	watchInterval time.Duration
}

// New returns a Server called name, stocked with InitialStock.
func New(name string) *Server {
	return &Server{
		name:          name,
		stock:         InitialStock(),
		watchInterval: DefaultWatchInterval,
	}
}

// Register registers s as the Inventory service on r, typically a *grpc.Server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	inventorypb.RegisterInventoryServer(r, s)
}

// Name returns the instance name reported in responses.
func (s *Server) Name() string { return s.name }

// SetStock sets the quantity available for sku, adding the sku if needed.
func (s *Server) SetStock(sku string, quantity int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stock[sku] = quantity
}

// Stock returns a copy of the current stock map.
func (s *Server) Stock() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.stock)
}

// SetWatchInterval sets the delay between two WatchStock messages
// (DefaultWatchInterval by default); zero or less sends them back to back.
func (s *Server) SetWatchInterval(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchInterval = d
}

// GetStock returns the stock of one SKU, or NotFound for an unknown SKU.
func (s *Server) GetStock(ctx context.Context, req *inventorypb.GetStockRequest) (*inventorypb.Stock, error) {
	s.stampUnary(ctx)
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if req.GetSku() == "" {
		return nil, status.Error(codes.InvalidArgument, "sku is required")
	}
	qty, err := s.lookup(req.GetSku())
	if err != nil {
		return nil, err
	}
	return &inventorypb.Stock{Sku: req.GetSku(), Quantity: qty, Instance: s.name}, nil
}

// WatchStock sends the stock of one SKU req.updates times (at least once),
// SetWatchInterval apart, until done or the call's context ends.
func (s *Server) WatchStock(req *inventorypb.WatchStockRequest, stream grpc.ServerStreamingServer[inventorypb.Stock]) error {
	s.stampStream(stream)
	ctx := stream.Context()
	if req.GetSku() == "" {
		return status.Error(codes.InvalidArgument, "sku is required")
	}
	updates := int(req.GetUpdates())
	if updates < 0 || updates > MaxWatchUpdates {
		return status.Errorf(codes.InvalidArgument, "updates must be in [0, %d]", MaxWatchUpdates)
	}
	if updates == 0 {
		updates = 1
	}

	s.mu.Lock()
	interval := s.watchInterval
	s.mu.Unlock()
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}

	for i := range updates {
		if i > 0 && tick != nil {
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-tick:
			}
		}
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		qty, err := s.lookup(req.GetSku())
		if err != nil {
			return err
		}
		if err := stream.Send(&inventorypb.Stock{Sku: req.GetSku(), Quantity: qty, Instance: s.name}); err != nil {
			return err
		}
	}
	return nil
}

// Reserve applies each streamed reservation as it arrives and, when the
// client closes its side, returns the total. If any reservation fails
// (unknown SKU, bad quantity, not enough stock) or the call is cancelled,
// all reservations of the call are undone and the error is returned.
func (s *Server) Reserve(stream grpc.ClientStreamingServer[inventorypb.ReserveRequest, inventorypb.ReserveSummary]) error {
	s.stampStream(stream)
	var (
		applied []*inventorypb.ReserveRequest
		total   int64
	)
	fail := func(err error) error {
		s.release(applied)
		return err
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if err := stream.Context().Err(); err != nil {
				return fail(status.FromContextError(err).Err())
			}
			if err := stream.SendAndClose(&inventorypb.ReserveSummary{Reserved: total, Instance: s.name}); err != nil {
				return fail(err)
			}
			return nil
		}
		if err != nil {
			return fail(err)
		}
		if err := s.take(req.GetSku(), req.GetQuantity()); err != nil {
			return fail(err)
		}
		applied = append(applied, req)
		total += req.GetQuantity()
	}
}

// Chat echoes every message back with the instance name set.
func (s *Server) Chat(stream grpc.BidiStreamingServer[inventorypb.ChatMessage, inventorypb.ChatMessage]) error {
	s.stampStream(stream)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&inventorypb.ChatMessage{Text: msg.GetText(), Instance: s.name}); err != nil {
			return err
		}
	}
}

// lookup returns the quantity of sku or a NotFound status error.
func (s *Server) lookup(sku string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	qty, ok := s.stock[sku]
	if !ok {
		return 0, status.Errorf(codes.NotFound, "sku %q not found", sku)
	}
	return qty, nil
}

// take removes quantity units of sku from the stock.
func (s *Server) take(sku string, quantity int64) error {
	if sku == "" {
		return status.Error(codes.InvalidArgument, "sku is required")
	}
	if quantity <= 0 {
		return status.Errorf(codes.InvalidArgument, "quantity must be positive, got %d", quantity)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	qty, ok := s.stock[sku]
	switch {
	case !ok:
		return status.Errorf(codes.NotFound, "sku %q not found", sku)
	case qty < quantity:
		return status.Errorf(codes.FailedPrecondition, "sku %q: %d requested, %d in stock", sku, quantity, qty)
	}
	s.stock[sku] = qty - quantity
	return nil
}

// release gives back the given reservations.
func (s *Server) release(reqs []*inventorypb.ReserveRequest) {
	if len(reqs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range reqs {
		s.stock[r.GetSku()] += r.GetQuantity()
	}
}

// md returns metadata with key set to the instance name.
func (s *Server) md(key string) metadata.MD {
	return metadata.Pairs(key, s.name)
}

func (s *Server) stampUnary(ctx context.Context) {
	if err := grpc.SetHeader(ctx, s.md(InstanceHeader)); err != nil {
		slog.Debug("inventory: setting header", "err", err)
	}
	if err := grpc.SetTrailer(ctx, s.md(ServedByTrailer)); err != nil {
		slog.Debug("inventory: setting trailer", "err", err)
	}
}

func (s *Server) stampStream(stream grpc.ServerStream) {
	if err := stream.SetHeader(s.md(InstanceHeader)); err != nil {
		slog.Debug("inventory: setting header", "err", err)
	}
	stream.SetTrailer(s.md(ServedByTrailer))
}
