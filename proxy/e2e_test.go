package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/examples/echo/echoserver"
	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
	"github.com/causeway-mesh/causeway/examples/inventory/inventoryserver"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// h1Client is an HTTP/1.1-only client with its own connection pool.
func h1Client() *http.Client {
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// h2cClient speaks cleartext HTTP/2 with prior knowledge.
func h2cClient() *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func get(t *testing.T, c *http.Client, url, host string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(testContext(t, 20*time.Second), "GET", url, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, body
}

func TestHTTP1AcrossTheMesh(t *testing.T) {
	app := startApp(t, echoserver.Handler("echo-1"))
	m := startMesh(t, "echo", app, config.ProtocolHTTP1)
	out := "http://" + m.client.addr("outbound")

	req, _ := http.NewRequestWithContext(testContext(t, 10*time.Second), "POST", out+"/orders?x=1", strings.NewReader("hello"))
	req.Host = "echo:8080"                 // a port in the authority is ignored for lookup
	req.Header.Set("X-Mesh-Epoch", "99")   // only the mesh may set these
	req.Header.Set("X-Mesh-Error", "fake") //
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Request-Id", "req-abc")
	resp, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got echoserver.EchoResponse
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || got.Instance != "echo-1" || got.Method != "POST" || got.Path != "/orders" || got.BodyBytes != 5 {
		t.Fatalf("got status %d %+v, want 200 from echo-1 with POST /orders and 5 body bytes", resp.StatusCode, got)
	}
	if got.Proto != "HTTP/1.1" {
		t.Errorf("app saw %s, want HTTP/1.1 (converted back after the HTTP/2 hop)", got.Proto)
	}
	h := got.Headers
	if h["X-Mesh-Epoch"] != "" || h["X-Mesh-Error"] != "" || h["X-Mesh-Source"] != "" {
		t.Errorf("mesh-only headers reached the app: %v", h)
	}
	if h["X-Request-Id"] != "req-abc" {
		t.Errorf("x-request-id = %q, want the client's req-abc kept", h["X-Request-Id"])
	}
	if strings.Contains(h["X-Forwarded-For"], "6.6.6.6") || !strings.HasPrefix(h["X-Forwarded-For"], "127.0.0.1") {
		t.Errorf("x-forwarded-for = %q, want the app's address only, never the client-supplied chain", h["X-Forwarded-For"])
	}

	// Without an id, one is generated.
	_, body := get(t, h1Client(), out+"/", "echo")
	var g2 echoserver.EchoResponse
	_ = json.Unmarshal(body, &g2)
	if len(g2.Headers["X-Request-Id"]) != 36 {
		t.Errorf("generated x-request-id = %q, want a UUID", g2.Headers["X-Request-Id"])
	}

	// Absolute-form, as sent through HTTP_PROXY.
	proxied := h1Client()
	proxied.Transport.(*http.Transport).Proxy = func(*http.Request) (*urlT, error) { return parseURL(out) }
	resp2, body2 := get(t, proxied, "http://echo/via-proxy", "")
	if resp2.StatusCode != 200 || !strings.Contains(string(body2), `"path":"/via-proxy"`) {
		t.Errorf("HTTP_PROXY style request: status %d body %s", resp2.StatusCode, body2)
	}

	// Unknown service.
	resp3, _ := get(t, h1Client(), out+"/", "nosuch")
	if resp3.StatusCode != 503 || resp3.Header.Get("X-Mesh-Error") != "no_healthy_upstream" {
		t.Errorf("unknown service: status %d x-mesh-error %q, want 503 no_healthy_upstream", resp3.StatusCode, resp3.Header.Get("X-Mesh-Error"))
	}
}

func TestH2CAcrossTheMesh(t *testing.T) {
	app := startApp(t, echoserver.Handler("echo-h2"))
	m := startMesh(t, "echo", app, config.ProtocolH2C)
	resp, body := get(t, h2cClient(), "http://"+m.client.addr("outbound")+"/h2", "echo")
	var got echoserver.EchoResponse
	_ = json.Unmarshal(body, &got)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || got.Proto != "HTTP/2.0" || got.Instance != "echo-h2" {
		t.Fatalf("got %d over %s, app saw %q from %q; want 200, HTTP/2 end to end", resp.StatusCode, resp.Proto, got.Proto, got.Instance)
	}
	// The inbound listener accepts h2c directly too.
	resp2, _ := get(t, h2cClient(), "http://"+m.server.addr("inbound")+"/direct", "echo")
	if resp2.StatusCode != 200 {
		t.Errorf("h2c to inbound: %d", resp2.StatusCode)
	}
}

func TestTrailersAcrossTheMesh(t *testing.T) {
	app := startApp(t, echoserver.Handler("echo-1"))
	m := startMesh(t, "echo", app, config.ProtocolHTTP1)
	resp, body := get(t, h1Client(), "http://"+m.client.addr("outbound")+"/trailers", "echo")
	sum := sha256.Sum256(body)
	if got, want := resp.Trailer.Get(echoserver.ChecksumTrailer), hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("trailer %s = %q, want %q", echoserver.ChecksumTrailer, got, want)
	}
}

// startGRPCMesh runs the inventory example behind a grpc sidecar and
// returns a client connection through a client sidecar's outbound port.
func startGRPCMesh(t *testing.T) (inventorypb.InventoryClient, *mesh) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	inv := inventoryserver.New("inventory-1")
	inv.SetWatchInterval(5 * time.Millisecond)
	inv.Register(gs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	m := startMesh(t, "inventory", ln.Addr().String(), config.ProtocolGRPC)
	cc, err := grpc.NewClient(m.client.addr("outbound"),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("inventory"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return inventorypb.NewInventoryClient(cc), m
}

func TestGRPCAcrossTheMesh(t *testing.T) {
	client, _ := startGRPCMesh(t)
	ctx := testContext(t, 20*time.Second)

	t.Run("unary with headers, trailers and status", func(t *testing.T) {
		var hdr, trl metadata.MD
		st, err := client.GetStock(ctx, &inventorypb.GetStockRequest{Sku: "widget"}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatal(err)
		}
		if st.GetInstance() != "inventory-1" || st.GetQuantity() != 100 {
			t.Errorf("got %v, want widget=100 from inventory-1", st)
		}
		if got := trl.Get(inventoryserver.ServedByTrailer); len(got) != 1 || got[0] != "inventory-1" {
			t.Errorf("trailer %s = %v, want [inventory-1]", inventoryserver.ServedByTrailer, got)
		}
		if got := hdr.Get(inventoryserver.InstanceHeader); len(got) != 1 {
			t.Errorf("header %s = %v, want one value", inventoryserver.InstanceHeader, got)
		}
		_, err = client.GetStock(ctx, &inventorypb.GetStockRequest{Sku: "nosuch"})
		if status.Code(err) != codes.NotFound {
			t.Errorf("unknown sku: %v, want NotFound with its message intact", err)
		}
	})
	t.Run("deadline passes through", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		stream, err := client.WatchStock(dctx, &inventorypb.WatchStockRequest{Sku: "widget", Updates: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err = stream.Recv(); err != nil {
				break
			}
		}
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("got %v, want DeadlineExceeded", err)
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		stream, err := client.WatchStock(ctx, &inventorypb.WatchStockRequest{Sku: "gadget", Updates: 20})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			_, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if n != 20 {
			t.Errorf("received %d updates, want 20", n)
		}
	})
	t.Run("client streaming", func(t *testing.T) {
		stream, err := client.Reserve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if err := stream.Send(&inventorypb.ReserveRequest{Sku: "widget", Quantity: 2}); err != nil {
				t.Fatal(err)
			}
		}
		sum, err := stream.CloseAndRecv()
		if err != nil || sum.GetReserved() != 10 {
			t.Fatalf("got %v, %v; want 10 reserved", sum, err)
		}
	})
	t.Run("bidirectional streaming interleaves", func(t *testing.T) {
		stream, err := client.Chat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Each reply must arrive before the next message is sent: nothing
		// is buffered until the stream ends.
		for i := range 50 {
			text := fmt.Sprintf("msg-%d", i)
			if err := stream.Send(&inventorypb.ChatMessage{Text: text}); err != nil {
				t.Fatal(err)
			}
			reply, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if reply.GetText() != text || reply.GetInstance() != "inventory-1" {
				t.Fatalf("reply %v, want %q from inventory-1", reply, text)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseSend: %v, want EOF", err)
		}
	})
}

func TestGRPCNoEndpointIsUnavailable(t *testing.T) {
	ccfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	c := startSidecar(t, ccfg)
	cc, err := grpc.NewClient(c.addr("outbound"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("inventory"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var hdr metadata.MD
	_, err = inventorypb.NewInventoryClient(cc).GetStock(testContext(t, 10*time.Second), &inventorypb.GetStockRequest{Sku: "x"}, grpc.Header(&hdr))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no_healthy_upstream") {
		t.Fatalf("got %v, want Unavailable naming no_healthy_upstream", err)
	}
}

func TestWebSocketAcrossTheMesh(t *testing.T) {
	app := startApp(t, echoserver.Handler("echo-1"))
	m := startMesh(t, "echo", app, config.ProtocolHTTP1)
	cfg, err := websocket.NewConfig("ws://echo/ws", "http://echo/")
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 10*time.Second)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", m.client.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("websocket handshake through the mesh: %v", err)
	}
	for i := range 10 {
		msg := fmt.Sprintf("hello-%d", i)
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
}

func TestServerSentEventsFlushAtOnce(t *testing.T) {
	app := startApp(t, echoserver.Handler("echo-1"))
	m := startMesh(t, "echo", app, config.ProtocolHTTP1)
	// Events an hour apart: the first must arrive now, so nothing on the
	// path waits for more data before flushing.
	req, _ := http.NewRequestWithContext(testContext(t, 10*time.Second), "GET",
		"http://"+m.client.addr("outbound")+"/sse?n=2&interval=1h", nil)
	req.Host = "echo"
	resp, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "id:") && !strings.HasPrefix(line, "data:") && !strings.HasPrefix(line, "event:") {
		t.Fatalf("first event line %q, %v; want an SSE field before the deadline", line, err)
	}
}

// streamingApp proves bodies are streamed, never buffered whole: it
// signals after the first bytes of an upload arrive, and sends the first
// part of a download, then waits until the client has received it before
// sending the rest.
type streamingApp struct {
	uploadStarted chan struct{}
	clientGotData chan struct{}
}

const bigSize = 10 << 20

func (a *streamingApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/upload":
		h := sha256.New()
		if _, err := io.CopyN(h, r.Body, 64<<10); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		close(a.uploadStarted)
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %x", n+64<<10, h.Sum(nil))
	case "/download":
		w.Header().Set("Content-Length", fmt.Sprint(bigSize))
		part := make([]byte, 1<<20)
		_, _ = w.Write(part)
		http.NewResponseController(w).Flush()
		select {
		case <-a.clientGotData:
		case <-r.Context().Done():
			return
		}
		for range bigSize/len(part) - 1 {
			_, _ = w.Write(part)
		}
	}
}

func TestLargeBodiesStream(t *testing.T) {
	for _, proto := range []config.Protocol{config.ProtocolHTTP1, config.ProtocolH2C} {
		t.Run(string(proto), func(t *testing.T) {
			a := &streamingApp{uploadStarted: make(chan struct{}), clientGotData: make(chan struct{})}
			m := startMesh(t, "files", startApp(t, a), proto)
			base := "http://" + m.client.addr("outbound")
			ctx := testContext(t, 30*time.Second)

			// Upload: the client writes 1 MiB, then waits until the app has
			// seen the start before writing the remaining 9 MiB.
			pr, pw := io.Pipe()
			h := sha256.New()
			go func() {
				chunk := make([]byte, 1<<20)
				for i := range bigSize / len(chunk) {
					chunk[0] = byte(i)
					h.Write(chunk)
					if _, err := pw.Write(chunk); err != nil {
						return
					}
					if i == 0 {
						select {
						case <-a.uploadStarted:
						case <-ctx.Done():
							pw.CloseWithError(errors.New("app never saw the start of the upload: the body was buffered"))
							return
						}
					}
				}
				pw.Close()
			}()
			req, _ := http.NewRequestWithContext(ctx, "PUT", base+"/upload", pr)
			req.Host = "files"
			resp, err := h1Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("%d %x", bigSize, h.Sum(nil)); string(body) != want {
				t.Fatalf("upload: app reported %q, want %q", body, want)
			}

			// Download: the app waits for the client to receive the first
			// MiB before sending the rest.
			req, _ = http.NewRequestWithContext(ctx, "GET", base+"/download", nil)
			req.Host = "files"
			resp, err = h1Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
				t.Fatalf("first MiB: %v", err)
			}
			close(a.clientGotData)
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil || n+1<<20 != bigSize {
				t.Fatalf("download: %d bytes, %v; want %d", n+1<<20, err, bigSize)
			}
		})
	}
}

func TestTCPPassthrough(t *testing.T) {
	// A line-echo TCP app that also half-closes correctly.
	app := startRawApp(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	server := startSidecar(t, testConfig("db", app, config.ProtocolTCP))
	ccfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	ccfg.Upstreams = map[string]config.Upstream{"db": {Endpoints: []string{server.addr("inbound")}}}
	ccfg.TCPOutbound = []config.TCPRoute{{Listen: "127.0.0.1:0", Service: "db"}}
	client := startSidecar(t, ccfg)

	conn, err := net.DialTimeout("tcp", client.addr("tcpOutbound[0]"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	// Bytes that look like HTTP/2 and HTTP/1 must pass untouched.
	payload := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET / HTTP/1.1\r\n\x00\xff binary")
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != string(payload) {
		t.Fatalf("echoed %q, %v; want the payload unchanged then EOF", got, err)
	}
}

func TestDrainUnderLoadLosesNothing(t *testing.T) {
	app := startApp(t, echoserver.Handler("echo-1"))
	cfg := testConfig("echo", app, config.ProtocolHTTP1)
	cfg.Drain.Period.Duration = 300 * time.Millisecond
	s := startSidecar(t, cfg)
	health := "http://" + s.addr("health") + "/ready"
	target := "http://" + s.addr("inbound") + "/"

	// Callers follow readiness: they check /ready and stop sending once it
	// says 503, as a load balancer or a Kubernetes endpoint controller does.
	ready := func(c *http.Client) bool {
		resp, err := c.Get(health)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	var sent, failed atomic.Int64
	done := make(chan struct{})
	ctx := testContext(t, 20*time.Second)
	for w := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			c := h1Client()
			useH2 := w%2 == 1
			if useH2 {
				c = h2cClient()
			}
			for i := 0; i < 5000 && ctx.Err() == nil; i++ {
				if !ready(c) {
					return
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", target, nil)
				req.Host = "echo"
				sent.Add(1)
				resp, err := c.Do(req)
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed during drain: %v", err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Errorf("status %d during drain", resp.StatusCode)
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, "load to start", func() bool { return sent.Load() > 200 })
	if err := s.stop(t); err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	for range 8 {
		<-done
	}
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during drain, want 0", failed.Load(), sent.Load())
	}
	t.Logf("%d requests, none failed", sent.Load())
}

func TestReloadSwapsRoutesWithoutDroppingInFlight(t *testing.T) {
	slow := make(chan struct{})
	appA := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-slow
		}
		fmt.Fprint(w, "A")
	}))
	appB := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "B") }))
	a := startSidecar(t, testConfig("svc", appA, config.ProtocolHTTP1))
	b := startSidecar(t, testConfig("svc", appB, config.ProtocolHTTP1))
	ccfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	ccfg.Upstreams = map[string]config.Upstream{"svc": {Endpoints: []string{a.addr("inbound")}}}
	c := startSidecar(t, ccfg)
	out := "http://" + c.addr("outbound")

	type result struct {
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", out+"/slow", nil)
		req.Host = "svc"
		resp, err := h1Client().Do(req)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		inflight <- result{string(body), err}
	}()
	waitFor(t, 5*time.Second, "slow request in flight", func() bool {
		return c.table.Load().Lookup("svc").Endpoints[0].Stats().Pending == 1
	})

	next := *c.cfg.Load()
	next.Upstreams = map[string]config.Upstream{"svc": {Endpoints: []string{b.addr("inbound")}}}
	if err := c.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, h1Client(), out+"/", "svc"); string(body) != "B" {
		t.Errorf("after reload got %q, want B", body)
	}
	close(slow)
	if r := <-inflight; r.err != nil || r.body != "A" {
		t.Errorf("in-flight request: %q, %v; want A", r.body, r.err)
	}
	if g := c.generation.Load(); g != 2 {
		t.Errorf("generation %d, want 2", g)
	}
	// A reload that would need new listeners keeps the running ones.
	bad := next
	bad.Listeners.Outbound = "127.0.0.1:1"
	if err := c.Reload(&bad); err != nil {
		t.Fatal(err)
	}
	if c.cfg.Load().Listeners.Outbound == "127.0.0.1:1" {
		t.Error("reload changed a listener address, which needs a restart")
	}
}

