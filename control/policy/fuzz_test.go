package policy

import "testing"

// Any document either decodes into a resource that validates, or is
// refused with field errors; nothing panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"apiVersion: causeway.dev/v1alpha1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: orders}]\n  rules:\n  - backendRefs: [{name: orders, weight: 1}]\n",
		"apiVersion: causeway.dev/v1alpha1\nkind: FencingPolicy\nmetadata: {name: m}\nspec: {targetRef: {kind: Mesh}, mode: \"on\"}\n",
		"apiVersion: causeway.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  targetRef: {kind: Service, name: orders}\n  default: deny\n  rules: [{name: r, action: ALLOW, to: [{paths: [\"/x/*\"]}]}]\n",
		"apiVersion: causeway.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {name: b}\nspec: {targetRef: {kind: Service, name: orders}}\n",
		"kind: [\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if len(doc) > 64<<10 {
			return
		}
		r, err := Decode(doc)
		if err != nil {
			return
		}
		if errs := Validate(r); len(errs) > 0 {
			t.Fatalf("Decode accepted a resource that does not validate: %v", errs)
		}
	})
}
