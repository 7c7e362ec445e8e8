package proxy

// The hardening suite, HTTP/1 part (HARDENING.md §5A A2, A4, A5, A8 and
// §5B B5–B7, issue 9): slow clients, the connection limit, and smuggling
// cases the malformed-request table (malformed_test.go) does not cover.
// Ground truth is what the upstream received.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// hardGauge reads a gauge's current value.
func hardGauge(g interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	_ = g.Write(&m)
	return m.GetGauge().GetValue()
}

// hardOpenFDs counts this process's open file descriptors (-1 where
// /proc is missing).
func hardOpenFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// TestHardeningSlowloris (B5): 1,000 connections each send a request head
// one byte at a time, every 500 ms, never finishing it. Every one must be
// closed within ReadHeaderTimeout + 1 s of its first byte while a
// well-behaved client keeps 100 % success through the same listener, and
// the sidecar's connections and the process's file descriptors return to
// their baseline within 15 s. The test configures ReadHeaderTimeout 2 s to
// stay short; the production default is 10 s (asserted below).
func TestHardeningSlowloris(t *testing.T) {
	if d := config.Default().Limits.ReadHeaderTimeout.Duration; d != 10*time.Second {
		t.Errorf("default ReadHeaderTimeout = %v, want the documented 10s", d)
	}
	const (
		conns      = 1000
		headerWait = 2 * time.Second
		trickle    = 500 * time.Millisecond
	)
	app := newHardApp()
	cfg := testConfig("echo", startApp(t, app), config.ProtocolHTTP1)
	cfg.Limits.ReadHeaderTimeout.Duration = headerWait
	s := startSidecar(t, cfg)
	inbound := s.addr("inbound")
	active := s.m.active.WithLabelValues("inbound")
	baseFDs := hardOpenFDs()

	client := h1Client()
	t.Cleanup(client.CloseIdleConnections)
	probe := startHardProbe(t, client, app, "http://"+inbound+"/probe", "echo", 50)

	type slowConn struct {
		c        net.Conn
		start    time.Time
		closedAt atomic.Int64 // since start, ns; 0 while open
	}
	slow := make([]*slowConn, 0, conns)
	var readers sync.WaitGroup
	for i := 0; i < conns; i++ {
		c, err := net.DialTimeout("tcp", inbound, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(headerWait + 10*time.Second))
		sc := &slowConn{c: c, start: time.Now()}
		if _, err := io.WriteString(c, "G"); err != nil {
			t.Fatalf("first byte on %d: %v", i, err)
		}
		slow = append(slow, sc)
		readers.Add(1)
		go func() {
			defer readers.Done()
			_, _ = io.Copy(io.Discard, c) // returns when the sidecar closes it (or the deadline)
			sc.closedAt.Store(int64(time.Since(sc.start)))
		}()
	}
	dialed := time.Now()
	// Trickle: one more byte of a never-ending head every 500 ms.
	head := "ET /slow HTTP/1.1\r\nHost: echo\r\nX-Slow: " + strings.Repeat("s", 1000)
	stopTrickle := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		tick := time.NewTicker(trickle)
		defer tick.Stop()
		for i := 0; i < len(head); i++ {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
			}
			for _, sc := range slow {
				if sc.closedAt.Load() == 0 {
					_ = sc.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
					_, _ = sc.c.Write([]byte{head[i]})
				}
			}
		}
	}()
	readers.Wait()
	close(stopTrickle)
	<-trickled
	res := probe.stop()
	client.CloseIdleConnections()

	var worst time.Duration
	open := 0
	for _, sc := range slow {
		d := time.Duration(sc.closedAt.Load())
		worst = max(worst, d)
		if d > headerWait+time.Second {
			open++
		}
	}
	t.Logf("dialed %d slow connections in %v; slowest closed %v after its first byte; client %s",
		conns, dialed.Sub(slow[0].start).Round(time.Millisecond), worst.Round(time.Millisecond), res)
	if open > 0 {
		t.Errorf("%d of %d slow connections were closed later than ReadHeaderTimeout+1s = %v (slowest %v)",
			open, conns, headerWait+time.Second, worst.Round(time.Millisecond))
	}
	if n := app.other.Load(); n > 0 {
		t.Errorf("the app received %d requests of the slow connections, want 0", n)
	}
	res.check(t, 50)

	// Resources back to the baseline within 15 s.
	for _, sc := range slow {
		sc.c.Close()
	}
	waitFor(t, 15*time.Second, "the inbound listener's open connections back to 0", func() bool { return hardGauge(active) == 0 })
	if baseFDs >= 0 {
		// The probe's keep-alive connections to the app are the pool's, not
		// the slow clients': close them so only leaks remain to count.
		s.closeIdle()
		waitFor(t, 15*time.Second, fmt.Sprintf("open file descriptors back to the baseline %d", baseFDs), func() bool {
			return hardOpenFDs() <= baseFDs+5 // the client pool's last sockets may linger briefly
		})
	}
}

