package authz

import (
	"errors"
	"strings"
	"testing"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "/", want: "/"},
		{in: "/admin", want: "/admin"},
		{in: "/admin/", want: "/admin/"},
		{in: "/admin/../admin", want: "/admin"},
		{in: "/public/../admin", want: "/admin"},
		{in: "/%61dmin", want: "/admin"},
		{in: "/%41%44%4d%49%4e", want: "/ADMIN"},
		{in: "//admin", want: "/admin"},
		{in: "///admin//x", want: "/admin/x"},
		{in: "/./admin", want: "/admin"},
		{in: "/public/%2e%2e/admin", want: "/admin"},
		{in: "/public/%2E./admin", want: "/admin"},
		{in: "/public/.%2e/admin", want: "/admin"},
		{in: "/a//../b", want: "/b"}, // slashes merge first, as path.Clean
		{in: "/a/b/../../../../c", want: "/c"},
		{in: "/..", want: "/"},
		{in: "/a/..", want: "/"},
		{in: "/a/.", want: "/a/"},
		{in: "/a/b/..", want: "/a/"},
		{in: "/a/...", want: "/a/..."},
		{in: "/a/..b/.c", want: "/a/..b/.c"},
		{in: "/admin#frag", want: "/admin"},
		{in: "/admin?x=/../y", want: "/admin"},
		{in: "/a%3ab", want: "/a%3Ab"},
		{in: "/a%25b", want: "/a%25b"},
		{in: "/a%252Fb", want: "/a%252Fb"},
		{in: "/%7Euser", want: "/~user"},
		{in: "/caf\xc3\xa9", want: "/caf\xc3\xa9"},
		{in: "/public/..%2Fadmin", wantErr: "%2F"},
		{in: "/public/..%2fadmin", wantErr: "%2F"},
		{in: "/admin%00", wantErr: "NUL"},
		{in: "/admin\x00", wantErr: "control character"},
		{in: "%5Cadmin", wantErr: "does not start with '/'"},
		{in: "/%5Cadmin", wantErr: "%5C"},
		{in: "/%5cadmin", wantErr: "%5C"},
		{in: "/\\admin", wantErr: "backslash"},
		{in: "/a\tb", wantErr: "control character"},
		{in: "/a%", wantErr: "two hex digits"},
		{in: "/a%2", wantErr: "two hex digits"},
		{in: "/a%zz", wantErr: "two hex digits"},
		{in: "", wantErr: "does not start with '/'"},
		{in: "admin", wantErr: "does not start with '/'"},
		{in: "*", wantErr: "does not start with '/'"},
		{in: "http://host/admin", wantErr: "does not start with '/'"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Normalize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadPath) {
					t.Fatalf("Normalize(%q) = %q, %v; want an ErrBadPath containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			again, err := Normalize(got)
			if err != nil || again != got {
				t.Fatalf("Normalize(Normalize(%q)) = %q, %v; want %q", tt.in, again, err, got)
			}
		})
	}
}

func TestNormalizeTarget(t *testing.T) {
	p, q, err := NormalizeTarget("/a/../b?x=%2F&y=/../#frag")
	if err != nil || p != "/b" || q != "x=%2F&y=/../" {
		t.Fatalf("NormalizeTarget = %q, %q, %v; want \"/b\", \"x=%%2F&y=/../\", nil", p, q, err)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "/admin/../admin", "/%61dmin", "//admin", "/public/..%2Fadmin",
		"/admin%00", "/./admin", "/admin/", "%5Cadmin", "/a/./b/../../c/", "/%2e%2e/%2E", "/a?b#c", "/a%25%32%46"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			return
		}
		if !strings.HasPrefix(out, "/") {
			t.Fatalf("Normalize(%q) = %q does not start with '/'", in, out)
		}
		for _, bad := range []string{"//", "/../", "/./"} {
			if strings.Contains(out, bad) {
				t.Fatalf("Normalize(%q) = %q contains %q", in, out, bad)
			}
		}
		if strings.HasSuffix(out, "/..") || strings.HasSuffix(out, "/.") {
			t.Fatalf("Normalize(%q) = %q ends in a dot segment", in, out)
		}
		if strings.ContainsAny(out, "\x00\\?#") {
			t.Fatalf("Normalize(%q) = %q contains a refused character", in, out)
		}
		again, err := Normalize(out)
		if err != nil || again != out {
			t.Fatalf("not idempotent: Normalize(%q) = %q, Normalize(that) = %q, %v", in, out, again, err)
		}
	})
}

