package authz

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadPath wraps every reason Normalize refuses a path. The request is
// answered 400 and never evaluated or forwarded.
var ErrBadPath = errors.New("path refused")

// NormalizeTarget splits an origin-form request target into its
// normalised path (see Normalize) and its raw query, which is returned as
// received (without the '?'). A fragment is dropped.
func NormalizeTarget(target string) (path, rawQuery string, err error) {
	if i := strings.IndexByte(target, '#'); i >= 0 {
		target = target[:i]
	}
	path, rawQuery, _ = strings.Cut(target, "?")
	path, err = Normalize(path)
	return path, rawQuery, err
}

// Normalize returns the one canonical spelling of a request path, used
// for routing, authorization and forwarding alike, so that no encoding
// trick reaches a path a policy forbids (Envoy CVE-2019-9901, Istio
// CVE-2021-31920 and CVE-2021-39156). In order:
//
//  1. A fragment ('#' onwards) is dropped, and so is a query ('?'
//     onwards): NormalizeTarget returns the query separately.
//  2. Refused (ErrBadPath): a path not starting with '/'; a NUL, other
//     control character, DEL or backslash; the escapes %00, %2F and %5C
//     (any case), which would smuggle a separator or terminator past the
//     check; a '%' not followed by two hex digits.
//  3. Escapes of unreserved characters (ALPHA, DIGIT, '-', '.', '_', '~')
//     are decoded (RFC 3986 §2.3), so "%61dmin" is "admin" and "%2e%2e"
//     is ".."; every other escape is kept, with upper-case hex (§6.2.2.1).
//  4. Runs of '/' are merged into one.
//  5. Dot segments are removed (RFC 3986 §5.2.4): "/a/./b/../c" is "/a/c",
//     and ".." never climbs above the root.
//
// A trailing slash is kept ("/admin/" stays "/admin/"). The result starts
// with '/', contains no "//" and no "." or ".." segment, and
// Normalize(Normalize(p)) == Normalize(p).
func Normalize(rawPath string) (string, error) {
	if i := strings.IndexAny(rawPath, "?#"); i >= 0 {
		rawPath = rawPath[:i]
	}
	if rawPath == "" || rawPath[0] != '/' {
		return "", fmt.Errorf("%w: %q does not start with '/'", ErrBadPath, rawPath)
	}
	decoded, err := decodeUnreserved(rawPath)
	if err != nil {
		return "", err
	}
	return removeDotSegments(mergeSlashes(decoded)), nil
}

// decodeUnreserved validates p and decodes the escapes of unreserved
// characters. It returns p itself when nothing changes.
func decodeUnreserved(p string) (string, error) {
	var b *strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("%w: control character %#02x", ErrBadPath, c)
		case c == '\\':
			return "", fmt.Errorf("%w: backslash", ErrBadPath)
		case c != '%':
			if b != nil {
				b.WriteByte(c)
			}
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", fmt.Errorf("%w: '%%' at byte %d is not followed by two hex digits", ErrBadPath, i)
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		switch v {
		case 0:
			return "", fmt.Errorf("%w: encoded NUL (%%00)", ErrBadPath)
		case '/':
			return "", fmt.Errorf("%w: encoded slash (%%2F)", ErrBadPath)
		case '\\':
			return "", fmt.Errorf("%w: encoded backslash (%%5C)", ErrBadPath)
		}
		if b == nil {
			b = &strings.Builder{}
			b.Grow(len(p))
			b.WriteString(p[:i])
		}
		if isUnreserved(v) {
			b.WriteByte(v)
		} else {
			const hexUpper = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hexUpper[v>>4])
			b.WriteByte(hexUpper[v&0xf])
		}
		i += 2
	}
	if b == nil {
		return p, nil
	}
	return b.String(), nil
}

// mergeSlashes replaces every run of '/' with one.
func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && len(b) > 0 && b[len(b)-1] == '/' {
			continue
		}
		b = append(b, p[i])
	}
	return string(b)
}

// removeDotSegments is RFC 3986 §5.2.4 for an absolute path without empty
// segments: "." segments vanish, ".." removes the segment before it (none
// above the root), and a path ending in a dot segment ends in '/'.
func removeDotSegments(p string) string {
	if !hasDotSegment(p) {
		return p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			trailing = last
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
		default:
			out = append(out, s)
			trailing = false
		}
	}
	r := "/" + strings.Join(out, "/")
	if trailing && !strings.HasSuffix(r, "/") {
		r += "/"
	}
	return r
}

// hasDotSegment reports whether p has a "." or ".." segment.
func hasDotSegment(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '.' || p[i-1] != '/' { // p[0] is '/', so i-1 >= 0 when p[i] == '.'
			continue
		}
		j := i + 1
		if j < len(p) && p[j] == '.' {
			j++
		}
		if j == len(p) || p[j] == '/' {
			return true
		}
	}
	return false
}

func isUnreserved(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
