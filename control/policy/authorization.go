package policy

import (
	"fmt"
	"strings"

	"github.com/causeway-mesh/causeway/proxy/authz"
)

// authorizationFieldError is a problem in an AuthorizationPolicy, at field.
type authorizationFieldError struct{ field, msg string }

func (e authorizationFieldError) Error() string { return e.field + ": " + e.msg }

// ParseAuthorization turns an AuthorizationPolicy's spec into the form the
// sidecar evaluates (package proxy/authz) and checks that it compiles:
// actions, names, path patterns (normalized), methods, gRPC names.
func ParseAuthorization(s *AuthorizationPolicySpec) (authz.Policy, error) {
	p := authz.Policy{Service: s.TargetRef.Name}
	switch strings.ToLower(s.Default) {
	case "", "allow":
	case "deny":
		p.Default = authz.Deny
	default:
		return p, authorizationFieldError{"spec.default", fmt.Sprintf("%q: want allow or deny", s.Default)}
	}
	for i, r := range s.Rules {
		a, err := authz.ParseAction(r.Action)
		if err != nil || r.Action == "" {
			return p, authorizationFieldError{fmt.Sprintf("spec.rules[%d].action", i), fmt.Sprintf("%q: want ALLOW or DENY", r.Action)}
		}
		rule := authz.Rule{Name: r.Name, Action: a}
		for _, f := range r.From {
			rule.From = append(rule.From, authz.Source{Namespaces: f.Namespaces, Services: f.Services})
		}
		for _, o := range r.To {
			rule.To = append(rule.To, authz.Operation{Paths: o.Paths, Methods: o.Methods, GRPCServices: o.GRPCServices, GRPCMethods: o.GRPCMethods})
		}
		p.Rules = append(p.Rules, rule)
	}
	if _, err := authz.Compile(p); err != nil {
		field, msg, ok := strings.Cut(err.Error(), ": ")
		if !ok {
			return p, authorizationFieldError{"spec", err.Error()}
		}
		return p, authorizationFieldError{"spec." + field, msg}
	}
	return p, nil
}