var (
	frontend = spiffeid.Must("mesh.local", "default", "frontend")
	ops      = spiffeid.Must("mesh.local", "ops", "admin-console")
	batch    = spiffeid.Must("mesh.local", "jobs", "batch-1")
)

func mustCompile(t testing.TB, p Policy) *Compiled {
	t.Helper()
	c, err := Compile(p)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return c
}

// adminPolicy: /admin only for the ops namespace, never DELETE; /orders
// and /healthz for anyone; everything else denied.
func adminPolicy(t testing.TB) *Compiled {
	return mustCompile(t, Policy{
		Service: "orders",
		Default: Deny,
		Rules: []Rule{{
			Name:   "admin-ops-only",
			Action: Deny,
			From:   []Source{{Namespaces: []string{"default", "jobs"}}},
			To:     []Operation{{Paths: []string{"/admin/*"}}},
		}, {
			Name:   "no-admin-delete",
			Action: Deny,
			To:     []Operation{{Paths: []string{"/admin/*"}, Methods: []string{"DELETE"}}},
		}, {
			Name:   "ops",
			Action: Allow,
			From:   []Source{{Namespaces: []string{"ops"}}},
		}, {
			Name:   "public",
			Action: Allow,
			To:     []Operation{{Paths: []string{"/orders/*", "/healthz"}}},
		}},
	})
}

// TestCVEEncodings runs each encoding through Normalize then Evaluate: no
// spelling of /admin reaches it from a caller the policy denies.
func TestCVEEncodings(t *testing.T) {
	p := mustCompile(t, Policy{
		Service: "orders",
		Default: Allow,
		Rules: []Rule{{
			Name: "no-admin", Action: Deny,
			From: []Source{{Services: []string{"frontend"}}},
			To:   []Operation{{Paths: []string{"/admin/*"}}},
		}},
	})
	for _, raw := range []string{
		"/admin", "/admin/../admin", "/%61dmin", "//admin", "/public/..%2Fadmin", "/admin%00",
		"/./admin", "/admin/", "%5Cadmin", "/admin/users", "/x/%2e%2e/admin", "/admin#x", "/admin?x",
		"/public/../../admin/", "/%2e/admin", "/admin\x00", "/\\admin",
	} {
		path, err := Normalize(raw)
		if err != nil {
			continue // refused with 400 before evaluation: it reaches nothing
		}
		d := p.Evaluate(Request{Source: frontend, Method: "GET", Path: path})
		if d.Allowed || d.Rule != "no-admin" {
			t.Errorf("%q (normalised %q): %+v; want denied by no-admin", raw, path, d)
		}
	}
	for _, raw := range []string{"/administrator", "/public/admin", "/admin.html"} {
		path, err := Normalize(raw)
		if err != nil {
			t.Fatalf("Normalize(%q): %v", raw, err)
		}
		if d := p.Evaluate(Request{Source: frontend, Method: "GET", Path: path}); !d.Allowed {
			t.Errorf("%q: %+v; want allowed (not under /admin/)", raw, d)
		}
	}
}

