// Package h1wire writes HTTP/1.1 header fields the way net/http's
// Header.Write does, without sorting them first: the app client's requests
// (proxy/h1client) and the fast lane's responses (proxy/h1fast.go) use it.
package h1wire

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// WriteFields writes every field of h except those skip reports (skip may
// be nil). A field with an invalid name is left out, as net/http does.
// Field order carries no meaning between different names, so the map's
// order is kept; the values of one name keep theirs.
func WriteFields(bw *bufio.Writer, h http.Header, skip func(name string) bool) {
	for k, vv := range h {
		if (skip != nil && skip(k)) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			WriteField(bw, k, v)
		}
	}
}

// WriteField writes one field line. CR and LF in the value become spaces
// and the value is trimmed, so a value can never start another field. A
// bufio.Writer keeps its first error; the caller's Flush reports it.
func WriteField(bw *bufio.Writer, name, value string) {
	if strings.IndexByte(value, '\r') >= 0 || strings.IndexByte(value, '\n') >= 0 {
		value = newlines.Replace(value)
	}
	_, _ = bw.WriteString(name)
	_, _ = bw.WriteString(": ")
	_, _ = bw.WriteString(textproto.TrimString(value))
	_, _ = bw.WriteString("\r\n")
}

var newlines = strings.NewReplacer("\r", " ", "\n", " ")
