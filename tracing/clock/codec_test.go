package clock

import (
	"errors"
	"strings"
	"testing"
)

func TestParseLamport(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{in: "1", want: 1},
		{in: "42", want: 42},
		{in: "9223372036854775807", want: MaxCounter},
		{in: "", wantErr: "length 0"},
		{in: "0", wantErr: "not a decimal"},
		{in: "007", wantErr: "not a decimal"},
		{in: "-1", wantErr: "not a decimal"},
		{in: "+1", wantErr: "not a decimal"},
		{in: " 1", wantErr: "not a decimal"},
		{in: "1 ", wantErr: "not a decimal"},
		{in: "0x10", wantErr: "not a decimal"},
		{in: "9223372036854775808", wantErr: "not a decimal"},
		{in: "9999999999999999999", wantErr: "not a decimal"},
		{in: "12345678901234567890", wantErr: "length 20"},
		{in: strings.Repeat("9", 4096), wantErr: "length 4096"},
	}
	for _, tt := range tests {
		got, err := ParseLamport(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseLamport(%.20q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLamport(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
		if s := FormatLamport(got); s != tt.in {
			t.Errorf("FormatLamport(%d) = %q, want %q", got, s, tt.in)
		}
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, k := range []Key{0, 1, 63, 64, 1<<48 - 1, NodeKey("orders-host1", 7)} {
		s := k.String()
		if len(s) != KeyLen {
			t.Fatalf("Key(%d).String() = %q, want %d chars", k, s, KeyLen)
		}
		got, err := ParseKey(s)
		if err != nil || got != k {
			t.Errorf("ParseKey(%q) = %d, %v; want %d", s, got, err, k)
		}
	}
	if NodeKey("a", 1) == NodeKey("a", 2) || NodeKey("a", 1) == NodeKey("b", 1) {
		t.Error("NodeKey does not separate nodes or incarnations")
	}
	if NodeKey("a", 1) >= 1<<48 {
		t.Error("NodeKey exceeds 48 bits")
	}
}

func TestParseVector(t *testing.T) {
	tests := []struct {
		in      string
		want    Vector
		wantErr string
	}{
		{in: "AAAAAAAB=1", want: Vector{Entries: []Entry{{1, 1}}}},
		{in: "AAAAAAAC=5,AAAAAAAB=3,AAAAAAAD=9", want: Vector{Entries: []Entry{{2, 5}, {1, 3}, {3, 9}}}},
		{in: "AAAAAAAB=1,~", want: Vector{Entries: []Entry{{1, 1}}, Pruned: true}},
		{in: "________=9223372036854775807", want: Vector{Entries: []Entry{{1<<48 - 1, MaxCounter}}}},
		{in: "", wantErr: "length 0"},
		{in: "~", wantErr: "must follow the last entry"},
		{in: "AAAAAAAB=1,~,AAAAAAAC=1", wantErr: "must follow the last entry"},
		{in: "AAAAAAAB=1,", wantErr: "trailing comma"},
		{in: ",AAAAAAAB=1", wantErr: "not KEY=COUNTER"},
		{in: "AAAAAAAB=1,,AAAAAAAC=1", wantErr: "not KEY=COUNTER"},
		{in: "AAAAAAAB", wantErr: "not KEY=COUNTER"},
		{in: "AAAAAAAB=", wantErr: "not KEY=COUNTER"},
		{in: "AAAAAAB=1", wantErr: "not KEY=COUNTER"},
		{in: "AAAAAAAAB=1", wantErr: "not KEY=COUNTER"},
		{in: "AAAA+AAB=1", wantErr: "base64url"},
		{in: "AAAAAAAB=0", wantErr: "counter"},
		{in: "AAAAAAAB=01", wantErr: "counter"},
		{in: "AAAAAAAB=9223372036854775808", wantErr: "counter"},
		{in: "AAAAAAAB=1 ", wantErr: "counter"},
		{in: "AAAAAAAB=1,AAAAAAAB=2", wantErr: "repeated"},
		{in: "AAAAAAAA=1,AAAAAAAC=1,AAAAAAAB=1", wantErr: "increasing keys"},
		{in: "AAAAAAAA=1,AAAAAAAC=1,AAAAAAAC=1", wantErr: "increasing keys"},
		{in: vecOf(MaxEntries + 1), wantErr: "more than 32 entries"},
		{in: strings.Repeat("A", MaxVectorLen+1), wantErr: "length 1025"},
	}
	for _, tt := range tests {
		got, err := ParseVector(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseVector(%.40q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseVector(%q): %v", tt.in, err)
			continue
		}
		if got.String() != tt.in || got.Pruned != tt.want.Pruned || len(got.Entries) != len(tt.want.Entries) {
			t.Errorf("ParseVector(%q) = %+v, want %+v", tt.in, got, tt.want)
			continue
		}
		for i := range got.Entries {
			if got.Entries[i] != tt.want.Entries[i] {
				t.Errorf("ParseVector(%q) entry %d = %+v, want %+v", tt.in, i, got.Entries[i], tt.want.Entries[i])
			}
		}
	}
}

// vecOf returns a well-formed vector of n entries with the longest counters.
func vecOf(n int) string {
	v := Vector{}
	for i := 0; i < n; i++ {
		v.Entries = append(v.Entries, Entry{Key: Key(i + 1), Counter: MaxCounter})
	}
	v.Pruned = true
	return v.String()
}

func TestLargestVectorFitsLimit(t *testing.T) {
	s := vecOf(MaxEntries)
	if len(s) > MaxVectorLen {
		t.Fatalf("largest vector is %d bytes, limit %d", len(s), MaxVectorLen)
	}
	if _, err := ParseVector(s); err != nil {
		t.Fatalf("largest vector rejected: %v", err)
	}
}

func TestCompare(t *testing.T) {
	v := func(s string) Vector {
		t.Helper()
		x, err := ParseVector(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	tests := []struct {
		a, b string
		want Order
	}{
		{"AAAAAAAB=1", "AAAAAAAB=2", Before},
		{"AAAAAAAB=3", "AAAAAAAB=2", After},
		{"AAAAAAAB=3", "AAAAAAAB=3", Equal},
		{"AAAAAAAB=3", "AAAAAAAC=1,AAAAAAAB=3", Before},
		{"AAAAAAAC=1,AAAAAAAB=3", "AAAAAAAB=3", After},
		{"AAAAAAAB=3", "AAAAAAAC=1,AAAAAAAB=2", Concurrent},
		{"AAAAAAAB=3,~", "AAAAAAAC=1,AAAAAAAB=2", Unknown},
		{"AAAAAAAB=3", "AAAAAAAC=1,AAAAAAAB=2,~", Unknown},
		{"AAAAAAAB=3,~", "AAAAAAAC=1,AAAAAAAB=3,~", Before},
		{"AAAAAAAB=3,AAAAAAAC=1", "AAAAAAAC=1,AAAAAAAB=3", Unknown}, // cycle: forged
	}
	for _, tt := range tests {
		if got := Compare(v(tt.a), v(tt.b)); got != tt.want {
			t.Errorf("Compare(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	if got := Compare(Vector{}, v("AAAAAAAB=1")); got != Unknown {
		t.Errorf("Compare(empty, x) = %v, want unknown", got)
	}
}
