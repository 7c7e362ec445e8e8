package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/plane"
)

// startTLSPlane runs an in-process control plane with --tls whose serving
// certificate names hosts (the default names when empty).
func startTLSPlane(t *testing.T, hosts ...string) (*plane.Plane, string) {
	t.Helper()
	cfg := plane.Default()
	cfg.XDS, cfg.API, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.TLS.Enabled, cfg.TLS.Hosts = true, hosts
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

// otherBundle writes the trust bundle of a CA that is not the plane's.
func otherBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := ca.LoadOrCreate(dir, "elsewhere.example"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, plane.BundleFile)
}

func TestStatusVerifiesTLSControlPlane(t *testing.T) {
	p, dataDir := startTLSPlane(t)
	https, http := "https://"+p.APIAddr(), "http://"+p.APIAddr()
	bundle := filepath.Join(dataDir, plane.BundleFile)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withKey, err := os.ReadFile(filepath.Join(dataDir, "ca-root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "root-and-key.pem")
	if err := os.WriteFile(keyFile, withKey, 0o600); err != nil {
		t.Fatal(err)
	}
	tok := p.Token()

	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		want     string // in stdout when wantCode is 0, else in stderr
	}{
		{"--ca-file", nil, []string{"--server", https, "--token", tok, "--ca-file", bundle}, 0, "configuration version:"},
		{"MESH_CA_FILE", map[string]string{"MESH_SERVER": https, "MESH_TOKEN": tok, "MESH_CA_FILE": bundle}, nil, 0, "configuration version:"},
		{"the bundle in --data-dir", nil, []string{"--server", https, "--data-dir", dataDir}, 0, "configuration version:"},
		{"no CA file", nil, []string{"--server", https, "--token", tok}, 1,
			"the server's certificate is not trusted: pass --ca-file DATA_DIR/ca-bundle.pem"},
		{"another mesh's bundle", nil, []string{"--server", https, "--token", tok, "--ca-file", otherBundle(t)}, 1,
			"is not signed by a root in"},
		{"--ca-file wins over --data-dir", nil, []string{"--server", https, "--data-dir", dataDir, "--ca-file", otherBundle(t)}, 1,
			"is not signed by a root in"},
		{"missing CA file", nil, []string{"--server", https, "--token", tok, "--ca-file", filepath.Join(dataDir, "nope.pem")}, 1,
			"reading the CA file"},
		{"not PEM", nil, []string{"--server", https, "--token", tok, "--ca-file", notPEM}, 1, "not PEM"},
		{"a key in the CA file", nil, []string{"--server", https, "--token", tok, "--ca-file", keyFile}, 1, "must not contain a private key"},
		{"plaintext to TLS", nil, []string{"--server", http, "--token", tok}, 1, "use an https:// --server URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := meshctl(t, tt.env, append(tt.args, "status")...)
			got := errs
			if tt.wantCode == 0 {
				got = out
			}
			if code != tt.wantCode || !strings.Contains(got, tt.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d with %q", code, out, errs, tt.wantCode, tt.want)
			}
		})
	}
}

func TestCertificateNotForTheServerName(t *testing.T) {
	p, dataDir := startTLSPlane(t, "cp.example.test")
	code, _, errs := meshctl(t, nil, "--server", "https://"+p.APIAddr(), "--data-dir", dataDir, "status")
	if code != 1 || !strings.Contains(errs, "not valid for the host in --server") || !strings.Contains(errs, "cp.example.test") {
		t.Errorf("exit %d, stderr %q; want exit 1 naming the certificate's host", code, errs)
	}
}

func TestTLSToPlaintextServer(t *testing.T) {
	p, _ := startPlane(t)
	code, _, errs := meshctl(t, nil, "--server", "https://"+p.APIAddr(), "--token", p.Token(), "--ca-file", otherBundle(t), "status")
	if code != 1 || !strings.Contains(errs, "the server does not speak TLS: use an http:// --server URL") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

func TestTokenCreate(t *testing.T) {
	p, dataDir := startTLSPlane(t)
	env := map[string]string{"MESH_SERVER": "https://" + p.APIAddr(), "MESH_DATA_DIR": dataDir}

	code, out, errs := meshctl(t, env, "token", "create", "--service", "orders")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	token := strings.TrimSpace(out)
	if strings.Count(out, "\n") != 1 || token == "" {
		t.Fatalf("stdout %q: want the token alone on one line", out)
	}
	if !strings.Contains(errs, "for service orders (namespace default)") || strings.Contains(errs, token) {
		t.Errorf("stderr %q: want what the token is for, without the token", errs)
	}
	infos := p.Tokens().List()
	if len(infos) != 1 || infos[0].SingleUse {
		t.Fatalf("the control plane holds %+v, want one reusable token", infos)
	}
	if left := time.Until(infos[0].ExpiresAt); left > defaultTokenTTL || left < defaultTokenTTL-time.Minute {
		t.Errorf("token expires in %v, want the default %v", left, defaultTokenTTL)
	}
	scope, err := p.Tokens().Redeem(token)
	if err != nil || scope.Service != "orders" || scope.Namespace != "default" {
		t.Errorf("redeeming the printed token: %+v, %v", scope, err)
	}

	code, out, errs = meshctl(t, env, "token", "create", "--service", "web", "-n", "shop", "--ttl", "10m", "--single-use", "-o", "json")
	var resp bootstrap.CreateResponse
	if err := json.Unmarshal([]byte(out), &resp); code != 0 || err != nil {
		t.Fatalf("-o json: exit %d, %v, stdout %q, stderr %q", code, err, out, errs)
	}
	if resp.Service != "web" || resp.Namespace != "shop" || !resp.SingleUse || resp.Token == "" ||
		time.Until(resp.ExpiresAt) > 10*time.Minute {
		t.Errorf("-o json: %+v", resp)
	}
}

func TestTokenCreateErrors(t *testing.T) {
	tlsPlane, dataDir := startTLSPlane(t)
	tlsEnv := map[string]string{"MESH_SERVER": "https://" + tlsPlane.APIAddr(), "MESH_DATA_DIR": dataDir}
	plain, _ := startPlane(t)
	plainEnv := map[string]string{"MESH_SERVER": "http://" + plain.APIAddr(), "MESH_TOKEN": plain.Token()}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no service", tlsEnv, nil, "--service is required"},
		{"bad service", tlsEnv, []string{"--service", "Orders!"}, "must be a DNS label"},
		{"zero ttl", tlsEnv, []string{"--service", "orders", "--ttl", "0s"}, "--ttl 0s: must be positive"},
		{"ttl over the maximum", tlsEnv, []string{"--service", "orders", "--ttl", "8760h"}, "outside"},
		{"wrong API token", map[string]string{"MESH_SERVER": tlsEnv["MESH_SERVER"], "MESH_DATA_DIR": dataDir, "MESH_TOKEN": "nope"},
			[]string{"--service", "orders"}, "401"},
		{"control plane without TLS", plainEnv, []string{"--service", "orders"}, "only when it runs with --tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := meshctl(t, tt.env, append([]string{"token", "create"}, tt.args...)...)
			if code != 1 || out != "" || !strings.Contains(errs, tt.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errs, tt.want)
			}
		})
	}
	if n := len(tlsPlane.Tokens().List()); n != 0 {
		t.Errorf("%d tokens created by failed commands", n)
	}
}
