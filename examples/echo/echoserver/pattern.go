package echoserver

import "io"

// pattern is the repeating unit of the /download body: 64 printable bytes.
const pattern = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-\n"

// PatternReader returns a reader of exactly n bytes of the deterministic
// /download pattern: the 64-byte line
// "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-\n"
// repeated and cut at n bytes. It uses constant memory whatever n is, so tests
// can compute the expected body or its checksum without allocating it.
func PatternReader(n int64) io.Reader {
	return &patternReader{remaining: n}
}

type patternReader struct {
	offset    int64
	remaining int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.remaining {
		b = b[:p.remaining]
	}
	n := 0
	for n < len(b) {
		n += copy(b[n:], pattern[(p.offset+int64(n))%int64(len(pattern)):])
	}
	p.offset += int64(n)
	p.remaining -= int64(n)
	return n, nil
}