// hardRawExchange writes req on c and reads one response.
func hardRawExchange(c net.Conn, br *bufio.Reader, req string) (*http.Response, string, error) {
	if _, err := io.WriteString(c, req); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// TestHardeningConnectionLimit (B7): with MaxConnections 64, 64 clients hold
// keep-alive connections and 36 more connect. The sidecar's limit is a
// netutil.LimitListener: excess connections are not accepted but wait in
// the kernel's backlog (queued, not refused), unanswered; the established
// clients keep being served; when some of them leave, the queued ones are
// served.
func TestHardeningConnectionLimit(t *testing.T) {
	const limit, excess = 64, 36
	app := newHardApp()
	cfg := testConfig("echo", startApp(t, app), config.ProtocolHTTP1)
	cfg.Limits.MaxConnections = limit
	s := startSidecar(t, cfg)
	inbound := s.addr("inbound")

	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	dial := func(i int) client {
		c, err := net.DialTimeout("tcp", inbound, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		return client{c: c, br: bufio.NewReader(c)}
	}
	request := func(id string) string {
		return "GET /limit HTTP/1.1\r\nHost: echo\r\n" + hardIDHeader + ": " + id + "\r\n\r\n"
	}
	established := make([]client, limit)
	for i := range established {
		established[i] = dial(i)
		_ = established[i].c.SetDeadline(time.Now().Add(10 * time.Second))
		resp, body, err := hardRawExchange(established[i].c, established[i].br, request(fmt.Sprintf("est-%d-a", i)))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("established client %d: %v %v %q", i, resp, err, body)
		}
	}
	waitFor(t, 5*time.Second, "64 open inbound connections", func() bool { return hardGauge(s.m.active.WithLabelValues("inbound")) == limit })

	// The excess connect (the kernel completes the handshake) and send a
	// request each; none may be answered while the limit is reached.
	queued := make([]client, excess)
	for i := range queued {
		queued[i] = dial(limit + i)
		if _, err := io.WriteString(queued[i].c, request(fmt.Sprintf("queued-%d", i))); err != nil {
			t.Fatalf("queued client %d: writing: %v", i, err)
		}
	}
	var answered atomic.Int64
	var wg sync.WaitGroup
	for _, q := range queued {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = q.c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := q.br.Peek(1); err == nil {
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := answered.Load(); n > 0 {
		t.Errorf("%d of %d connections over the limit of %d were answered, want none (queued)", n, excess, limit)
	}

	// Established clients are still served, every one.
	ok := 0
	start := time.Now()
	for i, e := range established {
		_ = e.c.SetDeadline(time.Now().Add(5 * time.Second))
		id := fmt.Sprintf("est-%d-b", i)
		resp, body, err := hardRawExchange(e.c, e.br, request(id))
		if err == nil && resp.StatusCode == 200 && body == "ok "+id {
			ok++
		} else {
			t.Errorf("established client %d over the limit: %v %v %q", i, resp, err, body)
		}
	}
	t.Logf("at the limit: %d/%d established clients served in %v; %d/%d excess connections answered within 1s",
		ok, limit, time.Since(start).Round(time.Millisecond), answered.Load(), excess)

	// Freeing slots lets the queued connections in: each is served.
	for _, e := range established[:excess] {
		e.c.Close()
	}
	start = time.Now()
	for i, q := range queued {
		_ = q.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(q.br, nil)
		if err != nil {
			t.Errorf("queued client %d after slots were freed: %v", i, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if id := fmt.Sprintf("queued-%d", i); resp.StatusCode != 200 || string(body) != "ok "+id {
			t.Errorf("queued client %d: got %d %q, want 200 %q", i, resp.StatusCode, body, "ok "+id)
		}
	}
	t.Logf("after %d slots were freed, the %d queued connections were served within %v", excess, excess, time.Since(start).Round(time.Millisecond))
}

// hardRawUpstream is an HTTP/1.1 app that records the exact bytes it
// receives on each connection. It answers each request it parses with 200
// and "saw METHOD PATH", or, for an upgrade, with upgradeStatus.
type hardRawUpstream struct {
	addr string
	// upgradeStatus answers requests carrying Upgrade: 426 (refused), or
	// 101 with a different protocol than asked ("wrong 101").
	upgradeStatus int

	mu    sync.Mutex
	conns []*bytes.Buffer
	// after101 is how each connection that got a wrong 101 ended: "closed
	// by the sidecar" or why reading it ended otherwise.
	after101 []string
	open     map[net.Conn]struct{}
}

func startHardRawUpstream(t *testing.T, upgradeStatus int) *hardRawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &hardRawUpstream{addr: ln.Addr().String(), upgradeStatus: upgradeStatus, open: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for c := range u.open {
			c.Close()
		}
		u.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); u.serve(c) }()
		}
	}()
	return u
}

// lockedWriter appends to a buffer under the upstream's lock.
type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (u *hardRawUpstream) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	rec := &bytes.Buffer{}
	u.mu.Lock()
	u.conns = append(u.conns, rec)
	u.open[c] = struct{}{}
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		delete(u.open, c)
		u.mu.Unlock()
	}()
	br := bufio.NewReader(io.TeeReader(c, lockedWriter{&u.mu, rec}))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		if req.Header.Get("Upgrade") != "" {
			switch u.upgradeStatus {
			case http.StatusSwitchingProtocols:
				// Switch to a protocol the client did not ask for, then
				// keep reading: a tunnel would deliver the client's next
				// bytes here raw.
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: not-"+req.Header.Get("Upgrade")+"\r\n\r\n")
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, err := io.Copy(io.Discard, br)
				how := "closed by the sidecar"
				if err != nil {
					how = "still open: " + err.Error()
				}
				u.mu.Lock()
				u.after101 = append(u.after101, how)
				u.mu.Unlock()
				return
			default:
				_, _ = io.WriteString(c, "HTTP/1.1 426 Upgrade Required\r\nUpgrade: h3-fake\r\nContent-Length: 0\r\n\r\n")
				continue
			}
		}
		body := "saw " + req.Method + " " + req.URL.RequestURI()
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		if req.Close {
			return
		}
	}
}

