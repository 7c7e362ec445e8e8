// Command demo runs a small Causeway mesh on this machine (no containers),
// sends traffic through it, prints what happens, and stops everything it
// started. `make demo` builds the binaries and runs it.
//
// Topology (every arrow crosses two sidecars: the caller's outbound port,
// then the callee's inbound port, over a multiplexed HTTP/2 connection):
//
//	demo (as "web") ──HTTP/1.1──▶ orders-1 ──gRPC──▶ inventory-1
//	                                          └────▶ inventory-2
//
// No sidecar is told where another is: they find each other through SWIM
// gossip (every sidecar joins the first one's gossip port), and the demo
// ends by killing an instance and showing it leave every view.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the sidecar, orders and inventory binaries")
	requests := flag.Int("requests", 12, "orders requests to send")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{bin: *bin}
	err := d.run(ctx, *requests)
	d.stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		fmt.Fprintln(os.Stderr, "logs of every process are in", d.logDir)
		os.Exit(1)
	}
}

type demo struct {
	bin    string
	logDir string
	procs  []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
}

// freePort asks the kernel for an unused loopback port.
func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// sidecarPorts are one sidecar's listener addresses.
type sidecarPorts struct{ inbound, outbound, admin, health, gossip string }

func newPorts() sidecarPorts {
	return sidecarPorts{freePort(), freePort(), freePort(), freePort(), freePort()}
}

