package policy

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Limits of values (Gateway API's where it sets them).
const (
	MaxBackendWeight = 1_000_000
	MaxRetryAttempts = 10
)

var (
	dnsLabel    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	headerName  = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)
	grpcMethod  = regexp.MustCompile(`^/[A-Za-z_][A-Za-z0-9_.]*/(\*|[A-Za-z_][A-Za-z0-9_]*)$`)
	httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

// ValidName reports whether s is a valid resource, namespace or service
// name: a DNS label.
func ValidName(s string) bool { return dnsLabel.MatchString(s) }

func validateEnvelope(r *Resource) ErrorList {
	var errs ErrorList
	switch r.APIVersion {
	case APIVersion:
	case "":
		errs.add("apiVersion", CodeRequired, "want %q", APIVersion)
	default:
		errs.add("apiVersion", CodeNotSupported, "%q is not served; want %q", r.APIVersion, APIVersion)
	}
	switch {
	case r.Kind == "":
		errs.add("kind", CodeRequired, "want one of %v", Kinds)
	case !slices.Contains(Kinds, r.Kind):
		errs.add("kind", CodeNotSupported, "%q is not a kind; want one of %v", r.Kind, Kinds)
	}
	m := r.Metadata
	switch {
	case m.Name == "":
		errs.add("metadata.name", CodeRequired, "every resource needs a name")
	case !ValidName(m.Name):
		errs.add("metadata.name", CodeInvalid, "%q must be a DNS label: lower-case letters, digits and '-', at most 63 characters", m.Name)
	}
	if m.Namespace != "" && !ValidName(m.Namespace) {
		errs.add("metadata.namespace", CodeInvalid, "%q must be a DNS label", m.Namespace)
	}
	if m.ResourceVersion != "" {
		if _, err := strconv.ParseUint(m.ResourceVersion, 10, 64); err != nil {
			errs.add("metadata.resourceVersion", CodeInvalid, "%q must be a resourceVersion the server returned (a decimal number)", m.ResourceVersion)
		}
	}
	for _, k := range sortedKeys(m.Labels) {
		if k == "" || len(k) > 253 {
			errs.add("metadata.labels", CodeInvalid, "label key %q must be 1 to 253 characters", k)
		}
		if len(m.Labels[k]) > 63 {
			errs.add("metadata.labels."+k, CodeInvalid, "must be at most 63 characters")
		}
	}
	if len(r.Spec) == 0 || string(r.Spec) == "null" {
		errs.add("spec", CodeRequired, "every resource needs a spec")
	}
	return errs
}

// Validate checks a decoded resource's envelope and spec and returns
// every problem. A nil result means the resource may be stored.
func Validate(r *Resource) ErrorList {
	errs := validateEnvelope(r)
	if len(errs) > 0 {
		return errs
	}
	switch {
	case r.HTTPRoute != nil:
		validateHTTPRoute(r.HTTPRoute, &errs)
	case r.BackendPolicy != nil:
		validateBackendPolicy(r.BackendPolicy, &errs)
	case r.FencingPolicy != nil:
		validateFencingPolicy(r.FencingPolicy, &errs)
	case r.AuthorizationPolicy != nil:
		validateAuthorizationPolicy(r.AuthorizationPolicy, &errs)
	default:
		errs.add("spec", CodeRequired, "spec of kind %s was not decoded", r.Kind)
	}
	return errs
}

func checkServiceRef(kind, name, path string, errs *ErrorList) {
	if kind != "" && kind != TargetService {
		errs.add(path+".kind", CodeNotSupported, "%q: want %q", kind, TargetService)
	}
	switch {
	case name == "":
		errs.add(path+".name", CodeRequired, "name the mesh service")
	case !ValidName(name):
		errs.add(path+".name", CodeInvalid, "%q is not a valid service name (a DNS label)", name)
	}
}

func positiveDuration(d *Duration, path string, errs *ErrorList) {
	if d != nil && d.Duration <= 0 {
		errs.add(path, CodeInvalid, "must be greater than 0")
	}
}

func intRange(v *int64, lo, hi int64, path string, errs *ErrorList) {
	if v != nil && (*v < lo || *v > hi) {
		errs.add(path, CodeInvalid, "must be between %d and %d", lo, hi)
	}
}

func percent(v float64, path string, errs *ErrorList) {
	if math.IsNaN(v) || v < 0 || v > 100 {
		errs.add(path, CodeInvalid, "must be between 0 and 100")
	}
}

func validateHTTPRoute(s *HTTPRouteSpec, errs *ErrorList) {
	if len(s.ParentRefs) == 0 {
		errs.add("spec.parentRefs", CodeRequired, "name at least one service the route applies to")
	}
	seenParent := map[string]bool{}
	for i, p := range s.ParentRefs {
		path := fmt.Sprintf("spec.parentRefs[%d]", i)
		checkServiceRef(p.Kind, p.Name, path, errs)
		if seenParent[p.Name] {
			errs.add(path+".name", CodeDuplicate, "%q is listed twice", p.Name)
		}
		seenParent[p.Name] = true
	}
	if len(s.Rules) == 0 {
		errs.add("spec.rules", CodeRequired, "a route needs at least one rule")
	}
	seenRule := map[string]bool{}
	for i, rule := range s.Rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		if rule.Name != "" {
			if !ValidName(rule.Name) {
				errs.add(path+".name", CodeInvalid, "%q must be a DNS label", rule.Name)
			}
			if seenRule[rule.Name] {
				errs.add(path+".name", CodeDuplicate, "rule name %q is used twice", rule.Name)
			}
			seenRule[rule.Name] = true
		}
		for j, m := range rule.Matches {
			validateMatch(m, fmt.Sprintf("%s.matches[%d]", path, j), errs)
		}
		validateBackendRefs(rule.BackendRefs, path+".backendRefs", errs)
		validateTimeouts(rule.Timeouts, path+".timeouts", errs)
		validateRetry(rule.Retry, path+".retry", errs)
		validateFault(rule.Fault, path+".fault", errs)
		if rl := rule.RateLimit; rl != nil {
			if !(rl.PerSecond > 0) || math.IsInf(rl.PerSecond, 0) {
				errs.add(path+".rateLimit.perSecond", CodeInvalid, "must be greater than 0")
			}
			if rl.Burst < 0 {
				errs.add(path+".rateLimit.burst", CodeInvalid, "must be 0 or more")
			}
		}
	}
}

