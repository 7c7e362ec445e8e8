// Package echoserver implements the HTTP handler of the Causeway echo example.
//
// The handler reports which instance answered each request, so that tests and
// demos can observe the sidecar's load balancing, retries and protocol
// handling. It is importable so that tests can run it in-process; the echo
// program in the parent directory only wires flags and an http.Server around
// it.
//
// Endpoints (every response carries the header x-echo-instance):
//
//	GET  /healthz                      200 "ok"
//	GET  /download?bytes=N             N bytes of the PatternReader pattern (default 1024)
//	GET  /sse?n=N&interval=D           N server-sent events D apart (defaults 5, 100ms)
//	GET  /ws                           WebSocket echo (HTTP/1.1 only)
//	ANY  /status/CODE                  responds with status CODE (200-599)
//	ANY  /trailers                     a text body followed by the trailer x-checksum
//	ANY  /  (and every other path)     JSON description of the request (EchoResponse)
//
// A handler built by HandlerWithFailures also answers GET and PUT
// /fail-rate and fails a share of the other requests with 503 (see
// Failures).
package echoserver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/websocket"
)

// InstanceHeader is the response header that carries the instance name.
const InstanceHeader = "X-Echo-Instance"

// ChecksumTrailer is the trailer sent by /trailers: the lower-case hex
// SHA-256 of the response body.
const ChecksumTrailer = "X-Checksum"

// Defaults of the query parameters.
const (
	// DefaultDownloadBytes is the size /download sends when bytes is absent.
	DefaultDownloadBytes = 1024
	// DefaultSSEEvents is the number of events /sse sends when n is absent.
	DefaultSSEEvents = 5
	// DefaultSSEInterval is the delay between /sse events when interval is absent.
	DefaultSSEInterval = 100 * time.Millisecond
	// MaxSSEEvents caps the n parameter of /sse.
	MaxSSEEvents = 10000
)

// EchoResponse is the JSON body returned by the echo endpoint.
type EchoResponse struct {
	// Instance is the name of the instance that answered.
	Instance string `json:"instance"`
	// Method is the request method.
	Method string `json:"method"`
	// Path is the request's URL path.
	Path string `json:"path"`
	// Query is the raw query string, without the leading '?'.
	Query string `json:"query,omitempty"`
	// Proto is the protocol the request arrived with, e.g. "HTTP/1.1" or "HTTP/2.0".
	Proto string `json:"proto"`
	// Host is the request's Host header (or :authority).
	Host string `json:"host"`
	// Headers holds the request headers in canonical form; repeated values
	// are joined with ", ".
	Headers map[string]string `json:"headers"`
	// BodyBytes is the number of request body bytes read.
	BodyBytes int64 `json:"bodyBytes"`
	// BodySHA256 is the lower-case hex SHA-256 of the request body.
	BodySHA256 string `json:"bodySHA256"`
}

// SSEEvent is the JSON payload of each /sse event's data line.
type SSEEvent struct {
	// Instance is the name of the instance that sent the event.
	Instance string `json:"instance"`
	// Seq is the event number, starting at 1.
	Seq int `json:"seq"`
	// Of is the total number of events in the stream.
	Of int `json:"of"`
}

// Handler returns the echo handler for the instance called name.
func Handler(name string) http.Handler {
	return HandlerWithFailures(name, nil)
}

// HandlerWithFailures returns the echo handler for the instance called name
// that fails requests as failures says: GET /fail-rate reports its rate, PUT
// /fail-rate with a body such as "0.3" sets it, and that share of every
// other request except GET /healthz is answered 503 with the header
// X-Echo-Injected-Failure. A nil failures gives the plain Handler, without
// /fail-rate.
func HandlerWithFailures(name string, failures *Failures) http.Handler {
	h := &handler{name: name}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /download", h.download)
	mux.HandleFunc("GET /sse", h.sse)
	mux.HandleFunc("GET /ws", h.websocket)
	mux.HandleFunc("/status/{code}", h.status)
	mux.HandleFunc("/trailers", h.trailers)
	mux.HandleFunc("/", h.echo)
	var inner http.Handler = mux
	if failures != nil {
		inner = failures.wrap(mux)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(InstanceHeader, name)
		inner.ServeHTTP(w, r)
	})
}

type handler struct {
	name string
}

func (h *handler) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok")
}

