package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/plane"
)

func startPlane(t *testing.T) (*plane.Plane, string) {
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
	return p, cfg.DataDir
}

// meshctl runs one command with the given environment.
func meshctl(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := run(ctx, args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

const examples = "../../examples/policies"

func TestValidateOffline(t *testing.T) {
	code, out, errs := meshctl(t, nil, "validate", "-f", examples)
	if code != 0 || !strings.Contains(out, "resources valid") {
		t.Errorf("examples: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	doc := "apiVersion: causeway.dev/v1alpha1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: inventory}]\n  rules:\n  - backendRefs:\n    - name: a\n    - name: b\n      weight: 1000001\n"
	if err := os.WriteFile(bad, []byte("---\n"+doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = meshctl(t, nil, "validate", "-f", bad)
	want := bad + ": document 1 (HTTPRoute default/r): spec.rules[0].backendRefs[1].weight: FieldValueInvalid: must be between 0 and 1000000"
	if code != 1 || !strings.Contains(errs, want) {
		t.Errorf("bad file: exit %d, stderr %q; want exit 1 and %q", code, errs, want)
	}
}

func TestApplyGetDeleteStatus(t *testing.T) {
	p, _ := startPlane(t)
	env := map[string]string{"MESH_SERVER": "http://" + p.APIAddr(), "MESH_TOKEN": p.Token()}

	code, out, errs := meshctl(t, env, "apply", "-f", examples)
	if code != 0 || !strings.Contains(out, "httproute/inventory-canary created") || !strings.Contains(out, "fencingpolicy/mesh created") {
		t.Fatalf("apply: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, _ = meshctl(t, env, "apply", "-f", filepath.Join(examples, "orders-backend.yaml"))
	if code != 0 || !strings.Contains(out, "backendpolicy/orders-backend configured") {
		t.Errorf("re-apply: exit %d, stdout %q", code, out)
	}

	code, out, _ = meshctl(t, env, "get", "all")
	for _, want := range []string{"KIND", "HTTPRoute", "inventory-canary", "BackendPolicy", "orders-backend", "FencingPolicy", "(mesh)"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("get all: exit %d, missing %q in\n%s", code, want, out)
		}
	}
	code, out, _ = meshctl(t, env, "get", "httproute", "inventory-canary", "-o", "json")
	var r struct {
		Kind     string
		Metadata struct{ Name, ResourceVersion string }
	}
	if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil || r.Kind != "HTTPRoute" || r.Metadata.ResourceVersion == "" {
		t.Errorf("get -o json: exit %d, %v, %q", code, err, out)
	}
	code, out, _ = meshctl(t, env, "get", "fencingpolicies", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "kind: List") || !strings.Contains(out, "name: catalog-off") {
		t.Errorf("get -o yaml: exit %d\n%s", code, out)
	}

	code, out, _ = meshctl(t, env, "delete", "fencingpolicy", "catalog-off")
	if code != 0 || !strings.Contains(out, "deleted") {
		t.Errorf("delete: exit %d %q", code, out)
	}
	code, _, errs = meshctl(t, env, "get", "fencingpolicy", "catalog-off")
	if code != 1 || !strings.Contains(errs, "404 NotFound") {
		t.Errorf("get after delete: exit %d, stderr %q", code, errs)
	}

	code, out, _ = meshctl(t, env, "status")
	if code != 0 || !strings.Contains(out, "NODE") || !strings.Contains(out, "configuration version:") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	code, out, _ = meshctl(t, env, "status", "-o", "json")
	var st struct {
		Instances []membership.Instance `json:"instances"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st.Instances) != 1 {
		t.Errorf("status -o json: exit %d, %v\n%s", code, err, out)
	}
	code, _, errs = meshctl(t, env, "proxy-config", "nobody")
	if code != 1 || !strings.Contains(errs, "not connected") {
		t.Errorf("proxy-config of an unknown node: exit %d, %q", code, errs)
	}
}

func TestTokenErrorsSayWhatToDo(t *testing.T) {
	p, dataDir := startPlane(t)
	server := "http://" + p.APIAddr()
	code, _, errs := meshctl(t, map[string]string{"MESH_SERVER": server}, "get", "all")
	if code != 1 || !strings.Contains(errs, "401") || !strings.Contains(errs, "set --token or MESH_TOKEN") {
		t.Errorf("no token: exit %d, stderr %q", code, errs)
	}
	// --data-dir reads the token file.
	code, _, errs = meshctl(t, nil, "--server", server, "--data-dir", dataDir, "get", "all")
	if code != 0 {
		t.Errorf("--data-dir: exit %d, stderr %q", code, errs)
	}
	// An unreachable server says how to point elsewhere.
	code, _, errs = meshctl(t, nil, "--server", "http://127.0.0.1:1", "--token", "x", "get", "all")
	if code != 1 || !strings.Contains(errs, "set --server or MESH_SERVER") {
		t.Errorf("unreachable: exit %d, stderr %q", code, errs)
	}
	// apply sends nothing when any document is invalid.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: causeway.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {name: b}\nspec: {targetRef: {name: x}, colour: red}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = meshctl(t, map[string]string{"MESH_SERVER": server, "MESH_TOKEN": p.Token()}, "apply", "-f", bad)
	if code != 1 || !strings.Contains(errs, "spec.colour: FieldValueUnknown") || !strings.Contains(errs, "nothing applied") {
		t.Errorf("invalid apply: exit %d, stderr %q", code, errs)
	}
}