func validateMatch(m RouteMatch, path string, errs *ErrorList) {
	if p := m.Path; p != nil {
		switch p.Type {
		case "", PathPrefix, PathExact:
			if len(p.Value) == 0 || p.Value[0] != '/' {
				errs.add(path+".path.value", CodeInvalid, "%q must start with '/'", p.Value)
			}
		case PathRegularExpression:
			if p.Value == "" {
				errs.add(path+".path.value", CodeRequired, "give a regular expression")
			} else if _, err := regexp.Compile(p.Value); err != nil {
				errs.add(path+".path.value", CodeInvalid, "not a valid RE2 regular expression: %v", err)
			}
		default:
			errs.add(path+".path.type", CodeNotSupported, "%q: want %s, %s or %s", p.Type, PathPrefix, PathExact, PathRegularExpression)
		}
	}
	seen := map[string]bool{}
	for k, h := range m.Headers {
		hp := fmt.Sprintf("%s.headers[%d]", path, k)
		switch {
		case h.Name == "":
			errs.add(hp+".name", CodeRequired, "name the header")
		case !headerName.MatchString(h.Name):
			errs.add(hp+".name", CodeInvalid, "%q is not a valid header name", h.Name)
		case seen[lower(h.Name)]:
			errs.add(hp+".name", CodeDuplicate, "header %q is matched twice (names are case-insensitive)", h.Name)
		}
		seen[lower(h.Name)] = true
		switch h.Type {
		case "", HeaderExact:
		case HeaderRegularExpression:
			if _, err := regexp.Compile(h.Value); err != nil {
				errs.add(hp+".value", CodeInvalid, "not a valid RE2 regular expression: %v", err)
			}
		default:
			errs.add(hp+".type", CodeNotSupported, "%q: want %s or %s", h.Type, HeaderExact, HeaderRegularExpression)
		}
	}
	if m.Method != "" && !slices.Contains(httpMethods, m.Method) {
		errs.add(path+".method", CodeNotSupported, "%q: want one of %v", m.Method, httpMethods)
	}
}