// hardSeenRequest is one request as re-parsed from the upstream's bytes.
type hardSeenRequest struct {
	Method, URI, Body string
}

// reparse re-parses every connection's recorded bytes with net/http: the
// requests the upstream saw, and any bytes that did not parse as requests.
func (u *hardRawUpstream) reparse() (reqs []hardSeenRequest, junk []string) {
	u.mu.Lock()
	conns := make([][]byte, len(u.conns))
	for i, b := range u.conns {
		conns[i] = bytes.Clone(b.Bytes())
	}
	u.mu.Unlock()
	for _, raw := range conns {
		br := bufio.NewReader(bytes.NewReader(raw))
		for {
			if _, err := br.Peek(1); err != nil {
				break
			}
			req, err := http.ReadRequest(br)
			if err != nil {
				rest, _ := io.ReadAll(br)
				junk = append(junk, fmt.Sprintf("%v: %q", err, rest))
				break
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				junk = append(junk, fmt.Sprintf("body of %s %s: %v", req.Method, req.URL.RequestURI(), err))
				break
			}
			reqs = append(reqs, hardSeenRequest{Method: req.Method, URI: req.URL.RequestURI(), Body: string(body)})
		}
	}
	return reqs, junk
}

// hardMeshTo starts a server sidecar fronting app and a client sidecar that
// routes "echo" to it; the targets are both sidecars' listeners.
func hardMeshTo(t *testing.T, app string) map[string]string {
	t.Helper()
	m := startMesh(t, "echo", app, config.ProtocolHTTP1)
	return map[string]string{"outbound": m.client.addr("outbound"), "inbound": m.server.addr("inbound")}
}

