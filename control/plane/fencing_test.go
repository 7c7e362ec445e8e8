package plane

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/fencing"
	"github.com/causeway-mesh/causeway/control/fencingpb"
	"github.com/causeway-mesh/causeway/control/policy"
	"github.com/causeway-mesh/causeway/control/store"
)

// The fencing view is served behind the token, and stored FencingPolicies
// reach the fencing service.
func TestFencingViewAndPolicies(t *testing.T) {
	cfg := Default()
	cfg.DataDir, cfg.XDS, cfg.API = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	p, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	get := func(token string) (int, []byte) {
		req, _ := http.NewRequest("GET", "http://"+p.APIAddr()+"/api/v1/fencing", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Fatalf("without the token: %d, want 401", code)
	}
	code, body := get(p.Token())
	if code != http.StatusOK {
		t.Fatalf("with the token: %d %s", code, body)
	}
	var st fencing.Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}

	report := &fencingpb.ViewReport{NodeId: "orders-1", Service: "orders", Reachable: []string{"orders-1"}}
	v, err := p.Fencing().Report(ctx, report)
	if err != nil || !v.GetEnabled() {
		t.Fatalf("before any policy: verdict %v, err %v; want fencing on", v, err)
	}
	r, err := policy.Decode([]byte("apiVersion: causeway.dev/v1alpha1\nkind: FencingPolicy\nmetadata: {name: mesh}\nspec: {targetRef: {kind: Mesh}, mode: \"off\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Store().Put(r, store.Create); err != nil {
		t.Fatal(err)
	}
	// Policies take effect at the next evaluation (at most EvaluateEvery).
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v, err = p.Fencing().Report(ctx, report); err == nil && !v.GetEnabled() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a mesh-wide mode off: verdict %v, err %v; want fencing off", v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