func validateBackendRefs(refs []BackendRef, path string, errs *ErrorList) {
	seen := map[string]bool{}
	var total int64
	for i, b := range refs {
		bp := fmt.Sprintf("%s[%d]", path, i)
		checkServiceRef(b.Kind, b.Name, bp, errs)
		if seen[b.Name] {
			errs.add(bp+".name", CodeDuplicate, "backend %q is listed twice", b.Name)
		}
		seen[b.Name] = true
		w := int64(1)
		if b.Weight != nil {
			w = *b.Weight
		}
		if w < 0 || w > MaxBackendWeight {
			errs.add(bp+".weight", CodeInvalid, "must be between 0 and %d", MaxBackendWeight)
		} else {
			total += w
		}
	}
	if len(refs) > 0 && total == 0 {
		errs.add(path, CodeInvalid, "the weights add up to 0; at least one backend needs a weight above 0")
	}
}

func validateTimeouts(t *RouteTimeouts, path string, errs *ErrorList) {
	if t == nil {
		return
	}
	positiveDuration(t.Request, path+".request", errs)
	positiveDuration(t.BackendRequest, path+".backendRequest", errs)
	if t.Request != nil && t.BackendRequest != nil && t.BackendRequest.Duration > t.Request.Duration {
		errs.add(path+".backendRequest", CodeInvalid, "%v is longer than the request timeout %v", t.BackendRequest.Duration, t.Request.Duration)
	}
}

func validateRetry(r *RouteRetry, path string, errs *ErrorList) {
	if r == nil {
		return
	}
	intRange(r.Attempts, 0, MaxRetryAttempts, path+".attempts", errs)
	if r.Backoff != nil && (r.Backoff.Duration <= 0 || r.Backoff.Duration > time.Minute) {
		errs.add(path+".backoff", CodeInvalid, "must be greater than 0 and at most 1m")
	}
	seen := map[int64]bool{}
	for i, c := range r.Codes {
		cp := fmt.Sprintf("%s.codes[%d]", path, i)
		if c < 500 || c > 599 {
			errs.add(cp, CodeInvalid, "must be between 500 and 599")
		}
		if seen[c] {
			errs.add(cp, CodeDuplicate, "%d is listed twice", c)
		}
		seen[c] = true
	}
}

func validateFault(f *Fault, path string, errs *ErrorList) {
	if f == nil {
		return
	}
	if f.Delay == nil && f.Abort == nil {
		errs.add(path, CodeRequired, "give a delay, an abort or both")
	}
	if d := f.Delay; d != nil {
		percent(d.Percent, path+".delay.percent", errs)
		if d.Duration.Duration <= 0 {
			errs.add(path+".delay.duration", CodeInvalid, "must be greater than 0")
		}
	}
	if a := f.Abort; a != nil {
		percent(a.Percent, path+".abort.percent", errs)
		if a.HTTPStatus == 0 && a.GRPCStatus == nil {
			errs.add(path+".abort.httpStatus", CodeRequired, "give httpStatus, grpcStatus or both")
		}
		if a.HTTPStatus != 0 && (a.HTTPStatus < 200 || a.HTTPStatus > 599) {
			errs.add(path+".abort.httpStatus", CodeInvalid, "must be between 200 and 599")
		}
		intRange(a.GRPCStatus, 1, 16, path+".abort.grpcStatus", errs)
	}
}

