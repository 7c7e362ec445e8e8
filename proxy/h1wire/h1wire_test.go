package h1wire

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

func TestWriteFieldsSanitises(t *testing.T) {
	framing := func(name string) bool { return name == "Content-Length" || name == "Host" }
	for _, tc := range []struct {
		name string
		h    http.Header
		skip func(string) bool
		want string
	}{
		{"plain", http.Header{"Accept": {"*/*"}}, nil, "Accept: */*\r\n"},
		{"repeated, in order", http.Header{"Via": {"a", "b"}}, nil, "Via: a\r\nVia: b\r\n"},
		{"newlines become spaces", http.Header{"X-A": {"one\r\nX-Injected: two"}}, nil, "X-A: one  X-Injected: two\r\n"},
		{"trimmed", http.Header{"X-A": {" \tv \t"}}, nil, "X-A: v\r\n"},
		{"invalid name left out", http.Header{"Bad Name": {"v"}, "X-Ok": {"v"}}, nil, "X-Ok: v\r\n"},
		{"skipped", http.Header{"Content-Length": {"5"}, "Host": {"x"}}, framing, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			bw := bufio.NewWriter(&b)
			WriteFields(bw, tc.h, tc.skip)
			_ = bw.Flush()
			if b.String() != tc.want {
				t.Errorf("got %q, want %q", b.String(), tc.want)
			}
		})
	}
}
