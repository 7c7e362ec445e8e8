package proxy

// The hardening suite, bodies (HARDENING.md §5B B6, B8): slow request
// bodies, slow readers and body caps, on the inbound and the outbound
// listener, over HTTP/1.1, HTTP/2 and gRPC, while a well-behaved client
// keeps calling through the same listener. Ground truth is what the
// recording upstream saw. The limits are short here to keep the tests
// fast (idle 500 ms, 1 KiB/s over 1 s windows, a 4 MiB cap); the shipped
// defaults are 30 s, 1 KiB/s over 10 s, and no cap.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/causeway-mesh/causeway/examples/inventory/inventorypb"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// bodyTestID names a request to the recording upstream.
const bodyTestID = "X-Test-Id"

// bodyRecord is what the recording upstream saw of one request.
type bodyRecord struct {
	Bytes    int64  // request-body bytes received
	Complete bool   // the body was read to its end
	ReadErr  string // why reading it ended otherwise
	Wrote    int64  // response bytes written (/download)
	WriteErr string // why writing stopped before the end (/download)
}

// bodyApp is the recording upstream. Requests carrying hardIDHeader are
// the well-behaved client's and go to probe; others are recorded by
// bodyTestID: /upload reads the body to its end (answering 200 "got N",
// or a gRPC OK for gRPC), /download?size=N writes N bytes.
type bodyApp struct {
	probe *hardApp
	mu    sync.Mutex
	recs  map[string]bodyRecord
}

func newBodyApp() *bodyApp { return &bodyApp{probe: newHardApp(), recs: map[string]bodyRecord{}} }

func (a *bodyApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(hardIDHeader) != "" {
		a.probe.ServeHTTP(w, r)
		return
	}
	id := r.Header.Get(bodyTestID)
	if r.URL.Path == "/download" {
		size, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		buf := make([]byte, 32<<10)
		var wrote int64
		var err error
		for wrote < size {
			var k int
			k, err = w.Write(buf[:min(int64(len(buf)), size-wrote)])
			wrote += int64(k)
			if err != nil {
				break
			}
		}
		rec := bodyRecord{Wrote: wrote}
		if err != nil {
			rec.WriteErr = err.Error()
		}
		a.record(id, rec)
		return
	}
	n, err := io.Copy(io.Discard, r.Body)
	rec := bodyRecord{Bytes: n, Complete: err == nil}
	if err != nil {
		rec.ReadErr = err.Error()
	}
	a.record(id, rec)
	if err != nil {
		return // the request was aborted: nobody to answer
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	fmt.Fprintf(w, "got %d", n)
}

func (a *bodyApp) record(id string, rec bodyRecord) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recs[id] = rec
}

// seen returns the record of id and whether the request has ended at the
// upstream.
func (a *bodyApp) seen(id string) (bodyRecord, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rec, ok := a.recs[id]
	return rec, ok
}

// awaitEnd waits until the upstream's handler for id has returned: proof
// that the upstream request ended (completed, or cancelled by the proxy).
func (a *bodyApp) awaitEnd(t *testing.T, id string, within time.Duration) bodyRecord {
	t.Helper()
	waitFor(t, within, "the upstream's request "+id+" to end", func() bool { _, ok := a.seen(id); return ok })
	rec, _ := a.seen(id)
	return rec
}

// bodyEnv is a sidecar listener under test with the recording upstream
// behind it: inbound, the sidecar fronting the app; outbound, a client
// sidecar routing "echo" to a server sidecar (default limits) fronting it.
type bodyEnv struct {
	app    *bodyApp
	addr   string          // the listener under test
	s      *runningSidecar // its sidecar
	target string
}

