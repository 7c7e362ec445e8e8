package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// framingApp answers by path, with and without a declared length.
var framingApp = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/small": // no Content-Length: the sidecar's app client sees it anyway
		_, _ = io.WriteString(w, "small body")
	case "/large":
		w.Header().Set("Content-Type", "text/plain")
		for range 8 {
			_, _ = io.WriteString(w, strings.Repeat("x", 1024))
			w.(http.Flusher).Flush() // chunked from the app: length unknown
		}
	case "/empty":
		w.WriteHeader(http.StatusNoContent)
	case "/notmod":
		w.WriteHeader(http.StatusNotModified)
	case "/trailer":
		w.Header().Set("Trailer", "X-Checksum")
		_, _ = io.WriteString(w, "with trailer")
		w.Header().Set("X-Checksum", "abc")
	case "/post":
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "got "+string(b))
	default:
		http.NotFound(w, r)
	}
})

// rawExchange writes req on c and reads one response.
func rawExchange(t *testing.T, c net.Conn, br *bufio.Reader, req string, method string) (*http.Response, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: body: %v", req, err)
	}
	return resp, string(b)
}

// Responses on the fast lane are framed as net/http frames them.
func TestFastLaneFraming(t *testing.T) {
	s := startSidecar(t, testConfig("framing", startApp(t, framingApp), config.ProtocolHTTP1))
	c, err := net.Dial("tcp", s.addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(method, path string) (*http.Response, string) {
		return rawExchange(t, c, br, method+" "+path+" HTTP/1.1\r\nHost: framing\r\n\r\n", method)
	}

	resp, body := get("GET", "/small")
	if resp.StatusCode != 200 || body != "small body" || resp.ContentLength != 10 || len(resp.TransferEncoding) != 0 {
		t.Errorf("small: %d %q length %d %v", resp.StatusCode, body, resp.ContentLength, resp.TransferEncoding)
	}
	if resp.Header.Get("Date") == "" || resp.Header.Get("Content-Type") == "" {
		t.Errorf("small: Date or Content-Type missing: %v", resp.Header)
	}
	resp, body = get("GET", "/large")
	if resp.StatusCode != 200 || len(body) != 8<<10 || resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 {
		t.Errorf("large: %d, %d bytes, length %d, %v", resp.StatusCode, len(body), resp.ContentLength, resp.TransferEncoding)
	}
	resp, body = get("HEAD", "/small")
	if resp.StatusCode != 200 || body != "" {
		t.Errorf("head: %d %q", resp.StatusCode, body)
	}
	resp, body = get("GET", "/empty")
	if resp.StatusCode != 204 || body != "" || resp.Header.Get("Content-Length") != "" {
		t.Errorf("204: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = get("GET", "/notmod")
	if resp.StatusCode != 304 || body != "" || len(resp.TransferEncoding) != 0 {
		t.Errorf("304: %d %q %v", resp.StatusCode, body, resp.TransferEncoding)
	}
	resp, body = get("GET", "/trailer")
	if resp.StatusCode != 200 || body != "with trailer" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("trailer: %d %q trailer %v", resp.StatusCode, body, resp.Trailer)
	}
	// All of it on one connection; then it still carries a request.
	resp, body = get("GET", "/small")
	if resp.StatusCode != 200 || body != "small body" {
		t.Errorf("after the others: %d %q", resp.StatusCode, body)
	}
	if n := fastLaneConns(s.inbound); n != 1 {
		t.Errorf("%d connections on the fast lane, want this one", n)
	}

	// The mesh's own error response declares no length: the writer
	// computes it, as the whole body is written before the handler returns.
	oc, err := net.Dial("tcp", s.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	resp, body = rawExchange(t, oc, bufio.NewReader(oc), "GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n", "GET")
	if resp.StatusCode != 503 || resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) != 0 || resp.Header.Get("X-Mesh-Error") == "" {
		t.Errorf("error response: %d, length %d for %d bytes, %v, %v", resp.StatusCode, resp.ContentLength, len(body), resp.TransferEncoding, resp.Header)
	}
}

// fastLaneConns counts the connections l serves on the fast lane.
func fastLaneConns(l *httpListener) int {
	l.fastMu.Lock()
	defer l.fastMu.Unlock()
	return len(l.fastConns)
}

// A connection moves to net/http at its first request the fast lane does
// not take, keeping the bytes already read; pipelined requests are
// answered in order.
func TestFastLaneMovesToNetHTTP(t *testing.T) {
	s := startSidecar(t, testConfig("moving", startApp(t, framingApp), config.ProtocolHTTP1))
	c, err := net.Dial("tcp", s.addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	// Three pipelined requests: fast, one with a body, then fast again
	// (now served by net/http).
	reqs := "GET /small HTTP/1.1\r\nHost: moving\r\n\r\n" +
		"POST /post HTTP/1.1\r\nHost: moving\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /small HTTP/1.1\r\nHost: moving\r\n\r\n"
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"small body", "got hello", "small body"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != want {
			t.Errorf("response %d: %d %q, want %q", i, resp.StatusCode, b, want)
		}
	}
	waitFor(t, 5*time.Second, "the connection to leave the fast lane", func() bool { return fastLaneConns(s.inbound) == 0 })
	// A malformed request after the move is still refused by the guard.
	resp, body := rawExchange(t, c, br, "GET /x HTTP/1.1\r\nHost: moving\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "GET")
	if resp.StatusCode != 400 || resp.Header.Get("X-Mesh-Error") != "bad_request" {
		t.Errorf("malformed after the move: %d %q", resp.StatusCode, body)
	}
}

// A malformed request on the fast lane is refused by the framing guard and
// never reaches the app.
func TestFastLaneMalformedNeverForwarded(t *testing.T) {
	var seen atomic.Int64
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen.Add(1) }))
	s := startSidecar(t, testConfig("guarded", app, config.ProtocolHTTP1))
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: guarded\r\nHost: other\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: guarded\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: guarded\r\n folded\r\n\r\n",
		"GET /a%00b HTTP/1.1\r\nHost: guarded\r\n\r\n",
	} {
		c, err := net.Dial("tcp", s.addr("inbound"))
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := rawExchange(t, c, bufio.NewReader(c), req, "GET")
		c.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%q: status %d, want 400", req, resp.StatusCode)
		}
	}
	if n := seen.Load(); n != 0 {
		t.Errorf("the app saw %d malformed requests", n)
	}
}

