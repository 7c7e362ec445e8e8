package policies_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/causeway-mesh/causeway/control/policy"
	"github.com/causeway-mesh/causeway/control/translate"
)

// TestExamplesValidate decodes every example strictly, checks the rules
// that span resources, translates them and validates the xDS result, and
// checks every kind is shown.
func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	var all []*policy.Resource
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := policy.DecodeAll(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
		all = append(all, rs...)
	}
	if errs := policy.CheckSet(all); len(errs) > 0 {
		t.Errorf("CheckSet: %v", errs)
	}
	for _, k := range policy.Kinds {
		if !slices.ContainsFunc(all, func(r *policy.Resource) bool { return r.Kind == k }) {
			t.Errorf("no example of kind %s", k)
		}
	}
	out, err := translate.Translate(translate.Input{Policies: all})
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	if err := translate.Validate(out); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
