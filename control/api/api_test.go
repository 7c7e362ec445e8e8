package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/api"
	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/plane"
	"github.com/causeway-mesh/causeway/control/policy"
)

func start(t *testing.T) *plane.Plane {
	t.Helper()
	cfg := plane.Default()
	cfg.XDS, cfg.API, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	mesh := membership.NewStatic([]membership.Instance{{Node: "orders-1", Service: "orders", Addr: "127.0.0.1:15006", Weight: 1, Health: membership.Healthy}})
	p, err := plane.New(cfg, slog.New(slog.DiscardHandler), plane.WithMembership(mesh))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("control plane did not stop")
		}
	})
	return p
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) apiError(t *testing.T) api.Error {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	return e
}

func call(t *testing.T, p *plane.Plane, method, path, token, body string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+p.APIAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, b}
}

const orders = `apiVersion: causeway.dev/v1alpha1
kind: BackendPolicy
metadata: {name: orders}
spec:
  targetRef: {name: orders}
  connectTimeout: 1s
`

func TestAuth(t *testing.T) {
	p := start(t)
	if r := call(t, p, "GET", "/healthz", "", ""); r.status != 200 {
		t.Errorf("/healthz without a token: got %d, want 200", r.status)
	}
	for _, tc := range []struct{ method, path, token string }{
		{"GET", "/api/v1/resources", ""},
		{"GET", "/api/v1/resources", "wrong"},
		{"GET", "/api/v1/proxies", ""},
		{"GET", "/api/v1/members", p.Token() + "x"},
		{"PUT", "/api/v1/resources/backendpolicies/orders", ""},
		{"DELETE", "/api/v1/resources/backendpolicies/orders", "wrong"},
		{"PATCH", "/api/v1/resources/backendpolicies/orders", ""},
	} {
		r := call(t, p, tc.method, tc.path, tc.token, orders)
		if r.status != http.StatusUnauthorized || r.apiError(t).Code != "Unauthorized" || r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s with token %q: got %d %s, want 401 Unauthorized", tc.method, tc.path, tc.token, r.status, r.body)
		}
	}
	if r := call(t, p, "GET", "/api/v1/resources", p.Token(), ""); r.status != 200 {
		t.Errorf("with the token: got %d %s", r.status, r.body)
	}
}

func TestCRUDAndConflicts(t *testing.T) {
	p, tok := start(t), ""
	tok = p.Token()
	r := call(t, p, "POST", "/api/v1/resources/BackendPolicy", tok, orders)
	if r.status != http.StatusCreated {
		t.Fatalf("create: got %d %s", r.status, r.body)
	}
	var created policy.Resource
	if err := json.Unmarshal(r.body, &created); err != nil || created.Metadata.ResourceVersion != "1" {
		t.Fatalf("create body: %s (%v)", r.body, err)
	}
	if r := call(t, p, "POST", "/api/v1/resources/BackendPolicy", tok, orders); r.status != http.StatusConflict || r.apiError(t).Code != "AlreadyExists" {
		t.Errorf("second create: got %d %s, want 409 AlreadyExists", r.status, r.body)
	}
	if r := call(t, p, "GET", "/api/v1/resources/backendpolicies/orders", tok, ""); r.status != 200 || !strings.Contains(string(r.body), `"connectTimeout": "1s"`) {
		t.Errorf("get: got %d %s", r.status, r.body)
	}
	withRV := func(rv string) string {
		return strings.Replace(orders, "metadata: {name: orders}", "metadata: {name: orders, resourceVersion: \""+rv+"\"}", 1)
	}
	if r := call(t, p, "PUT", "/api/v1/resources/backendpolicies/orders", tok, withRV("1")); r.status != 200 {
		t.Fatalf("update at the current version: got %d %s", r.status, r.body)
	}
	if r := call(t, p, "PUT", "/api/v1/resources/backendpolicies/orders", tok, withRV("1")); r.status != http.StatusConflict || r.apiError(t).Code != "Conflict" {
		t.Errorf("update at a stale version: got %d %s, want 409 Conflict", r.status, r.body)
	}
	if r := call(t, p, "DELETE", "/api/v1/resources/backendpolicies/orders?resourceVersion=1", tok, ""); r.status != http.StatusConflict {
		t.Errorf("delete at a stale version: got %d %s, want 409", r.status, r.body)
	}
	r = call(t, p, "GET", "/api/v1/resources", tok, "")
	var list api.List
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Items) != 1 || list.Kind != "List" {
		t.Errorf("list: %s (%v)", r.body, err)
	}
	if r := call(t, p, "DELETE", "/api/v1/resources/backendpolicies/orders", tok, ""); r.status != 200 {
		t.Errorf("delete: got %d %s", r.status, r.body)
	}
	if r := call(t, p, "GET", "/api/v1/resources/backendpolicies/orders", tok, ""); r.status != 404 || r.apiError(t).Code != "NotFound" {
		t.Errorf("get after delete: got %d %s, want 404", r.status, r.body)
	}
}

