package translate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/causeway-mesh/causeway/control/membership"
	"github.com/causeway-mesh/causeway/control/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestGolden translates each testdata/NAME.policy.yaml with
// NAME.members.json and compares the resources, as protojson with stable
// key order, with NAME.golden.json. Run with -update to regenerate.
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*.policy.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, pf := range cases {
		name := strings.TrimSuffix(filepath.Base(pf), ".policy.yaml")
		t.Run(name, func(t *testing.T) {
			in := loadInput(t, name)
			out, err := Translate(in)
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			if err := Validate(out); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			got := render(t, out)
			golden := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o600); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s differs (-want +got; go test -update regenerates it):\n%s", golden, diff)
			}
			// A second translation of the same input is identical.
			again, err := Translate(in)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(render(t, again), got) {
				t.Error("translation is not deterministic")
			}
		})
	}
}

func loadInput(t *testing.T, name string) Input {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := policy.DecodeAll(data)
	if err != nil {
		t.Fatal(err)
	}
	mj, err := os.ReadFile(filepath.Join("testdata", name+".members.json"))
	if err != nil {
		t.Fatal(err)
	}
	var inst []membership.Instance
	if err := json.Unmarshal(mj, &inst); err != nil {
		t.Fatal(err)
	}
	membership.Sort(inst)
	return Input{Policies: rs, Instances: inst, Services: []string{"frontend"}}
}

// render writes the output as indented JSON with sorted keys.
func render(t *testing.T, o *Output) []byte {
	t.Helper()
	conv := func(m proto.Message) any {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	doc := map[string]any{"warnings": o.Warnings}
	var cs, es, ls, rs []any
	for _, c := range o.Clusters {
		cs = append(cs, conv(c))
	}
	for _, e := range o.Endpoints {
		es = append(es, conv(e))
	}
	for _, l := range o.Listeners {
		ls = append(ls, conv(l))
	}
	for _, r := range o.Routes {
		rs = append(rs, conv(r))
	}
	doc["clusters"], doc["endpoints"], doc["listeners"], doc["routes"] = cs, es, ls, rs
	doc["extension"] = conv(o.Extension)
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// TestValidateCatchesSemanticErrors breaks a valid output in the ways the
// proto rules miss and gRPC NACKs.
func TestValidateCatchesSemanticErrors(t *testing.T) {
	for _, tt := range []struct {
		name   string
		break_ func(o *Output)
		want   string
	}{
		{"zero retries", func(o *Output) {
			o.Routes[4].VirtualHosts[0].Routes[0].GetRoute().RetryPolicy.NumRetries.Value = 0
		}, "num_retries must be at least 1"},
		{"locality without weight", func(o *Output) { o.Endpoints[1].Endpoints[0].LoadBalancingWeight = nil }, "has no weight"},
		{"locality missing", func(o *Output) { o.Endpoints[1].Endpoints[0].Locality = nil }, "has no Locality"},
		{"unknown cluster", func(o *Output) {
			o.Routes[0].VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = nil
		}, "invalid"},
		{"ejection percent", func(o *Output) { o.Clusters[4].OutlierDetection.MaxEjectionPercent.Value = 150 }, "max_ejection_percent"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Translate(loadInput(t, "mesh"))
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(out); err != nil {
				t.Fatalf("unbroken output: %v", err)
			}
			tt.break_(out)
			err = Validate(out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