func validateBackendPolicy(s *BackendPolicySpec, errs *ErrorList) {
	checkServiceRef(s.TargetRef.Kind, s.TargetRef.Name, "spec.targetRef", errs)
	positiveDuration(s.ConnectTimeout, "spec.connectTimeout", errs)
	if lb := s.LoadBalancer; lb != nil && lb.Type != LBRoundRobin && lb.Type != LBPeakEWMA {
		errs.add("spec.loadBalancer.type", CodeNotSupported, "%q: want %s or %s", lb.Type, LBRoundRobin, LBPeakEWMA)
	}
	if l := s.Limits; l != nil {
		intRange(l.MaxConnections, 1, math.MaxUint32, "spec.limits.maxConnections", errs)
		intRange(l.MaxPendingRequests, 1, math.MaxUint32, "spec.limits.maxPendingRequests", errs)
		intRange(l.MaxRequests, 1, math.MaxUint32, "spec.limits.maxRequests", errs)
		intRange(l.MaxRetries, 0, math.MaxUint32, "spec.limits.maxRetries", errs)
	}
	if cb := s.CircuitBreaker; cb != nil {
		p := "spec.circuitBreaker"
		intRange(cb.ConsecutiveFailures, 1, math.MaxUint32, p+".consecutiveFailures", errs)
		if r := cb.FailureRatio; r != nil && (math.IsNaN(*r) || *r <= 0 || *r > 1) {
			errs.add(p+".failureRatio", CodeInvalid, "must be greater than 0 and at most 1")
		}
		intRange(cb.MinRequests, 1, math.MaxUint32, p+".minRequests", errs)
		positiveDuration(cb.Window, p+".window", errs)
		positiveDuration(cb.OpenFor, p+".openFor", errs)
		intRange(cb.HalfOpenProbes, 1, math.MaxUint32, p+".halfOpenProbes", errs)
	}
	if od := s.OutlierDetection; od != nil {
		p := "spec.outlierDetection"
		intRange(od.Consecutive5xx, 1, math.MaxUint32, p+".consecutive5xx", errs)
		intRange(od.ConsecutiveGatewayFailure, 1, math.MaxUint32, p+".consecutiveGatewayFailure", errs)
		positiveDuration(od.Interval, p+".interval", errs)
		positiveDuration(od.BaseEjectionTime, p+".baseEjectionTime", errs)
		positiveDuration(od.MaxEjectionTime, p+".maxEjectionTime", errs)
		if od.BaseEjectionTime != nil && od.MaxEjectionTime != nil && od.MaxEjectionTime.Duration < od.BaseEjectionTime.Duration {
			errs.add(p+".maxEjectionTime", CodeInvalid, "%v is shorter than baseEjectionTime %v", od.MaxEjectionTime.Duration, od.BaseEjectionTime.Duration)
		}
		intRange(od.MaxEjectionPercent, 0, 100, p+".maxEjectionPercent", errs)
	}
	if rb := s.RetryBudget; rb != nil {
		p := "spec.retryBudget"
		if rb.Percent != nil {
			percent(*rb.Percent, p+".percent", errs)
		}
		intRange(rb.MinRetryConcurrency, 0, math.MaxUint32, p+".minRetryConcurrency", errs)
		intRange(rb.MinPerSecond, 0, math.MaxUint32, p+".minPerSecond", errs)
		positiveDuration(rb.Window, p+".window", errs)
	}
}

