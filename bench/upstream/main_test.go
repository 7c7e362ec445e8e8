package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestServesHTTP1AndH2C(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer()
	go srv.Serve(ln)
	defer srv.Close()

	h1 := &http.Transport{}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{Protocols: &h2c}
	tests := []struct {
		name      string
		tr        *http.Transport
		method    string
		wantProto int
	}{
		{"http/1.1 GET", h1, http.MethodGet, 1},
		{"http/1.1 POST", h1, http.MethodPost, 1},
		{"h2c prior knowledge", h2, http.MethodGet, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var body io.Reader
			if tt.method == http.MethodPost {
				body = http.NoBody
			}
			req, _ := http.NewRequestWithContext(ctx, tt.method, "http://"+ln.Addr().String()+"/any/path", body)
			resp, err := tt.tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != "Hello, World!" || resp.ProtoMajor != tt.wantProto {
				t.Fatalf("got %d %q proto %d", resp.StatusCode, b, resp.ProtoMajor)
			}
			if resp.ContentLength != 13 || resp.Header.Get("Content-Type") == "" {
				t.Fatalf("missing Content-Length/Content-Type: %v", resp.Header)
			}
		})
	}
}