// startBodyEnv starts the sidecars; configure adjusts the configuration
// of the sidecar whose listener is tested.
func startBodyEnv(t *testing.T, target string, proto config.Protocol, configure func(*config.Config)) *bodyEnv {
	t.Helper()
	app := newBodyApp()
	appAddr := startApp(t, app)
	if target == "inbound" {
		cfg := testConfig("echo", appAddr, proto)
		configure(cfg)
		s := startSidecar(t, cfg)
		return &bodyEnv{app: app, addr: s.addr("inbound"), s: s, target: target}
	}
	server := startSidecar(t, testConfig("echo", appAddr, proto))
	ccfg := testConfig("client", "127.0.0.1:1", config.ProtocolHTTP1)
	ccfg.Upstreams = map[string]config.Upstream{"echo": {Endpoints: []string{server.addr("inbound")}}}
	configure(ccfg)
	client := startSidecar(t, ccfg)
	return &bodyEnv{app: app, addr: client.addr("outbound"), s: client, target: target}
}

// probe starts the well-behaved client on the listener under test (h2c
// inbound, as a peer sidecar calls; HTTP/1.1 outbound, as an app does).
func (e *bodyEnv) probe(t *testing.T) *hardProbe {
	t.Helper()
	c := h1Client()
	if e.target == "inbound" {
		c = h2cClient()
	}
	t.Cleanup(c.CloseIdleConnections)
	p := startHardProbe(t, c, e.app.probe, "http://"+e.addr+"/probe", "echo", 50)
	waitFor(t, 5*time.Second, "the first probe request", func() bool { return e.app.probe.seen("probe-0") == 1 })
	return p
}

func (e *bodyEnv) aborts(reason string) float64 {
	return testutilCounter(e.s.m.bodyAborts.WithLabelValues(e.target, reason))
}

// Short limits for the tests (see the file comment).
const (
	testBodyIdle   = 500 * time.Millisecond
	testRateWindow = time.Second
	testBodyCap    = 4 << 20
)

func shortBodyLimits(c *config.Config) {
	c.Limits.BodyIdleTimeout.Duration = testBodyIdle
	c.Limits.MinBodyRate = 1024
	c.Limits.MinBodyRateWindow.Duration = testRateWindow
}

// testWatchTick is the watchdog's tick for the short limits.
var testWatchTick = min(testBodyIdle, testRateWindow) / 4

// TestHardeningSlowBody (B6): a request body that stalls after 10 bytes
// (idle) or trickles one byte every 100 ms (10 B/s, below 1 KiB/s) is
// cut off: 408 (x-mesh-error body_timeout) after the idle timeout or the
// first rate window (plus at most a watchdog tick), the HTTP/1 connection
// closed or the HTTP/2 stream ended, and the upstream request cancelled
// before the body's end. A well-behaved client on the same listener gets
// 100 % success meanwhile.
func TestHardeningSlowBody(t *testing.T) {
	for _, target := range []string{"inbound", "outbound"} {
		t.Run(target, func(t *testing.T) {
			env := startBodyEnv(t, target, config.ProtocolHTTP1, shortBodyLimits)
			mem := startHardMemory(t)
			probe := env.probe(t)
			for _, proto := range []string{"h1", "h2"} {
				for _, mode := range []string{"idle", "trickle"} {
					t.Run(proto+"/"+mode, func(t *testing.T) {
						id := target + "-" + proto + "-" + mode
						var r slowBodyResult
						if proto == "h1" {
							r = slowBodyH1(t, env.addr, id, mode == "trickle")
						} else {
							r = slowBodyH2(t, env.addr, id, mode == "trickle")
						}
						// The earliest a trip may come, and the latest it should.
						want, reason := testBodyIdle, reasonIdle
						if mode == "trickle" {
							want, reason = testRateWindow, reasonSlow
						}
						latest := raceSlowdown * (want + testWatchTick + time.Second)
						rec := env.app.awaitEnd(t, id, 5*time.Second)
						t.Logf("%s %s via %s: %d %q after %v; %s after %v; upstream saw %d bytes, complete %v (%s); %s aborts %v",
							proto, mode, target, r.status, r.meshErr, r.answered.Round(time.Millisecond), r.endHow,
							r.ended.Round(time.Millisecond), rec.Bytes, rec.Complete, rec.ReadErr, reason, env.aborts(reason))
						if r.status != http.StatusRequestTimeout || r.meshErr != ErrBodyTimeout.Code {
							t.Errorf("answer: got %d %q, want 408 %q", r.status, r.meshErr, ErrBodyTimeout.Code)
						}
						if r.answered < want*9/10 || r.answered > latest {
							t.Errorf("answered after %v, want between %v and %v", r.answered.Round(time.Millisecond), want*9/10, latest)
						}
						if r.ended <= 0 || r.ended > latest+raceSlowdown*time.Second {
							t.Errorf("the connection or stream did not end within %v of the stall (%s)", latest+raceSlowdown*time.Second, r.endHow)
						}
						if rec.Complete || rec.Bytes >= r.sent {
							t.Errorf("the upstream saw %d of the %d bytes declared, complete %v: want an incomplete request", rec.Bytes, r.sent, rec.Complete)
						}
						if env.aborts(reason) < 1 {
							t.Errorf("mesh_body_aborts_total{%s} = 0, want the abort counted", reason)
						}
					})
				}
			}
			res := probe.stop()
			mem.check(t, 128<<20)
			t.Logf("well-behaved client during the slow bodies via %s: %s; %s", target, res, mem)
			res.check(t, 25)
		})
	}
}

