package spiffeid

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    ID
		wantErr string
	}{
		{in: "spiffe://mesh.local/ns/default/sa/orders", want: Must("mesh.local", "default", "orders")},
		{in: "spiffe://cluster_1.example-2/ns/prod/sa/a1-b2", want: Must("cluster_1.example-2", "prod", "a1-b2")},
		{in: "", wantErr: "empty"},
		{in: "SPIFFE://mesh.local/ns/default/sa/orders", wantErr: "does not start with"},
		{in: "https://mesh.local/ns/default/sa/orders", wantErr: "does not start with"},
		{in: "spiffe:/mesh.local/ns/default/sa/orders", wantErr: "does not start with"},
		{in: "spiffe://mesh.local", wantErr: "no path"},
		{in: "spiffe://mesh.local/", wantErr: "is not /ns/NAMESPACE/sa/SERVICE"},
		{in: "spiffe:///ns/default/sa/orders", wantErr: "empty trust domain"},
		{in: "spiffe://Mesh.local/ns/default/sa/orders", wantErr: "character 'M'"},
		{in: "spiffe://mesh.local:8443/ns/default/sa/orders", wantErr: "character ':'"},
		{in: "spiffe://user@mesh.local/ns/default/sa/orders", wantErr: "character '@'"},
		{in: "spiffe://mesh.local/ns/default/sa/orders/", wantErr: "is not /ns/NAMESPACE/sa/SERVICE"},
		{in: "spiffe://mesh.local/ns/default/sa/orders/extra", wantErr: "is not /ns/NAMESPACE/sa/SERVICE"},
		{in: "spiffe://mesh.local/ns//sa/orders", wantErr: "namespace \"\""},
		{in: "spiffe://mesh.local/ns/default/sa/", wantErr: "service \"\""},
		{in: "spiffe://mesh.local/sa/orders/ns/default", wantErr: "is not /ns/NAMESPACE/sa/SERVICE"},
		{in: "spiffe://mesh.local/ns/default/sa/Orders", wantErr: "service \"Orders\""},
		{in: "spiffe://mesh.local/ns/default/sa/ord%65rs", wantErr: "service"},
		{in: "spiffe://mesh.local/ns/default/sa/orders?x=1", wantErr: "service"},
		{in: "spiffe://mesh.local/ns/default/sa/orders#frag", wantErr: "service"},
		{in: "spiffe://mesh.local/ns/default/sa/..", wantErr: "service"},
		{in: "spiffe://mesh.local/ns/-x/sa/orders", wantErr: "namespace"},
		{in: "spiffe://mesh.local/ns/default/sa/" + strings.Repeat("a", 64), wantErr: "service"},
		{in: "spiffe://" + strings.Repeat("a", 256) + "/ns/default/sa/orders", wantErr: "longer than 255"},
		{in: "spiffe://mesh.local/ns/default/sa/" + strings.Repeat("a", 3000), wantErr: "longer than 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse(%q) error %v does not wrap ErrInvalid", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want the input %q back", got.String(), tt.in)
			}
		})
	}
}

func TestNewDefaultsNamespace(t *testing.T) {
	id, err := New("mesh.local", "", "orders")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := id.String(), "spiffe://mesh.local/ns/default/sa/orders"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestFromURLRejectsWhatURLParseTolerates(t *testing.T) {
	for _, s := range []string{
		"spiffe://mesh.local/ns/default/sa/orders?q",
		"spiffe://u:p@mesh.local/ns/default/sa/orders",
		"spiffe://mesh.local:1/ns/default/sa/orders",
		"spiffe://mesh.local/ns/default/sa/ord%65rs",
		"spiffe:opaque",
	} {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", s, err)
		}
		if id, err := FromURL(u); err == nil {
			t.Errorf("FromURL(%q) = %v, want an error", s, id)
		}
	}
	id := Must("mesh.local", "prod", "orders")
	back, err := FromURL(id.URL())
	if err != nil || back != id {
		t.Fatalf("FromURL(URL()) = %v, %v; want %v", back, err, id)
	}
}

func TestZeroAndText(t *testing.T) {
	var z ID
	if !z.IsZero() || z.String() != "" || z.MemberOf("") {
		t.Fatalf("zero ID: IsZero=%v String=%q MemberOf(\"\")=%v", z.IsZero(), z.String(), z.MemberOf(""))
	}
	id := Must("mesh.local", "prod", "orders")
	if !id.MemberOf("mesh.local") || id.MemberOf("other.local") {
		t.Fatal("MemberOf is wrong")
	}
	b, _ := id.MarshalText()
	var back ID
	if err := back.UnmarshalText(b); err != nil || back != id {
		t.Fatalf("text round trip = %v, %v", back, err)
	}
	if err := back.UnmarshalText([]byte("spiffe://x/y")); err == nil {
		t.Fatal("UnmarshalText accepted an invalid ID")
	}
}