func (d *demo) start(name string, args ...string) error {
	logf, err := os.Create(filepath.Join(d.logDir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(d.bin, args[0]), args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	d.procs = append(d.procs, &proc{name: name, cmd: cmd})
	return nil
}

// sidecar starts a sidecar that gossips on p.gossip and, unless it is the
// first, joins the seed's gossip port.
func (d *demo) sidecar(service, node, app, proto string, p sidecarPorts, seed string) error {
	args := []string{"sidecar", "--service", service, "--node-id", node, "--app", app, "--app-protocol", proto,
		"--inbound", p.inbound, "--outbound", p.outbound, "--admin", p.admin, "--health", p.health,
		"--gossip", p.gossip, "--drain-period", "300ms", "--drain-timeout", "5s"}
	if seed != "" {
		args = append(args, "--join", seed)
	}
	return d.start(node+"-sidecar", args...)
}

// kill ends a started process at once (SIGKILL), as a crash would.
func (d *demo) kill(name string) {
	for _, p := range d.procs {
		if p.name == name {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	}
}

// stopAll sends SIGTERM to everything started, newest first, and waits.
func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	}
	d.procs = nil
}

func waitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *demo) run(ctx context.Context, n int) error {
	var err error
	if d.logDir, err = os.MkdirTemp("", "causeway-demo-"); err != nil {
		return err
	}
	fmt.Println("Causeway demo: a mesh of sidecars on this machine")
	fmt.Println()
	inv1, inv2, orders, web := newPorts(), newPorts(), newPorts(), newPorts()
	inv1App, inv2App, ordersApp := freePort(), freePort(), freePort()

	seed := inv1.gossip
	steps := []error{
		d.start("inventory-1", "inventory", "--listen", inv1App, "--name", "inventory-1"),
		d.start("inventory-2", "inventory", "--listen", inv2App, "--name", "inventory-2"),
		d.sidecar("inventory", "inventory-1", inv1App, "grpc", inv1, ""),
		d.sidecar("inventory", "inventory-2", inv2App, "grpc", inv2, seed),
		d.start("orders-1", "orders", "--listen", ordersApp, "--name", "orders-1", "--inventory", orders.outbound),
		d.sidecar("orders", "orders-1", ordersApp, "http1", orders, seed),
		d.sidecar("web", "web-1", "127.0.0.1:1", "http1", web, seed),
	}
	if err := errors.Join(steps...); err != nil {
		return err
	}
	for _, p := range []sidecarPorts{inv1, inv2, orders, web} {
		if err := waitReady(ctx, "http://"+p.health+"/ready"); err != nil {
			return err
		}
	}
	fmt.Println("  started    inventory-1, inventory-2   gRPC apps, each behind its own sidecar (--app-protocol grpc)")
	fmt.Println("             orders-1                   HTTP app; calls inventory through its sidecar's outbound port")
	fmt.Println("             web-1 sidecar              the demo sends its requests here, as an app would")
	fmt.Println("  discovery  every sidecar gossips (SWIM, memberlist) and joins inventory-1's gossip port " + seed)
	fmt.Println("  logs       " + d.logDir)
	fmt.Println()
	// Wait until gossip has told every caller about its callees.
	if err := waitEndpoints(ctx, "http://"+orders.admin+"/clusters", "inventory", 2); err != nil {
		return err
	}
	if err := waitEndpoints(ctx, "http://"+web.admin+"/clusters", "orders", 1); err != nil {
		return err
	}
	fmt.Printf("0. the mesh as the web sidecar sees it: curl http://%s/members\n", web.admin)
	if err := printMembers(http.DefaultClient, "http://"+web.admin+"/members"); err != nil {
		return err
	}
	fmt.Println()

	client := &http.Client{Timeout: 5 * time.Second}
	fmt.Printf("1. %d requests: curl -H 'Host: orders' http://%s/orders/widget\n", n, web.outbound)
	fmt.Println("   (web sidecar → orders sidecar → orders-1 → orders sidecar → inventory sidecar → inventory-N)")
	fmt.Println()
	fmt.Printf("   %-3s %-6s %-10s %-13s %-9s %s\n", "#", "status", "orders", "inventory", "quantity", "latency")
	served := map[string]int{}
	for i := 1; i <= n; i++ {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+web.outbound+"/orders/widget", nil)
		req.Host = "orders"
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		var body struct {
			OrderInstance     string `json:"order_instance"`
			InventoryInstance string `json:"inventory_instance"`
			Quantity          int64  `json:"quantity"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		elapsed := time.Since(start)
		served[body.InventoryInstance]++
		fmt.Printf("   %-3d %-6d %-10s %-13s %-9d %v\n", i, resp.StatusCode, body.OrderInstance, body.InventoryInstance, body.Quantity, elapsed.Round(10*time.Microsecond))
	}
	fmt.Println()
	fmt.Printf("   inventory instances that served: %v\n", sortedCounts(served))
	fmt.Println("   (the orders sidecar's balancer compares two endpoints per request and takes the one with the")
	fmt.Println("    lower latency × outstanding requests: power of two choices over peak EWMA, as Linkerd does)")
	fmt.Println()

	fmt.Println("2. a gRPC write through the mesh: POST /orders {\"sku\":\"gadget\",\"quantity\":3}")
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+web.outbound+"/orders", strings.NewReader(`{"sku":"gadget","quantity":3}`))
	req.Host = "orders"
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("   %d %s\n", resp.StatusCode, strings.TrimSpace(string(b)))
	fmt.Println()

	fmt.Println("3. a request-smuggling attempt (Content-Length and Transfer-Encoding together) is refused before any app sees it:")
	status, xerr, err := rawRequest(web.outbound, "POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: orders\r\n\r\n")
	if err != nil {
		return err
	}
	fmt.Printf("   %s   x-mesh-error: %s   (connection closed)\n", status, xerr)
	fmt.Println()

	fmt.Println("4. a service nobody serves:")
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://"+web.outbound+"/", nil)
	req.Host = "payments"
	resp, err = client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Printf("   %s   x-mesh-error: %s\n", resp.Status, resp.Header.Get("X-Mesh-Error"))
	fmt.Println()

	fmt.Printf("5. what the orders sidecar knows: curl http://%s/clusters\n", orders.admin)
	if err := printClusters(client, "http://"+orders.admin+"/clusters"); err != nil {
		return err
	}
	fmt.Println()
	fmt.Printf("6. its metrics: curl http://%s/metrics | grep mesh_requests_total\n", orders.health)
	if err := printMetrics(client, "http://"+orders.health+"/metrics", "mesh_requests_total{"); err != nil {
		return err
	}
	fmt.Println()

	fmt.Println("7. inventory-2 crashes: its sidecar and app are killed (SIGKILL, no goodbye)")
	d.kill("inventory-2-sidecar")
	d.kill("inventory-2")
	start := time.Now()
	if err := waitEndpoints(ctx, "http://"+orders.admin+"/clusters", "inventory", 1); err != nil {
		return err
	}
	fmt.Printf("   gossip declared it failed and the orders sidecar stopped routing to it after %v\n", time.Since(start).Round(10*time.Millisecond))
	if err := printMembers(http.DefaultClient, "http://"+web.admin+"/members"); err != nil {
		return err
	}
	ok, servedAfter := 0, map[string]int{}
	for range 10 {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+web.outbound+"/orders/widget", nil)
		req.Host = "orders"
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		var body struct {
			InventoryInstance string `json:"inventory_instance"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			ok++
		}
		servedAfter[body.InventoryInstance]++
	}
	fmt.Printf("   10 more requests: %d succeeded, served by %v\n", ok, sortedCounts(servedAfter))
	fmt.Println()
	fmt.Println("8. stopping everything (SIGTERM: each sidecar gossips not-ready, drains, leaves the pool, exits)")
	return nil
}

