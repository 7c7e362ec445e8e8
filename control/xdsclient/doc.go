// Package xdsclient is the sidecar's xDS client: a state-of-the-world ADS
// client that turns the control plane's Envoy resources into one decoded,
// consistent configuration at a time.
//
// # Use
//
//	c, err := xdsclient.New(xdsclient.Config{
//		ServerAddr: "127.0.0.1:18000", NodeID: nodeID, ServiceName: "orders",
//		Apply: xdsclient.ModelApplier(func(ctx context.Context, m *xdsclient.Model) error {
//			return sidecar.Swap(m) // build the routing table, swap it atomically
//		}),
//	})
//	go c.Run(ctx) // until ctx ends or c.Close()
//	status := c.Status() // for the admin API
//
// # Protocol
//
// One ADS stream (AggregatedDiscoveryService.StreamAggregatedResources)
// carries wildcard subscriptions to five types, requested in this order:
// Cluster, ClusterLoadAssignment, Listener, RouteConfiguration and
// TypedExtensionConfig (ECDS). The first request carries the Node: Id =
// NodeID, Cluster = ServiceName, Locality.Zone = Zone and metadata
// {"version": Version, "zone": Zone}. On a reconnect each request carries
// the last ACKed version, so an unchanged control plane sends nothing new.
//
// A response whose resources do not decode or fail their protoc-gen-validate
// rules is NACKed at once without calling Apply. Otherwise it is staged and
// ACKed. When every type has been received at the same version_info and
// the references resolve (Snapshot.Consistent), Apply is called once with
// the whole Snapshot; the response that completed it is ACKed if Apply
// succeeds. If Apply fails, that response and every other staged response
// of the version are NACKed: version_info is the last applied version, the
// nonce is the response's, and error_detail is {code: INVALID_ARGUMENT,
// message: the error text}. The applied snapshot stays in force. A
// rejected version that the server sends again is NACKed again after
// Config.RejectedResendDelay, which bounds go-control-plane's resend loop.
//
// Until every type of a version has arrived, or while a cluster waits for
// its ClusterLoadAssignment or a listener for its RouteConfiguration, the
// client waits (Status.Waiting says for what); Envoy warms the same way.
// The stream reconnects with exponential back-off and full jitter (500ms
// base, 30s cap, reset after a stream lived Config.StableStream) and gRPC
// keepalive pings detect a dead control plane (30s, 10s timeout).
//
// # The xDS contract
//
// The control plane serves each node (Node.Id) ONE snapshot. Every change
// gets a new version string, and all five types carry that version and are
// always present in the snapshot, possibly empty. For every mesh service S:
//
//   - Cluster "S": type EDS, eds_cluster_config {service_name "S",
//     eds_config ADS}; lb_policy ROUND_ROBIN (round-robin) or LEAST_REQUEST
//     (p2c-peak-ewma, the default); connect_timeout;
//     circuit_breakers.thresholds[0] {max_connections,
//     max_pending_requests, max_requests, max_retries, retry_budget
//     {budget_percent, min_retry_concurrency}}; outlier_detection
//     {consecutive_5xx, consecutive_gateway_failure, interval,
//     base_ejection_time, max_ejection_time, max_ejection_percent ≤ 100};
//     and metadata.filter_metadata["causeway"], a Struct of the form
//
//     {"breaker": {"consecutiveFailures": 5, "failureRatio": 0.5,
//     "minRequests": 20, "window": "10s", "openFor": "30s",
//     "halfOpenProbes": 1},
//     "retryBudget": {"minPerSecond": 10, "window": "10s"}}
//
//     (both keys optional; durations are Go duration strings).
//
//   - ClusterLoadAssignment with cluster_name "S": one locality per zone,
//     each with locality.zone set and load_balancing_weight 1; endpoints
//     with a TCP socket_address (the instance's sidecar inbound address),
//     health_status HEALTHY, DRAINING or UNHEALTHY, load_balancing_weight ≥
//     1, and metadata.filter_metadata["causeway"] {"node": …, "version": …}.
//
//   - Listener "S": api_listener holding an HttpConnectionManager with RDS
//     route_config_name "S" over ADS and the router filter last, mirrored
//     into a filter chain so go-control-plane's Consistent() sees it.
//
//   - RouteConfiguration "S": one virtual host with domains ["S", "S:*"];
//     routes in order, each named ("S/<rule index>" or the rule's name),
//     matching a path prefix, exact path or safe_regex, header string
//     matchers, and the method as an exact ":method" header matcher;
//     a RouteAction with cluster or weighted_clusters, timeout,
//     max_stream_duration equal to the timeout, and retry_policy {retry_on,
//     num_retries ≥ 1, per_try_timeout, retry_back_off {base_interval,
//     max_interval}, retriable_status_codes}; last, a prefix "/" route to
//     cluster "S".
//
//   - One TypedExtensionConfig named "causeway.mesh" whose typed_config is
//     a google.protobuf.Struct with exactly this shape (every key optional;
//     durations are Go duration strings, percents 0–100; ROUTE is a
//     Route.name of RouteConfiguration S):
//
//     {"services": {"S": {
//     "routes": {"ROUTE": {
//     "fault": {"delayPercent": 10, "delay": "100ms",
//     "abortPercent": 5, "abortStatus": 503, "abortGrpcStatus": 14},
//     "rateLimit": {"perSecond": 100, "burst": 20}}},
//     "fencing": {"mode": "on", "expectedSize": 3,
//     "grpcWriteMethods": ["/pkg.Svc/Method", "/pkg.Svc/*"]}}},
//     "fencing": {"mode": "on"}, "clock": {}}
//
//     Unknown keys anywhere are an error (NACK). A "fencing" entry (per
//     service, and mesh-wide at the top) is {} when no FencingPolicy
//     targets the scope; otherwise "mode" is required and is "on" or
//     "off", "expectedSize" is an integer ≥ 1 and "grpcWriteMethods"
//     lists distinct "/package.Service/Method" or "/package.Service/*"
//     (see FencingPolicy; Model.FencingFor resolves service over mesh over
//     the default, on). "clock" is reserved and accepts only {}.
//
// # What the sidecar honours
//
// BuildModel turns a Snapshot into a Model and rejects, with an error naming
// the resource and field, anything the sidecar would not run faithfully.
//
//	Resource / field                             Honoured as                      Unset means
//	Cluster.type                                 must be EDS                      -
//	Cluster.eds_cluster_config                   CLA name; eds_config must be ADS  CLA named like the cluster
//	Cluster.lb_policy                            ROUND_ROBIN, LEAST_REQUEST only   ROUND_ROBIN (Envoy's default)
//	Cluster.connect_timeout                      Service.ConnectTimeout           1s
//	Cluster.circuit_breakers.thresholds          one DEFAULT-priority entry       no limits from xDS
//	  .retry_budget                              RetryBudget                      20%, min concurrency 3
//	Cluster.outlier_detection                    consecutive_5xx, consecutive_gateway_failure,
//	                                             interval, base/max_ejection_time,
//	                                             max_ejection_percent             Envoy defaults (5, off, 10s, 30s, 300s, 10%)
//	Cluster.metadata causeway                    Breaker, RetryBudget min/window  sidecar defaults
//	Cluster.load_balancing_policy                rejected                         -
//	ClusterLoadAssignment locality               zone (required), weight ≥ 1 (required), priority 0 only
//	LbEndpoint                                   address:port (TCP), health, weight, causeway metadata
//	LbEndpoint.health_status                     HEALTHY/UNKNOWN, DRAINING, UNHEALTHY/TIMEOUT; DEGRADED rejected
//	Listener.api_listener                        HCM with RDS over ADS, router last
//	RouteConfiguration                           exactly one virtual host
//	Route.match                                  prefix, path, safe_regex; headers (string_match,
//	                                             present_match, invert); ":method" exact
//	Route.match.case_sensitive=false,
//	  query_parameters, other path specifiers    rejected
//	Route.route                                  cluster, weighted_clusters (names must exist)
//	RouteAction.timeout / max_stream_duration    Route.Timeout (must agree)        no per-route timeout
//	RouteAction.retry_policy                     retry_on, num_retries, per_try_timeout,
//	                                             retry_back_off, retriable_status_codes
//	Route redirect / direct_response             rejected
//
// Ignored (accepted, no effect in the sidecar): every other Cluster field
// (transport sockets, health checks, DNS settings, common_lb_config),
// ClusterLoadAssignment.policy, Listener filter_chains (the api_listener is
// authoritative; the chain only mirrors it) and every HCM setting except
// RDS and the filter list, VirtualHost.domains, retry_policy/hedge_policy on
// the virtual host, RouteAction fields not listed above (prefix_rewrite,
// hash_policy, idle_timeout, …), typed_per_filter_config, and extension
// configs other than causeway.mesh.
package xdsclient
