package proxy

import (
	"math/rand/v2"
	"net/http"
	"strings"

	"github.com/causeway-mesh/causeway/control/xdsclient"
)

// Routes come from the control plane (Gateway API HTTPRoute, translated to
// xDS RouteConfiguration and decoded by xdsclient.BuildModel). A service
// without routes is reached as itself.

// matchRoute returns the first route of routes that r matches, or nil.
func matchRoute(routes []xdsclient.Route, r *http.Request) *xdsclient.Route {
	for i := range routes {
		if routeMatches(&routes[i].Match, r) {
			return &routes[i]
		}
	}
	return nil
}

func routeMatches(m *xdsclient.RouteMatch, r *http.Request) bool {
	path := r.URL.Path
	switch m.PathKind {
	case xdsclient.PathPrefix:
		if !strings.HasPrefix(path, m.Path) {
			return false
		}
	case xdsclient.PathExact:
		if path != m.Path {
			return false
		}
	case xdsclient.PathRegex:
		if m.PathRegex == nil || !m.PathRegex.MatchString(path) {
			return false
		}
	}
	if m.Method != "" && r.Method != m.Method {
		return false
	}
	for i := range m.Headers {
		if !headerMatches(&m.Headers[i], r.Header) {
			return false
		}
	}
	return true
}

func headerMatches(h *xdsclient.HeaderMatch, hdr http.Header) bool {
	vals, present := hdr[http.CanonicalHeaderKey(h.Name)]
	ok := false
	if h.Kind == xdsclient.HeaderPresent {
		ok = present
	} else if present {
		// Several fields of one name are matched as their comma-joined value,
		// as Envoy does.
		v := strings.Join(vals, ",")
		want := h.Value
		if h.IgnoreCase {
			v, want = strings.ToLower(v), strings.ToLower(want)
		}
		switch h.Kind {
		case xdsclient.HeaderExact:
			ok = v == want
		case xdsclient.HeaderPrefix:
			ok = strings.HasPrefix(v, want)
		case xdsclient.HeaderSuffix:
			ok = strings.HasSuffix(v, want)
		case xdsclient.HeaderContains:
			ok = strings.Contains(v, want)
		case xdsclient.HeaderRegex:
			ok = h.Regex != nil && h.Regex.MatchString(v)
		}
	}
	return ok != h.Invert
}

// pickBackend chooses a backend service by weight (a canary split).
func pickBackend(bs []xdsclient.WeightedBackend) string {
	if len(bs) == 1 {
		return bs[0].Service
	}
	var total uint64
	for _, b := range bs {
		total += uint64(b.Weight)
	}
	if total == 0 {
		return bs[0].Service
	}
	n := rand.Uint64N(total) //nolint:gosec // traffic splitting needs speed, not unpredictability
	for _, b := range bs {
		if n < uint64(b.Weight) {
			return b.Service
		}
		n -= uint64(b.Weight)
	}
	return bs[len(bs)-1].Service
}
