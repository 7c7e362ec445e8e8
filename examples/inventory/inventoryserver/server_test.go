package inventoryserver_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
	"github.com/causeway-mesh/causeway/examples/inventory/inventoryserver"
)

const instance = "inventory-test"

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// start serves a fresh Server over an in-memory bufconn listener and returns
// it with a client connected to it.
func start(t *testing.T) (*inventoryserver.Server, inventorypb.InventoryClient) {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	inv := inventoryserver.New(instance)
	inv.SetWatchInterval(time.Millisecond)
	inv.Register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})

	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return inv, inventorypb.NewInventoryClient(conn)
}

func checkMetadata(t *testing.T, header, trailer metadata.MD) {
	t.Helper()
	if got := header.Get(inventoryserver.InstanceHeader); len(got) != 1 || got[0] != instance {
		t.Errorf("header %s = %q, want [%q]", inventoryserver.InstanceHeader, got, instance)
	}
	if got := trailer.Get(inventoryserver.ServedByTrailer); len(got) != 1 || got[0] != instance {
		t.Errorf("trailer %s = %q, want [%q]", inventoryserver.ServedByTrailer, got, instance)
	}
}

func TestGetStock(t *testing.T) {
	_, client := start(t)
	tests := []struct {
		sku      string
		wantCode codes.Code
		wantQty  int64
	}{
		{"widget", codes.OK, 100},
		{"gadget", codes.OK, 42},
		{"gizmo", codes.OK, 7},
		{"nope", codes.NotFound, 0},
		{"", codes.InvalidArgument, 0},
	}
	for _, tt := range tests {
		t.Run(tt.sku, func(t *testing.T) {
			var header, trailer metadata.MD
			got, err := client.GetStock(testContext(t), &inventorypb.GetStockRequest{Sku: tt.sku},
				grpc.Header(&header), grpc.Trailer(&trailer))
			if code := status.Code(err); code != tt.wantCode {
				t.Fatalf("code = %v (%v), want %v", code, err, tt.wantCode)
			}
			checkMetadata(t, header, trailer)
			if err != nil {
				return
			}
			if got.GetSku() != tt.sku || got.GetQuantity() != tt.wantQty || got.GetInstance() != instance {
				t.Errorf("stock = %v", got)
			}
		})
	}
}

func TestGetStockHonoursDeadline(t *testing.T) {
	ctx, cancel := context.WithDeadline(testContext(t), time.Now().Add(-time.Second))
	defer cancel()

	// Directly: the server itself checks the context.
	if _, err := inventoryserver.New(instance).GetStock(ctx, &inventorypb.GetStockRequest{Sku: "widget"}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("direct call: code = %v (%v), want DeadlineExceeded", status.Code(err), err)
	}
	// Over gRPC.
	_, client := start(t)
	if _, err := client.GetStock(ctx, &inventorypb.GetStockRequest{Sku: "widget"}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("gRPC call: code = %v (%v), want DeadlineExceeded", status.Code(err), err)
	}
}

func TestWatchStock(t *testing.T) {
	inv, client := start(t)
	tests := []struct {
		name     string
		req      *inventorypb.WatchStockRequest
		wantMsgs int
		wantCode codes.Code
		wantQty  int64
	}{
		{"three updates", &inventorypb.WatchStockRequest{Sku: "gadget", Updates: 3}, 3, codes.OK, 42},
		{"zero means one", &inventorypb.WatchStockRequest{Sku: "gizmo"}, 1, codes.OK, 7},
		{"unknown sku", &inventorypb.WatchStockRequest{Sku: "nope", Updates: 2}, 0, codes.NotFound, 0},
		{"negative updates", &inventorypb.WatchStockRequest{Sku: "gizmo", Updates: -1}, 0, codes.InvalidArgument, 0},
		{"too many updates", &inventorypb.WatchStockRequest{Sku: "gizmo", Updates: inventoryserver.MaxWatchUpdates + 1}, 0, codes.InvalidArgument, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := client.WatchStock(testContext(t), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var msgs []*inventorypb.Stock
			for {
				m, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					if code := status.Code(err); code != tt.wantCode {
						t.Fatalf("code = %v (%v), want %v", code, err, tt.wantCode)
					}
					break
				}
				msgs = append(msgs, m)
			}
			header, err := stream.Header()
			if err != nil {
				t.Fatal(err)
			}
			checkMetadata(t, header, stream.Trailer())
			if len(msgs) != tt.wantMsgs {
				t.Fatalf("got %d messages, want %d", len(msgs), tt.wantMsgs)
			}
			for _, m := range msgs {
				if m.GetSku() != tt.req.GetSku() || m.GetQuantity() != tt.wantQty || m.GetInstance() != instance {
					t.Errorf("message = %v", m)
				}
			}
		})
	}

	t.Run("honours deadline", func(t *testing.T) {
		inv.SetWatchInterval(time.Hour) // the second message waits for the test
		defer inv.SetWatchInterval(time.Millisecond)
		ctx, cancel := context.WithTimeout(testContext(t), 200*time.Millisecond)
		defer cancel()
		stream, err := client.WatchStock(ctx, &inventorypb.WatchStockRequest{Sku: "widget", Updates: 2})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := stream.Recv(); err != nil || m.GetQuantity() != 100 {
			t.Fatalf("first message = %v, %v", m, err)
		}
		// The server now waits an hour for the next tick; the call's
		// deadline must end it.
		_, err = stream.Recv()
		if code := status.Code(err); code != codes.DeadlineExceeded {
			t.Errorf("code = %v (%v), want DeadlineExceeded", code, err)
		}
	})
}