func TestEvaluate(t *testing.T) {
	grpcPolicy := mustCompile(t, Policy{
		Service: "payments",
		Default: Deny,
		Rules: []Rule{{
			Name: "frontend-reads", Action: Allow,
			From: []Source{{Services: []string{"front*"}}},
			To:   []Operation{{Methods: []string{"GET", "HEAD"}, Paths: []string{"/v1/*"}}, {GRPCMethods: []string{"pay.v1.Payments/Get"}}},
		}, {
			Name: "batch-any", Action: Allow,
			From: []Source{{Namespaces: []string{"jobs"}, Services: []string{"*-1"}}},
			To:   []Operation{{GRPCServices: []string{"pay.v1.Payments"}}},
		}, {
			Name: "no-refunds", Action: Deny,
			To: []Operation{{GRPCMethods: []string{"pay.v1.Payments/Refund"}}},
		}, {
			Name: "health", Action: Allow,
			To: []Operation{{Paths: []string{"/healthz"}, Methods: []string{"GET"}}},
		}},
	})
	tests := []struct {
		name      string
		policy    *Compiled
		req       Request
		allowed   bool
		rule      string
		reasonHas string
	}{
		{"ops may use admin", adminPolicy(t), Request{Source: ops, Method: "POST", Path: "/admin/x"}, true, "ops", "allowed by"},
		{"frontend denied admin", adminPolicy(t), Request{Source: frontend, Method: "GET", Path: "/admin"}, false, "admin-ops-only", "denied by"},
		{"anonymous denied admin by default", adminPolicy(t), Request{Method: "GET", Path: "/admin/"}, false, "", "default deny"},
		{"anonymous public", adminPolicy(t), Request{Method: "GET", Path: "/orders"}, true, "public", ""},
		{"frontend public", adminPolicy(t), Request{Source: frontend, Method: "GET", Path: "/orders/7"}, true, "public", ""},
		{"frontend elsewhere: default deny", adminPolicy(t), Request{Source: frontend, Method: "GET", Path: "/other"}, false, "", "default deny"},
		{"batch denied admin", adminPolicy(t), Request{Source: batch, Method: "GET", Path: "/admin/jobs"}, false, "admin-ops-only", ""},
		{"deny wins over allow", adminPolicy(t), Request{Source: ops, Method: "DELETE", Path: "/admin/x"}, false, "no-admin-delete", ""},
		{"frontend GET /v1", grpcPolicy, Request{Source: frontend, Method: "GET", Path: "/v1/pay"}, true, "frontend-reads", ""},
		{"frontend POST /v1: default deny", grpcPolicy, Request{Source: frontend, Method: "POST", Path: "/v1/pay"}, false, "", "default deny"},
		{"frontend /v1 prefix is segment-aware", grpcPolicy, Request{Source: frontend, Method: "GET", Path: "/v10"}, false, "", "default deny"},
		{"frontend gRPC Get", grpcPolicy, Request{Source: frontend, Method: "POST", Path: "/pay.v1.Payments/Get", GRPCMethod: "pay.v1.Payments/Get"}, true, "frontend-reads", ""},
		{"frontend gRPC List", grpcPolicy, Request{Source: frontend, Method: "POST", Path: "/pay.v1.Payments/List", GRPCMethod: "pay.v1.Payments/List"}, false, "", ""},
		{"batch gRPC any method", grpcPolicy, Request{Source: batch, Method: "POST", GRPCMethod: "pay.v1.Payments/List", Path: "/pay.v1.Payments/List"}, true, "batch-any", ""},
		{"batch not gRPC", grpcPolicy, Request{Source: batch, Method: "GET", Path: "/v1/pay"}, false, "", ""},
		{"refund denied even to batch", grpcPolicy, Request{Source: batch, Method: "POST", GRPCMethod: "pay.v1.Payments/Refund", Path: "/pay.v1.Payments/Refund"}, false, "no-refunds", ""},
		{"anonymous health", grpcPolicy, Request{Method: "GET", Path: "/healthz"}, true, "health", ""},
		{"anonymous health exact with trailing slash", grpcPolicy, Request{Method: "GET", Path: "/healthz/"}, true, "health", ""},
		{"anonymous health below exact", grpcPolicy, Request{Method: "GET", Path: "/healthz/x"}, false, "", ""},
		{"anonymous never matches from", grpcPolicy, Request{Method: "GET", Path: "/v1/pay"}, false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.policy.Evaluate(tt.req)
			if d.Allowed != tt.allowed || d.Rule != tt.rule || !strings.Contains(d.Reason, tt.reasonHas) {
				t.Fatalf("Evaluate = %+v; want allowed=%v rule=%q reason containing %q", d, tt.allowed, tt.rule, tt.reasonHas)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	ok := Rule{Name: "r", To: []Operation{{Paths: []string{"/a"}}}}
	tests := []struct {
		name    string
		p       Policy
		wantErr string
	}{
		{"bad service", Policy{Service: "Orders"}, "service"},
		{"no rule name", Policy{Service: "s", Rules: []Rule{{}}}, "rules[0].name: required"},
		{"duplicate name", Policy{Service: "s", Rules: []Rule{ok, ok}}, "rules[1].name"},
		{"bad action", Policy{Service: "s", Rules: []Rule{{Name: "x", Action: 7}}}, "rules[0].action"},
		{"bad default", Policy{Service: "s", Default: 9}, "default"},
		{"unnormalised path", Policy{Service: "s", Rules: []Rule{{Name: "x", To: []Operation{{Paths: []string{"/a/../b"}}}}}}, "rules[0].to[0].paths[0]: \"/a/../b\" is not normalised; write \"/b\""},
		{"encoded path", Policy{Service: "s", Rules: []Rule{{Name: "x", To: []Operation{{Paths: []string{"/%61"}}}}}}, "not normalised"},
		{"relative path", Policy{Service: "s", Rules: []Rule{{Name: "x", To: []Operation{{Paths: []string{"a"}}}}}}, "paths[0]"},
		{"inner star", Policy{Service: "s", Rules: []Rule{{Name: "x", To: []Operation{{Paths: []string{"/a*"}}}}}}, "'*' is allowed only"},
		{"lower-case method", Policy{Service: "s", Rules: []Rule{{Name: "x", To: []Operation{{Methods: []string{"get"}}}}}}, "methods[0]"},
		{"bad grpc method", Policy{Service: "s", Rules: []Rule{{Name: "x", To: []Operation{{GRPCMethods: []string{"pkg.Svc"}}}}}}, "grpcMethods[0]"},
		{"bad grpc service", Policy{Service: "s", Rules: []Rule{{Name: "x", To: []Operation{{GRPCServices: []string{"a/b"}}}}}}, "grpcServices[0]"},
		{"middle star", Policy{Service: "s", Rules: []Rule{{Name: "x", From: []Source{{Services: []string{"a*b"}}}}}}, "rules[0].from[0].services[0]"},
		{"two stars", Policy{Service: "s", Rules: []Rule{{Name: "x", From: []Source{{Namespaces: []string{"*a*"}}}}}}, "namespaces[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.p)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Compile error = %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseAction(t *testing.T) {
	for in, want := range map[string]Action{"": Allow, "allow": Allow, "DENY": Deny} {
		if got, err := ParseAction(in); err != nil || got != want {
			t.Errorf("ParseAction(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseAction("AUDIT"); err == nil {
		t.Error("ParseAction(\"AUDIT\") succeeded")
	}
}

func BenchmarkNormalize(b *testing.B) {
	for _, p := range []string{"/api/v1/orders/12345", "/api/./v1//orders/%61/../12345"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Normalize(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEvaluate(b *testing.B) {
	p := adminPolicy(b)
	req := Request{Source: frontend, Method: "GET", Path: "/orders/12345"}
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Evaluate(req); !d.Allowed {
			b.Fatal(d)
		}
	}
}
