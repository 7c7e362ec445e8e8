package echoserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/causeway-mesh/causeway/examples/echo/echoserver"
)

const instance = "echo-test"

// testTimeout bounds every test.
const testTimeout = 10 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newServer starts the handler on a loopback listener that speaks HTTP/1.1
// and, when h2c is set, cleartext HTTP/2 too. It returns the base URL and a
// client speaking the matching protocol.
func newServer(t *testing.T, h2c bool) (string, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(echoserver.Handler(instance))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(h2c)
	srv.Start()
	t.Cleanup(srv.Close)

	tr := &http.Transport{Protocols: new(http.Protocols)}
	if h2c {
		tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return srv.URL, &http.Client{Transport: tr}
}

func do(t *testing.T, c *http.Client, method, url string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if got := resp.Header.Get(echoserver.InstanceHeader); got != instance {
		t.Errorf("%s %s: %s = %q, want %q", method, url, echoserver.InstanceHeader, got, instance)
	}
	return resp
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestEcho(t *testing.T) {
	big := new(bytes.Buffer)
	if _, err := io.Copy(big, echoserver.PatternReader(3<<20+17)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		h2c       bool
		method    string
		path      string
		body      []byte
		chunked   bool // hide the length so the body is streamed in chunks
		wantProto string
	}{
		{name: "get root", method: http.MethodGet, path: "/", wantProto: "HTTP/1.1"},
		{name: "get other path", method: http.MethodGet, path: "/a/b?x=1", wantProto: "HTTP/1.1"},
		{name: "post small", method: http.MethodPost, path: "/upload", body: []byte("hello, causeway"), wantProto: "HTTP/1.1"},
		{name: "put large chunked", method: http.MethodPut, path: "/big", body: big.Bytes(), chunked: true, wantProto: "HTTP/1.1"},
		{name: "h2c get", h2c: true, method: http.MethodGet, path: "/h2", wantProto: "HTTP/2.0"},
		{name: "h2c post large", h2c: true, method: http.MethodPost, path: "/h2/big", body: big.Bytes(), chunked: true, wantProto: "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, c := newServer(t, tt.h2c)
			var body io.Reader
			if tt.body != nil {
				body = bytes.NewReader(tt.body)
				if tt.chunked {
					body = io.MultiReader(body) // not a known-length type
				}
			}
			req, err := http.NewRequestWithContext(testContext(t), tt.method, base+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Test", "a")
			req.Header.Add("X-Test", "b")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var got echoserver.EchoResponse
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			wantPath, wantQuery, _ := strings.Cut(tt.path, "?")
			if got.Instance != instance || got.Method != tt.method || got.Path != wantPath ||
				got.Query != wantQuery || got.Proto != tt.wantProto || got.Host != strings.TrimPrefix(base, "http://") {
				t.Errorf("response = %+v", got)
			}
			if got.Headers["X-Test"] != "a, b" {
				t.Errorf("headers[X-Test] = %q, want %q", got.Headers["X-Test"], "a, b")
			}
			if got.BodyBytes != int64(len(tt.body)) || got.BodySHA256 != sha256Hex(tt.body) {
				t.Errorf("body = %d bytes sha %s, want %d bytes sha %s",
					got.BodyBytes, got.BodySHA256, len(tt.body), sha256Hex(tt.body))
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	base, c := newServer(t, false)
	resp := do(t, c, http.MethodGet, base+"/healthz", nil)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || string(b) != "ok" {
		t.Errorf("got %d %q, want 200 \"ok\"", resp.StatusCode, b)
	}
}

func TestStatus(t *testing.T) {
	base, c := newServer(t, false)
	tests := []struct {
		path string
		want int
	}{
		{"/status/200", 200},
		{"/status/201", 201},
		{"/status/204", 204},
		{"/status/304", 304},
		{"/status/404", 404},
		{"/status/503", 503},
		{"/status/599", 599},
		{"/status/abc", 400},
		{"/status/42", 400},
		{"/status/600", 400},
	}
	for _, tt := range tests {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(method+tt.path, func(t *testing.T) {
				resp := do(t, c, method, base+tt.path, strings.NewReader("ignored"))
				if resp.StatusCode != tt.want {
					t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
				}
			})
		}
	}
}

func TestDownload(t *testing.T) {
	tests := []struct {
		query      string
		wantStatus int
		wantBytes  int64
	}{
		{"", 200, echoserver.DefaultDownloadBytes},
		{"?bytes=0", 200, 0},
		{"?bytes=1", 200, 1},
		{"?bytes=63", 200, 63},
		{"?bytes=64", 200, 64},
		{"?bytes=100000", 200, 100000},
		{"?bytes=10485761", 200, 10<<20 + 1},
		{"?bytes=-1", 400, 0},
		{"?bytes=lots", 400, 0},
	}
	for _, h2c := range []bool{false, true} {
		base, c := newServer(t, h2c)
		for _, tt := range tests {
			t.Run(strconv.FormatBool(h2c)+tt.query, func(t *testing.T) {
				resp := do(t, c, http.MethodGet, base+"/download"+tt.query, nil)
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
				}
				if tt.wantStatus != http.StatusOK {
					return
				}
				if resp.ContentLength != tt.wantBytes {
					t.Errorf("Content-Length = %d, want %d", resp.ContentLength, tt.wantBytes)
				}
				gotSum, wantSum := sha256.New(), sha256.New()
				n, err := io.Copy(gotSum, resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(wantSum, echoserver.PatternReader(tt.wantBytes)); err != nil {
					t.Fatal(err)
				}
				if n != tt.wantBytes || !bytes.Equal(gotSum.Sum(nil), wantSum.Sum(nil)) {
					t.Errorf("read %d bytes, want %d of the pattern", n, tt.wantBytes)
				}
			})
		}
	}
}

func TestPatternReader(t *testing.T) {
	b, err := io.ReadAll(echoserver.PatternReader(130))
	if err != nil {
		t.Fatal(err)
	}
	line := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-\n"
	if want := line + line + "ab"; string(b) != want {
		t.Errorf("pattern = %q, want %q", b, want)
	}
	// Reading in odd-sized pieces must give the same bytes.
	r := echoserver.PatternReader(130)
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, b) {
		t.Errorf("piecewise read = %q, want %q", got, b)
	}
}

func TestTrailers(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		t.Run("h2c="+strconv.FormatBool(h2c), func(t *testing.T) {
			base, c := newServer(t, h2c)
			resp := do(t, c, http.MethodGet, base+"/trailers", nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d", resp.StatusCode)
			}
			if _, ok := resp.Trailer[echoserver.ChecksumTrailer]; !ok {
				t.Errorf("trailer %s not announced; Trailer = %v", echoserver.ChecksumTrailer, resp.Trailer)
			}
			if got := resp.Trailer.Get(echoserver.ChecksumTrailer); got != "" {
				t.Errorf("trailer value %q visible before the body was read", got)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if len(body) == 0 || !strings.Contains(string(body), instance) {
				t.Errorf("body = %q", body)
			}
			if got, want := resp.Trailer.Get(echoserver.ChecksumTrailer), sha256Hex(body); got != want {
				t.Errorf("trailer %s = %q, want %q", echoserver.ChecksumTrailer, got, want)
			}
		})
	}
}

// readEvent reads one server-sent event (up to its blank line).
func readEvent(r *bufio.Reader) (map[string]string, error) {
	ev := map[string]string{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return ev, nil
		}
		k, v, _ := strings.Cut(line, ": ")
		ev[k] = v
	}
}

func TestSSE(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		t.Run("h2c="+strconv.FormatBool(h2c), func(t *testing.T) {
			base, c := newServer(t, h2c)
			resp := do(t, c, http.MethodGet, base+"/sse?n=4&interval=1ms", nil)
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("Content-Type = %q", ct)
			}
			r := bufio.NewReader(resp.Body)
			for seq := 1; seq <= 4; seq++ {
				ev, err := readEvent(r)
				if err != nil {
					t.Fatalf("event %d: %v", seq, err)
				}
				var data echoserver.SSEEvent
				if err := json.Unmarshal([]byte(ev["data"]), &data); err != nil {
					t.Fatalf("event %d data %q: %v", seq, ev["data"], err)
				}
				if ev["id"] != strconv.Itoa(seq) || ev["event"] != "tick" ||
					data != (echoserver.SSEEvent{Instance: instance, Seq: seq, Of: 4}) {
					t.Errorf("event %d = %v", seq, ev)
				}
			}
			if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
				t.Errorf("after the last event: %q, %v; want EOF", rest, err)
			}
		})
	}
}

