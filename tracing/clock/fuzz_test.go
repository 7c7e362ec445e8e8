package clock

import (
	"net/http"
	"testing"
)

func FuzzParseLamport(f *testing.F) {
	for _, s := range []string{"1", "42", "9223372036854775807", "9223372036854775808", "0", "01", "-1", "", " 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseLamport(s)
		if err != nil {
			return
		}
		if v == 0 || v > MaxCounter {
			t.Fatalf("ParseLamport(%q) = %d outside [1, MaxCounter]", s, v)
		}
		if got := FormatLamport(v); got != s {
			t.Fatalf("round trip %q -> %d -> %q", s, v, got)
		}
	})
}

func FuzzParseVector(f *testing.F) {
	for _, s := range []string{
		"AAAAAAAB=1", "AAAAAAAC=5,AAAAAAAB=3,AAAAAAAD=9", "AAAAAAAB=1,~", "~", "AAAAAAAB=1,",
		"AAAAAAAB=1,AAAAAAAB=2", vecOf(MaxEntries), vecOf(3),
	} {
		f.Add(s)
	}
	c, err := New(Config{NodeID: "fuzz", Incarnation: 1, MaxEntries: 4})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVector(s)
		if err == nil {
			// Canonical: what parses re-encodes to the same bytes.
			if got := v.String(); got != s {
				t.Fatalf("round trip %q -> %q", s, got)
			}
			if len(v.Entries) == 0 || len(v.Entries) > MaxEntries {
				t.Fatalf("%d entries", len(v.Entries))
			}
			_ = Compare(v, v)
		}
		// Whatever arrives, a receive records an event and stays within bounds.
		st, rerr := c.Receive(http.Header{HeaderVector: {s}, HeaderLamport: {s}})
		if st.Lamport == 0 {
			t.Fatalf("Receive(%q) issued no stamp: %v", s, rerr)
		}
		if err != nil && rerr == nil {
			t.Fatalf("Receive(%q) accepted a vector ParseVector rejects: %v", s, err)
		}
		own, perr := ParseVector(st.Vector)
		if perr != nil {
			t.Fatalf("own vector %q does not parse: %v", st.Vector, perr)
		}
		if len(own.Entries) > 4 || len(st.Vector) > MaxVectorLen {
			t.Fatalf("own vector %q over the bound", st.Vector)
		}
	})
}