// A client that goes away while its fast-lane request waits on the app
// cancels the request at the app.
func TestFastLaneClientGoneCancels(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(20 * time.Second):
		}
	}))
	s := startSidecar(t, testConfig("gone", app, config.ProtocolHTTP1))
	c, err := net.Dial("tcp", s.addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: gone\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 10*time.Second)
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the request never reached the app")
	}
	c.Close()
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("the app's request was not cancelled after the client went away")
	}
}

// Shutdown waits for a fast-lane request in flight and closes idle
// fast-lane connections.
func TestFastLaneShutdown(t *testing.T) {
	release := make(chan struct{})
	slowStarted := make(chan struct{}, 1)
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slowStarted <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}))
	s := startSidecar(t, testConfig("closing", app, config.ProtocolHTTP1))
	l := s.inbound
	idle, err := net.Dial("tcp", s.addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if resp, body := rawExchange(t, idle, bufio.NewReader(idle), "GET /quick HTTP/1.1\r\nHost: closing\r\n\r\n", "GET"); resp.StatusCode != 200 || body != "done" {
		t.Fatalf("quick: %d %q", resp.StatusCode, body)
	}
	busy, err := net.Dial("tcp", s.addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_ = busy.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: closing\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-slowStarted:
	case <-testContext(t, 10*time.Second).Done():
		t.Fatal("the slow request never reached the app")
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- l.shutdown(ctx)
	}()
	// The idle connection is closed.
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Error("the idle connection was not closed")
	}
	// The request in flight completes, with Connection: close.
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("the request in flight failed: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "done" {
		t.Errorf("in flight: %d %q", resp.StatusCode, b)
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}