// slowBodyResult is what the slow client experienced; times are since the
// body stalled (or began to trickle).
type slowBodyResult struct {
	status   int
	meshErr  string
	answered time.Duration
	ended    time.Duration // the connection closed (HTTP/1) or the stream ended (HTTP/2); 0: not seen
	endHow   string
	sent     int64 // the body length the request declared
}

// slowBodyH1 sends a POST declaring 100,000 bytes, sends 10, then stalls
// or trickles one byte every 100 ms, on a raw connection.
func slowBodyH1(t *testing.T, addr, id string, trickle bool) slowBodyResult {
	t.Helper()
	const declared = 100_000
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	head := "POST /upload HTTP/1.1\r\nHost: echo\r\n" + bodyTestID + ": " + id + "\r\nContent-Length: " + strconv.Itoa(declared) + "\r\n\r\n"
	if _, err := io.WriteString(c, head+"0123456789"); err != nil {
		t.Fatal(err)
	}
	stalled := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	if trickle {
		go func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := 10; i < declared; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := c.Write([]byte{'x'}); err != nil {
					return
				}
			}
		}()
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	r := slowBodyResult{status: resp.StatusCode, meshErr: resp.Header.Get(HeaderError), answered: time.Since(stalled), sent: declared}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !resp.Close {
		t.Errorf("the 408 did not announce Connection: close")
	}
	rest, err := io.Copy(io.Discard, br)
	switch {
	case err == nil:
		r.ended, r.endHow = time.Since(stalled), "connection closed (EOF)"
	case errors.Is(err, syscall.ECONNRESET):
		r.ended, r.endHow = time.Since(stalled), "connection reset"
	default:
		r.endHow = fmt.Sprintf("connection still open: %v", err)
	}
	if rest > 0 {
		t.Errorf("%d bytes after the answer, want none", rest)
	}
	return r
}

