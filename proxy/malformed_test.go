package proxy

// End-to-end: malformed and smuggling-shaped requests never reach the app
// (HARDENING.md §5A A1–A3, A5, A8). Ground truth is a recording app.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// malSeen is one request as the recording app received it.
type malSeen struct {
	method, path string
	header       http.Header
	body         string
	bodyErr      error // nil when the body was read to its end
}

// malRecorder is an app that records every request it receives and reads
// each body fully before answering. It refuses every protocol upgrade: 426,
// or, for /ws-wrong101, a 101 to a protocol other than the one asked for.
type malRecorder struct {
	mu   sync.Mutex
	seen []malSeen
}

func (a *malRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	a.mu.Lock()
	a.seen = append(a.seen, malSeen{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: string(body), bodyErr: err})
	a.mu.Unlock()
	if err != nil {
		return
	}
	if r.Header.Get("Upgrade") != "" { // refuse every upgrade (A8)
		if r.URL.Path == "/ws-wrong101" { // switch, but to another protocol
			if c, brw, err := http.NewResponseController(w).Hijack(); err == nil {
				_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
				_ = brw.Flush()
				c.Close()
			}
			return
		}
		w.Header().Set("Upgrade", "h3-fake")
		w.WriteHeader(http.StatusUpgradeRequired)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "app saw %s %s", r.Method, r.URL.Path)
}

// snapshot returns what the app has received so far.
func (a *malRecorder) snapshot() []malSeen {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]malSeen(nil), a.seen...)
}

// since returns the requests received after the first n.
func (a *malRecorder) since(n int) []malSeen {
	s := a.snapshot()
	if n > len(s) {
		return nil
	}
	return s[n:]
}

// malWithoutLateAborts drops the aborted POST /mal-body requests from s:
// only the body cases send that path, their upstream requests are aborted
// mid-body, and under load the app may record one only after the next
// case has begun. A complete one is never dropped.
func malWithoutLateAborts(s []malSeen) []malSeen {
	var out []malSeen
	for _, r := range s {
		if r.path != "/mal-body" || r.bodyErr == nil {
			out = append(out, r)
		}
	}
	return out
}

func malComplete(s []malSeen) []malSeen {
	var out []malSeen
	for _, r := range s {
		if r.bodyErr == nil {
			out = append(out, r)
		}
	}
	return out
}

func malDescribe(s []malSeen) string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = fmt.Sprintf("%s %q (body %d bytes, err %v)", r.method, r.path, len(r.body), r.bodyErr)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// malResponse is what came back on a raw connection.
type malResponse struct {
	first *http.Response
	body  string
	extra []*http.Response // responses after the first
	end   error            // how reading ended after the responses
	trail []byte           // unparsable bytes after the responses
}

// malClosed reports whether err means the peer closed the connection: EOF,
// or a reset because the peer discarded bytes it had not read. A timeout
// means it stayed open.
func malClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// malExchange writes raw to addr on a fresh connection and reads the first
// response (within 5s), then everything else until the connection ends
// (within closeWithin).
func malExchange(t *testing.T, addr, raw string, closeWithin time.Duration) malResponse {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	werr := make(chan error, 1)
	go func() { // write concurrently: a refusal may come before all is sent
		_, err := io.WriteString(c, raw)
		werr <- err
	}()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	var out malResponse
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the response: got error %v, want a response", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	out.first, out.body = resp, string(b)
	_ = c.SetReadDeadline(time.Now().Add(closeWithin))
	for {
		if _, err := br.Peek(1); err != nil {
			out.end = err
			break
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			rest, _ := io.ReadAll(br)
			out.trail = rest
			out.end = err
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		out.extra = append(out.extra, resp)
	}
	select {
	case <-werr: // a write error after a refusal is expected
	case <-time.After(5 * time.Second):
		t.Errorf("write did not finish within 5s after the connection ended")
	}
	return out
}

// malCase is one raw request (or pipeline) and what must come of it.
type malCase struct {
	name string
	raw  string
	// status is the refusal's status: 400 or 431.
	status int
	// body marks a malformed chunked body after a valid head: the app may
	// see the request start, but never a complete body.
	body bool
}

const malChunkedHead = "POST /mal-body HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n"

func malFields(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "X-F%d: v\r\n", i)
	}
	return b.String()
}

