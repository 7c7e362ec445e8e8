package h1client

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dialCounter dials over TCP and counts connections.
type dialCounter struct{ n atomic.Int32 }

func (d *dialCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

// recordingFallback notes which requests the transport handed on.
type recordingFallback struct {
	mu      sync.Mutex
	methods []string
}

func (f *recordingFallback) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.methods = append(f.methods, r.Method)
	f.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func newTransport() (*Transport, *dialCounter, *recordingFallback) {
	d := &dialCounter{}
	fb := &recordingFallback{}
	return &Transport{Dial: d.dial, Fallback: fb, MaxResponseHeaderBytes: 4 << 10}, d, fb
}

func get(t *testing.T, tr http.RoundTripper, method, url string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

func TestReusesConnectionAndCarriesHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got", r.Header.Get("X-Test")+"|"+r.Host+"|"+r.URL.RequestURI())
		if r.Method != http.MethodHead {
			_, _ = io.WriteString(w, "hello")
		}
	}))
	defer srv.Close()
	tr, d, fb := newTransport()
	defer tr.CloseIdleConnections()

	for i := range 5 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/a/b?q=1", nil)
		req.Host = "orders"
		req.Header.Set("X-Test", "v")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello" || resp.Header.Get("X-Got") != "v|orders|/a/b?q=1" {
			t.Fatalf("request %d: body %q, X-Got %q", i, b, resp.Header.Get("X-Got"))
		}
	}
	resp, body := get(t, tr, http.MethodHead, srv.URL+"/")
	if resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	if n := d.n.Load(); n != 1 {
		t.Fatalf("dialed %d connections for sequential requests, want 1", n)
	}
	if len(fb.methods) != 0 {
		t.Fatalf("fallback used for %v", fb.methods)
	}
}

func TestRequestsItDoesNotTakeGoToFallback(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	tr, d, fb := newTransport()
	defer tr.CloseIdleConnections()

	post, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
	emptyPost, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	withBody, _ := http.NewRequest(http.MethodGet, srv.URL, strings.NewReader("x"))
	expect, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	expect.Header.Set("Expect", "100-continue")
	upgrade, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	upgrade.Header.Set("Upgrade", "websocket")
	for _, r := range []*http.Request{post, emptyPost, withBody, expect, upgrade} {
		resp, err := tr.RoundTrip(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(fb.methods) != 5 || d.n.Load() != 0 {
		t.Fatalf("fallback got %v, own dials %d; want all 5 in fallback", fb.methods, d.n.Load())
	}
}

func TestResponseFraming(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "part1")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part2")
			w.Header().Set("X-Sum", "42")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		}
	}))
	defer srv.Close()
	tr, d, _ := newTransport()
	defer tr.CloseIdleConnections()

	resp, body := get(t, tr, http.MethodGet, srv.URL+"/chunked")
	if body != "part1part2" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("chunked: body %q trailer %v", body, resp.Trailer)
	}
	resp, body = get(t, tr, http.MethodGet, srv.URL+"/nocontent")
	if resp.StatusCode != 204 || body != "" {
		t.Fatalf("204: %d %q", resp.StatusCode, body)
	}
	if d.n.Load() != 1 {
		t.Fatalf("dials %d after keep-alive responses, want 1", d.n.Load())
	}
	_, body = get(t, tr, http.MethodGet, srv.URL+"/close")
	if body != "bye" {
		t.Fatalf("close: %q", body)
	}
	get(t, tr, http.MethodGet, srv.URL+"/nocontent")
	if d.n.Load() != 2 {
		t.Fatalf("dials %d, want a new connection after Connection: close", d.n.Load())
	}
}

// rawServer accepts connections and runs handle on each.
func rawServer(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// readHead reads one request head.
func readHead(br *bufio.Reader) error {
	tp := textproto.NewReader(br)
	if _, err := tp.ReadLine(); err != nil {
		return err
	}
	_, err := tp.ReadMIMEHeader()
	return err
}

func TestStaleIdleConnectionIsRetriedOnce(t *testing.T) {
	// Each connection answers one request and then closes, without saying
	// so: the pooled connection is dead when the next request is written.
	var conns atomic.Int32
	addr := rawServer(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		if readHead(br) != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tr, _, _ := newTransport()
	defer tr.CloseIdleConnections()
	for i := range 3 {
		if _, body := get(t, tr, http.MethodGet, "http://"+addr+"/"); body != "ok" {
			t.Fatalf("request %d: %q", i, body)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("server saw %d connections, want 3", n)
	}
}

func TestNoRetryAfterPartialResponse(t *testing.T) {
	var heads atomic.Int32
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for readHead(br) == nil {
			if heads.Add(1) == 1 {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 O") // then close
			return
		}
	})
	tr, _, _ := newTransport()
	defer tr.CloseIdleConnections()
	get(t, tr, http.MethodGet, "http://"+addr+"/")
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("a truncated response head was accepted")
	}
	if n := heads.Load(); n != 2 {
		t.Fatalf("server saw %d requests, want 2 (no retry once a response began)", n)
	}
}

func TestResponseHeadLimit(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		if readHead(bufio.NewReader(c)) != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 16<<10)+"\r\nContent-Length: 0\r\n\r\n")
	})
	tr, _, _ := newTransport()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	_, err := tr.RoundTrip(req)
	if !errors.Is(err, errHeadTooLarge) {
		t.Fatalf("err = %v, want %v", err, errHeadTooLarge)
	}
}

func TestInformationalResponsesReachTrace(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		if readHead(bufio.NewReader(c)) != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tr, _, _ := newTransport()
	defer tr.CloseIdleConnections()
	var got []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, h.Get("Link"))
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" || len(got) != 1 || got[0] != "</a.css>; rel=preload" {
		t.Fatalf("body %q, 1xx %v", b, got)
	}
}

func TestCancelWhileWaitingForResponse(t *testing.T) {
	release := make(chan struct{})
	addr := rawServer(t, func(c net.Conn) {
		_ = readHead(bufio.NewReader(c))
		<-release
	})
	defer close(release)
	tr, _, _ := newTransport()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(req)
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RoundTrip did not return after cancel")
	}
}

func TestUnreadBodyClosesConnection(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 64<<10))
	}))
	defer srv.Close()
	tr, d, _ := newTransport()
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // without reading: the rest must never be taken as the next response
	get(t, tr, http.MethodGet, srv.URL)
	if d.n.Load() != 2 {
		t.Fatalf("dials %d, want 2", d.n.Load())
	}
}

func TestMaxConnsQueues(t *testing.T) {
	var active, peak atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := active.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond) // hold the connection so requests overlap
		active.Add(-1)
	}))
	defer srv.Close()
	tr, d, _ := newTransport()
	tr.MaxConns = 2
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { get(t, tr, http.MethodGet, srv.URL) })
	}
	wg.Wait()
	if d.n.Load() > 2 || peak.Load() > 2 {
		t.Fatalf("dials %d, peak concurrency %d; want at most 2", d.n.Load(), peak.Load())
	}
}