// slowBodyH2 sends a POST of unknown length over HTTP/2 (h2c), sends 10
// bytes, then stalls or trickles one byte every 100 ms.
func slowBodyH2(t *testing.T, addr, id string, trickle bool) slowBodyResult {
	t.Helper()
	c := h2cClient()
	defer c.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.Close()
	stalledc := make(chan time.Time, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		if _, err := pw.Write([]byte("0123456789")); err != nil {
			return
		}
		stalledc <- time.Now()
		if !trickle {
			return
		}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := pw.Write([]byte{'x'}); err != nil {
				return
			}
		}
	}()
	req, _ := http.NewRequestWithContext(testContext(t, 15*time.Second), http.MethodPost, "http://"+addr+"/upload", pr)
	req.Host = "echo"
	req.Header.Set(bodyTestID, id)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	stalled := <-stalledc
	r := slowBodyResult{status: resp.StatusCode, meshErr: resp.Header.Get(HeaderError), answered: time.Since(stalled), sent: 1 << 62}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The stream is over once the client's transport has stopped taking
	// the body: a write then fails instead of waiting for a reader.
	wrote := make(chan error, 1)
	go func() { _, err := pw.Write([]byte{'x'}); wrote <- err }()
	select {
	case err := <-wrote:
		if err != nil {
			r.ended, r.endHow = time.Since(stalled), "stream ended: request body closed ("+err.Error()+")"
		} else {
			r.endHow = "stream still taking the body"
		}
	case <-time.After(raceSlowdown * 2 * time.Second):
		r.endHow = "stream still open 2s after the answer"
		pr.CloseWithError(errors.New("test over"))
	}
	return r
}

// TestHardeningSlowReader (B6): a client that asks for 64 MiB and never
// reads. Once the sidecar's write has waited for it for the idle timeout,
// the HTTP/1 connection is closed or the HTTP/2 stream reset, and the
// upstream request is cancelled: the upstream's write fails well before
// 64 MiB. A well-behaved client on the same listener gets 100 % success.
func TestHardeningSlowReader(t *testing.T) {
	const size = 64 << 20
	for _, target := range []string{"inbound", "outbound"} {
		t.Run(target, func(t *testing.T) {
			env := startBodyEnv(t, target, config.ProtocolHTTP1, shortBodyLimits)
			mem := startHardMemory(t)
			probe := env.probe(t)
			for _, proto := range []string{"h1", "h2"} {
				t.Run(proto, func(t *testing.T) {
					id := target + "-reader-" + proto
					start := time.Now()
					var how string
					var rec bodyRecord
					if proto == "h1" {
						c := slowReaderH1(t, env.addr, id, size)
						rec = env.app.awaitEnd(t, id, raceSlowdown*10*time.Second)
						how = "reads after the upstream ended: " + drainHow(c)
					} else {
						how = slowReaderH2(t, env.addr, id, size)
						rec = env.app.awaitEnd(t, id, raceSlowdown*10*time.Second)
					}
					took := time.Since(start)
					t.Logf("%s via %s: the upstream stopped after writing %.1f MiB of %d MiB, %v after the request (%s); client side: %s; slow_reader aborts %v",
						proto, target, mib(uint64(rec.Wrote)), size>>20, took.Round(time.Millisecond), rec.WriteErr, how, env.aborts(reasonSlowReader))
					if rec.Wrote >= size || rec.WriteErr == "" {
						t.Errorf("the upstream wrote %d of %d bytes (%q): want its request cancelled", rec.Wrote, size, rec.WriteErr)
					}
					if env.aborts(reasonSlowReader) < 1 {
						t.Errorf("mesh_body_aborts_total{slow_reader} = 0, want the abort counted")
					}
				})
			}
			res := probe.stop()
			mem.check(t, 128<<20)
			t.Logf("well-behaved client during the slow readers via %s: %s; %s", target, res, mem)
			res.check(t, 25)
		})
	}
}

// slowReaderH1 asks for size bytes on a connection with a 4 KiB receive
// buffer, and reads nothing: the caller reads once the upstream has ended.
func slowReaderH1(t *testing.T, addr, id string, size int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: smallRcvBuf}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	req := fmt.Sprintf("GET /download?size=%d HTTP/1.1\r\nHost: echo\r\n%s: %s\r\n\r\n", size, bodyTestID, id)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c
}

