package bootstrap

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Path is where Handler is mounted.
const Path = "/api/v1/bootstrap-tokens"

// maxBody bounds a request body.
const maxBody = 64 << 10

// CreateRequest is the body of POST Path. TTL is a Go duration ("1h",
// "30m"); empty means DefaultTTL. Namespace defaults to "default".
type CreateRequest struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace,omitempty"`
	TTL       string `json:"ttl,omitempty"`
	SingleUse bool   `json:"singleUse,omitempty"`
}

// CreateResponse is the answer to POST Path (201). Token is shown once.
type CreateResponse struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Service   string    `json:"service"`
	Namespace string    `json:"namespace"`
	ExpiresAt time.Time `json:"expiresAt"`
	SingleUse bool      `json:"singleUse"`
}

// NewHandler answers POST Path with a new token from store. Every request
// needs "Authorization: Bearer APITOKEN" (compared in constant time), the
// same token as the rest of the control-plane API, so the handler is safe
// wherever it is mounted. Errors are JSON {"code","message"} with codes
// BadRequest (400), Unauthorized (401), MethodNotAllowed (405),
// PayloadTooLarge (413) and Internal (500), like the rest of the API.
// Internal errors are logged to log (slog.Default when nil); tokens never are.
func NewHandler(store *Store, apiToken string, log *slog.Logger) (http.Handler, error) {
	if log == nil {
		log = slog.Default()
	}
	if store == nil {
		return nil, errors.New("bootstrap handler: nil store")
	}
	if apiToken == "" {
		return nil, errors.New("bootstrap handler: empty API token")
	}
	return &handler{store: store, apiToken: sha256.Sum256([]byte(apiToken)), log: log}, nil
}

type handler struct {
	store    *Store
	apiToken [sha256.Size]byte
	log      *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="causeway"`)
		writeError(w, http.StatusUnauthorized, "Unauthorized", "a valid bearer token is required")
		return
	}
	if r.URL.Path != Path {
		writeError(w, http.StatusNotFound, "NotFound", "no such path")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" is not allowed; use POST")
		return
	}
	var req CreateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "PayloadTooLarge", fmt.Sprintf("body is over %d bytes", maxBody))
			return
		}
		writeError(w, http.StatusBadRequest, "BadRequest", "body: "+err.Error())
		return
	}
	if err := dec.Decode(new(json.RawMessage)); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "BadRequest", "body: more than one JSON value")
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("ttl: %q is not a duration such as \"1h\"", req.TTL))
			return
		}
		if d <= 0 {
			writeError(w, http.StatusBadRequest, "BadRequest", "ttl: must be positive")
			return
		}
		ttl = d
	}
	token, info, err := h.store.Create(Scope{Service: req.Service, Namespace: req.Namespace}, ttl, req.SingleUse)
	if err != nil {
		if errors.Is(err, ErrBadRequest) {
			writeError(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		h.log.Error("bootstrap token not created", "service", req.Service, "namespace", req.Namespace, "error", err)
		writeError(w, http.StatusInternalServerError, "Internal", "the token could not be stored")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, CreateResponse{
		Token: token, ID: info.ID, Service: info.Scope.Service, Namespace: info.Scope.Namespace,
		ExpiresAt: info.ExpiresAt, SingleUse: info.SingleUse,
	})
}

func (h *handler) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], h.apiToken[:]) == 1
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"code": code, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
