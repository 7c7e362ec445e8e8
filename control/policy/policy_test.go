package policy

import (
	"errors"
	"strings"
	"testing"
)

const routeHead = "apiVersion: causeway.dev/v1alpha1\nkind: HTTPRoute\nmetadata:\n  name: r\nspec:\n  parentRefs:\n  - name: inventory\n"
const backendHead = "apiVersion: causeway.dev/v1alpha1\nkind: BackendPolicy\nmetadata:\n  name: b\nspec:\n  targetRef:\n    name: orders\n"
const fencingHead = "apiVersion: causeway.dev/v1alpha1\nkind: FencingPolicy\nmetadata:\n  name: f\nspec:\n"

// TestDecodeValidation covers every rule with a good and a bad input,
// and checks the exact field path and code of the first problem.
func TestDecodeValidation(t *testing.T) {
	rules := func(body string) string { return routeHead + "  rules:\n" + body }
	tests := []struct {
		name      string
		doc       string
		wantField string // "" with wantCode "" means valid
		wantCode  Code
	}{
		{"route ok", rules("  - backendRefs:\n    - name: inventory\n      weight: 90\n    - name: inventory-v2\n      weight: 10\n"), "", ""},
		{"weight too high", rules("  - backendRefs:\n    - name: a\n    - name: b\n      weight: 1000001\n"), "spec.rules[0].backendRefs[1].weight", CodeInvalid},
		{"weight negative", rules("  - backendRefs:\n    - name: a\n      weight: -1\n"), "spec.rules[0].backendRefs[0].weight", CodeInvalid},
		{"weights all zero", rules("  - backendRefs:\n    - name: a\n      weight: 0\n"), "spec.rules[0].backendRefs", CodeInvalid},
		{"weight zero with another", rules("  - backendRefs:\n    - name: a\n      weight: 0\n    - name: b\n"), "", ""},
		{"weight not integer", rules("  - backendRefs:\n    - name: a\n      weight: 1.5\n"), "spec.rules[0].backendRefs[0].weight", CodeTypeInvalid},
		{"weight string", rules("  - backendRefs:\n    - name: a\n      weight: high\n"), "spec.rules[0].backendRefs[0].weight", CodeTypeInvalid},
		{"duplicate backend", rules("  - backendRefs:\n    - name: a\n    - name: a\n"), "spec.rules[0].backendRefs[1].name", CodeDuplicate},
		{"backend kind", rules("  - backendRefs:\n    - name: a\n      kind: Gateway\n"), "spec.rules[0].backendRefs[0].kind", CodeNotSupported},
		{"backend name bad", rules("  - backendRefs:\n    - name: Bad_Name\n"), "spec.rules[0].backendRefs[0].name", CodeInvalid},
		{"unknown field", rules("  - backendRef:\n    - name: a\n"), "spec.rules[0].backendRef", CodeUnknownField},
		{"wrong case field", rules("  - BackendRefs:\n    - name: a\n"), "spec.rules[0].BackendRefs", CodeUnknownField},
		{"no rules", routeHead, "spec.rules", CodeRequired},
		{"no parentRefs", "apiVersion: causeway.dev/v1alpha1\nkind: HTTPRoute\nmetadata:\n  name: r\nspec:\n  rules:\n  - {}\n", "spec.parentRefs", CodeRequired},
		{"path prefix ok", rules("  - matches:\n    - path:\n        value: /items\n"), "", ""},
		{"path without slash", rules("  - matches:\n    - path:\n        value: items\n"), "spec.rules[0].matches[0].path.value", CodeInvalid},
		{"path type", rules("  - matches:\n    - path:\n        type: Glob\n        value: /x\n"), "spec.rules[0].matches[0].path.type", CodeNotSupported},
		{"path regex bad", rules("  - matches:\n    - path:\n        type: RegularExpression\n        value: '/(['\n"), "spec.rules[0].matches[0].path.value", CodeInvalid},
		{"path regex ok", rules("  - matches:\n    - path:\n        type: RegularExpression\n        value: '/items/[0-9]+'\n"), "", ""},
		{"header ok", rules("  - matches:\n    - headers:\n      - name: x-canary\n        value: 'true'\n"), "", ""},
		{"header name bad", rules("  - matches:\n    - headers:\n      - name: 'x canary'\n        value: a\n"), "spec.rules[0].matches[0].headers[0].name", CodeInvalid},
		{"header duplicate", rules("  - matches:\n    - headers:\n      - name: X-A\n        value: a\n      - name: x-a\n        value: b\n"), "spec.rules[0].matches[0].headers[1].name", CodeDuplicate},
		{"header type", rules("  - matches:\n    - headers:\n      - name: x-a\n        type: Prefix\n        value: a\n"), "spec.rules[0].matches[0].headers[0].type", CodeNotSupported},
		{"method ok", rules("  - matches:\n    - method: POST\n"), "", ""},
		{"method bad", rules("  - matches:\n    - method: post\n"), "spec.rules[0].matches[0].method", CodeNotSupported},
		{"timeouts ok", rules("  - timeouts:\n      request: 2s\n      backendRequest: 500ms\n"), "", ""},
		{"backendRequest longer", rules("  - timeouts:\n      request: 1s\n      backendRequest: 2s\n"), "spec.rules[0].timeouts.backendRequest", CodeInvalid},
		{"timeout zero", rules("  - timeouts:\n      request: 0s\n"), "spec.rules[0].timeouts.request", CodeInvalid},
		{"timeout not duration", rules("  - timeouts:\n      request: 5\n"), "spec.rules[0].timeouts.request", CodeTypeInvalid},
		{"retry ok", rules("  - retry:\n      attempts: 3\n      backoff: 50ms\n      codes: [503]\n"), "", ""},
		{"retry attempts high", rules("  - retry:\n      attempts: 11\n"), "spec.rules[0].retry.attempts", CodeInvalid},
		{"retry code", rules("  - retry:\n      codes: [404]\n"), "spec.rules[0].retry.codes[0]", CodeInvalid},
		{"retry code duplicate", rules("  - retry:\n      codes: [503, 503]\n"), "spec.rules[0].retry.codes[1]", CodeDuplicate},
		{"retry backoff", rules("  - retry:\n      backoff: 0s\n"), "spec.rules[0].retry.backoff", CodeInvalid},
		{"rule name duplicate", rules("  - name: a\n  - name: a\n"), "spec.rules[1].name", CodeDuplicate},
		{"rule name bad", rules("  - name: A\n"), "spec.rules[0].name", CodeInvalid},
		{"fault ok", rules("  - fault:\n      delay:\n        percent: 10\n        duration: 100ms\n      abort:\n        percent: 5\n        httpStatus: 503\n        grpcStatus: 14\n"), "", ""},
		{"fault empty", rules("  - fault: {}\n"), "spec.rules[0].fault", CodeRequired},
		{"fault percent", rules("  - fault:\n      delay:\n        percent: 101\n        duration: 1s\n"), "spec.rules[0].fault.delay.percent", CodeInvalid},
		{"fault abort status", rules("  - fault:\n      abort:\n        percent: 1\n        httpStatus: 99\n"), "spec.rules[0].fault.abort.httpStatus", CodeInvalid},
		{"fault grpc status", rules("  - fault:\n      abort:\n        percent: 1\n        grpcStatus: 17\n"), "spec.rules[0].fault.abort.grpcStatus", CodeInvalid},
		{"rate limit", rules("  - rateLimit:\n      perSecond: 0\n"), "spec.rules[0].rateLimit.perSecond", CodeInvalid},
		{"parent kind", "apiVersion: causeway.dev/v1alpha1\nkind: HTTPRoute\nmetadata:\n  name: r\nspec:\n  parentRefs:\n  - name: a\n    kind: Gateway\n  rules:\n  - {}\n", "spec.parentRefs[0].kind", CodeNotSupported},

		{"backend ok", backendHead + "  connectTimeout: 1s\n  loadBalancer:\n    type: round-robin\n", "", ""},
		{"lb type", backendHead + "  loadBalancer:\n    type: random\n", "spec.loadBalancer.type", CodeNotSupported},
		{"limits zero", backendHead + "  limits:\n    maxRequests: 0\n", "spec.limits.maxRequests", CodeInvalid},
		{"breaker ratio", backendHead + "  circuitBreaker:\n    failureRatio: 1.5\n", "spec.circuitBreaker.failureRatio", CodeInvalid},
		{"breaker failures", backendHead + "  circuitBreaker:\n    consecutiveFailures: 0\n", "spec.circuitBreaker.consecutiveFailures", CodeInvalid},
		{"outlier percent", backendHead + "  outlierDetection:\n    maxEjectionPercent: 101\n", "spec.outlierDetection.maxEjectionPercent", CodeInvalid},
		{"outlier times", backendHead + "  outlierDetection:\n    baseEjectionTime: 30s\n    maxEjectionTime: 10s\n", "spec.outlierDetection.maxEjectionTime", CodeInvalid},
		{"budget percent", backendHead + "  retryBudget:\n    percent: 120\n", "spec.retryBudget.percent", CodeInvalid},
		{"connect timeout", backendHead + "  connectTimeout: -1s\n", "spec.connectTimeout", CodeInvalid},
		{"target missing", "apiVersion: causeway.dev/v1alpha1\nkind: BackendPolicy\nmetadata:\n  name: b\nspec:\n  targetRef: {}\n", "spec.targetRef.name", CodeRequired},

		{"fencing ok", fencingHead + "  targetRef:\n    kind: Mesh\n  mode: \"on\"\n", "", ""},
		{"fencing bare on", fencingHead + "  targetRef:\n    kind: Service\n    name: orders\n  mode: off\n", "", ""},
		{"fencing mode", fencingHead + "  targetRef:\n    kind: Mesh\n  mode: maybe\n", "spec.mode", CodeNotSupported},
		{"fencing mode missing", fencingHead + "  targetRef:\n    kind: Mesh\n", "spec.mode", CodeRequired},
		{"fencing mesh name", fencingHead + "  targetRef:\n    kind: Mesh\n    name: x\n  mode: \"on\"\n", "spec.targetRef.name", CodeForbidden},
		{"fencing kind", fencingHead + "  targetRef:\n    kind: Pod\n  mode: \"on\"\n", "spec.targetRef.kind", CodeNotSupported},
		{"fencing size", fencingHead + "  targetRef:\n    kind: Mesh\n  mode: \"on\"\n  expectedSize: 0\n", "spec.expectedSize", CodeInvalid},
		{"fencing method", fencingHead + "  targetRef:\n    kind: Mesh\n  mode: \"on\"\n  writeMethods: [orders.Create]\n", "spec.writeMethods[0]", CodeInvalid},
		{"fencing method ok", fencingHead + "  targetRef:\n    kind: Mesh\n  mode: \"on\"\n  writeMethods: [/orders.v1.Orders/Create, /orders.v1.Orders/*]\n", "", ""},

		{"api version", strings.Replace(backendHead, "v1alpha1", "v2", 1), "apiVersion", CodeNotSupported},
		{"kind unknown", strings.Replace(backendHead, "BackendPolicy", "Gateway", 1), "kind", CodeNotSupported},
		{"name missing", strings.Replace(backendHead, "  name: b\n", "  labels: {a: b}\n", 1), "metadata.name", CodeRequired},
		{"name bad", strings.Replace(backendHead, "name: b\n", "name: B\n", 1), "metadata.name", CodeInvalid},
		{"resourceVersion bad", strings.Replace(backendHead, "name: b\n", "name: b\n  resourceVersion: abc\n", 1), "metadata.resourceVersion", CodeInvalid},
		{"metadata unknown", strings.Replace(backendHead, "name: b\n", "name: b\n  uid: x\n", 1), "metadata.uid", CodeUnknownField},
		{"top unknown", backendHead + "status: {}\n", "status", CodeUnknownField},
		{"spec missing", "apiVersion: causeway.dev/v1alpha1\nkind: BackendPolicy\nmetadata:\n  name: b\n", "spec", CodeRequired},
		{"duplicate key", backendHead + "  connectTimeout: 1s\n  connectTimeout: 2s\n", "", CodeSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Decode([]byte(tt.doc))
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("Decode: got %v, want no error", err)
				}
				if r == nil {
					t.Fatal("Decode returned no resource")
				}
				return
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("Decode: got %v, want an ErrorList with %s %s", err, tt.wantField, tt.wantCode)
			}
			if list[0].Field != tt.wantField || list[0].Code != tt.wantCode {
				t.Errorf("first error: got %s %s (%q), want %s %s", list[0].Field, list[0].Code, list[0].Message, tt.wantField, tt.wantCode)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	_, err := Decode([]byte(routeHead + "  rules:\n  - backendRefs:\n    - name: a\n    - name: b\n      weight: 2000000\n"))
	want := "spec.rules[0].backendRefs[1].weight: FieldValueInvalid: must be between 0 and 1000000"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestDecodeAll(t *testing.T) {
	stream := "# leading comment\n---\n" + backendHead + "---\n# only a comment\n---\n" + routeHead + "  rules:\n  - backendRefs:\n    - name: a\n      weight: -5\n--- \n" + fencingHead + "  targetRef:\n    kind: Mesh\n  mode: \"on\"\n"
	rs, err := DecodeAll([]byte(stream))
	if len(rs) != 2 {
		t.Errorf("got %d resources, want 2", len(rs))
	}
	var de *DocumentError
	if !errors.As(err, &de) {
		t.Fatalf("got %v, want a DocumentError", err)
	}
	if de.Index != 1 || de.Ref != "HTTPRoute default/r" || de.Errs[0].Field != "spec.rules[0].backendRefs[0].weight" {
		t.Errorf("got index %d ref %q errs %v", de.Index, de.Ref, de.Errs)
	}
}

func TestCheckSet(t *testing.T) {
	mk := func(name, doc string) *Resource {
		r, err := Decode([]byte(strings.Replace(doc, "name: b\n", "name: "+name+"\n", 1)))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	errs := CheckSet([]*Resource{mk("b1", backendHead), mk("b2", backendHead)})
	if len(errs) != 1 || errs[0].Field != "BackendPolicy/default/b2.spec.targetRef.name" || errs[0].Code != CodeDuplicate {
		t.Errorf("got %v, want a duplicate on b2", errs)
	}
	if errs := CheckSet([]*Resource{mk("b1", backendHead)}); len(errs) != 0 {
		t.Errorf("got %v, want none", errs)
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"HTTPRoute": KindHTTPRoute, "httproutes": KindHTTPRoute, "backendpolicy": KindBackendPolicy, "FencingPolicies": KindFencingPolicy, "gateway": ""} {
		got, err := ParseKind(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