// drainHow reads c to its end and says how it ended.
func drainHow(c net.Conn) string {
	_ = c.SetReadDeadline(time.Now().Add(raceSlowdown * 5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	switch {
	case err == nil:
		return fmt.Sprintf("%.1f MiB buffered, then EOF", mib(uint64(n)))
	case errors.Is(err, syscall.ECONNRESET):
		return fmt.Sprintf("%.1f MiB buffered, then reset", mib(uint64(n)))
	}
	return fmt.Sprintf("%.1f MiB, then %v", mib(uint64(n)), err)
}

func smallRcvBuf(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	return errors.Join(err, serr)
}

// slowReaderH2 opens one stream asking for size bytes and never grants
// flow-control window beyond the initial 64 KiB, while reading frames: the
// server's writes block on the window. It reports the RST_STREAM (or how
// the connection ended) and when, since the request.
func slowReaderH2(t *testing.T, addr, id string, size int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "echo"},
		{":path", fmt.Sprintf("/download?size=%d", size)}, {strings.ToLower(bodyTestID), id}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	start := time.Now()
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var data int
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return fmt.Sprintf("connection ended after %v and %d bytes of DATA: %v", time.Since(start).Round(time.Millisecond), data, err)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			data += len(f.Data())
		case *http2.RSTStreamFrame:
			return fmt.Sprintf("RST_STREAM %v after %v and %d bytes of DATA", f.ErrCode, time.Since(start).Round(time.Millisecond), data)
		case *http2.GoAwayFrame:
			return fmt.Sprintf("GOAWAY %v after %v and %d bytes of DATA", f.ErrCode, time.Since(start).Round(time.Millisecond), data)
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		}
	}
}

