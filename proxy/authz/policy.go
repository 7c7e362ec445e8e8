// Package authz decides whether an inbound request may reach its
// service: pure evaluation of AuthorizationPolicy against the caller's
// verified identity and the request's normalised path, with no I/O.
//
// Semantics (as Istio's, with an explicit default per service):
//
//   - A Policy belongs to one destination service and has rules and a
//     default action (Allow when unset).
//   - Any matching DENY rule denies; otherwise any matching ALLOW rule
//     allows; otherwise the default decides. Rule order does not matter.
//   - A rule matches when one of its From entries matches the source (or
//     it has none) and one of its To entries matches the operation (or it
//     has none). Inside an entry every non-empty field must match; inside a
//     field one value is enough.
//   - A From entry never matches a request without a verified identity
//     (plaintext in permissive mode), so "allow from X" does not let an
//     anonymous caller in, and "deny from X" does not deny one. To keep
//     anonymous callers out, use a default of Deny with ALLOW rules that
//     name their sources.
//
// The caller normalises the path first with Normalize (NormalizeTarget)
// and forwards that same path. A denied request is answered 403 with
// "x-mesh-error: forbidden" (ErrorCode).
package authz

import (
	"fmt"
	"strings"

	"github.com/causeway-mesh/causeway/control/identity/spiffeid"
)

// ErrorCode is the x-mesh-error value of a denied request (HTTP 403,
// gRPC PERMISSION_DENIED).
const ErrorCode = "forbidden"

// Action is what a rule, or a default, does.
type Action uint8

// Actions.
const (
	Allow Action = iota
	Deny
)

// String is "ALLOW" or "DENY".
func (a Action) String() string {
	if a == Deny {
		return "DENY"
	}
	return "ALLOW"
}

// ParseAction parses "ALLOW" or "DENY" (any case); "" is Allow.
func ParseAction(s string) (Action, error) {
	switch strings.ToUpper(s) {
	case "", "ALLOW":
		return Allow, nil
	case "DENY":
		return Deny, nil
	}
	return 0, fmt.Errorf("action %q is not ALLOW or DENY", s)
}

// Policy is the authorization policy of one destination service.
type Policy struct {
	// Service is the destination service (a DNS label).
	Service string
	// Default applies when no rule matches; zero is Allow.
	Default Action
	// Rules, each with a unique name.
	Rules []Rule
}

// Rule allows or denies the requests it matches.
type Rule struct {
	// Name identifies the rule in decisions and logs. Required, unique
	// within its policy.
	Name   string
	Action Action
	// From lists the sources; empty matches every request, with or
	// without an identity.
	From []Source
	// To lists the operations; empty matches every operation.
	To []Operation
}

// Source matches the caller's verified identity.
type Source struct {
	// Namespaces and Services are patterns: a name, "*" (any), "prefix*"
	// or "*suffix". Empty means any.
	Namespaces []string
	Services   []string
}

// Operation matches what the request does.
type Operation struct {
	// Paths: "/exact" (also matches with one trailing slash: "/admin"
	// matches "/admin/"), "/prefix/*" (the prefix itself and everything
	// below it: "/admin/*" matches "/admin", "/admin/" and "/admin/x",
	// never "/administrator"), or "*" (any). Paths must be normalised
	// (Normalize of the pattern is itself).
	Paths []string
	// Methods: upper-case HTTP methods, or "*".
	Methods []string
	// GRPCServices: fully-qualified gRPC services ("pkg.Service"); a
	// request that is not gRPC never matches a non-empty list.
	GRPCServices []string
	// GRPCMethods: "pkg.Service/Method".
	GRPCMethods []string
}

// Request is what a decision is made on.
type Request struct {
	// Source is the caller's verified identity; the zero ID when the
	// caller has none (plaintext).
	Source spiffeid.ID
	// Method is the HTTP method.
	Method string
	// Path is the normalised path (Normalize), without query.
	Path string
	// GRPCMethod is "pkg.Service/Method" for a gRPC call, else "".
	GRPCMethod string
}

// Decision is the outcome of Evaluate.
type Decision struct {
	Allowed bool
	// Rule is the name of the deciding rule; "" when the default decided.
	Rule string
	// Reason is a short explanation for logs.
	Reason string
}

// Compiled is a validated Policy, ready for Evaluate. It is immutable and
// safe for concurrent use.
type Compiled struct {
	service string
	def     Action
	deny    []compiledRule
	allow   []compiledRule
}

