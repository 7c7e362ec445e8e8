// Package api is the control plane's HTTP JSON API.
//
// Paths (every /api/ path needs "Authorization: Bearer TOKEN"; reads too,
// because proxy configuration and membership reveal the mesh's topology):
//
//	GET    /healthz                                  200 {"status":"ok"}; no token
//	GET    /api/v1/resources[?namespace=NS]          every resource (a List)
//	GET    /api/v1/resources/{kind}[?namespace=NS]   resources of one kind
//	POST   /api/v1/resources/{kind}                  create; 409 AlreadyExists if present
//	GET    /api/v1/resources/{kind}/{name}?namespace=NS
//	PUT    /api/v1/resources/{kind}/{name}           create or update; with
//	                                                 metadata.resourceVersion, only if it
//	                                                 still matches (409 Conflict otherwise)
//	DELETE /api/v1/resources/{kind}/{name}?namespace=NS[&resourceVersion=RV]
//	GET    /api/v1/proxies                           every proxy's sync status
//	GET    /api/v1/proxies/{node}                    one proxy's status
//	GET    /api/v1/proxies/{node}/config             the xDS resources the proxy was given
//	GET    /api/v1/members                           gossip members and the instances derived
//	GET    /api/v1/build                             the latest xDS build: version or error
//	GET    /api/v1/traces[?limit=N]                  recent traces, newest first (default 50, at most 1000)
//	GET    /api/v1/traces/{traceID}                  one trace's spans, by start time
//	GET    /api/v1/traces/{traceID}/causal           the trace in happens-before order (causal.Result)
//	GET    /api/v1/ca                                the CA: roots, rotation stage, sidecars (rotation.Status)
//	POST   /api/v1/ca/rotate                         {"stage": "prepare"|"activate"|"prune", "force": bool}
//	POST   /v1/traces                                OTLP/HTTP trace export (protobuf or JSON); no token
//
// The CA paths answer 404 unless the control plane runs with --tls. A
// rotation step the CA's stage does not allow is 409 Conflict; one the
// mesh is not ready for (sidecars that have not acknowledged the new
// bundle, leaves of the old root still in use) is 409 NotReady, whose
// message says what is missing, unless "force" is set; an operator-managed
// CA answers 409 OperatorManaged.
//
// The trace paths exist when Config.Traces is set. OTLP ingest is open:
// sidecars export their spans there and hold no API token. It only adds
// spans to a bounded in-memory store (oldest traces evicted first; bodies at
// most 16 MiB), and reading them back needs the token; expose the API port
// only where the mesh's sidecars run. A trace with no spans yet is 404 with
// a message saying to retry (exporters send in batches).
//
// {kind} is HTTPRoute, BackendPolicy or FencingPolicy in any case, or a
// plural ("httproutes"). Namespace defaults to "default". Bodies are JSON
// or YAML (one document), at most 1 MiB, decoded strictly.
//
// Every error is JSON {"code", "message", "details": [{"field", "code",
// "message"}]} with codes BadRequest (400), Unauthorized (401), NotFound
// (404), MethodNotAllowed (405), AlreadyExists and Conflict (409),
// PayloadTooLarge (413), Invalid (422: details name each field) and
// Internal (500); the CA paths add NotReady and OperatorManaged (409).
package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/policy"
	"github.com/causeway-mesh/causeway/control/store"
	"github.com/causeway-mesh/causeway/control/xds"
	"github.com/causeway-mesh/causeway/discovery"
)

// MaxBody is the largest request body accepted.
const MaxBody = 1 << 20

// Proxies is the xDS server's view of the proxies (*xds.Server).
type Proxies interface {
	Proxies() []xds.ProxyStatus
	Proxy(node string) (xds.ProxyStatus, bool)
	ProxyConfig(node string) (*xds.NodeConfig, bool)
	Build() xds.BuildStatus
}

