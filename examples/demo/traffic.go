package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// reply is a response received through the mesh.
type reply struct {
	status  int
	header  http.Header
	body    []byte
	elapsed time.Duration
}

// meshError is the proxy's x-mesh-error, or "-".
func (r *reply) meshError() string {
	if v := r.header.Get("X-Mesh-Error"); v != "" {
		return v
	}
	return "-"
}

// call sends a request for service through the web sidecar's outbound
// port, as an app would (the Host header names the service).
func call(ctx context.Context, m *mesh, method, service, path, body string, header map[string]string) (*reply, error) {
	return callVia(ctx, m.web.outbound, method, service, path, body, header)
}

// callVia sends a request for service through the sidecar whose outbound
// address is outbound. A body is sent as JSON unless header says
// otherwise.
func callVia(ctx context.Context, outbound, method, service, path, body string, header map[string]string) (*reply, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+outbound+path, rd)
	if err != nil {
		return nil, err
	}
	req.Host = service
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s%s: %w", method, service, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s%s: reading body: %w", method, service, path, err)
	}
	return &reply{status: resp.StatusCode, header: resp.Header, body: b, elapsed: time.Since(start)}, nil
}

// stockReply is the body of orders' GET /orders/{sku}.
type stockReply struct {
	OrderInstance     string `json:"order_instance"`
	InventoryInstance string `json:"inventory_instance"`
	Quantity          int64  `json:"quantity"`
}

// getStock asks orders for the stock of sku through the mesh.
func getStock(ctx context.Context, m *mesh, header map[string]string) (*reply, stockReply, error) {
	var body stockReply
	r, err := call(ctx, m, http.MethodGet, "orders", "/orders/widget", "", header)
	if err != nil {
		return nil, body, err
	}
	_ = json.Unmarshal(r.body, &body) // an error body leaves it empty
	return r, body, nil
}

func (d *demo) stepMesh(ctx context.Context, m *mesh) error {
	fmt.Printf("the mesh as the web sidecar sees it: curl http://%s/members\n", m.web.admin)
	if err := printMembers(m.web.admin); err != nil {
		return err
	}
	fmt.Println("   and as the control plane sees it (xDS sync of every sidecar, gossip members, write-fencing quorum):")
	return d.meshctl(ctx, "status")
}

func (d *demo) stepOrders(ctx context.Context, m *mesh, n int) error {
	fmt.Printf("%d requests: curl -H 'Host: orders' http://%s/orders/widget\n", n, m.web.outbound)
	fmt.Println("   (web sidecar → orders sidecar → orders-1 → orders sidecar → inventory sidecar → inventory-N)")
	fmt.Println()
	fmt.Printf("   %-3s %-6s %-10s %-13s %-9s %s\n", "#", "status", "orders", "inventory", "quantity", "latency")
	served := map[string]int{}
	for i := 1; i <= n; i++ {
		r, body, err := getStock(ctx, m, nil)
		if err != nil {
			return err
		}
		served[body.InventoryInstance]++
		fmt.Printf("   %-3d %-6d %-10s %-13s %-9d %v\n", i, r.status, body.OrderInstance, body.InventoryInstance, body.Quantity, r.elapsed.Round(10*time.Microsecond))
	}
	fmt.Println()
	fmt.Printf("   inventory instances that served: %v\n", sortedCounts(served))
	fmt.Println("   (the orders sidecar's balancer compares two endpoints per request and takes the one with the")
	fmt.Println("    lower latency × outstanding requests: power of two choices over peak EWMA, as Linkerd does)")
	return nil
}

func (d *demo) stepWrite(ctx context.Context, m *mesh) error {
	fmt.Println("a gRPC write through the mesh (orders-1 calls Inventory.Reserve):")
	fmt.Printf("   $ curl -H 'Host: orders' -d '{\"sku\":\"gadget\",\"quantity\":3}' http://%s/orders\n", m.web.outbound)
	r, err := call(ctx, m, http.MethodPost, "orders", "/orders", `{"sku":"gadget","quantity":3}`, nil)
	if err != nil {
		return err
	}
	fmt.Printf("   %d %s\n", r.status, strings.TrimSpace(string(r.body)))
	return nil
}

func (d *demo) stepSmuggling(_ context.Context, m *mesh) error {
	fmt.Println("a request-smuggling attempt (Content-Length and Transfer-Encoding together) is refused before any app sees it:")
	raw := "POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: orders\r\n\r\n"
	host, port, _ := net.SplitHostPort(m.web.outbound)
	fmt.Printf("   $ printf '%s' | nc %s %s\n", strings.ReplaceAll(strings.ReplaceAll(raw, "\r", `\r`), "\n", `\n`), host, port)
	status, xerr, err := rawRequest(m.web.outbound, raw)
	if err != nil {
		return err
	}
	fmt.Printf("   %s   x-mesh-error: %s   (connection closed)\n", status, xerr)
	return nil
}

func (d *demo) stepUnknownService(ctx context.Context, m *mesh) error {
	fmt.Printf("a service nobody serves: curl -H 'Host: payments' http://%s/\n", m.web.outbound)
	r, err := call(ctx, m, http.MethodGet, "payments", "/", "", nil)
	if err != nil {
		return err
	}
	fmt.Printf("   %d %s   x-mesh-error: %s\n", r.status, http.StatusText(r.status), r.meshError())
	return nil
}

func (d *demo) stepClusters(_ context.Context, m *mesh) error {
	fmt.Printf("what the orders sidecar knows of inventory: curl http://%s/clusters\n", m.orders.admin)
	return printClusters(m.orders.admin, "inventory")
}

func (d *demo) stepMetrics(_ context.Context, m *mesh) error {
	fmt.Printf("its metrics: curl http://%s/metrics | grep mesh_requests_total\n", m.orders.health)
	return printMetrics("http://"+m.orders.health+"/metrics", []string{"mesh_requests_total{"})
}

func (d *demo) stepCrash(ctx context.Context, m *mesh) error {
	fmt.Printf("inventory-2 crashes: its sidecar and app are killed (kill -9 %s, no goodbye)\n", d.pids("inventory-2-sidecar", "inventory-2"))
	d.kill("inventory-2-sidecar")
	d.kill("inventory-2")
	m.gone[m.inv2.admin] = true
	start := time.Now()
	if err := waitEndpoints(ctx, m.orders.admin, "inventory", 1); err != nil {
		return err
	}
	fmt.Printf("   gossip declared it failed and the orders sidecar stopped routing to it after %v\n", time.Since(start).Round(10*time.Millisecond))
	if err := waitMemberState(ctx, m.web.admin, "inventory-2", "failed"); err != nil {
		return err
	}
	if err := printMembers(m.web.admin); err != nil {
		return err
	}
	ok, served := 0, map[string]int{}
	for range 10 {
		r, body, err := getStock(ctx, m, nil)
		if err != nil {
			return err
		}
		if r.status == http.StatusOK {
			ok++
		}
		served[body.InventoryInstance]++
	}
	fmt.Printf("   10 more requests: %d succeeded, served by %v\n", ok, sortedCounts(served))
	return nil
}
