package lg

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantStatus int
		wantKeep   bool
		wantErr    error // nil: no error; ErrMalformed; io.ErrUnexpectedEOF...
		rest       string
	}{
		{
			name:       "content-length",
			in:         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!NEXT",
			wantStatus: 200, wantKeep: true, rest: "NEXT",
		},
		{
			name:       "lower-case headers, no reason phrase",
			in:         "HTTP/1.1 503\r\ncontent-length: 2\r\n\r\nnoNEXT",
			wantStatus: 503, wantKeep: true, rest: "NEXT",
		},
		{
			name:       "chunked with extension and trailer",
			in:         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nHello\r\n8\r\n, World!\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT",
			wantStatus: 200, wantKeep: true, rest: "NEXT",
		},
		{
			name:       "connection close",
			in:         "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
			wantStatus: 200, wantKeep: false,
		},
		{
			name:       "http/1.0 without keep-alive",
			in:         "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
			wantStatus: 200, wantKeep: false,
		},
		{
			name:       "http/1.0 with keep-alive",
			in:         "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nxNEXT",
			wantStatus: 200, wantKeep: true, rest: "NEXT",
		},
		{
			name:       "body until close",
			in:         "HTTP/1.1 200 OK\r\n\r\nall of this is body",
			wantStatus: 200, wantKeep: false,
		},
		{
			name:       "204 has no body",
			in:         "HTTP/1.1 204 No Content\r\n\r\nNEXT",
			wantStatus: 204, wantKeep: true, rest: "NEXT",
		},
		{
			name:       "100 continue skipped",
			in:         "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nNEXT",
			wantStatus: 201, wantKeep: true, rest: "NEXT",
		},
		{
			name:       "bare LF line endings",
			in:         "HTTP/1.1 200 OK\nContent-Length: 2\n\nokNEXT",
			wantStatus: 200, wantKeep: true, rest: "NEXT",
		},
		{name: "garbage status line", in: "SSH-2.0-OpenSSH\r\n\r\n", wantErr: ErrMalformed},
		{name: "non-numeric status", in: "HTTP/1.1 2x0 OK\r\n\r\n", wantErr: ErrMalformed},
		{name: "bad content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", wantErr: ErrMalformed},
		{name: "header without colon", in: "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", wantErr: ErrMalformed},
		{name: "bad chunk size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wantErr: ErrMalformed},
		{name: "truncated body", in: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", wantErr: io.EOF},
		{name: "truncated headers", in: "HTTP/1.1 200 OK\r\nContent-Le", wantErr: io.ErrUnexpectedEOF},
		{name: "empty (peer closed)", in: "", wantErr: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), 256)
			status, keep, err := ReadResponse(br)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if status != tt.wantStatus || keep != tt.wantKeep {
				t.Fatalf("got status %d keep %v, want %d %v", status, keep, tt.wantStatus, tt.wantKeep)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tt.rest {
				t.Fatalf("left %q in the reader, want %q", rest, tt.rest)
			}
		})
	}
}

func TestRequestBytes(t *testing.T) {
	tests := []struct {
		url, host string
		body      []byte
		want      string
	}{
		{"http://127.0.0.1:9000/", "", nil,
			"GET / HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUser-Agent: causeway-loadgen\r\n\r\n"},
		{"http://127.0.0.1:15001/a/b?c=d", "bench", nil,
			"GET /a/b?c=d HTTP/1.1\r\nHost: bench\r\nUser-Agent: causeway-loadgen\r\n\r\n"},
		{"http://127.0.0.1", "", []byte("xyz"),
			"POST / HTTP/1.1\r\nHost: 127.0.0.1:80\r\nUser-Agent: causeway-loadgen\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\nxyz"},
	}
	for _, tt := range tests {
		tg, err := ParseTarget(tt.url, tt.host, tt.body)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(tg.RequestBytes()); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.url, got, tt.want)
		}
	}
	if _, err := ParseTarget("https://127.0.0.1/", "", nil); err == nil {
		t.Errorf("https should be rejected")
	}
}
