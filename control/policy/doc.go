// Package policy defines Causeway's policy resources, decodes them strictly
// from YAML or JSON and validates them.
//
// Every resource has the Kubernetes shape:
//
//	apiVersion: causeway.dev/v1alpha1
//	kind: HTTPRoute | BackendPolicy | FencingPolicy
//	metadata: {name, namespace (default "default"), resourceVersion, labels}
//	spec: ...
//
// HTTPRoute follows Gateway API field names (parentRefs, rules, matches,
// backendRefs with weights, timeouts{request, backendRequest},
// retry{attempts, backoff, codes}); a rule's fault and rateLimit are
// Causeway extensions. BackendPolicy targets one service (targetRef) with
// connectTimeout, loadBalancer, limits, circuitBreaker, outlierDetection
// and retryBudget. FencingPolicy targets a service or the whole Mesh.
//
// Decoding refuses unknown keys (case-sensitively), duplicate keys and
// values of the wrong type; validation then checks every rule. Each
// problem is a FieldError with a path ("spec.rules[0].backendRefs[1].weight"),
// a stable Code ("FieldValueInvalid") and a message, so API clients can
// point at the field. Rules that span resources (one BackendPolicy per
// service, ...) are in CheckSet.
package policy
