package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
	"github.com/causeway-mesh/causeway/proxy/authz"
)

// ErrForbidden answers a request the service's AuthorizationPolicy denies.
var ErrForbidden = &Error{Status: 403, Code: authz.ErrorCode, GRPC: codes.PermissionDenied}

// authorize evaluates the AuthorizationPolicy of this sidecar's service
// (from the control plane) on an inbound request. The path is normalized
// first (dot segments, unreserved escapes, duplicate slashes; %2F, %5C and
// NUL refused), the decision is made on that path and the caller's
// verified SPIFFE ID, and the request is forwarded with exactly that path,
// so no encoding trick reaches a path the policy forbids. Without a policy
// every request passes unchanged.
func (s *Sidecar) authorize(ew *errorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pol := s.authorization()
		if pol == nil {
			next.ServeHTTP(w, r)
			return
		}
		target := r.RequestURI
		if target == "" || !strings.HasPrefix(target, "/") {
			target = r.URL.EscapedPath()
		}
		path, _, err := authz.NormalizeTarget(target)
		if err != nil {
			s.m.authzDenied.WithLabelValues("bad_path").Inc()
			ew.write(w, r, ErrBadRequest.with(err))
			return
		}
		var src spiffeid.ID
		if id := peerIdentity(r.Context()); id != "" {
			src, _ = spiffeid.Parse(id) // verified at the handshake
		}
		req := authz.Request{Source: src, Method: r.Method, Path: path}
		if isGRPC(r) {
			req.GRPCMethod = strings.TrimPrefix(path, "/")
		}
		d := pol.Evaluate(req)
		if !d.Allowed {
			s.m.authzDenied.WithLabelValues("denied").Inc()
			caller := src.String()
			if src.IsZero() {
				caller = "(no identity)"
			}
			ew.write(w, r, ErrForbidden.with(fmt.Errorf("caller %s, %s %s: %s", caller, r.Method, path, d.Reason)))
			return
		}
		if unescaped, err := url.PathUnescape(path); err == nil {
			r.URL.Path, r.URL.RawPath = unescaped, path
			if unescaped == path {
				r.URL.RawPath = ""
			}
		} else {
			ew.write(w, r, ErrBadRequest.with(errors.Join(authz.ErrBadPath, err)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorization is the compiled policy for this sidecar's service, or nil.
func (s *Sidecar) authorization() *authz.Compiled {
	if m := s.model.Load(); m != nil {
		if svc, ok := m.Services[s.service]; ok {
			return svc.Authorization
		}
	}
	return nil
}