// Config configures the handler.
type Config struct {
	Store   *store.Store
	Proxies Proxies
	Mesh    membership.Source
	// Token is the bearer token every /api/ request must carry.
	Token string
	// Traces, when set, serves OTLP ingest and the trace queries.
	Traces Traces
	// Fencing, when set, serves GET /api/v1/fencing (the partition view:
	// domains, groups, quorum, epochs), behind the token.
	Fencing http.Handler
	// CA, when set, serves the CA's status and root rotation (GET
	// /api/v1/ca, POST /api/v1/ca/rotate), behind the token; unset, those
	// paths answer 404 saying the control plane runs without --tls.
	CA     CA
	Logger *slog.Logger
}

// Handler serves the API.
type Handler struct {
	cfg Config
	mux *http.ServeMux
}

// New returns the API handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Token == "" {
		return nil, errors.New("api: a token is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	api := func(pattern string, f http.HandlerFunc) { h.mux.Handle(pattern, h.auth(f)) }
	api("GET /api/v1/resources", h.list)
	api("GET /api/v1/resources/{kind}", h.list)
	api("POST /api/v1/resources/{kind}", h.create)
	api("GET /api/v1/resources/{kind}/{name}", h.get)
	api("PUT /api/v1/resources/{kind}/{name}", h.put)
	api("DELETE /api/v1/resources/{kind}/{name}", h.delete)
	api("GET /api/v1/proxies", h.proxies)
	api("GET /api/v1/proxies/{node}", h.proxy)
	api("GET /api/v1/proxies/{node}/config", h.proxyConfig)
	api("GET /api/v1/members", h.members)
	api("GET /api/v1/build", h.build)
	if cfg.Traces != nil {
		h.mountTraces(api)
	}
	if cfg.Fencing != nil {
		api("GET /api/v1/fencing", cfg.Fencing.ServeHTTP)
	}
	h.mountCA(api)
	api("/api/", h.noRoute)
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// noRoute answers an /api/ request no pattern took: 405 with Allow when
// the path exists for other methods, else 404, both in JSON.
func (h *Handler) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "/api/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, ", ")), nil)
		return
	}
	writeError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("no API at %s %s; see the paths in the API documentation", r.Method, r.URL.Path), nil)
}

func (h *Handler) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(h.cfg.Token)) == 1
}

func (h *Handler) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.authorized(r) {
			unauthorized(w)
			return
		}
		next(w, r)
	})
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="causeway"`)
	writeError(w, http.StatusUnauthorized, "Unauthorized",
		"missing or wrong bearer token: send \"Authorization: Bearer TOKEN\" with the token from the control plane's data directory (file api-token)", nil)
}

// Error is the JSON body of every error response.
type Error struct {
	Code    string               `json:"code"`
	Message string               `json:"message"`
	Details []*policy.FieldError `json:"details,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg string, details []*policy.FieldError) {
	writeJSON(w, status, Error{Code: code, Message: msg, Details: details})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// List is the body of a list response.
type List struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Items      []*policy.Resource `json:"items"`
}

func (h *Handler) kindOf(w http.ResponseWriter, r *http.Request) (policy.Kind, bool) {
	k, err := policy.ParseKind(r.PathValue("kind"))
	if err != nil {
		writeError(w, http.StatusNotFound, "NotFound", err.Error(), nil)
		return "", false
	}
	return k, true
}