// TestHardeningBodyCap (B8): with a 4 MiB cap, an 8 MiB body is refused:
// declared (Content-Length) with 413 before anything is forwarded (the
// upstream sees no request); streamed (HTTP/1.1 chunked, HTTP/2 without a
// length, gRPC) with 413, or gRPC RESOURCE_EXHAUSTED (HTTP 200,
// trailers-only), once it crosses the cap, the upstream having seen at
// most 4 MiB and never the body's end. Inbound the cap is the sidecar's
// (limits.maxRequestBodyBytes), outbound the target service's
// (upstreams.echo.maxRequestBodyBytes). A well-behaved client on the same
// listener gets 100 % success meanwhile.
func TestHardeningBodyCap(t *testing.T) {
	const size = 8 << 20
	if c := config.Default().Limits.MaxRequestBodyBytes; c != 0 {
		t.Errorf("default maxRequestBodyBytes = %d, want 0 (no cap: the mesh streams; TestLargeBodiesStream)", c)
	}
	for _, target := range []string{"inbound", "outbound"} {
		t.Run(target, func(t *testing.T) {
			env := startBodyEnv(t, target, config.ProtocolGRPC, func(c *config.Config) {
				if target == "inbound" {
					c.Limits.MaxRequestBodyBytes = testBodyCap
				} else {
					u := c.Upstreams["echo"]
					u.MaxRequestBodyBytes = testBodyCap
					c.Upstreams["echo"] = u
				}
			})
			mem := startHardMemory(t)
			probe := env.probe(t)
			cases := []struct {
				name     string
				declared bool
				send     func(t *testing.T, addr, id string) capAnswer
			}{
				{"h1 declared", true, func(t *testing.T, addr, id string) capAnswer { return capH1(t, addr, id, size, false) }},
				{"h1 chunked", false, func(t *testing.T, addr, id string) capAnswer { return capH1(t, addr, id, size, true) }},
				{"h2 declared", true, func(t *testing.T, addr, id string) capAnswer { return capH2(t, addr, id, size, true, false) }},
				{"h2 streamed", false, func(t *testing.T, addr, id string) capAnswer { return capH2(t, addr, id, size, false, false) }},
				{"grpc", false, func(t *testing.T, addr, id string) capAnswer { return capH2(t, addr, id, size, false, true) }},
			}
			var declared []string
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					id := target + "-cap-" + strings.ReplaceAll(tc.name, " ", "-")
					a := tc.send(t, env.addr, id)
					var rec bodyRecord
					var reached bool
					if tc.declared {
						// Nothing may reach the upstream; looked at again
						// after the probe has run on (below).
						rec, reached = env.app.seen(id)
						declared = append(declared, id)
					} else {
						rec, reached = env.app.awaitEnd(t, id, 5*time.Second), true
					}
					t.Logf("%s via %s: %s in %v; upstream reached %v, saw %.2f MiB, complete %v (%s)",
						tc.name, target, a, a.took.Round(time.Millisecond), reached, mib(uint64(rec.Bytes)), rec.Complete, rec.ReadErr)
					if tc.name == "grpc" {
						if a.status != http.StatusOK || a.grpcStatus != strconv.Itoa(int(codes.ResourceExhausted)) {
							t.Errorf("gRPC answer: got HTTP %d grpc-status %q, want 200 and %d (RESOURCE_EXHAUSTED)", a.status, a.grpcStatus, codes.ResourceExhausted)
						}
					} else if a.status != http.StatusRequestEntityTooLarge {
						t.Errorf("answer: got %d, want 413", a.status)
					}
					if a.meshErr != ErrBodyTooLarge.Code {
						t.Errorf("x-mesh-error: got %q, want %q", a.meshErr, ErrBodyTooLarge.Code)
					}
					if tc.declared && reached {
						t.Errorf("the upstream saw the declared-oversize request (%+v), want nothing forwarded", rec)
					}
					if rec.Complete || rec.Bytes > testBodyCap {
						t.Errorf("the upstream saw %d bytes, complete %v: want at most the cap (%d) and never the end", rec.Bytes, rec.Complete, testBodyCap)
					}
				})
			}
			// Under the cap, bodies pass whole.
			t.Run("under the cap", func(t *testing.T) {
				id := target + "-cap-under"
				a := capH2(t, env.addr, id, testBodyCap, false, false)
				rec := env.app.awaitEnd(t, id, 5*time.Second)
				if a.status != http.StatusOK || !rec.Complete || rec.Bytes != testBodyCap {
					t.Errorf("a body of exactly the cap: got %s, upstream %+v; want 200 and the whole body", a, rec)
				}
			})
			t.Logf("%s: body_too_large aborts counted %v", target, env.aborts(reasonTooLarge))
			waitFor(t, 10*time.Second, "25 client requests", func() bool { return probe.sentSoFar() >= 25 })
			res := probe.stop()
			mem.check(t, 128<<20)
			for _, id := range declared {
				if rec, ok := env.app.seen(id); ok {
					t.Errorf("%s: the upstream saw the declared-oversize request (%+v), want nothing forwarded", id, rec)
				}
			}
			t.Logf("well-behaved client during the oversize bodies via %s: %s; %s", target, res, mem)
			res.check(t, 25)
		})
	}
}

// capAnswer is what a client sending an oversize body was answered.
type capAnswer struct {
	status     int
	meshErr    string
	grpcStatus string
	took       time.Duration
}

func (a capAnswer) String() string {
	s := fmt.Sprintf("%d %s=%q", a.status, HeaderError, a.meshErr)
	if a.grpcStatus != "" {
		s += " grpc-status=" + a.grpcStatus
	}
	return s
}

