package proxy

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
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/proxy/config"
)

func TestCleanQuery(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"a=1&b=2", "a=1&b=2"},
		{"a=%20b", "a=%20b"},
		{"a=1;b=2", ""},              // the only parameter holds a ';': dropped
		{"a=1&b=2;c=3", "a=1"},       // the parameter with ';' is dropped
		{"a=%zz&b=2", "b=2"},         // a bad escape is dropped
		{"b=2&a=%", "b=2"},           // a truncated escape is dropped
		{"x=%41%42", "x=%41%42"},     // valid escapes are kept as sent
		{"z=1&a=2&b=%zz", "a=2&z=1"}, // re-encoded queries are sorted
		{"q=hello+world", "q=hello+world"},
	} {
		if got := cleanQuery(tc.in); got != tc.want {
			t.Errorf("cleanQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRemoveHopByHop(t *testing.T) {
	h := http.Header{
		"Connection":        {"keep-alive, x-secret, X-Mesh-Lamport", "close"},
		"Keep-Alive":        {"timeout=5"},
		"Te":                {"trailers"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"h2c"},
		"X-Secret":          {"s"},
		"X-Mesh-Lamport":    {"7"},
		"Accept":            {"*/*"},
	}
	keep := func(name string) bool { return name == "X-Mesh-Lamport" }
	removeHopByHop(h, keep)
	want := http.Header{"X-Mesh-Lamport": {"7"}, "Accept": {"*/*"}}
	if len(h) != len(want) || h.Get("Accept") != "*/*" || h.Get("X-Mesh-Lamport") != "7" {
		t.Errorf("after removal: %v, want %v", h, want)
	}
}

func TestIsEventStream(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/event-stream":                true,
		"TEXT/Event-Stream; charset=utf-8": true,
		"text/event-streams":               false,
		"text/plain":                       false,
		"":                                 false,
	} {
		h := http.Header{}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		if got := isEventStream(h); got != want {
			t.Errorf("isEventStream(%q) = %v, want %v", ct, got, want)
		}
	}
}

// The app's 103 Early Hints reach the client before the final response,
// through both sidecars of the mesh hop.
func TestForwarderRelaysEarlyHints(t *testing.T) {
	app := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "done")
	}))
	m := startMesh(t, "hints", app, config.ProtocolHTTP1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var hints []string
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, h.Get("Link"))
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+m.client.addr("outbound")+"/", nil)
	req.Host = "hints"
	resp, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "done" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if len(hints) != 1 || hints[0] != "</style.css>; rel=preload" {
		t.Errorf("early hints seen by the client: %q", hints)
	}
	if resp.Header.Get("Link") != "" {
		t.Errorf("the hint's header leaked into the final response: %v", resp.Header)
	}
}

// An app that promises more body than it sends: the client's response is
// aborted, never completed short.
func TestForwarderAbortsTruncatedBody(t *testing.T) {
	app := startRawApp(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
	})
	s := startSidecar(t, testConfig("short", app, config.ProtocolHTTP1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.addr("inbound")+"/", nil)
	resp, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %q with error %v, want an aborted body (unexpected EOF)", body, err)
	}
	if !strings.HasPrefix("only ten b", string(body)) {
		t.Errorf("body %q", body)
	}
}

// An upstream's answer to a request whose body the client never finished
// is not relayed: the client gets the body's error.
func TestForwarderAnswersTheBodyErrorOverTheUpstreams(t *testing.T) {
	bodyErr := errors.New("client body cut off")
	var handled error
	f := &forwarder{
		transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
		}),
		rewrite:      func(out, _ *http.Request) { out.URL.Scheme, out.URL.Host = "http", "app" },
		errorHandler: func(w http.ResponseWriter, _ *http.Request, err error) { handled = err; w.WriteHeader(408) },
		bodyFailed:   func(*http.Request) error { return bodyErr },
	}
	req := httptest.NewRequest("POST", "http://svc/upload", strings.NewReader("partial"))
	rec := httptest.NewRecorder()
	f.ServeHTTP(rec, req)
	if !errors.Is(handled, bodyErr) || rec.Code != 408 {
		t.Errorf("status %d, error handled %v; want 408 and the body's error", rec.Code, handled)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