// TestHardeningPipelinedFraming (A4): requests pipelined on one connection,
// some carrying bodies that look like requests or like a framing conflict.
// Re-parsing the bytes the upstream received must give exactly the requests
// the client framed: the same count, methods, targets and bodies.
func TestHardeningPipelinedFraming(t *testing.T) {
	hidden := "GET /hidden HTTP/1.1\r\nHost: echo\r\n\r\n"
	conflict := "0\r\n\r\nPOST /hidden HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
	tests := []struct {
		name string
		raw  string
		want []hardSeenRequest
	}{
		{
			name: "request inside a Content-Length body",
			raw: "POST /a HTTP/1.1\r\nHost: echo\r\nContent-Length: " + fmt.Sprint(len(hidden)) + "\r\n\r\n" + hidden +
				"GET /b HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n",
			want: []hardSeenRequest{{"POST", "/a", hidden}, {"GET", "/b", ""}},
		},
		{
			name: "chunk data with a fake last chunk and a CL+TE request",
			raw: "POST /c HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n" +
				fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(conflict), conflict) +
				"GET /d HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n",
			want: []hardSeenRequest{{"POST", "/c", conflict}, {"GET", "/d", ""}},
		},
		{
			name: "four pipelined requests, one with a body",
			raw: "GET /p1 HTTP/1.1\r\nHost: echo\r\n\r\n" +
				"GET /p2?q=1 HTTP/1.1\r\nHost: echo\r\n\r\n" +
				"POST /p3 HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\n\r\nhello" +
				"GET /p4 HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n",
			want: []hardSeenRequest{{"GET", "/p1", ""}, {"GET", "/p2?q=1", ""}, {"POST", "/p3", "hello"}, {"GET", "/p4", ""}},
		},
	}
	for _, target := range []string{"outbound", "inbound"} {
		t.Run(target, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					up := startHardRawUpstream(t, 426)
					addr := hardMeshTo(t, up.addr)[target]
					c, err := net.DialTimeout("tcp", addr, 5*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.WriteString(c, tt.raw); err != nil {
						t.Fatal(err)
					}
					br := bufio.NewReader(c)
					for i, w := range tt.want {
						resp, err := http.ReadResponse(br, nil)
						if err != nil {
							t.Fatalf("response %d: %v", i+1, err)
						}
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if want := "saw " + w.Method + " " + w.URI; resp.StatusCode != 200 || string(body) != want {
							t.Errorf("response %d: got %d %q, want 200 %q", i+1, resp.StatusCode, body, want)
						}
					}
					if rest, err := io.ReadAll(br); len(rest) > 0 {
						t.Errorf("after the %d responses: %q (%v), want the connection closed", len(tt.want), rest, err)
					}
					got, junk := up.reparse()
					sortSeen := func(s []hardSeenRequest) {
						slices.SortFunc(s, func(a, b hardSeenRequest) int { return strings.Compare(a.URI, b.URI) })
					}
					want := slices.Clone(tt.want)
					sortSeen(got)
					sortSeen(want)
					if !slices.Equal(got, want) || len(junk) > 0 {
						t.Errorf("re-parsing what the upstream received:\n got %q\nwant %q\nunparsable: %q", got, want, junk)
					}
				})
			}
		})
	}
}