func TestErrors(t *testing.T) {
	p := start(t)
	tok := p.Token()
	bad := strings.Replace(orders, "connectTimeout: 1s", "connectTimeout: 1s\n  limits: {maxRequests: 0}\n  loadbalancer: {}", 1)
	r := call(t, p, "PUT", "/api/v1/resources/backendpolicies/orders", tok, bad)
	e := r.apiError(t)
	if r.status != 422 || e.Code != "Invalid" || len(e.Details) != 1 || e.Details[0].Field != "spec.loadbalancer" || e.Details[0].Code != policy.CodeUnknownField {
		t.Errorf("unknown field: got %d %s", r.status, r.body)
	}
	r = call(t, p, "PUT", "/api/v1/resources/backendpolicies/orders", tok, strings.Replace(orders, "connectTimeout: 1s", "limits: {maxRequests: 0}", 1))
	e = r.apiError(t)
	if r.status != 422 || len(e.Details) != 1 || e.Details[0].Field != "spec.limits.maxRequests" || e.Details[0].Code != policy.CodeInvalid {
		t.Errorf("bad value: got %d %s", r.status, r.body)
	}
	if r := call(t, p, "PUT", "/api/v1/resources/httproutes/orders", tok, orders); r.status != 400 || r.apiError(t).Details[0].Field != "kind" {
		t.Errorf("kind mismatch: got %d %s", r.status, r.body)
	}
	if r := call(t, p, "PUT", "/api/v1/resources/backendpolicies/other", tok, orders); r.status != 400 || r.apiError(t).Details[0].Field != "metadata.name" {
		t.Errorf("name mismatch: got %d %s", r.status, r.body)
	}
	if r := call(t, p, "GET", "/api/v1/resources/gateways", tok, ""); r.status != 404 {
		t.Errorf("unknown kind: got %d %s", r.status, r.body)
	}
	if r := call(t, p, "PATCH", "/api/v1/resources/backendpolicies/orders", tok, orders); r.status != 405 || r.apiError(t).Code != "MethodNotAllowed" {
		t.Errorf("PATCH: got %d %s", r.status, r.body)
	}
	if r := call(t, p, "PUT", "/api/v1/resources/backendpolicies/orders", tok, orders+"---\n"+orders); r.status != 400 {
		t.Errorf("two documents: got %d %s", r.status, r.body)
	}
	// Cross-resource admission: a second policy for the same service.
	if r := call(t, p, "PUT", "/api/v1/resources/backendpolicies/orders", tok, orders); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	dup := strings.Replace(orders, "{name: orders}\nspec", "{name: orders-two}\nspec", 1)
	r = call(t, p, "PUT", "/api/v1/resources/backendpolicies/orders-two", tok, dup)
	if e := r.apiError(t); r.status != 422 || len(e.Details) != 1 || e.Details[0].Code != policy.CodeDuplicate {
		t.Errorf("duplicate target: got %d %s", r.status, r.body)
	}
	big := strings.Repeat("#", api.MaxBody+1)
	if r := call(t, p, "PUT", "/api/v1/resources/backendpolicies/orders", tok, big); r.status != 413 {
		t.Errorf("huge body: got %d", r.status)
	}
}

func TestStatusEndpoints(t *testing.T) {
	p := start(t)
	tok := p.Token()
	r := call(t, p, "GET", "/api/v1/proxies", tok, "")
	if r.status != 200 || !strings.Contains(string(r.body), `"proxies": []`) {
		t.Errorf("proxies: %d %s", r.status, r.body)
	}
	r = call(t, p, "GET", "/api/v1/members", tok, "")
	var m api.Members
	if err := json.Unmarshal(r.body, &m); err != nil || len(m.Instances) != 1 || m.Instances[0].Node != "orders-1" {
		t.Errorf("members: %d %s", r.status, r.body)
	}
	if r := call(t, p, "GET", "/api/v1/proxies/nobody/config", tok, ""); r.status != 404 {
		t.Errorf("config of an unknown node: got %d", r.status)
	}
	if r := call(t, p, "GET", "/api/v1/build", tok, ""); r.status != 200 || !strings.Contains(string(r.body), "version") {
		t.Errorf("build: %d %s", r.status, r.body)
	}
}