// capH1 sends size bytes, declared or chunked, on a raw HTTP/1.1
// connection while reading the answer.
func capH1(t *testing.T, addr, id string, size int, chunked bool) capAnswer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	framing := "Content-Length: " + strconv.Itoa(size)
	if chunked {
		framing = "Transfer-Encoding: chunked"
	}
	start := time.Now()
	if _, err := io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: echo\r\n"+bodyTestID+": "+id+"\r\n"+framing+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	go func() {
		chunk := bytes.Repeat([]byte{'b'}, 64<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			var err error
			if chunked {
				_, err = fmt.Fprintf(c, "%x\r\n%s\r\n", len(chunk), chunk)
			} else {
				_, err = c.Write(chunk)
			}
			if err != nil {
				return // the sidecar closed the connection
			}
		}
		if chunked {
			_, _ = io.WriteString(c, "0\r\n\r\n")
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	if !resp.Close {
		t.Errorf("the answer did not announce Connection: close")
	}
	return capAnswer{status: resp.StatusCode, meshErr: resp.Header.Get(HeaderError), took: time.Since(start)}
}

// capH2 sends size bytes over h2c, with a Content-Length or without; as
// gRPC, one message of size bytes with the gRPC framing.
func capH2(t *testing.T, addr, id string, size int, declared, grpcCall bool) capAnswer {
	t.Helper()
	c := h2cClient()
	defer c.CloseIdleConnections()
	body := io.LimitReader(zeros{}, int64(size)) // no length: streamed
	if declared {
		body = bytes.NewReader(make([]byte, size))
	}
	if grpcCall {
		var prefix [5]byte
		binary.BigEndian.PutUint32(prefix[1:], uint32(size))
		body = io.MultiReader(bytes.NewReader(prefix[:]), body)
	}
	req, _ := http.NewRequestWithContext(testContext(t, 20*time.Second), http.MethodPost, "http://"+addr+"/upload", body)
	req.Host = "echo"
	req.Header.Set(bodyTestID, id)
	if grpcCall {
		req.URL.Path = "/inventory.Inventory/GetStock"
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	a := capAnswer{status: resp.StatusCode, meshErr: resp.Header.Get(HeaderError), took: time.Since(start)}
	if grpcCall {
		a.grpcStatus = resp.Header.Get("Grpc-Status")
		if a.grpcStatus == "" {
			a.grpcStatus = resp.Trailer.Get("Grpc-Status")
		}
	}
	return a
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHardeningBodyCapGRPCClient: a grpc-go client sending one 8 MiB
// message through the outbound listener, with the service's cap at 4 MiB,
// gets RESOURCE_EXHAUSTED from the mesh, and the upstream sees at most the
// cap and never the end.
func TestHardeningBodyCapGRPCClient(t *testing.T) {
	env := startBodyEnv(t, "outbound", config.ProtocolGRPC, func(c *config.Config) {
		u := c.Upstreams["echo"]
		u.MaxRequestBodyBytes = testBodyCap
		c.Upstreams["echo"] = u
	})
	cc, err := grpc.NewClient(env.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("echo"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 20*time.Second)
	id := "grpc-go-8MiB"
	ctx = metadata.AppendToOutgoingContext(ctx, strings.ToLower(bodyTestID), id)
	_, err = inventorypb.NewInventoryClient(cc).GetStock(ctx, &inventorypb.GetStockRequest{Sku: strings.Repeat("s", 8<<20)})
	rec := env.app.awaitEnd(t, id, 5*time.Second)
	t.Logf("grpc-go client: %v; upstream saw %.2f MiB, complete %v (%s)", err, mib(uint64(rec.Bytes)), rec.Complete, rec.ReadErr)
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("status: got %v, want RESOURCE_EXHAUSTED", err)
	}
	if rec.Complete || rec.Bytes > testBodyCap {
		t.Errorf("the upstream saw %d bytes, complete %v: want at most %d and never the end", rec.Bytes, rec.Complete, testBodyCap)
	}
}

// --- The guard in isolation ----------------------------------------------

// benchBody is a request body that can be rewound without allocating.
type benchBody struct {
	data []byte
	off  int
}

func (b *benchBody) Read(p []byte) (int, error) {
	if b.off >= len(b.data) {
		return 0, io.EOF
	}
	n := copy(p, b.data[b.off:])
	b.off += n
	return n, nil
}

func (b *benchBody) Close() error { return nil }

// benchWriter is a ResponseWriter that discards, with a reusable header.
type benchWriter struct{ h http.Header }

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *benchWriter) WriteHeader(int)             {}

// BenchmarkBodyGuard measures what the guard adds to a request: the same
// POST of 13 bytes, answered with 13 bytes, through a handler that reads
// the body, without and with guardBodies around it. The difference is the
// guard's cost per request (target: < 1 µs and 1 allocation).
func BenchmarkBodyGuard(b *testing.B) {
	s := &Sidecar{m: newMetrics()}
	cfg := testConfig("bench", "127.0.0.1:1", config.ProtocolHTTP1)
	s.cfg.Store(cfg)
	ew := &errorWriter{log: testLogger(), metrics: s.m, direction: "inbound"}
	var scratch [64]byte
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := r.Body.Read(scratch[:]); err != nil {
				break
			}
		}
		_, _ = w.Write([]byte("Hello, World!"))
	})
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{
		{"bare", inner},
		{"guarded", s.guardBodies(ew, "inbound", inner)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			body := &benchBody{data: []byte("hello, world!")}
			req := httptest.NewRequest(http.MethodPost, "http://bench/", nil)
			req.ContentLength = int64(len(body.data))
			w := &benchWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				body.off = 0
				req.Body = body
				tc.h.ServeHTTP(w, req)
			}
		})
	}
}

