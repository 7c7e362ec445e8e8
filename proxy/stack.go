package proxy

import "net/http"

// The request path, written down once.
//
// Each layer is a func(next) http.Handler in forward.go; none calls another
// directly. Requests enter at the top. Responses the proxy generates
// itself (refusals, no endpoint, upstream failures) are written by
// errorWriter.write, in one place, and still pass back up through observe
// so that they are counted.
//
// Below the listeners sits the HTTP/1 framing guard (h1guard): on HTTP/1
// connections it has refused smuggling-shaped requests (CL+TE, bad chunking,
// obs-fold, bare CR/LF, CONNECT, Host mismatch, header limits) before
// net/http parsed them, so no layer here ever sees one.

// outboundStack handles the local app's calls to other services.
func (s *Sidecar) outboundStack() http.Handler {
	ew := &errorWriter{log: s.log, metrics: s.m, direction: "outbound"}
	var h http.Handler
	// 8. Forward over the mesh hop: HTTP/2 to an endpoint's inbound
	//    listener (HTTP/1.1 for upgrades), via the forwarder, which strips
	//    hop-by-hop and client-sent forwarding headers before our rewrite.
	//    Its transport runs the attempts (resilient.go): timeouts, budgeted
	//    retries, breakers, outlier detection, concurrency limits.
	h = s.forwardOutbound(ew)
	// 7½. Bodies (bodyguard.go): the request body's idle timeout, minimum
	//     rate and size cap (the target service's), the response's write
	//     timeout; below route, which names the target.
	h = s.guardBodies(ew, "outbound", h)
	// 7. Trace: client span (joining the app's trace) and this node's
	//    logical clocks stamped on the request; the responder's clocks are
	//    merged from the response (forwardOutbound).
	h = s.traceOutbound(h)
	// 6. Faults: the matched route's injected delays and aborts.
	h = s.faults(ew, h)
	// 5. Route: authority → service → the control plane's routes (match,
	//    weighted backends) → the target's resilience policy. Unknown service
	//    or no endpoint answers 503 no_healthy_upstream without forwarding.
	h = s.route(ew, h)
	// 4. Fence: while this side of a split lacks the quorum, the app's
	//    writes are answered 503 fenced and never forwarded; writes that
	//    pass carry the epoch they were admitted under. After hygiene, so
	//    the app cannot forge the epoch.
	h = s.fenceOutbound(ew, h)
	// 3. Hygiene: the app may not set headers only the mesh sets
	//    (x-mesh-epoch, x-mesh-error, …); request id kept or generated.
	h = appHygiene(h)
	// 2. Admit: refuse what no upstream may see (CONNECT, header count,
	//    abusive HTTP/2 resets); before routing so nothing is spent on it.
	h = s.admit(ew, s.cfg.Load().Limits.MaxHeaderCount, h)
	// 1. Observe: the exchange every layer shares; metrics on completion.
	//    Outermost, so refusals below are measured too.
	h = s.observe("outbound", h)
	return h
}

// inboundStack handles calls from other sidecars to the local app.
func (s *Sidecar) inboundStack() http.Handler {
	ew := &errorWriter{log: s.log, metrics: s.m, direction: "inbound"}
	var h http.Handler
	// 8. Forward to the local app in the protocol it speaks (HTTP/1.1
	//    keep-alive pool, or h2c for h2c and gRPC apps). The app's own
	//    x-mesh-error is dropped from its responses: only the mesh sets it.
	h = s.forwardInbound(ew)
	// 7½. Bodies: as outbound, with this sidecar's own cap.
	h = s.guardBodies(ew, "inbound", h)
	// 7. Fence: writes are refused while this sidecar is fenced, and
	//    writes admitted under an epoch older than the newest known are
	//    refused as stale; nothing refused reaches the app.
	h = s.fenceInbound(ew, h)
	// 6. Authorize: the service's AuthorizationPolicy on the normalized
	//    path and the caller's verified identity; denied → 403 forbidden;
	//    the request goes on with the normalized path.
	h = s.authorize(ew, h)
	// 5. Rate limit: the route's (control plane) or the instance's (file)
	//    token bucket; over it, 429 before anything else is spent.
	h = s.rateLimit(ew, h)
	// 4. Trace: merge the caller's clocks, server span, stamp the request
	//    to the app (and, in forwardInbound, the response returned).
	//    Before the refusals, so a refused request shows in its trace.
	h = s.traceInbound(h)
	// 3. Peer headers: read the caller's service for metrics, name the
	//    caller's verified identity (mutual TLS) to the app, and remove
	//    mesh-internal headers the app must not rely on.
	h = s.peerHygiene(h)
	// 2. Admit: as outbound, allowing the headers the calling sidecar added.
	h = s.admit(ew, s.cfg.Load().Limits.MaxHeaderCount+meshHeaderAllowance, h)
	// 1. Observe.
	h = s.observe("inbound", h)
	return h
}