// TestHardeningEncodedSlashes (A2): a percent-encoded slash or backslash in
// the path can reach a path a policy forbids once some hop decodes it
// (Istio CVE-2021-31920 class). HARDENING.md A2: 400 and close, nothing
// reaches the app.
func TestHardeningEncodedSlashes(t *testing.T) {
	mm := startMalMesh(t)
	for _, target := range []string{"outbound", "inbound"} {
		t.Run(target, func(t *testing.T) {
			malControl(t, mm, mm.addrs[target])
			for _, path := range []string{"/admin%2Fusers", "/admin%2fusers", "/public%5C..%5Cadmin", "/public%5c..%5cadmin"} {
				t.Run(path, func(t *testing.T) {
					n := len(mm.app.snapshot())
					r := malExchange(t, mm.addrs[target], "GET "+path+" HTTP/1.1\r\nHost: echo\r\n\r\n", 2*time.Second)
					var problems []string
					if seen := mm.app.since(n); len(seen) > 0 {
						problems = append(problems, fmt.Sprintf("the app received %s, want nothing", malDescribe(seen)))
					}
					if r.first.StatusCode != http.StatusBadRequest {
						problems = append(problems, fmt.Sprintf("status: got %d %q, want 400", r.first.StatusCode, r.body))
					}
					if !malClosed(r.end) {
						problems = append(problems, fmt.Sprintf("connection after the answer: got %v, want EOF within 2s", r.end))
					}
					if len(problems) > 0 {
						t.Error(strings.Join(problems, "\n"))
					}
				})
			}
		})
	}
}

// TestHardeningHopByHopMeshHeaders (A5): a client naming the headers the
// mesh adds in Connection cannot make a hop strip them, and its own copies
// are replaced. At the app: exactly one X-Mesh-Lamport and X-Mesh-Vclock,
// stamped by the receiving sidecar (never the client's value), with as
// many vector-clock entries as a plain request gets (the calling sidecar's
// entry crossed the hop); an X-Forwarded-For chain that ends with the
// address the mesh appended (from the outbound side, without the client's
// forged 6.6.6.6; the inbound side keeps the calling sidecar's chain); and
// a traceparent, if any, that is not the client's unchanged.
func TestHardeningHopByHopMeshHeaders(t *testing.T) {
	mm := startMalMesh(t)
	const (
		clientTrace   = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		clientLamport = "424242"
	)
	fields := "X-Forwarded-For: 6.6.6.6\r\nTraceparent: " + clientTrace + "\r\nX-Mesh-Lamport: " + clientLamport + "\r\n"
	plain := "GET /hop-plain HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n" + fields + "\r\n"
	abusive := "GET /hop-mesh HTTP/1.1\r\nHost: echo\r\n" +
		"Connection: close, X-Forwarded-For, Traceparent, X-Mesh-Lamport, X-Mesh-Vclock\r\n" + fields + "\r\n"
	vclockEntries := func(v string) int { return len(strings.FieldsFunc(v, func(r rune) bool { return r == ',' })) }
	send := func(t *testing.T, addr, raw string) http.Header {
		t.Helper()
		n := len(mm.app.snapshot())
		r := malExchange(t, addr, raw, 2*time.Second)
		if r.first.StatusCode != 200 {
			t.Fatalf("status: got %d %q, want 200", r.first.StatusCode, r.body)
		}
		seen := malComplete(mm.app.since(n))
		if len(seen) != 1 {
			t.Fatalf("the app saw %s, want exactly one request", malDescribe(seen))
		}
		return seen[0].header
	}
	for _, target := range []string{"outbound", "inbound"} {
		t.Run(target, func(t *testing.T) {
			want := vclockEntries(send(t, mm.addrs[target], plain).Get("X-Mesh-Vclock"))
			h := send(t, mm.addrs[target], abusive)
			t.Logf("at the app: X-Forwarded-For %q, X-Mesh-Lamport %q, X-Mesh-Vclock %q (plain request: %d entries), Traceparent %q",
				h.Values("X-Forwarded-For"), h.Values("X-Mesh-Lamport"), h.Values("X-Mesh-Vclock"), want, h.Values("Traceparent"))
			xff := strings.Join(h.Values("X-Forwarded-For"), ", ")
			if !strings.HasSuffix(xff, "127.0.0.1") || (target == "outbound" && strings.Contains(xff, "6.6.6.6")) {
				t.Errorf("X-Forwarded-For at the app: got %q, want a chain ending with the mesh's 127.0.0.1 (and, via outbound, without the client's 6.6.6.6)", xff)
			}
			for _, k := range []string{"X-Mesh-Lamport", "X-Mesh-Vclock"} {
				if v := h.Values(k); len(v) != 1 || v[0] == "" {
					t.Errorf("%s at the app: got %q, want exactly one value stamped by the sidecar", k, v)
				}
			}
			if v := h.Get("X-Mesh-Lamport"); v == clientLamport {
				t.Errorf("X-Mesh-Lamport at the app: got the client's %q, want the sidecar's own stamp", v)
			}
			if got := vclockEntries(h.Get("X-Mesh-Vclock")); got != want {
				t.Errorf("X-Mesh-Vclock at the app: got %d entries (%q), want %d as for a plain request: a mesh hop's clock was stripped",
					got, h.Get("X-Mesh-Vclock"), want)
			}
			if tp := h.Values("Traceparent"); len(tp) > 1 || (len(tp) == 1 && tp[0] == clientTrace) {
				t.Errorf("Traceparent at the app: got %q, want at most one, and not the client's unchanged", tp)
			}
		})
	}
}

