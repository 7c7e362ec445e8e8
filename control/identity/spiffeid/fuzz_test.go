package spiffeid

import "testing"

// Any input either parses into an ID that formats back to itself and
// re-parses equal, or is refused; nothing panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"spiffe://causeway.local/ns/default/sa/orders",
		"spiffe://a.b/ns/x/sa/y",
		"spiffe://causeway.local/ns/default/sa/orders/extra",
		"spiffe://CAUSEWAY.local/ns/default/sa/orders",
		"spiffe:///ns/default/sa/orders",
		"http://causeway.local/ns/default/sa/orders",
		"spiffe://causeway.local/ns/default/sa/or%64ers",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(id.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %q, which does not parse: %v", s, id, err)
		}
		if again != id {
			t.Fatalf("Parse(%q) = %q, re-parsed as %q", s, id, again)
		}
	})
}