// malCases are the refusals expected at target ("outbound" or "inbound").
// The header-field limit differs: the inbound listener allows the fields
// the calling sidecar adds on top of limits.maxHeaderCount.
func malCases(target string) []malCase {
	maxFields := config.Default().Limits.MaxHeaderCount
	if target == "inbound" {
		maxFields += meshHeaderAllowance
	}
	return []malCase{
		// A2: framing conflicts and targets Go accepts.
		{name: "CL+TE smuggling", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n", status: 400},
		{name: "TE+CL smuggling", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\nContent-length: 4\r\n\r\n5c\r\nGPOST /smuggled HTTP/1.1\r\nHost: echo\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n", status: 400},
		{name: "TE on HTTP/1.0", raw: "POST /mal HTTP/1.0\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n", status: 400},
		{name: "TE chunked, identity", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", status: 400},
		{name: "TE xchunked", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", status: 400},
		{name: "duplicate TE", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400},
		{name: "TE with vertical tab", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", status: 400},
		{name: "TE obs-folded", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: x\r\n chunked\r\n\r\n0\r\n\r\n", status: 400},
		{name: "TE space before colon", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", status: 400},
		{name: "duplicate CL same", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", status: 400},
		{name: "duplicate CL different", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc", status: 400},
		{name: "CL +1", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: +1\r\n\r\na", status: 400},
		{name: "CL -1", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: -1\r\n\r\na", status: 400},
		{name: "CL 0x1", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: 0x1\r\n\r\na", status: 400},
		{name: "CL empty", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: \r\n\r\n", status: 400},
		{name: "CL 19 digits", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: 1000000000000000000\r\n\r\na", status: 400},
		{name: "CONNECT", raw: "CONNECT echo:80 HTTP/1.1\r\nHost: echo:80\r\n\r\n", status: 400},
		{name: "absolute-form with differing Host", raw: "GET http://evil/mal HTTP/1.1\r\nHost: echo\r\n\r\n", status: 400},
		{name: "absolute-form naming the service, Host elsewhere", raw: "GET http://echo/mal HTTP/1.1\r\nHost: evil\r\n\r\n", status: 400},
		{name: "userinfo in absolute-form", raw: "GET http://user@echo/mal HTTP/1.1\r\nHost: echo\r\n\r\n", status: 400},
		{name: "missing Host", raw: "GET /mal HTTP/1.1\r\nX-A: b\r\n\r\n", status: 400},
		{name: "duplicate Host", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nHost: evil\r\n\r\n", status: 400},
		{name: "%00 in path", raw: "GET /mal%00x HTTP/1.1\r\nHost: echo\r\n\r\n", status: 400},
		{name: "# in target", raw: "GET /mal#frag HTTP/1.1\r\nHost: echo\r\n\r\n", status: 400},
		{name: "HTTP/2.0 in an HTTP/1 request line", raw: "GET /mal HTTP/2.0\r\nHost: echo\r\n\r\n", status: 400},
		{name: "HTTP/1.2", raw: "GET /mal HTTP/1.2\r\nHost: echo\r\n\r\n", status: 400},
		{name: "Upgrade h2c hidden behind a second Upgrade", raw: "GET /mal-h2c-dup HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nUpgrade: websocket\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", status: 400},
		{name: "Upgrade h2c", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", status: 400},

		// A1: header syntax.
		{name: "obs-fold", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nX-A: a\r\n b\r\n\r\n", status: 400},
		{name: "bare CR in header", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nX-A: a\rb\r\n\r\n", status: 400},
		{name: "bare LF line endings", raw: "GET /mal HTTP/1.1\nHost: echo\n\n", status: 400},
		{name: "NUL in header", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nX-A: a\x00b\r\n\r\n", status: 400},
		{name: "underscore in header name", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n", status: 400},
		{name: "space before colon", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nX-A : b\r\n\r\n", status: 400},
		{name: "empty header name", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\n: b\r\n\r\n", status: 400},
		{name: "header line without colon", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nX-A b\r\n\r\n", status: 400},
		{name: "header name byte >= 0x80", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nX-\xff: b\r\n\r\n", status: 400},

		// Limits.
		{name: "one header field over the limit", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\n" + malFields(maxFields) + "\r\n", status: 431}, // Host + maxFields
		{name: "header block over 64KiB", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nX-Big: " + strings.Repeat("b", 70<<10) + "\r\n\r\n", status: 431},

		// A3: malformed chunked bodies after a valid head.
		{name: "chunk: bare LF after size", raw: malChunkedHead + "5\nhello\r\n0\r\n\r\n", status: 400, body: true},
		{name: "chunk: missing CRLF after data", raw: malChunkedHead + "5\r\nhello0\r\n\r\n", status: 400, body: true},
		{name: "chunk: non-hex size", raw: malChunkedHead + "5\r\nhello\r\ng\r\nhello\r\n0\r\n\r\n", status: 400, body: true},
		{name: "chunk: size with leading space", raw: malChunkedHead + "5\r\nhello\r\n 5\r\nhello\r\n0\r\n\r\n", status: 400, body: true},
		{name: "chunk: oversize hex", raw: malChunkedHead + "5\r\nhello\r\n10000000000000000\r\nhello\r\n0\r\n\r\n", status: 400, body: true},
		{name: "chunk: 0x5 size", raw: malChunkedHead + "5\r\nhello\r\n0x5\r\nhello\r\n0\r\n\r\n", status: 400, body: true},
		{name: "chunk: negative size", raw: malChunkedHead + "5\r\nhello\r\n-5\r\nhello\r\n0\r\n\r\n", status: 400, body: true},
		{name: "chunk: data longer than size", raw: malChunkedHead + "5\r\nhello\r\n3\r\nhello\r\n0\r\n\r\n", status: 400, body: true},
		{name: "chunk: LF-only terminator", raw: malChunkedHead + "5\r\nhello\r\n0\n\n", status: 400, body: true},
		{name: "chunk: invalid char in extension", raw: malChunkedHead + "5;ext=\x01\r\nhello\r\n0\r\n\r\n", status: 400, body: true},
		{name: "chunk: trailer with obs-fold", raw: malChunkedHead + "5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", status: 400, body: true},
		{name: "chunk: bare CR in size line", raw: malChunkedHead + "5\r\nhello\r\n5\rhello\r\n0\r\n\r\n", status: 400, body: true},
		{name: "chunk: trailer with underscore", raw: malChunkedHead + "5\r\nhello\r\n0\r\nX_T: a\r\n\r\n", status: 400, body: true},
		{name: "chunk: smuggled request after bad chunk", raw: malChunkedHead + "5\r\nhello\r\n0\n\r\nGET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n", status: 400, body: true},
	}
}

// malMesh is a mesh whose app records what it receives.
type malMesh struct {
	app   *malRecorder
	m     *mesh
	addrs map[string]string // "outbound" and "inbound" targets
}

func startMalMesh(t *testing.T) *malMesh {
	t.Helper()
	app := &malRecorder{}
	m := startMesh(t, "echo", startApp(t, app), config.ProtocolHTTP1)
	return &malMesh{app: app, m: m, addrs: map[string]string{
		"outbound": m.client.addr("outbound"),
		"inbound":  m.server.addr("inbound"),
	}}
}

// malControl sends a valid request and checks it reaches the app, so that
// the refusal assertions can fail.
func malControl(t *testing.T, mm *malMesh, addr string) {
	t.Helper()
	n := len(mm.app.snapshot())
	raw := "POST /control HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: t\r\n\r\n"
	r := malExchange(t, addr, raw, 2*time.Second)
	if r.first.StatusCode != 200 {
		t.Fatalf("control: got %d %q, want 200", r.first.StatusCode, r.body)
	}
	if want := "app saw POST /control"; r.body != want {
		t.Errorf("control body: got %q, want %q", r.body, want)
	}
	got := malComplete(mm.app.since(n))
	if len(got) != 1 || got[0].path != "/control" || got[0].body != "hello" {
		t.Errorf("control: app saw %s, want exactly POST /control with body \"hello\"", malDescribe(got))
	}
}

func TestMalformedRequestsNeverReachApp(t *testing.T) {
	mm := startMalMesh(t)
	for _, target := range []string{"outbound", "inbound"} {
		addr := mm.addrs[target]
		cases := malCases(target)
		if len(cases) < 30 {
			t.Fatalf("got %d cases, want at least 30", len(cases))
		}
		t.Run(target, func(t *testing.T) {
			malControl(t, mm, addr)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					n := len(mm.app.snapshot())
					r := malExchange(t, addr, c.raw, 2*time.Second)
					seen := mm.app.since(n)
					var problems []string
					fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
					if c.body {
						if done := malComplete(seen); len(done) > 0 {
							fail("app received a complete body: %s, want none", malDescribe(done))
						}
					} else if seen = malWithoutLateAborts(seen); len(seen) > 0 {
						fail("app received %s, want nothing", malDescribe(seen))
					}
					if r.first.StatusCode != c.status {
						fail("status: got %d (body %q), want %d", r.first.StatusCode, r.body, c.status)
					}
					if got := r.first.Header.Get(HeaderError); got != "bad_request" {
						fail("%s: got %q, want %q", HeaderError, got, "bad_request")
					}
					if !r.first.Close {
						fail("refusal without Connection: close")
					}
					if !malClosed(r.end) {
						fail("connection after the refusal: got %v, want EOF within 2s", r.end)
					}
					for _, x := range r.extra {
						if x.StatusCode < 400 {
							fail("a further response %d followed the refusal, want none that is not an error", x.StatusCode)
						}
					}
					if len(problems) > 0 {
						t.Error(strings.Join(problems, "\n"))
					}
				})
			}
			malControl(t, mm, addr)
		})
	}
	// Late arrivals: after all cases, only the control requests may ever
	// have completed (an aborted forward of an earlier case has had the
	// whole run to land).
	var complete []malSeen
	for _, s := range malComplete(mm.app.snapshot()) {
		if s.path != "/control" {
			complete = append(complete, s)
		}
		if s.path == "/smuggled" {
			t.Errorf("the smuggled request reached the app: %s", malDescribe([]malSeen{s}))
		}
	}
	if len(complete) > 0 {
		t.Errorf("app completed %s, want only the control requests", malDescribe(complete))
	}
}

// TestMalformedPipelinedAfterGood: a valid request pipelined before a
// smuggling attempt is answered by the app, then the attempt is refused.
func TestMalformedPipelinedAfterGood(t *testing.T) {
	mm := startMalMesh(t)
	raw := "GET /good HTTP/1.1\r\nHost: echo\r\n\r\n" +
		"POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n"
	for _, target := range []string{"outbound", "inbound"} {
		t.Run(target, func(t *testing.T) {
			n := len(mm.app.snapshot())
			r := malExchange(t, mm.addrs[target], raw, 2*time.Second)
			all := append([]*http.Response{r.first}, r.extra...)
			refused := false
			for _, x := range all {
				if x.StatusCode == 400 && x.Header.Get(HeaderError) == "bad_request" {
					refused = true
				}
			}
			if !refused {
				t.Errorf("no 400 with %s: bad_request among %d responses, want the CL+TE request refused", HeaderError, len(all))
			}
			if !malClosed(r.end) {
				t.Errorf("connection after the refusal: got %v, want EOF within 2s", r.end)
			}
			seen := mm.app.since(n)
			for _, s := range seen {
				if s.path != "/good" {
					t.Errorf("app received %s %s, want only GET /good", s.method, s.path)
				}
			}
			// The good request must be answered by the app, first.
			if want := "app saw GET /good"; r.first.StatusCode != 200 || r.body != want || len(malComplete(seen)) != 1 {
				t.Errorf("pipelined valid request before a refused one: got first response %d %q and the app saw %s; "+
					"want 200 %q from the app, seen once",
					r.first.StatusCode, r.body, malDescribe(seen), want)
			}
		})
	}
}

// TestMalformedAnsweredOnce: a refused request gets exactly one response.
func TestMalformedAnsweredOnce(t *testing.T) {
	mm := startMalMesh(t)
	for _, c := range []malCase{
		{name: "CL+TE", raw: "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{name: "obs-fold", raw: "GET /mal HTTP/1.1\r\nHost: echo\r\nX-A: a\r\n b\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := malExchange(t, mm.addrs["outbound"], c.raw, 2*time.Second)
			if r.first.StatusCode != 400 || r.first.Header.Get(HeaderError) != "bad_request" {
				t.Fatalf("got %d %s=%q, want 400 bad_request", r.first.StatusCode, HeaderError, r.first.Header.Get(HeaderError))
			}
			if !malClosed(r.end) {
				t.Errorf("connection after the refusal: got %v, want EOF", r.end)
			}
			if len(r.extra) > 0 {
				x := r.extra[0]
				t.Errorf("got %d responses, want 1: a \"%d %s\" (%s=%q) follows the guard's refusal",
					1+len(r.extra), x.StatusCode, http.StatusText(x.StatusCode), HeaderError, x.Header.Get(HeaderError))
			}
		})
	}
}

// TestMalformedRefusedUpgradeKeepsGuard (A8): after an upgrade request that
// did not switch protocols, the connection is not an opaque tunnel: what
// follows is refused, or the connection is closed.
func TestMalformedRefusedUpgradeKeepsGuard(t *testing.T) {
	mm := startMalMesh(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there any more
	ccfg := testConfig("client2", "127.0.0.1:1", config.ProtocolHTTP1)
	ccfg.Upstreams = map[string]config.Upstream{
		"echo": {Endpoints: []string{mm.addrs["inbound"]}},
		"dead": {Endpoints: []string{deadAddr}},
	}
	client2 := startSidecar(t, ccfg)

	smuggle := "POST /mal HTTP/1.1\r\nHost: echo\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n"
	upgrade := func(path, host string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	}
	tests := []struct {
		name, addr, path, host string
		status                 int
	}{
		{"app answers 426, via outbound", client2.addr("outbound"), "/ws", "echo", 426},
		{"app answers 426, at inbound", mm.addrs["inbound"], "/ws", "echo", 426},
		{"app switches to another protocol, via outbound", client2.addr("outbound"), "/ws-wrong101", "echo", 502},
		{"app switches to another protocol, at inbound", mm.addrs["inbound"], "/ws-wrong101", "echo", 502},
		{"unknown service", client2.addr("outbound"), "/ws", "nosuch", 503},
		{"endpoint refuses connections", client2.addr("outbound"), "/ws", "dead", 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(mm.app.snapshot())
			r := malExchange(t, tt.addr, upgrade(tt.path, tt.host)+smuggle, 2*time.Second)
			if r.first.StatusCode != tt.status {
				t.Errorf("upgrade response: got %d %q, want %d", r.first.StatusCode, r.body, tt.status)
			}
			var problems []string
			for _, x := range r.extra {
				if x.StatusCode != 400 {
					problems = append(problems, fmt.Sprintf("got a further response %d, want none or 400", x.StatusCode))
				}
			}
			if !malClosed(r.end) {
				problems = append(problems, fmt.Sprintf("connection end: got %v, want EOF within 2s", r.end))
			}
			for _, s := range mm.app.since(n) {
				if s.path != tt.path {
					problems = append(problems, fmt.Sprintf("app received %s %s, want only GET %s", s.method, s.path, tt.path))
				}
			}
			if len(problems) > 0 {
				t.Errorf("after a refused upgrade answered %d (Connection close=%v): %s",
					r.first.StatusCode, r.first.Close, strings.Join(problems, "; "))
			}
		})
	}
}

// TestMalformedHopByHopAbuse (A5): naming the mesh's headers in Connection
// does not remove them, and the client's copies do not survive.
func TestMalformedHopByHopAbuse(t *testing.T) {
	mm := startMalMesh(t)
	raw := "GET /hop HTTP/1.1\r\nHost: echo\r\n" +
		"Connection: close, X-Request-Id, X-Forwarded-For, X-Forwarded-Host, X-Mesh-Source\r\n" +
		"X-Request-Id: client-rid\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n\r\n"
	n := len(mm.app.snapshot())
	r := malExchange(t, mm.addrs["outbound"], raw, 2*time.Second)
	if r.first.StatusCode != 200 {
		t.Fatalf("status: got %d %q, want 200", r.first.StatusCode, r.body)
	}
	seen := malComplete(mm.app.since(n))
	if len(seen) != 1 {
		t.Fatalf("app saw %s, want exactly GET /hop", malDescribe(seen))
	}
	h := seen[0].header
	if ids := h.Values(HeaderRequestID); len(ids) != 1 || !validRequestID(ids[0]) {
		t.Errorf("%s at the app: got %q, want exactly one valid id", HeaderRequestID, ids)
	}
	xff := strings.Join(h.Values("X-Forwarded-For"), ", ")
	if xff == "" || strings.Contains(xff, "6.6.6.6") || !strings.Contains(xff, "127.0.0.1") {
		t.Errorf("X-Forwarded-For at the app: got %q, want the mesh's chain of 127.0.0.1 without the client's 6.6.6.6", xff)
	}
	if got := h.Values("X-Forwarded-Host"); len(got) != 1 || got[0] != "echo" {
		t.Errorf("X-Forwarded-Host at the app: got %q, want [echo]", got)
	}
	if got := h.Get("Connection"); got != "" {
		t.Errorf("Connection at the app: got %q, want none (hop-by-hop)", got)
	}
}

// malEvil are mesh-only headers with values the app must never see.
var malEvil = map[string]string{
	"X-Mesh-Epoch":         "evil-epoch",
	"X-Mesh-Error":         "evil-error",
	"X-Mesh-Attempt":       "evil-attempt",
	"X-Mesh-Source":        "evil-source",
	"X-Mesh-Peer-Identity": "evil-identity",
	"Forwarded":            "for=evil",
}

func malCheckNoEvil(t *testing.T, h http.Header) {
	t.Helper()
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, "evil") {
				t.Errorf("app received %s: %q, want the client's mesh-only headers removed", k, v)
			}
		}
	}
	for _, k := range []string{"X-Mesh-Error", "X-Mesh-Source"} {
		if v := h.Values(k); len(v) > 0 {
			t.Errorf("app received %s: %q, want none", k, v)
		}
	}
}

// malH2C is a cleartext HTTP/2 (prior knowledge) client whose connections
// close when the test ends.
func malH2C(t *testing.T) *http.Client {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestMalformedMeshOnlyHeadersFromApp: headers only the mesh may set never
// reach the upstream app when the local app sends them, over HTTP/1.1 or
// h2c.
func TestMalformedMeshOnlyHeadersFromApp(t *testing.T) {
	mm := startMalMesh(t)
	t.Run("http1", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("GET /meshonly HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n")
		for k, v := range malEvil {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
		b.WriteString("\r\n")
		n := len(mm.app.snapshot())
		r := malExchange(t, mm.addrs["outbound"], b.String(), 2*time.Second)
		if r.first.StatusCode != 200 {
			t.Fatalf("status: got %d %q, want 200", r.first.StatusCode, r.body)
		}
		if got := r.first.Header.Get(HeaderError); got != "" {
			t.Errorf("response %s: got %q, want none", HeaderError, got)
		}
		seen := malComplete(mm.app.since(n))
		if len(seen) != 1 {
			t.Fatalf("app saw %s, want exactly GET /meshonly", malDescribe(seen))
		}
		malCheckNoEvil(t, seen[0].header)
	})
	t.Run("h2c", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(testContext(t, 10*time.Second), "GET", "http://"+mm.addrs["outbound"]+"/meshonly-h2", nil)
		req.Host = "echo"
		for k, v := range malEvil {
			req.Header.Set(k, v)
		}
		n := len(mm.app.snapshot())
		resp, err := malH2C(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status: got %d, want 200", resp.StatusCode)
		}
		seen := malComplete(mm.app.since(n))
		if len(seen) != 1 {
			t.Fatalf("app saw %s, want exactly GET /meshonly-h2", malDescribe(seen))
		}
		malCheckNoEvil(t, seen[0].header)
	})
}

// TestMalformedOverH2C: what the HTTP/1 guard refuses must also be refused
// on HTTP/2 streams, by the admit layer.
func TestMalformedOverH2C(t *testing.T) {
	mm := startMalMesh(t)
	client := malH2C(t)
	tests := []struct {
		name   string
		req    func(ctx context.Context) *http.Request
		status int
	}{
		{"CONNECT", func(ctx context.Context) *http.Request {
			req, _ := http.NewRequestWithContext(ctx, "CONNECT", "http://"+mm.addrs["outbound"], nil)
			req.Host = "echo:80"
			return req
		}, 400},
		{"101 header fields", func(ctx context.Context) *http.Request {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+mm.addrs["outbound"]+"/mal-h2", nil)
			req.Host = "echo"
			for i := 0; i < 101; i++ {
				req.Header.Set(fmt.Sprintf("X-F%d", i), "v")
			}
			return req
		}, 431},
		{"%00 in path", func(ctx context.Context) *http.Request {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+mm.addrs["outbound"]+"/mal-h2%00x", nil)
			req.Host = "echo"
			return req
		}, 400},
		{"underscore in header name", func(ctx context.Context) *http.Request {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+mm.addrs["outbound"]+"/mal-h2-underscore", nil)
			req.Host = "echo"
			req.Header["X_Forwarded_For"] = []string{"6.6.6.6"}
			return req
		}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(mm.app.snapshot())
			resp, err := client.Do(tt.req(testContext(t, 10*time.Second)))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var problems []string
			if resp.StatusCode != tt.status {
				problems = append(problems, fmt.Sprintf("status: got %d %q, want %d", resp.StatusCode, body, tt.status))
			}
			if got := resp.Header.Get(HeaderError); got != "bad_request" {
				problems = append(problems, fmt.Sprintf("%s: got %q, want bad_request", HeaderError, got))
			}
			if seen := mm.app.since(n); len(seen) > 0 {
				problems = append(problems, fmt.Sprintf("app received %s, want nothing", malDescribe(seen)))
			}
			if len(problems) > 0 {
				t.Error(strings.Join(problems, "\n"))
			}
		})
	}
	// Control: a valid h2c request through the same client is forwarded.
	req, _ := http.NewRequestWithContext(testContext(t, 10*time.Second), "GET", "http://"+mm.addrs["outbound"]+"/control-h2", nil)
	req.Host = "echo"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "app saw GET /control-h2"; resp.StatusCode != 200 || string(body) != want {
		t.Errorf("control: got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
}

// TestMalformedHeaderCountLimitIsTheClients: a request with exactly
// MaxHeaderCount fields is within the limit the outbound guard enforces, so
// it must cross the mesh; the mesh's own headers must not push it over at
// the peer. The inbound listener, which allows the calling sidecar's
// headers on top, accepts MaxHeaderCount+meshHeaderAllowance fields.
func TestMalformedHeaderCountLimitIsTheClients(t *testing.T) {
	mm := startMalMesh(t)
	max := config.Default().Limits.MaxHeaderCount
	for _, tt := range []struct {
		target string
		fields int
	}{
		{"outbound", max},
		{"inbound", max + meshHeaderAllowance},
	} {
		t.Run(tt.target, func(t *testing.T) {
			raw := "GET /fields HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n" + malFields(tt.fields-2) + "\r\n" // Host + Connection + fields-2
			n := len(mm.app.snapshot())
			r := malExchange(t, mm.addrs[tt.target], raw, 2*time.Second)
			if r.first.StatusCode != 200 {
				// A 431 here means a sidecar counted the headers the mesh
				// itself added (X-Request-Id, X-Forwarded-*, X-Mesh-Source)
				// against the client's limit.
				t.Fatalf("%d header fields (the limit) at %s: got %d %q (%s=%q), want 200",
					tt.fields, tt.target, r.first.StatusCode, strings.TrimSpace(r.body), HeaderError, r.first.Header.Get(HeaderError))
			}
			if seen := malComplete(mm.app.since(n)); len(seen) != 1 {
				t.Errorf("app saw %s, want exactly GET /fields", malDescribe(seen))
			}
		})
	}
}
