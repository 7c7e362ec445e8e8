package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/textproto"
	"strings"
)

// Headers the mesh sets. Canonical forms, so map access needs no
// canonicalisation on the hot path.
const (
	HeaderRequestID = "X-Request-Id"
	// HeaderSource names the calling service on the sidecar-to-sidecar hop.
	// Set by the outbound sidecar, stripped from what the app sends, and
	// not passed to the receiving app (it is not authenticated until mTLS).
	HeaderSource = "X-Mesh-Source"
	// HeaderEndpoint, sent by the local app on the outbound side, pins a
	// request to one endpoint (HOST:PORT) of the target service, for apps
	// that address replicas one by one (replication, per-instance admin).
	// Only a live endpoint of that service can be named, so it opens no
	// route the mesh would not take anyway; retries stay on that endpoint.
	// Never forwarded.
	HeaderEndpoint = "X-Mesh-Endpoint"
)

// meshOnly are headers only the mesh may set: removed from everything the
// local app sends before the mesh adds its own (PRODUCT.md, Headers).
// X-Forwarded-* are replaced by the forwarder (forwarder.setForwarded).
var meshOnly = []string{
	"X-Mesh-Epoch",
	"X-Mesh-Epoch-Domain",
	"X-Mesh-Error",
	"X-Mesh-Attempt",
	"X-Mesh-Peer-Identity",
	HeaderSource,
	HeaderEndpoint,
	"Forwarded",
}

// stripMeshOnly removes headers the app may not set.
func stripMeshOnly(h http.Header) {
	for _, k := range meshOnly {
		delete(h, k)
	}
}

// ensureRequestID keeps a valid incoming x-request-id or generates one.
func ensureRequestID(h http.Header) {
	if v := h[HeaderRequestID]; len(v) == 1 && validRequestID(v[0]) {
		return
	}
	h[HeaderRequestID] = []string{newRequestID()}
}

// validRequestID accepts visible ASCII up to 128 bytes, so an id can go
// into logs and headers without escaping.
func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// newRequestID returns a random UUIDv4 string.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// underscoreInNames reports whether a header name contains '_', which the
// mesh refuses (a name that some servers read as its '-' twin, such as
// X_Forwarded_For, can smuggle a header past a filter).
func underscoreInNames(h http.Header) bool {
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 {
			return true
		}
	}
	return false
}

// meshHeaderAllowance is how many header fields the mesh itself may add on
// the way to a peer (request id, forwarded-for/host/proto, source, and the
// trace, clock and fencing headers later issues add); the inbound side
// allows them on top of the limit the outbound side enforced.
const meshHeaderAllowance = 16

// headerFieldCount counts header field lines as a client would send them.
func headerFieldCount(h http.Header) int {
	n := 0
	for _, v := range h {
		n += len(v)
	}
	return n
}

// isUpgrade reports whether r asks for a protocol upgrade (WebSocket).
func isUpgrade(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.Header.Get("Upgrade") == "" {
		return false
	}
	for _, v := range r.Header["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(textproto.TrimString(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// serviceFromAuthority extracts the service name from an authority
// (Host header or :authority): the host part, lower-cased, port ignored.
// Only a plain service name is accepted; "orders.default.svc" style names
// resolve to their first label.
func serviceFromAuthority(authority string) (string, bool) {
	host := authority
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	if i := strings.IndexByte(host, '.'); i >= 0 {
		host = host[:i]
	}
	host = strings.ToLower(host)
	if host == "" || len(host) > 63 {
		return "", false
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; !isServiceChar(c) {
			return "", false
		}
	}
	return host, true
}

func isServiceChar(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' }