// TestBodyGuardUnit drives one guard directly: reading to the end passes
// every byte; a read past the cap stops at the cap; the watchdog stops
// when no request is in flight.
func TestBodyGuardUnit(t *testing.T) {
	s := &Sidecar{m: newMetrics()}
	cfg := testConfig("unit", "127.0.0.1:1", config.ProtocolHTTP1)
	shortBodyLimits(cfg)
	cfg.Limits.MaxRequestBodyBytes = 10
	s.cfg.Store(cfg)
	ew := &errorWriter{log: testLogger(), metrics: s.m, direction: "inbound"}
	var got []byte
	var readErr error
	h := s.guardBodies(ew, "inbound", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, readErr = io.ReadAll(r.Body)
	}))
	for _, tc := range []struct {
		body    string
		want    string
		wantErr *Error
	}{
		{"0123456789", "0123456789", nil},
		{"0123456789A", "0123456789", ErrBodyTooLarge},
	} {
		req := httptest.NewRequest(http.MethodPost, "http://unit/", io.NopCloser(strings.NewReader(tc.body)))
		req.ContentLength = -1
		h.ServeHTTP(httptest.NewRecorder(), req)
		var me *Error
		if string(got) != tc.want || (tc.wantErr == nil) != (readErr == nil) || (tc.wantErr != nil && (!errors.As(readErr, &me) || me.Code != tc.wantErr.Code)) {
			t.Errorf("body %q under a 10-byte cap: read %q, %v; want %q, %v", tc.body, got, readErr, tc.want, tc.wantErr)
		}
	}
	// Declared over the cap: 413 without calling the handler.
	called := false
	h2 := s.guardBodies(ew, "inbound", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	req := httptest.NewRequest(http.MethodPost, "http://unit/", strings.NewReader("0123456789AB"))
	rr := httptest.NewRecorder()
	h2.ServeHTTP(rr, req)
	if rr.Code != http.StatusRequestEntityTooLarge || called {
		t.Errorf("declared 12 bytes under a 10-byte cap: got %d, handler called %v; want 413, not called", rr.Code, called)
	}
	// The watchdog goroutine runs only while requests are in flight.
	w := newBodyWatch("inbound", cfg.Limits, s.m)
	g := &bodyGuard{watch: w}
	w.add(g)
	if !w.running.Load() {
		t.Errorf("watchdog not running with a request in flight")
	}
	w.remove(g)
	waitFor(t, 5*time.Second, "the watchdog to stop once idle", func() bool { return !w.running.Load() })
}