func namespaceOf(r *http.Request) string {
	if ns := r.URL.Query().Get("namespace"); ns != "" {
		return ns
	}
	return policy.DefaultNamespace
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	var kind policy.Kind
	if r.PathValue("kind") != "" {
		k, ok := h.kindOf(w, r)
		if !ok {
			return
		}
		kind = k
	}
	items, err := h.cfg.Store.List(kind, r.URL.Query().Get("namespace"))
	if err != nil {
		h.internal(w, err)
		return
	}
	if items == nil {
		items = []*policy.Resource{}
	}
	writeJSON(w, http.StatusOK, List{APIVersion: policy.APIVersion, Kind: "List", Items: items})
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	kind, ok := h.kindOf(w, r)
	if !ok {
		return
	}
	res, err := h.cfg.Store.Get(policy.Key{Kind: kind, Namespace: namespaceOf(r), Name: r.PathValue("name")})
	if err != nil {
		h.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// readResource decodes the body and checks it against the path.
func (h *Handler) readResource(w http.ResponseWriter, r *http.Request, kind policy.Kind, name string) (*policy.Resource, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "PayloadTooLarge", fmt.Sprintf("the body is larger than %d bytes", MaxBody), nil)
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "BadRequest", "reading the body: "+err.Error(), nil)
		return nil, false
	}
	if docs := policy.SplitDocuments(body); len(docs) != 1 {
		writeError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("the body holds %d documents; send exactly one resource per request", len(docs)), nil)
		return nil, false
	}
	res, err := policy.Decode(body)
	if err != nil {
		h.invalid(w, err)
		return nil, false
	}
	var details policy.ErrorList
	if res.Kind != kind {
		details = append(details, &policy.FieldError{Field: "kind", Code: policy.CodeInvalid, Message: fmt.Sprintf("%q does not match the path's kind %q", res.Kind, kind)})
	}
	if name != "" && res.Metadata.Name != name {
		details = append(details, &policy.FieldError{Field: "metadata.name", Code: policy.CodeInvalid, Message: fmt.Sprintf("%q does not match the path's name %q", res.Metadata.Name, name)})
	}
	if ns := r.URL.Query().Get("namespace"); ns != "" && res.Key().Namespace != ns {
		details = append(details, &policy.FieldError{Field: "metadata.namespace", Code: policy.CodeInvalid, Message: fmt.Sprintf("%q does not match the namespace parameter %q", res.Key().Namespace, ns)})
	}
	if len(details) > 0 {
		writeError(w, http.StatusBadRequest, "BadRequest", "the resource does not match the request path", details)
		return nil, false
	}
	return res, true
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	kind, ok := h.kindOf(w, r)
	if !ok {
		return
	}
	res, ok := h.readResource(w, r, kind, "")
	if !ok {
		return
	}
	stored, _, err := h.cfg.Store.Put(res, store.Create)
	if err != nil {
		h.storeError(w, err)
		return
	}
	h.cfg.Logger.Info("resource created", "resource", stored.Key().String(), "resourceVersion", stored.Metadata.ResourceVersion)
	writeJSON(w, http.StatusCreated, stored)
}

func (h *Handler) put(w http.ResponseWriter, r *http.Request) {
	kind, ok := h.kindOf(w, r)
	if !ok {
		return
	}
	res, ok := h.readResource(w, r, kind, r.PathValue("name"))
	if !ok {
		return
	}
	stored, created, err := h.cfg.Store.Put(res, store.Apply)
	if err != nil {
		h.storeError(w, err)
		return
	}
	status, verb := http.StatusOK, "updated"
	if created {
		status, verb = http.StatusCreated, "created"
	}
	h.cfg.Logger.Info("resource "+verb, "resource", stored.Key().String(), "resourceVersion", stored.Metadata.ResourceVersion)
	writeJSON(w, status, stored)
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request) {
	kind, ok := h.kindOf(w, r)
	if !ok {
		return
	}
	k := policy.Key{Kind: kind, Namespace: namespaceOf(r), Name: r.PathValue("name")}
	gone, err := h.cfg.Store.Delete(k, r.URL.Query().Get("resourceVersion"))
	if err != nil {
		h.storeError(w, err)
		return
	}
	h.cfg.Logger.Info("resource deleted", "resource", k.String())
	writeJSON(w, http.StatusOK, gone)
}

func (h *Handler) invalid(w http.ResponseWriter, err error) {
	var list policy.ErrorList
	if errors.As(err, &list) {
		writeError(w, http.StatusUnprocessableEntity, "Invalid", "the resource is invalid; see details", list)
		return
	}
	writeError(w, http.StatusUnprocessableEntity, "Invalid", err.Error(), nil)
}