type compiledRule struct {
	name   string
	reason string // "allowed by rule NAME" or "denied by rule NAME", built once
	from   []compiledSource
	to     []compiledOp
}

type compiledSource struct {
	namespaces []pattern
	services   []pattern
}

type compiledOp struct {
	paths        []pathMatch
	methods      []string // nil: any
	grpcServices []string
	grpcMethods  []string
}

// Compile validates p and returns it ready for evaluation. Errors name the
// field ("rules[1].to[0].paths[2]: ...").
func Compile(p Policy) (*Compiled, error) {
	if !spiffeid.ValidName(p.Service) {
		return nil, fmt.Errorf("service: %q must be a DNS label", p.Service)
	}
	if p.Default != Allow && p.Default != Deny {
		return nil, fmt.Errorf("default: unknown action %d", p.Default)
	}
	c := &Compiled{service: p.Service, def: p.Default}
	seen := map[string]bool{}
	for i, r := range p.Rules {
		at := fmt.Sprintf("rules[%d]", i)
		if r.Name == "" {
			return nil, fmt.Errorf("%s.name: required", at)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("%s.name: %q is used by an earlier rule", at, r.Name)
		}
		seen[r.Name] = true
		cr, err := compileRule(r, at)
		if err != nil {
			return nil, err
		}
		switch r.Action {
		case Allow:
			cr.reason = "allowed by rule " + r.Name
			c.allow = append(c.allow, cr)
		case Deny:
			cr.reason = "denied by rule " + r.Name
			c.deny = append(c.deny, cr)
		default:
			return nil, fmt.Errorf("%s.action: unknown action %d", at, r.Action)
		}
	}
	return c, nil
}

func compileRule(r Rule, at string) (compiledRule, error) {
	cr := compiledRule{name: r.Name}
	for i, s := range r.From {
		sat := fmt.Sprintf("%s.from[%d]", at, i)
		var cs compiledSource
		var err error
		if cs.namespaces, err = compilePatterns(s.Namespaces, sat+".namespaces"); err != nil {
			return cr, err
		}
		if cs.services, err = compilePatterns(s.Services, sat+".services"); err != nil {
			return cr, err
		}
		cr.from = append(cr.from, cs)
	}
	for i, o := range r.To {
		oat := fmt.Sprintf("%s.to[%d]", at, i)
		var co compiledOp
		for j, p := range o.Paths {
			pm, err := compilePath(p)
			if err != nil {
				return cr, fmt.Errorf("%s.paths[%d]: %w", oat, j, err)
			}
			co.paths = append(co.paths, pm)
		}
		for j, m := range o.Methods {
			if m == "*" {
				co.methods = nil
				break
			}
			if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " /") {
				return cr, fmt.Errorf("%s.methods[%d]: %q must be an upper-case HTTP method or \"*\"", oat, j, m)
			}
			co.methods = append(co.methods, m)
		}
		for j, s := range o.GRPCServices {
			if s == "" || strings.ContainsAny(s, "/ ") {
				return cr, fmt.Errorf("%s.grpcServices[%d]: %q must be a fully-qualified service such as \"pkg.Service\"", oat, j, s)
			}
			co.grpcServices = append(co.grpcServices, s)
		}
		for j, m := range o.GRPCMethods {
			svc, meth, ok := strings.Cut(m, "/")
			if !ok || svc == "" || meth == "" || strings.ContainsAny(meth, "/ ") {
				return cr, fmt.Errorf("%s.grpcMethods[%d]: %q must be \"pkg.Service/Method\"", oat, j, m)
			}
			co.grpcMethods = append(co.grpcMethods, m)
		}
		cr.to = append(cr.to, co)
	}
	return cr, nil
}

// Service is the destination service the policy belongs to.
func (c *Compiled) Service() string { return c.service }

// Evaluate decides on r. DENY rules are checked first and win.
func (c *Compiled) Evaluate(r Request) Decision {
	for i := range c.deny {
		if c.deny[i].matches(&r) {
			return Decision{Allowed: false, Rule: c.deny[i].name, Reason: c.deny[i].reason}
		}
	}
	for i := range c.allow {
		if c.allow[i].matches(&r) {
			return Decision{Allowed: true, Rule: c.allow[i].name, Reason: c.allow[i].reason}
		}
	}
	if c.def == Deny {
		return Decision{Allowed: false, Reason: "no rule matched; default deny"}
	}
	return Decision{Allowed: true, Reason: "no rule matched; default allow"}
}

