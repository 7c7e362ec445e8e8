package kvstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
)

// Header names the handler reads and writes.
const (
	// EpochHeader is the fencing epoch the mesh admitted a write under
	// (PRODUCT.md, "Headers"); the store records it with a client write.
	// On a replicated write it is the epoch the replication request was
	// admitted under, which says nothing about the write: ignored.
	EpochHeader = "X-Mesh-Epoch"
	// NodeHeader is set on every response to the instance name.
	NodeHeader = "X-Kv-Node"
)

// Replication protocol: a peer sends one write per request,
//
//	PUT /replicate?key=KEY
//	X-Kv-Origin: NODE          the instance that accepted the write
//	X-Kv-Origin-Seq: N         its number among NODE's accepted writes
//	X-Kv-Epoch: E              the epoch it was admitted under at NODE
//	X-Kv-Version: V            NODE's version counter when it accepted it
//
// with the value as the body. The key rides in the query because the mesh
// refuses encoded slashes in paths. 200 means applied or already held
// (idempotent), with an ApplyResult; 400 or 413 mean the write can never
// be applied here.
const (
	ReplicatePath    = "/replicate"
	OriginHeader     = "X-Kv-Origin"
	OriginSeqHeader  = "X-Kv-Origin-Seq"
	WriteEpochHeader = "X-Kv-Epoch"
	VersionHeader    = "X-Kv-Version"
)

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
	mux.HandleFunc("PUT "+ReplicatePath, s.handleReplicate)
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
	body, ok := readValue(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.Put(key, body, epoch))
}

func (s *Store) handleReplicate(w http.ResponseWriter, r *http.Request) {
	wr, err := replicatedFrom(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	body, ok := readValue(w, r)
	if !ok {
		return
	}
	wr.Value = body
	res, err := s.Apply(wr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// replicatedFrom reads a replicated write's key and identity (not its
// value) from a PUT /replicate request.
func replicatedFrom(r *http.Request) (Write, error) {
	q := r.URL.Query()
	if len(q["key"]) != 1 {
		return Write{}, errors.New("want exactly one key query parameter")
	}
	wr := Write{Key: q.Get("key"), Origin: r.Header.Get(OriginHeader)}
	for _, f := range []struct {
		header string
		dst    *uint64
	}{{OriginSeqHeader, &wr.OriginSeq}, {WriteEpochHeader, &wr.Epoch}, {VersionHeader, &wr.Version}} {
		v := r.Header.Get(f.header)
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return Write{}, fmt.Errorf("%s %q: want a decimal number", f.header, v)
		}
		*f.dst = n
	}
	return wr, validateReplicated(wr)
}

// readValue reads a request body of at most MaxValueBytes, answering 413
// or 400 itself when it cannot.
func readValue(w http.ResponseWriter, r *http.Request) (string, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxValueBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("value is larger than %d bytes", MaxValueBytes), http.StatusRequestEntityTooLarge)
			return "", false
		}
		http.Error(w, "reading value: "+err.Error(), http.StatusBadRequest)
		return "", false
	}
	return string(body), true
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