// TestSSEFlushes checks that each event is flushed on its own: with an
// interval far longer than the test timeout, the first event can only
// arrive if it was flushed before the handler started waiting.
func TestSSEFlushes(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		t.Run("h2c="+strconv.FormatBool(h2c), func(t *testing.T) {
			base, c := newServer(t, h2c)
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?n=2&interval=1h", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			ev, err := readEvent(bufio.NewReader(resp.Body))
			if err != nil || ev["id"] != "1" {
				t.Fatalf("first event = %v, %v", ev, err)
			}
			// Cancelling the request must end the handler's wait, so that
			// the server's Close in Cleanup returns.
			cancel()
		})
	}
}

func TestSSEFlushesWithRecorder(t *testing.T) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(testContext(t), http.MethodGet, "/sse?n=1&interval=0s", nil)
	echoserver.Handler(instance).ServeHTTP(rec, req)
	if !rec.Flushed {
		t.Error("response was not flushed")
	}
	if !strings.Contains(rec.Body.String(), `"seq":1`) {
		t.Errorf("body = %q", rec.Body.String())
	}
}

func TestSSEBadParams(t *testing.T) {
	base, c := newServer(t, false)
	for _, q := range []string{"n=-1", "n=x", "n=10001", "interval=soon", "interval=-1s"} {
		resp := do(t, c, http.MethodGet, base+"/sse?"+q, nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status = %d, want 400", q, resp.StatusCode)
		}
	}
}