func (cr *compiledRule) matches(r *Request) bool {
	if len(cr.from) > 0 {
		if r.Source.IsZero() {
			return false
		}
		ok := false
		for i := range cr.from {
			if cr.from[i].matches(r.Source) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(cr.to) == 0 {
		return true
	}
	for i := range cr.to {
		if cr.to[i].matches(r) {
			return true
		}
	}
	return false
}

func (s *compiledSource) matches(id spiffeid.ID) bool {
	return matchAny(s.namespaces, id.Namespace()) && matchAny(s.services, id.Service())
}

func (o *compiledOp) matches(r *Request) bool {
	if len(o.paths) > 0 {
		ok := false
		for _, p := range o.paths {
			if p.matches(r.Path) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(o.methods) > 0 && !contains(o.methods, r.Method) {
		return false
	}
	if len(o.grpcServices) > 0 {
		svc, _, ok := strings.Cut(r.GRPCMethod, "/")
		if !ok || !contains(o.grpcServices, svc) {
			return false
		}
	}
	if len(o.grpcMethods) > 0 && (r.GRPCMethod == "" || !contains(o.grpcMethods, r.GRPCMethod)) {
		return false
	}
	return true
}

// pattern is a name pattern: exact, "*", "prefix*" or "*suffix".
type pattern struct {
	kind  byte // '=', '*', 'p' (prefix), 's' (suffix)
	value string
}

func compilePatterns(in []string, at string) ([]pattern, error) {
	var out []pattern
	for i, s := range in {
		switch {
		case s == "*":
			return nil, nil // any: same as empty
		case s == "" || strings.Count(s, "*") > 1 || (strings.Contains(s, "*") && s[0] != '*' && s[len(s)-1] != '*'):
			return nil, fmt.Errorf("%s[%d]: %q must be a name, \"*\", \"prefix*\" or \"*suffix\"", at, i, s)
		case strings.HasSuffix(s, "*"):
			out = append(out, pattern{kind: 'p', value: s[:len(s)-1]})
		case strings.HasPrefix(s, "*"):
			out = append(out, pattern{kind: 's', value: s[1:]})
		default:
			out = append(out, pattern{kind: '=', value: s})
		}
	}
	return out, nil
}

func matchAny(ps []pattern, s string) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		switch p.kind {
		case '=':
			if s == p.value {
				return true
			}
		case 'p':
			if strings.HasPrefix(s, p.value) {
				return true
			}
		case 's':
			if strings.HasSuffix(s, p.value) {
				return true
			}
		}
	}
	return false
}

// pathMatch is "*", an exact path, or a prefix with segment boundary.
type pathMatch struct {
	any    bool
	exact  string // without trailing slash (except "/")
	prefix string // "/admin" for "/admin/*"; "" for "/*"
	isPref bool
}

func compilePath(p string) (pathMatch, error) {
	if p == "*" {
		return pathMatch{any: true}, nil
	}
	base, isPrefix := strings.CutSuffix(p, "/*")
	if isPrefix && base == "" {
		return pathMatch{any: true}, nil // "/*"
	}
	check := base
	if !isPrefix {
		check = p
	}
	if strings.Contains(check, "*") {
		return pathMatch{}, fmt.Errorf("%q: '*' is allowed only as \"*\" or a final \"/*\"", p)
	}
	n, err := Normalize(check)
	if err != nil {
		return pathMatch{}, fmt.Errorf("%q: %w", p, err)
	}
	if n != check || strings.ContainsAny(check, "?#") {
		return pathMatch{}, fmt.Errorf("%q is not normalised; write %q", p, n)
	}
	if isPrefix {
		return pathMatch{prefix: strings.TrimSuffix(base, "/"), isPref: true}, nil
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return pathMatch{exact: p}, nil
}

func (m pathMatch) matches(path string) bool {
	switch {
	case m.any:
		return true
	case m.isPref:
		rest, ok := strings.CutPrefix(path, m.prefix)
		return ok && (rest == "" || rest[0] == '/')
	default:
		if path == m.exact {
			return true
		}
		return len(path) == len(m.exact)+1 && path[len(path)-1] == '/' && path[:len(m.exact)] == m.exact
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