// waitEndpoints polls a sidecar's /clusters until service has want endpoints.
func waitEndpoints(ctx context.Context, url, service string, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		if n, err := countEndpoints(url, service); err == nil && n == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %s never had %d endpoints", url, service, want)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func countEndpoints(url, service string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var v struct {
		Clusters []struct {
			Name      string `json:"name"`
			Endpoints []any  `json:"endpoints"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, err
	}
	for _, c := range v.Clusters {
		if c.Name == service {
			return len(c.Endpoints), nil
		}
	}
	return 0, nil
}

func printMembers(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var v struct {
		Members []struct {
			Node    string `json:"node"`
			Service string `json:"service"`
			Address string `json:"address"`
			State   string `json:"state"`
			Ready   bool   `json:"ready"`
		} `json:"members"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return err
	}
	fmt.Printf("   %-13s %-10s %-21s %-7s %s\n", "node", "service", "inbound", "state", "ready")
	for _, m := range v.Members {
		fmt.Printf("   %-13s %-10s %-21s %-7s %v\n", m.Node, m.Service, m.Address, m.State, m.Ready)
	}
	return nil
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// rawRequest writes raw bytes and returns the status line and x-mesh-error.
func rawRequest(addr, raw string) (string, string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return "", "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", "", err
	}
	resp.Body.Close()
	return resp.Proto + " " + resp.Status, resp.Header.Get("X-Mesh-Error"), nil
}

func printClusters(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var v struct {
		Clusters []struct {
			Name         string `json:"name"`
			LoadBalancer string `json:"loadBalancer"`
			Endpoints    []struct {
				Address    string  `json:"address"`
				Requests   int     `json:"requests"`
				EWMAMillis float64 `json:"ewmaMillis"`
				Health     string  `json:"health"`
			} `json:"endpoints"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return err
	}
	for _, cl := range v.Clusters {
		fmt.Printf("   service %s (%s)\n", cl.Name, cl.LoadBalancer)
		for _, e := range cl.Endpoints {
			fmt.Printf("     %-21s %-8s requests=%-4d latency-ewma=%.3fms\n", e.Address, e.Health, e.Requests, e.EWMAMillis)
		}
	}
	return nil
}

func printMetrics(c *http.Client, url, prefix string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			fmt.Println("   " + sc.Text())
		}
	}
	return sc.Err()
}