// echo streams the request body through SHA-256 and describes the request.
func (h *handler) echo(w http.ResponseWriter, r *http.Request) {
	sum := sha256.New()
	n, err := io.Copy(sum, r.Body)
	if err != nil {
		slog.Debug("echo: reading request body", "err", err, "read", n)
		http.Error(w, "reading request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	headers := make(map[string]string, len(r.Header))
	for k, v := range r.Header {
		headers[k] = strings.Join(v, ", ")
	}
	writeJSON(w, http.StatusOK, EchoResponse{
		Instance:   h.name,
		Method:     r.Method,
		Path:       r.URL.Path,
		Query:      r.URL.RawQuery,
		Proto:      r.Proto,
		Host:       r.Host,
		Headers:    headers,
		BodyBytes:  n,
		BodySHA256: hex.EncodeToString(sum.Sum(nil)),
	})
}

// download streams a deterministic pattern without holding it in memory.
func (h *handler) download(w http.ResponseWriter, r *http.Request) {
	size := int64(DefaultDownloadBytes)
	if v := r.URL.Query().Get("bytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bytes must be a non-negative integer", http.StatusBadRequest)
			return
		}
		size = n
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	if r.Method == http.MethodHead {
		return
	}
	if n, err := io.Copy(w, PatternReader(size)); err != nil {
		slog.Debug("download: client went away", "err", err, "sent", n, "size", size)
	}
}

// sse sends n events, interval apart, flushing each one immediately.
func (h *handler) sse(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := DefaultSSEEvents
	if v := q.Get("n"); v != "" {
		i, err := strconv.Atoi(v)
		if err != nil || i < 0 || i > MaxSSEEvents {
			http.Error(w, fmt.Sprintf("n must be an integer in [0, %d]", MaxSSEEvents), http.StatusBadRequest)
			return
		}
		n = i
	}
	interval := DefaultSSEInterval
	if v := q.Get("interval"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			http.Error(w, "interval must be a non-negative duration such as 100ms", http.StatusBadRequest)
			return
		}
		interval = d
	}

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		slog.Warn("sse: response writer cannot flush", "err", err)
		return
	}

	var timer *time.Timer
	for seq := 1; seq <= n; seq++ {
		if seq > 1 {
			if timer == nil {
				timer = time.NewTimer(interval)
				defer timer.Stop()
			} else {
				timer.Reset(interval)
			}
			select {
			case <-r.Context().Done():
				return
			case <-timer.C:
			}
		}
		data, _ := json.Marshal(SSEEvent{Instance: h.name, Seq: seq, Of: n})
		if _, err := fmt.Fprintf(w, "id: %d\nevent: tick\ndata: %s\n\n", seq, data); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// websocket echoes every WebSocket message back with its original frame
// type (text or binary). Any Origin is accepted: this is a test service.
func (h *handler) websocket(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "expected an HTTP/1.1 WebSocket upgrade", http.StatusUpgradeRequired)
		return
	}
	websocket.Server{
		Handshake: func(*websocket.Config, *http.Request) error { return nil },
		Handler:   echoWebSocket,
	}.ServeHTTP(w, r)
}

// wsMessage is one WebSocket message together with its frame type.
type wsMessage struct {
	data        []byte
	payloadType byte
}

// rawCodec keeps each message's frame type so that echoes match the input.
var rawCodec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		m := v.(*wsMessage)
		return m.data, m.payloadType, nil
	},
	Unmarshal: func(data []byte, payloadType byte, v any) error {
		m := v.(*wsMessage)
		m.data, m.payloadType = data, payloadType
		return nil
	},
}

func echoWebSocket(ws *websocket.Conn) {
	for {
		var m wsMessage
		if err := rawCodec.Receive(ws, &m); err != nil {
			if !errors.Is(err, io.EOF) {
				slog.Debug("ws: receive", "err", err)
			}
			return
		}
		if err := rawCodec.Send(ws, &m); err != nil {
			slog.Debug("ws: send", "err", err)
			return
		}
	}
}

// status answers with the status code named in the path.
func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || code < 200 || code > 599 {
		http.Error(w, "status code must be an integer in [200, 599]", http.StatusBadRequest)
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	if code == http.StatusNoContent || code == http.StatusNotModified {
		w.WriteHeader(code)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "%d %s\n", code, http.StatusText(code))
}

// trailers writes a short body and then the trailer x-checksum holding the
// SHA-256 of that body.
func (h *handler) trailers(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Trailer", ChecksumTrailer)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)

	sum := sha256.New()
	out := io.MultiWriter(w, sum)
	for i := 1; i <= 3; i++ {
		if _, err := fmt.Fprintf(out, "line %d from %s\n", i, h.name); err != nil {
			return
		}
	}
	// Send the body before the trailers so they truly arrive after it.
	_ = http.NewResponseController(w).Flush()
	w.Header().Set(ChecksumTrailer, hex.EncodeToString(sum.Sum(nil)))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("writing JSON response", "err", err)
	}
}
