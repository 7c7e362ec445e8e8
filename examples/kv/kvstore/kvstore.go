// Package kvstore implements the HTTP handler of the Causeway key-value
// example: an in-memory map plus an append-only history of every write it
// accepted, so that a test can check afterwards which instance accepted
// which write under which fencing epoch.
//
// The store does not replicate. A client that wants a value on several
// instances writes it through the mesh (PUT to its sidecar's outbound port
// with Host: kv), and the mesh decides which instance reachable from that
// side accepts it; the history records where it landed.
//
// Endpoints:
//
//	PUT  /kv/{key}       body = value (at most MaxValueBytes); 200 with the
//	                     accepted Write as JSON; 400 for a bad key, value or
//	                     x-mesh-epoch header
//	GET  /kv/{key}       200 with the value as text/plain, 404 when absent
//	GET  /kv             200, JSON array of the keys, sorted
//	GET  /kv?dump=1      200, JSON object of every key and its value
//	GET  /history        200, JSON array of every accepted Write, in order
//	GET  /healthz        200 "ok"
//
// Every response carries the header x-kv-node with the instance name.
// Values are opaque; a client that wants to find its writes in the history
// makes each value unique (the netns test tier writes "NODE-SEQ").
package kvstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header names the handler reads and writes.
const (
	// EpochHeader is the fencing epoch the mesh admitted a write under
	// (PRODUCT.md, "Headers"); the store records it with the write.
	EpochHeader = "X-Mesh-Epoch"
	// NodeHeader is set on every response to the instance name.
	NodeHeader = "X-Kv-Node"
)

// Limits on what a client may store.
const (
	// MaxKeyBytes is the longest key accepted.
	MaxKeyBytes = 256
	// MaxValueBytes is the largest value accepted.
	MaxValueBytes = 64 << 10
)

// Write is one write the store accepted: the history's record.
type Write struct {
	// Seq numbers the instance's accepted writes from 1, in order.
	Seq uint64 `json:"seq"`
	// Key and Value are what was written.
	Key   string `json:"key"`
	Value string `json:"value"`
	// Epoch is the x-mesh-epoch the write arrived with; 0 when it arrived
	// without one (fencing off, or not through a sidecar).
	Epoch uint64 `json:"epoch"`
	// Node is the instance that accepted the write.
	Node string `json:"node"`
	// At is when the instance accepted it (its wall clock).
	At time.Time `json:"at"`
}

// Store is the in-memory state of one instance. The zero value is not
// usable; call New. Its methods are safe for concurrent use.
type Store struct {
	node string
	now  func() time.Time

	mu      sync.Mutex
	values  map[string]string
	history []Write
}

// Option configures a Store.
type Option func(*Store)

// WithClock replaces time.Now as the source of Write.At (tests).
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// New returns an empty store for the instance called node.
func New(node string, opts ...Option) *Store {
	s := &Store{node: node, now: time.Now, values: make(map[string]string)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Put stores value under key and appends the write to the history.
func (s *Store) Put(key, value string, epoch uint64) Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := Write{
		Seq: uint64(len(s.history)) + 1, Key: key, Value: value,
		Epoch: epoch, Node: s.node, At: s.now(),
	}
	s.values[key] = value
	s.history = append(s.history, w)
	return w
}

// Get returns the value under key and whether there is one.
func (s *Store) Get(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[key]
	return v, ok
}

// Dump returns a copy of every key and its value.
func (s *Store) Dump() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.values))
	for k, v := range s.values {
		out[k] = v
	}
	return out
}

// History returns a copy of the accepted writes, oldest first.
func (s *Store) History() []Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.history)
}

// ValidateKey reports why key cannot be stored, or nil.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return errors.New("key is empty")
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("key is %d bytes, at most %d allowed", len(key), MaxKeyBytes)
	case strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("key contains a control character")
	}
	return nil
}

// ParseEpoch parses an x-mesh-epoch header value: absent (empty) is epoch
// 0, otherwise a decimal unsigned 64-bit number.
func ParseEpoch(v string) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	e, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want a decimal epoch", EpochHeader, v)
	}
	return e, nil
}

// Handler returns the HTTP handler over s (see the package documentation
// for the endpoints).
func Handler(s *Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("PUT /kv/{key}", s.handlePut)
	mux.HandleFunc("GET /kv/{key}", s.handleGet)
	mux.HandleFunc("GET /kv", s.handleList)
	mux.HandleFunc("GET /history", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.History())
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(NodeHeader, s.node)
		mux.ServeHTTP(w, r)
	})
}

func (s *Store) handlePut(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if err := ValidateKey(key); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	epoch, err := ParseEpoch(r.Header.Get(EpochHeader))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxValueBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("value is larger than %d bytes", MaxValueBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading value: "+err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusOK, s.Put(key, string(body), epoch))
}

func (s *Store) handleGet(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if err := ValidateKey(key); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	v, ok := s.Get(key)
	if !ok {
		http.Error(w, fmt.Sprintf("no value for key %q", key), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, v)
}

func (s *Store) handleList(w http.ResponseWriter, r *http.Request) {
	switch d := r.URL.Query().Get("dump"); d {
	case "", "0", "false":
		keys := make([]string, 0)
		for k := range s.Dump() {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		writeJSON(w, http.StatusOK, keys)
	case "1", "true":
		writeJSON(w, http.StatusOK, s.Dump())
	default:
		http.Error(w, fmt.Sprintf("dump=%q: want 1 or 0", d), http.StatusBadRequest)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
