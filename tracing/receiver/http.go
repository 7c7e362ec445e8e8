package receiver

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// MaxBodyBytes bounds one OTLP/HTTP request body after decompression.
const MaxBodyBytes = 16 << 20

// Handler serves POST /v1/traces and the query API (see the package
// documentation). Mount it at the root of a mux or server.
func (r *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveOTLP)
	mux.HandleFunc("GET /api/v1/traces", r.serveList)
	mux.HandleFunc("GET /api/v1/traces/{traceID}", r.serveTrace)
	mux.HandleFunc("GET /api/v1/traces/{traceID}/causal", r.serveCausal)
	return mux
}

func (r *Receiver) serveOTLP(w http.ResponseWriter, req *http.Request) {
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if ct != "application/x-protobuf" && ct != "application/json" {
		httpError(w, http.StatusUnsupportedMediaType, "content type must be application/x-protobuf or application/json")
		return
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, MaxBodyBytes)
	switch req.Header.Get("Content-Encoding") {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			httpError(w, http.StatusBadRequest, "bad gzip body: "+err.Error())
			return
		}
		defer zr.Close()
		body = zr
	default:
		httpError(w, http.StatusUnsupportedMediaType, "content encoding must be gzip or none")
		return
	}
	data, err := io.ReadAll(io.LimitReader(body, MaxBodyBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpError(w, http.StatusRequestEntityTooLarge, "body too large")
			return
		}
		httpError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	if len(data) > MaxBodyBytes {
		httpError(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if ct == "application/json" {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, &msg)
	} else {
		err = proto.Unmarshal(data, &msg)
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, "decode ExportTraceServiceRequest: "+err.Error())
		return
	}
	r.Ingest(&msg)
	resp := &coltracepb.ExportTraceServiceResponse{}
	var out []byte
	if ct == "application/json" {
		out, err = protojson.Marshal(resp)
	} else {
		out, err = proto.Marshal(resp)
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(out)
}

func (r *Receiver) serveList(w http.ResponseWriter, req *http.Request) {
	limit := 50
	if v := req.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: want an integer in [1,1000]", v))
			return
		}
		limit = n
	}
	writeJSON(w, map[string]any{"traces": r.Traces(limit)})
}

func (r *Receiver) serveTrace(w http.ResponseWriter, req *http.Request) {
	id, ok := traceID(w, req)
	if !ok {
		return
	}
	spans, found := r.Trace(id)
	if !found {
		httpError(w, http.StatusNotFound, "trace "+id+" not found")
		return
	}
	writeJSON(w, map[string]any{"traceId": id, "spans": spans})
}

func (r *Receiver) serveCausal(w http.ResponseWriter, req *http.Request) {
	id, ok := traceID(w, req)
	if !ok {
		return
	}
	res, found := r.Causal(id)
	if !found {
		httpError(w, http.StatusNotFound, "trace "+id+" not found")
		return
	}
	writeJSON(w, res)
}

// traceID validates the {traceID} path value: 32 lower-case hex digits.
func traceID(w http.ResponseWriter, req *http.Request) (string, bool) {
	id := req.PathValue("traceID")
	if len(id) != 32 {
		httpError(w, http.StatusBadRequest, "trace id must be 32 hex digits")
		return "", false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			httpError(w, http.StatusBadRequest, "trace id must be 32 lower-case hex digits")
			return "", false
		}
	}
	return id, true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