func TestReserve(t *testing.T) {
	tests := []struct {
		name         string
		reqs         []*inventorypb.ReserveRequest
		wantCode     codes.Code
		wantReserved int64
		wantStock    map[string]int64
	}{
		{
			name:         "empty stream",
			wantReserved: 0,
			wantStock:    inventoryserver.InitialStock(),
		},
		{
			name:         "one message",
			reqs:         []*inventorypb.ReserveRequest{{Sku: "widget", Quantity: 10}},
			wantReserved: 10,
			wantStock:    map[string]int64{"widget": 90, "gadget": 42, "gizmo": 7},
		},
		{
			name: "several skus",
			reqs: []*inventorypb.ReserveRequest{
				{Sku: "widget", Quantity: 1}, {Sku: "gadget", Quantity: 2}, {Sku: "widget", Quantity: 3}, {Sku: "gizmo", Quantity: 7},
			},
			wantReserved: 13,
			wantStock:    map[string]int64{"widget": 96, "gadget": 40, "gizmo": 0},
		},
		{
			name:      "not enough stock rolls back",
			reqs:      []*inventorypb.ReserveRequest{{Sku: "widget", Quantity: 5}, {Sku: "gizmo", Quantity: 8}},
			wantCode:  codes.FailedPrecondition,
			wantStock: inventoryserver.InitialStock(),
		},
		{
			name:      "unknown sku rolls back",
			reqs:      []*inventorypb.ReserveRequest{{Sku: "gadget", Quantity: 5}, {Sku: "nope", Quantity: 1}},
			wantCode:  codes.NotFound,
			wantStock: inventoryserver.InitialStock(),
		},
		{
			name:      "zero quantity",
			reqs:      []*inventorypb.ReserveRequest{{Sku: "gadget", Quantity: 0}},
			wantCode:  codes.InvalidArgument,
			wantStock: inventoryserver.InitialStock(),
		},
		{
			name:      "missing sku",
			reqs:      []*inventorypb.ReserveRequest{{Quantity: 1}},
			wantCode:  codes.InvalidArgument,
			wantStock: inventoryserver.InitialStock(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, client := start(t)
			stream, err := client.Reserve(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tt.reqs {
				// io.EOF means the server already failed the call; the
				// status comes from CloseAndRecv.
				if err := stream.Send(r); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					t.Fatal(err)
				}
			}
			summary, err := stream.CloseAndRecv()
			if code := status.Code(err); code != tt.wantCode {
				t.Fatalf("code = %v (%v), want %v", code, err, tt.wantCode)
			}
			header, herr := stream.Header()
			if herr != nil {
				t.Fatal(herr)
			}
			checkMetadata(t, header, stream.Trailer())
			if err == nil && (summary.GetReserved() != tt.wantReserved || summary.GetInstance() != instance) {
				t.Errorf("summary = %v, want reserved %d", summary, tt.wantReserved)
			}
			got := inv.Stock()
			for sku, want := range tt.wantStock {
				if got[sku] != want {
					t.Errorf("stock[%s] = %d, want %d (all: %v)", sku, got[sku], want, got)
				}
			}
		})
	}
}

func TestReserveCancelledRollsBack(t *testing.T) {
	inv, client := start(t)
	ctx, cancel := context.WithCancel(testContext(t))
	stream, err := client.Reserve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&inventorypb.ReserveRequest{Sku: "widget", Quantity: 60}); err != nil {
		t.Fatal(err)
	}
	// Wait until the server has applied the reservation.
	waitFor(t, func() bool { return inv.Stock()["widget"] == 40 })
	cancel()
	waitFor(t, func() bool { return inv.Stock()["widget"] == 100 })
}

// waitFor polls cond until it holds or the test's context ends.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx := testContext(t)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the timeout")
		case <-tick.C:
		}
	}
}

func TestChat(t *testing.T) {
	_, client := start(t)
	stream, err := client.Chat(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"hello", "", "how much stock?", "bye"}
	// Interleave sends and receives to prove the stream is truly bidirectional.
	for _, text := range texts {
		if err := stream.Send(&inventorypb.ChatMessage{Text: text}); err != nil {
			t.Fatal(err)
		}
		got, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got.GetText() != text || got.GetInstance() != instance {
			t.Errorf("reply = %v, want text %q from %q", got, text, instance)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("after CloseSend: %v, want io.EOF", err)
	}
	header, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	checkMetadata(t, header, stream.Trailer())
}

// TestOverTCP runs the four RPC kinds over a real loopback listener, as the
// sidecar will.
func TestOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	inventoryserver.New(instance).Register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	defer func() {
		srv.GracefulStop()
		<-done
	}()

	conn, err := grpc.NewClient(ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("inventory"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := inventorypb.NewInventoryClient(conn)
	ctx := testContext(t)

	if s, err := client.GetStock(ctx, &inventorypb.GetStockRequest{Sku: "widget"}); err != nil || s.GetQuantity() != 100 {
		t.Errorf("GetStock = %v, %v", s, err)
	}

	ws, err := client.WatchStock(ctx, &inventorypb.WatchStockRequest{Sku: "gizmo", Updates: 2})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := ws.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Errorf("WatchStock sent %d messages, want 2", n)
	}

	rs, err := client.Reserve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&inventorypb.ReserveRequest{Sku: "gadget", Quantity: 2}); err != nil {
		t.Fatal(err)
	}
	if sum, err := rs.CloseAndRecv(); err != nil || sum.GetReserved() != 2 {
		t.Errorf("Reserve = %v, %v", sum, err)
	}

	cs, err := client.Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Send(&inventorypb.ChatMessage{Text: "ping"}); err != nil {
		t.Fatal(err)
	}
	if m, err := cs.Recv(); err != nil || m.GetText() != "ping" || m.GetInstance() != instance {
		t.Errorf("Chat = %v, %v", m, err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Chat end = %v, want io.EOF", err)
	}
}