func TestWebSocket(t *testing.T) {
	base, _ := newServer(t, false)
	cfg, err := websocket.NewConfig("ws"+strings.TrimPrefix(base, "http")+"/ws", base)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	ws, err := cfg.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	deadline, _ := ctx.Deadline()
	if err := ws.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}

	for _, text := range []string{"hello", "", strings.Repeat("x", 70000)} {
		if err := websocket.Message.Send(ws, text); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != text {
			t.Errorf("text echo = %.20q (len %d), want %.20q (len %d)", got, len(got), text, len(text))
		}
	}

	bin := []byte{0, 1, 2, 255}
	if err := websocket.Message.Send(ws, bin); err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := websocket.Message.Receive(ws, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bin) {
		t.Errorf("binary echo = %v, want %v", got, bin)
	}
}

// TestWebSocketWithoutOrigin checks that non-browser clients, which may send
// no Origin header, are accepted.
func TestWebSocketWithoutOrigin(t *testing.T) {
	base, c := newServer(t, false)
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, base+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d, want 101", resp.StatusCode)
	}
	// The accept key for the RFC 6455 sample nonce.
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("Sec-WebSocket-Accept = %q", got)
	}
}

func TestWebSocketRequiresUpgrade(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		base, c := newServer(t, h2c)
		resp := do(t, c, http.MethodGet, base+"/ws", nil)
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Errorf("h2c=%v: status = %d, want 426", h2c, resp.StatusCode)
		}
	}
}
