package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/control/api"
	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/rotation"
)

func TestCAWithoutTLS(t *testing.T) {
	p := start(t)
	if r := call(t, p, http.MethodGet, "/api/v1/ca", "", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("without a token: %d, want 401", r.status)
	}
	for _, c := range []struct{ method, path, body string }{
		{http.MethodGet, "/api/v1/ca", ""},
		{http.MethodPost, "/api/v1/ca/rotate", `{"stage":"prepare"}`},
	} {
		r := call(t, p, c.method, c.path, p.Token(), c.body)
		if e := r.apiError(t); r.status != http.StatusNotFound || !strings.Contains(e.Message, "only when it runs with --tls") {
			t.Fatalf("%s %s: %d %+v; want 404 saying TLS is off", c.method, c.path, r.status, e)
		}
	}
}

// operatorCA is an operator-managed CA: a root given as files.
func operatorCA(t *testing.T) *ca.CA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	c, err := ca.FromFiles(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), certPEM, "mesh.local")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCARotateRequests(t *testing.T) {
	self, err := ca.LoadOrCreate(t.TempDir(), "mesh.local")
	if err != nil {
		t.Fatal(err)
	}
	serve := func(c *ca.CA) *httptest.Server {
		r, err := rotation.New(rotation.Config{CA: c, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		h, err := api.New(api.Config{Token: "tok", CA: r})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv
	}
	selfSrv, opSrv := serve(self), serve(operatorCA(t))
	tests := []struct {
		name     string
		srv      *httptest.Server
		body     string
		status   int
		code     string
		contains string
	}{
		{"not JSON", selfSrv, `stage=prepare`, 400, "BadRequest", "want {"},
		{"unknown field", selfSrv, `{"stage":"prepare","now":true}`, 400, "BadRequest", "unknown field"},
		{"two values", selfSrv, `{"stage":"prepare"}{}`, 400, "BadRequest", "more than one"},
		{"unknown stage", selfSrv, `{"stage":"rollback"}`, 400, "BadRequest", "want prepare, activate or prune"},
		{"activate before prepare", selfSrv, `{"stage":"activate"}`, 409, "Conflict", "not allowed in the current rotation stage"},
		{"operator-managed", opSrv, `{"stage":"prepare","force":true}`, 409, "OperatorManaged", "operator-managed"},
		{"prepare", selfSrv, `{"stage":"prepare"}`, 200, "", `"stage": "prepared"`},
		{"activate with nothing connected and no leaf", selfSrv, `{"stage":"activate"}`, 200, "", `"stage": "activated"`},
		{"prune without a ledger", selfSrv, `{"stage":"prune"}`, 409, "NotReady", "no ledger of issued leaves"},
		{"prune forced", selfSrv, `{"stage":"prune","force":true}`, 200, "", `"stage": "stable"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, tt.srv.URL+"/api/v1/ca/rotate", strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer tok")
			resp, err := tt.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.contains) {
				t.Fatalf("%d %s; want %d containing %q", resp.StatusCode, b, tt.status, tt.contains)
			}
			if tt.code != "" {
				var e api.Error
				if err := json.Unmarshal(b, &e); err != nil || e.Code != tt.code {
					t.Fatalf("error code %q (%v), want %q", e.Code, err, tt.code)
				}
			}
		})
	}
	resp, err := opSrv.Client().Get(opSrv.URL + "/api/v1/ca")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET without a token: %d, want 401", resp.StatusCode)
	}
}