func (h *Handler) storeError(w http.ResponseWriter, err error) {
	var list policy.ErrorList
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "NotFound", err.Error(), nil)
	case errors.Is(err, store.ErrExists):
		writeError(w, http.StatusConflict, "AlreadyExists", err.Error()+"; use PUT (meshctl apply) to update it", nil)
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "Conflict", err.Error(), nil)
	case errors.As(err, &list):
		writeError(w, http.StatusUnprocessableEntity, "Invalid", "the change would leave the policy set invalid; see details", list)
	case errors.Is(err, ErrRejected):
		writeError(w, http.StatusUnprocessableEntity, "Invalid", err.Error(), nil)
	default:
		h.internal(w, err)
	}
}

// ErrRejected marks an admission failure that is the client's to fix
// (the policy would translate into an invalid xDS configuration).
var ErrRejected = errors.New("rejected")

func (h *Handler) internal(w http.ResponseWriter, err error) {
	h.cfg.Logger.Error("api: internal error", "error", err)
	writeError(w, http.StatusInternalServerError, "Internal", "internal error; the control plane's log has the cause", nil)
}

func (h *Handler) proxies(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"proxies": h.cfg.Proxies.Proxies(), "build": h.cfg.Proxies.Build()})
}

func (h *Handler) proxy(w http.ResponseWriter, r *http.Request) {
	ps, ok := h.cfg.Proxies.Proxy(r.PathValue("node"))
	if !ok {
		writeError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("no proxy with node id %q has connected", r.PathValue("node")), nil)
		return
	}
	writeJSON(w, http.StatusOK, ps)
}

// ProxyConfig is the body of /api/v1/proxies/{node}/config: each type
// URL's resources as protojson.
type ProxyConfig struct {
	Node      string                       `json:"node"`
	Version   string                       `json:"version"`
	Resources map[string][]json.RawMessage `json:"resources"`
}

func (h *Handler) proxyConfig(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	nc, ok := h.cfg.Proxies.ProxyConfig(node)
	if !ok {
		writeError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("no configuration is set for node %q (it is not connected)", node), nil)
		return
	}
	out := ProxyConfig{Node: nc.Node, Version: nc.Version, Resources: map[string][]json.RawMessage{}}
	opts := protojson.MarshalOptions{UseProtoNames: false}
	for typ, rs := range nc.Resources {
		for _, res := range rs {
			b, err := opts.Marshal(proto.Message(res))
			if err != nil {
				h.internal(w, err)
				return
			}
			out.Resources[typ] = append(out.Resources[typ], b)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// Members is the body of /api/v1/members.
type Members struct {
	Members   []Member              `json:"members"`
	Instances []membership.Instance `json:"instances"`
}

// Member is one gossip member with its advertised metadata.
type Member struct {
	discovery.Member
	Service  string `json:"service,omitempty"`
	Inbound  string `json:"inbound,omitempty"`
	Zone     string `json:"zone,omitempty"`
	Version  string `json:"version,omitempty"`
	Weight   uint32 `json:"weight,omitempty"`
	Ready    bool   `json:"ready"`
	Leaving  bool   `json:"leaving,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

func (h *Handler) members(w http.ResponseWriter, _ *http.Request) {
	m := Members{Members: []Member{}, Instances: h.cfg.Mesh.Instances()}
	for _, dm := range h.cfg.Mesh.Members() {
		m.Members = append(m.Members, Member{
			Member: dm, Service: dm.Meta.Service, Inbound: dm.Meta.Inbound, Zone: dm.Meta.Zone,
			Version: dm.Meta.Version, Weight: dm.Meta.Weight, Ready: dm.Meta.Ready, Leaving: dm.Meta.Leaving,
			Protocol: dm.Meta.Protocol,
		})
	}
	if m.Instances == nil {
		m.Instances = []membership.Instance{}
	}
	writeJSON(w, http.StatusOK, m)
}

func (h *Handler) build(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.cfg.Proxies.Build())
}
