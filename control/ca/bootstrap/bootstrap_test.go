package bootstrap

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStore(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	path := filepath.Join(t.TempDir(), "d", FileName)
	s, err := Open(path, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	multi, info, err := s.Create(Scope{Service: "orders"}, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	if info.Scope.Namespace != "default" || !strings.HasPrefix(multi, "cwt."+info.ID+".") {
		t.Fatalf("token %q info %+v", multi, info)
	}
	single, _, err := s.Create(Scope{Service: "billing", Namespace: "prod"}, time.Hour, true)
	if err != nil {
		t.Fatal(err)
	}

	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), strings.Split(multi, ".")[2]) {
		t.Fatal("the secret is stored in clear")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, want 0600", fi.Mode().Perm())
	}

	for i := 0; i < 2; i++ {
		if sc, err := s.Redeem(multi); err != nil || sc != (Scope{Service: "orders", Namespace: "default"}) {
			t.Fatalf("Redeem(multi) #%d = %+v, %v", i, sc, err)
		}
	}
	if sc, err := s.Redeem(single); err != nil || sc != (Scope{Service: "billing", Namespace: "prod"}) {
		t.Fatalf("Redeem(single) = %+v, %v", sc, err)
	}
	// Single use survives a restart.
	s2, err := Open(path, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Redeem(single); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second Redeem of a single-use token after reload: %v", err)
	}
	if _, err := s2.Redeem(multi); err != nil {
		t.Fatalf("multi-use token lost across reload: %v", err)
	}

	last := byte('A')
	if multi[len(multi)-1] == 'A' {
		last = 'B'
	}
	wrong := multi[:len(multi)-1] + string(last)
	for name, tok := range map[string]string{
		"wrong secret": wrong,
		"unknown id":   "cwt.0123456789abcdef." + strings.Split(multi, ".")[2],
		"malformed":    "cwt.abc",
		"other prefix": strings.Replace(multi, "cwt.", "xyz.", 1),
		"empty":        "",
	} {
		if _, err := s2.Redeem(tok); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Redeem = %v, want ErrInvalid", name, err)
		}
	}

	now = now.Add(time.Hour)
	if _, err := s2.Redeem(multi); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	if n := len(s2.List()); n != 0 {
		t.Fatalf("List has %d live tokens after expiry, want 0", n)
	}
}

func TestCreateValidation(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), FileName))
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		sc  Scope
		ttl time.Duration
	}{
		"bad service":   {Scope{Service: "Orders"}, 0},
		"no service":    {Scope{}, 0},
		"bad namespace": {Scope{Service: "a", Namespace: "x_y"}, 0},
		"ttl too long":  {Scope{Service: "a"}, MaxTTL + time.Second},
		"ttl too short": {Scope{Service: "a"}, time.Millisecond},
	} {
		if _, _, err := s.Create(tc.sc, tc.ttl, false); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: Create = %v, want ErrBadRequest", name, err)
		}
	}
}

func TestHandler(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), FileName))
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(s, "api-secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, auth, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, Path, strings.NewReader(body))
		if auth != "" {
			r.Header.Set("Authorization", "Bearer "+auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := do("POST", "api-secret", `{"service":"orders","namespace":"prod","ttl":"10m","singleUse":true}`)
	if w.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	var resp CreateResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if sc, err := s.Redeem(resp.Token); err != nil || sc.Service != "orders" || sc.Namespace != "prod" || !resp.SingleUse {
		t.Fatalf("issued token redeems to %+v, %v", sc, err)
	}
	for _, tc := range []struct {
		method, auth, body string
		code               int
	}{
		{"POST", "", `{"service":"orders"}`, 401},
		{"POST", "wrong", `{"service":"orders"}`, 401},
		{"GET", "api-secret", "", 405},
		{"POST", "api-secret", `{"service":"orders","extra":1}`, 400},
		{"POST", "api-secret", `{"service":"Orders"}`, 400},
		{"POST", "api-secret", `{"service":"orders","ttl":"soon"}`, 400},
		{"POST", "api-secret", `{"service":"orders","ttl":"-1h"}`, 400},
		{"POST", "api-secret", `{"service":"orders"}{}`, 400},
		{"POST", "api-secret", `{"service":"` + strings.Repeat("a", maxBody) + `"}`, 413},
	} {
		if w := do(tc.method, tc.auth, tc.body); w.Code != tc.code {
			t.Errorf("%s auth=%q body=%.40q: %d %s, want %d", tc.method, tc.auth, tc.body, w.Code, w.Body, tc.code)
		}
	}
	if _, err := NewHandler(s, "", nil); err == nil {
		t.Fatal("empty API token accepted")
	}
}
