// Package translate turns policy and membership into xDS resources: the
// contract between the control plane and every sidecar (and proxyless
// gRPC client).
//
// # The xDS contract
//
// Per node (xDS Node.Id is the sidecar's node id, Node.Cluster its
// service), the control plane serves one consistent snapshot holding, for
// every mesh service S (services with instances, services named by
// policy, and the services of connected sidecars):
//
//   - Cluster "S": type EDS, EdsClusterConfig{ServiceName: "S", EdsConfig:
//     ADS}; LbPolicy LEAST_REQUEST (p2c-peak-ewma, the default) or
//     ROUND_ROBIN; ConnectTimeout (default 5s); CircuitBreakers.Thresholds[0]
//     {MaxConnections, MaxPendingRequests, MaxRequests, MaxRetries,
//     RetryBudget{BudgetPercent, MinRetryConcurrency}} when a BackendPolicy
//     sets limits or a retry budget; OutlierDetection {Consecutive_5Xx,
//     ConsecutiveGatewayFailure, Interval, BaseEjectionTime,
//     MaxEjectionTime, MaxEjectionPercent}. Causeway-only settings go in
//     Metadata.FilterMetadata["causeway"]:
//     {"breaker": {"consecutiveFailures", "failureRatio",
//     "minRequests", "window", "openFor", "halfOpenProbes"},
//     "retryBudget": {"minPerSecond", "window"}} (durations as Go
//     duration strings; only the keys policy sets).
//
//   - ClusterLoadAssignment "S": one LocalityLbEndpoints per zone, sorted,
//     with Locality{Zone} always set (Zone may be "") and
//     LoadBalancingWeight 1; LbEndpoints sorted by address, each with the
//     instance's sidecar inbound address, HealthStatus HEALTHY (alive and
//     ready), DRAINING (leaving or not ready) or UNHEALTHY (failed),
//     LoadBalancingWeight = the instance weight (≥ 1) and
//     Metadata.FilterMetadata["causeway"] {"node", "version"}.
//
//   - Listener "S": api_listener HttpConnectionManager with RDS route
//     config "S" over ADS and the router filter last, mirrored into a
//     filter chain so Snapshot.Consistent() sees the reference. A
//     proxyless gRPC client dials xds:///S.
//
//   - RouteConfiguration "S": one VirtualHost "S" with Domains ["S",
//     "S:*"]; the rules of every HTTPRoute whose parentRefs name S, in
//     (namespace, name) order of the HTTPRoutes and rule order within
//     each, one Route per match (a rule without matches matches every
//     path); last, "S/default": prefix "/" to cluster S.
//     Route names: the rule's name, or "S/<i>" with i the rule's index
//     among all of S's rules; a rule's second and later matches append
//     "/<j>". Matches: path PathPrefix/Exact/RegularExpression, headers
//     (lower-cased names), method as a ":method" header. Action: cluster
//     S when the rule has no backendRefs, the one backend, or
//     WeightedClusters (zero weights left out). timeouts.request sets
//     Timeout and MaxStreamDuration (gRPC reads the latter); a retry block
//     sets RetryPolicy{RetryOn, NumRetries (attempts, default 2),
//     PerTryTimeout (backendRequest), RetryBackOff{BaseInterval (backoff,
//     default 25ms), MaxInterval (10×)}, RetriableStatusCodes (codes)};
//     without retries, backendRequest bounds the only attempt, so the
//     shorter of it and request is the route timeout.
//
//   - One TypedExtensionConfig (resourcev3.ExtensionConfigType) named
//     "causeway.mesh" whose TypedConfig is a google.protobuf.Struct:
//
//     {"services": {"S": {"routes": {"ROUTE_NAME": {
//     "fault": {"delayPercent": 10, "delay": "100ms", "abortPercent": 5,
//     "abortStatus": 503, "abortGrpcStatus": 14},
//     "rateLimit": {"perSecond": 100, "burst": 20}}},
//     "fencing": {"mode": "on", "expectedSize": 3,
//     "grpcWriteMethods": ["/pkg.Svc/Method", "/pkg.Svc/*"]}}},
//     "fencing": {"mode": "on"}, "clock": {}}
//
//     ROUTE_NAME is a Route.Name in RouteConfiguration S; only routes
//     with a fault or rate limit appear, and only the keys policy sets.
//     Durations are Go duration strings, percents 0–100. "fencing" is the
//     FencingPolicy targeting the service (services.S.fencing) or the Mesh
//     (top level): {} when there is none, else "mode" ("on" or "off"),
//     "expectedSize" (an integer ≥ 1, only when the policy sets it) and
//     "grpcWriteMethods" (the policy's writeMethods, only when set). A
//     service's own entry replaces the mesh-wide one for that service;
//     without either, fencing is on for the whole mesh. "clock" is present
//     and empty until the logical-clock settings are defined. Unknown keys
//     are an error on the sidecar side (NACK).
//
// Every change gets a new snapshot version; resource names are exactly
// the service names.
package translate
