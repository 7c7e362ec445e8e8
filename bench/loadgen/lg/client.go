package lg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Target describes the request every connection sends.
type Target struct {
	URL  *url.URL // http://HOST:PORT/path; only plain http is supported
	Host string   // Host header override; "" means the URL's host
	Body []byte   // if non-empty, the request is a POST with this body
}

// ParseTarget validates rawURL and builds a Target.
func ParseTarget(rawURL, host string, body []byte) (Target, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return Target{}, err
	}
	if u.Scheme != "http" {
		return Target{}, fmt.Errorf("only http:// URLs are supported, got %q", rawURL)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "80")
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return Target{URL: u, Host: host, Body: body}, nil
}

func (t Target) hostHeader() string {
	if t.Host != "" {
		return t.Host
	}
	return t.URL.Host
}

func (t Target) method() string {
	if len(t.Body) > 0 {
		return "POST"
	}
	return "GET"
}

// RequestBytes is the exact HTTP/1.1 request the raw client writes.
func (t Target) RequestBytes() []byte {
	var b bytes.Buffer
	b.WriteString(t.method())
	b.WriteByte(' ')
	b.WriteString(t.URL.RequestURI())
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(t.hostHeader())
	b.WriteString("\r\nUser-Agent: causeway-loadgen\r\n")
	if len(t.Body) > 0 {
		b.WriteString("Content-Type: application/octet-stream\r\nContent-Length: ")
		b.WriteString(strconv.Itoa(len(t.Body)))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(t.Body)
	return b.Bytes()
}

// Client sends one request at a time over (at most) one keep-alive connection.
type Client interface {
	// Do sends the request and reads the whole response. It returns the
	// status code. On error the connection is discarded; the next Do redials.
	Do() (status int, err error)
	// SetDeadline bounds all I/O of the current and future connections.
	SetDeadline(t time.Time)
	Close() error
}

// ClientKind selects the HTTP client implementation.
type ClientKind string

const (
	// ClientRaw writes pre-built request bytes to a TCP connection and parses
	// the status line, headers and body itself: one write and (usually) one
	// read syscall per request, no per-request goroutines or allocations.
	ClientRaw ClientKind = "raw"
	// ClientNetHTTP uses net/http with one tuned Transport per connection.
	ClientNetHTTP ClientKind = "nethttp"
)

// NewClient returns a client of the given kind for t.
func NewClient(kind ClientKind, t Target) (Client, error) {
	switch kind {
	case ClientRaw, "":
		return &rawClient{addr: t.URL.Host, req: t.RequestBytes()}, nil
	case ClientNetHTTP:
		return newHTTPClient(t), nil
	}
	return nil, fmt.Errorf("unknown client %q (want raw or nethttp)", kind)
}

// ---- raw client ----

type rawClient struct {
	addr     string
	req      []byte
	conn     net.Conn
	br       *bufio.Reader
	deadline time.Time
}

func (c *rawClient) SetDeadline(t time.Time) {
	c.deadline = t
	if c.conn != nil {
		_ = c.conn.SetDeadline(t)
	}
}

func (c *rawClient) Close() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

func (c *rawClient) dial() error {
	d := net.Dialer{Timeout: 2 * time.Second}
	if !c.deadline.IsZero() {
		d.Deadline = c.deadline
	}
	conn, err := d.Dial("tcp", c.addr)
	if err != nil {
		return err
	}
	if !c.deadline.IsZero() {
		_ = conn.SetDeadline(c.deadline)
	}
	c.conn = conn
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, 16<<10)
	} else {
		c.br.Reset(conn)
	}
	return nil
}

func (c *rawClient) Do() (int, error) {
	if c.conn == nil {
		if err := c.dial(); err != nil {
			return 0, err
		}
	}
	if _, err := c.conn.Write(c.req); err != nil {
		c.Close()
		return 0, err
	}
	status, keep, err := ReadResponse(c.br)
	if err != nil {
		c.Close()
		return 0, err
	}
	if !keep {
		c.Close()
	}
	return status, nil
}

// ErrMalformed reports a response the raw client could not parse.
var ErrMalformed = errors.New("malformed HTTP response")

// ReadResponse reads one HTTP/1.x response (to a GET or POST) from br,
// discarding the body. It returns the status code and whether the connection
// may be reused. Interim 1xx responses are skipped.
func ReadResponse(br *bufio.Reader) (status int, keepAlive bool, err error) {
	for {
		status, keep, err := readOne(br)
		if err != nil {
			return 0, false, err
		}
		if status >= 100 && status < 200 && status != 101 {
			continue
		}
		return status, keep, nil
	}
}