func TestAdminAPI(t *testing.T) {
	app := startApp(t, echoserver.Handler("echo-1"))
	m := startMesh(t, "echo", app, config.ProtocolHTTP1)
	get(t, h1Client(), "http://"+m.client.addr("outbound")+"/", "echo")
	admin := "http://" + m.client.addr("admin")
	c := h1Client()

	for _, path := range []string{"/ready", "/live", "/server_info", "/config_dump", "/clusters", "/metrics"} {
		resp, body := get(t, c, admin+path, "")
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
	_, body := get(t, c, admin+"/clusters", "")
	var clusters struct {
		Clusters []struct {
			Name      string
			Endpoints []struct {
				Address  string
				Requests int
				Health   string
			}
		}
	}
	if err := json.Unmarshal(body, &clusters); err != nil || len(clusters.Clusters) != 1 ||
		clusters.Clusters[0].Name != "echo" || clusters.Clusters[0].Endpoints[0].Requests != 1 {
		t.Errorf("/clusters = %s, want echo with one endpoint that served 1 request", body)
	}
	_, body = get(t, c, admin+"/config_dump", "")
	if !strings.Contains(string(body), `"version": "sha256:`) || !strings.Contains(string(body), m.server.addr("inbound")) {
		t.Errorf("/config_dump lacks versions or the upstream: %s", body)
	}
	_, body = get(t, c, admin+"/metrics", "")
	if !strings.Contains(string(body), `mesh_requests_total{destination_service="echo",direction="outbound",source_service="client",status_class="2xx"} 1`) {
		t.Errorf("metrics lack the outbound request:\n%s", grepLines(string(body), "mesh_requests_total"))
	}
	_, body = get(t, c, "http://"+m.server.addr("health")+"/metrics", "")
	if !strings.Contains(string(body), `mesh_requests_total{destination_service="echo",direction="inbound",source_service="client",status_class="2xx"} 1`) {
		t.Errorf("metrics lack the inbound request:\n%s", grepLines(string(body), "mesh_requests_total"))
	}
	// The health listener is read-only.
	resp, err := c.Post("http://"+m.client.addr("health")+"/quitquitquit", "", nil)
	if err != nil || resp.StatusCode != 404 && resp.StatusCode != 405 {
		t.Errorf("POST /quitquitquit on the health port: %v %v, want 404 or 405", resp.StatusCode, err)
	}
	// POST /drain turns readiness off.
	resp, err = c.Post(admin+"/drain", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /drain: %v", err)
	}
	resp, _ = get(t, c, admin+"/ready", "")
	if resp.StatusCode != 503 {
		t.Errorf("/ready after drain: %d, want 503", resp.StatusCode)
	}
	// POST /quitquitquit stops the sidecar.
	if _, err := c.Post(admin+"/quitquitquit", "", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.client.done:
	case <-time.After(10 * time.Second):
		t.Fatal("sidecar still running 10s after /quitquitquit")
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestExpectContinue sends a body behind Expect: 100-continue across the
// mesh: the client gets 100 Continue, sends the body, and the app gets it
// whole.
func TestExpectContinue(t *testing.T) {
	app := startApp(t, echoserver.Handler("echo-1"))
	m := startMesh(t, "echo", app, config.ProtocolHTTP1)
	c := h1Client()
	c.Transport.(*http.Transport).ExpectContinueTimeout = 5 * time.Second // wait for the 100, never send early
	body := strings.Repeat("x", 100<<10)
	req, _ := http.NewRequestWithContext(testContext(t, 10*time.Second), "PUT", "http://"+m.client.addr("outbound")+"/upload", strings.NewReader(body))
	req.Host = "echo"
	req.Header.Set("Expect", "100-continue")
	got100 := make(chan struct{}, 1)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got100Continue: func() { got100 <- struct{}{} },
	}))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got echoserver.EchoResponse
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || got.BodyBytes != int64(len(body)) {
		t.Fatalf("status %d, app got %d bytes; want 200 and %d", resp.StatusCode, got.BodyBytes, len(body))
	}
	select {
	case <-got100:
	default:
		t.Error("the client never received 100 Continue")
	}
}