func validateFencingPolicy(s *FencingPolicySpec, errs *ErrorList) {
	t := s.TargetRef
	switch t.Kind {
	case TargetMesh:
		if t.Name != "" {
			errs.add("spec.targetRef.name", CodeForbidden, "a Mesh target has no name")
		}
	case TargetService:
		checkServiceRef(t.Kind, t.Name, "spec.targetRef", errs)
	case "":
		errs.add("spec.targetRef.kind", CodeRequired, "want %s or %s", TargetService, TargetMesh)
	default:
		errs.add("spec.targetRef.kind", CodeNotSupported, "%q: want %s or %s", t.Kind, TargetService, TargetMesh)
	}
	switch s.Mode {
	case FencingOn, FencingOff:
	case "":
		errs.add("spec.mode", CodeRequired, `want "on" or "off"`)
	default:
		errs.add("spec.mode", CodeNotSupported, `%q: want "on" or "off"`, s.Mode)
	}
	intRange(s.ExpectedSize, 1, 100_000, "spec.expectedSize", errs)
	seen := map[string]bool{}
	for i, m := range s.WriteMethods {
		p := fmt.Sprintf("spec.writeMethods[%d]", i)
		if !grpcMethod.MatchString(m) {
			errs.add(p, CodeInvalid, "%q: want /package.Service/Method or /package.Service/*", m)
		}
		if seen[m] {
			errs.add(p, CodeDuplicate, "%q is listed twice", m)
		}
		seen[m] = true
	}
}

// CheckSet checks rules that span resources: at most one BackendPolicy per
// service, at most one FencingPolicy per target, and rule names unique
// within each service's routes. Field paths are prefixed with the
// offending resource ("BackendPolicy/default/b.spec.targetRef.name").
func CheckSet(rs []*Resource) ErrorList {
	var errs ErrorList
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b *Resource) int { return compareKeys(a.Key(), b.Key()) })
	backend := map[string]Key{}
	fencing := map[string]Key{}
	ruleNames := map[string]Key{}
	for _, r := range sorted {
		k := r.Key()
		switch {
		case r.BackendPolicy != nil:
			svc := r.BackendPolicy.TargetRef.Name
			if prev, ok := backend[svc]; ok {
				errs.add(k.String()+".spec.targetRef.name", CodeDuplicate, "service %q already has BackendPolicy %s/%s", svc, prev.Namespace, prev.Name)
			}
			backend[svc] = k
		case r.FencingPolicy != nil:
			t := r.FencingPolicy.TargetRef
			target := t.Kind + "/" + t.Name
			if prev, ok := fencing[target]; ok {
				errs.add(k.String()+".spec.targetRef", CodeDuplicate, "%s already has FencingPolicy %s/%s", target, prev.Namespace, prev.Name)
			}
			fencing[target] = k
		case r.HTTPRoute != nil:
			for _, p := range r.HTTPRoute.ParentRefs {
				for i, rule := range r.HTTPRoute.Rules {
					if rule.Name == "" {
						continue
					}
					id := p.Name + "/" + rule.Name
					if prev, ok := ruleNames[id]; ok && prev != k {
						errs.add(fmt.Sprintf("%s.spec.rules[%d].name", k, i), CodeDuplicate, "service %q already has a rule named %q in HTTPRoute %s/%s", p.Name, rule.Name, prev.Namespace, prev.Name)
					}
					ruleNames[id] = k
				}
			}
		}
	}
	return errs
}

func compareKeys(a, b Key) int {
	for _, c := range [][2]string{{string(a.Kind), string(b.Kind)}, {a.Namespace, b.Namespace}, {a.Name, b.Name}} {
		if c[0] != c[1] {
			if c[0] < c[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// SortResources orders resources by kind, namespace and name: the stable
// order the translator and the API use.
func SortResources(rs []*Resource) {
	slices.SortFunc(rs, func(a, b *Resource) int { return compareKeys(a.Key(), b.Key()) })
}

func validateAuthorizationPolicy(s *AuthorizationPolicySpec, errs *ErrorList) {
	t := s.TargetRef
	switch t.Kind {
	case TargetService:
		checkServiceRef(t.Kind, t.Name, "spec.targetRef", errs)
	case "":
		errs.add("spec.targetRef.kind", CodeRequired, "want %s", TargetService)
	default:
		errs.add("spec.targetRef.kind", CodeNotSupported, "%q: want %s", t.Kind, TargetService)
	}
	if _, err := ParseAuthorization(s); err != nil {
		var fe authorizationFieldError
		if errors.As(err, &fe) {
			errs.add(fe.field, CodeInvalid, "%s", fe.msg)
		} else {
			errs.add("spec", CodeInvalid, "%v", err)
		}
	}
}