// TestHardeningUpgradeRefusedByBackend (A8): the backend answers an upgrade
// with 426, or with 101 to a protocol the client did not ask for. No tunnel
// may open: the client's next request is parsed as HTTP (answered by the
// backend as a request, or refused, or the connection closed), and nothing
// the client sends after it reaches the backend as raw bytes.
func TestHardeningUpgradeRefusedByBackend(t *testing.T) {
	upgrade := "GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	next := "GET /after HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"
	for _, backend := range []int{http.StatusUpgradeRequired, http.StatusSwitchingProtocols} {
		for _, target := range []string{"outbound", "inbound"} {
			t.Run(fmt.Sprintf("%d/%s", backend, target), func(t *testing.T) {
				up := startHardRawUpstream(t, backend)
				addr := hardMeshTo(t, up.addr)[target]
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				resp, body, err := hardRawExchange(c, br, upgrade)
				if err != nil {
					t.Fatalf("upgrade: %v", err)
				}
				if resp.StatusCode == http.StatusSwitchingProtocols {
					t.Fatalf("the client got 101 (%q): a tunnel opened to a protocol it did not ask for", resp.Header.Get("Upgrade"))
				}
				// The next request on the same connection, if the sidecar
				// kept it open.
				var after string
				if _, err := io.WriteString(c, next); err == nil {
					if r2, err := http.ReadResponse(br, nil); err == nil {
						b, _ := io.ReadAll(r2.Body)
						r2.Body.Close()
						after = fmt.Sprintf("%d %q", r2.StatusCode, b)
						if r2.StatusCode == 200 && string(b) != "saw GET /after" {
							t.Errorf("the request after the refused upgrade: got 200 %q, want the backend's answer to GET /after", b)
						}
					} else {
						after = "connection closed: " + err.Error()
					}
				}
				t.Logf("backend %d via %s: client got %d %q; next request: %s", backend, target, resp.StatusCode, body, after)
				if backend == http.StatusSwitchingProtocols {
					waitFor(t, 5*time.Second, "the backend's wrong-101 connection to end", func() bool {
						up.mu.Lock()
						defer up.mu.Unlock()
						return len(up.after101) > 0
					})
					up.mu.Lock()
					t.Logf("the backend connection that sent the wrong 101, within 2s: %s", up.after101[0])
					up.mu.Unlock()
				}
				got, junk := up.reparse()
				if len(junk) > 0 {
					t.Errorf("the backend received bytes that are not HTTP requests (a tunnel): %q", junk)
				}
				for _, r := range got {
					if r.URI != "/ws" && r.URI != "/after" {
						t.Errorf("the backend saw %s %s, want only /ws and /after", r.Method, r.URI)
					}
				}
			})
		}
	}
}