func readOne(br *bufio.Reader) (int, bool, error) {
	line, err := readLine(br)
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, fmt.Errorf("%w: status line %q", ErrMalformed, line)
	}
	http10 := line[7] == '0'
	status := 0
	for _, ch := range line[9:12] {
		if ch < '0' || ch > '9' {
			return 0, false, fmt.Errorf("%w: status line %q", ErrMalformed, line)
		}
		status = status*10 + int(ch-'0')
	}
	if len(line) > 12 && line[12] != ' ' {
		return 0, false, fmt.Errorf("%w: status line %q", ErrMalformed, line)
	}
	contentLength := int64(-1)
	chunked := false
	keep := !http10
	for {
		h, err := readLine(br)
		if err != nil {
			return 0, false, err
		}
		if len(h) == 0 {
			break
		}
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			return 0, false, fmt.Errorf("%w: header %q", ErrMalformed, h)
		}
		name, val := h[:colon], bytes.TrimSpace(h[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			n, err := strconv.ParseInt(string(val), 10, 64)
			if err != nil || n < 0 {
				return 0, false, fmt.Errorf("%w: content-length %q", ErrMalformed, val)
			}
			contentLength = n
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = containsTokenFold(val, "chunked")
		case asciiEqualFold(name, "connection"):
			if containsTokenFold(val, "close") {
				keep = false
			} else if containsTokenFold(val, "keep-alive") {
				keep = true
			}
		}
	}
	switch {
	case status < 200 || status == 204 || status == 304:
		// no body
	case chunked:
		if err := discardChunked(br); err != nil {
			return 0, false, err
		}
	case contentLength >= 0:
		if _, err := br.Discard(int(contentLength)); err != nil {
			return 0, false, err
		}
	default:
		// Body delimited by connection close.
		if _, err := io.Copy(io.Discard, br); err != nil {
			return 0, false, err
		}
		keep = false
	}
	return status, keep, nil
}

// readLine returns the next line without its CRLF (or LF). The slice is only
// valid until the next read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line too long", ErrMalformed)
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("%w: chunk size %q", ErrMalformed, line)
		}
		if size == 0 {
			// Trailers, then the empty line.
			for {
				t, err := readLine(br)
				if err != nil {
					return err
				}
				if len(t) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(size)); err != nil {
			return err
		}
		crlf, err := readLine(br)
		if err != nil {
			return err
		}
		if len(crlf) != 0 {
			return fmt.Errorf("%w: missing CRLF after chunk", ErrMalformed)
		}
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func containsTokenFold(v []byte, tok string) bool {
	for _, part := range bytes.Split(v, []byte(",")) {
		if asciiEqualFold(bytes.TrimSpace(part), tok) {
			return true
		}
	}
	return false
}

// ---- net/http client ----

type httpClient struct {
	tr       *http.Transport
	client   *http.Client
	t        Target
	deadline time.Time
}

func newHTTPClient(t Target) *httpClient {
	tr := &http.Transport{
		// One keep-alive connection per client, like the raw client.
		MaxConnsPerHost:     1,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     5 * time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	}
	return &httpClient{tr: tr, client: &http.Client{Transport: tr}, t: t}
}

func (c *httpClient) SetDeadline(t time.Time) { c.deadline = t }

func (c *httpClient) Close() error {
	c.tr.CloseIdleConnections()
	return nil
}

func (c *httpClient) Do() (int, error) {
	ctx := context.Background()
	if !c.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, c.deadline)
		defer cancel()
	}
	var body io.Reader
	if len(c.t.Body) > 0 {
		body = bytes.NewReader(c.t.Body)
	}
	req, err := http.NewRequestWithContext(ctx, c.t.method(), c.t.URL.String(), body)
	if err != nil {
		return 0, err
	}
	if c.t.Host != "" {
		req.Host = c.t.Host
	}
	req.Header["User-Agent"] = []string{"causeway-loadgen"}
	if len(c.t.Body) > 0 {
		req.Header["Content-Type"] = []string{"application/octet-stream"}
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// IsTimeout reports whether err is an I/O deadline or context deadline error.
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || strings.Contains(fmt.Sprint(err), "deadline exceeded")
}
