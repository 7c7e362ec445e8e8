package translate

import (
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

// Validate checks the output before it is served: protoc-gen-validate
// rules (ValidateAll) on every resource, then the semantic rules that
// proxyless gRPC and the sidecar enforce but the proto rules do not
// (LIBRARIES.md §1.5, §2): retries ≥ 1 with positive back-off, weighted
// clusters with a positive total naming known clusters, localities with a
// Locality and a weight ≥ 1, endpoint weights ≥ 1, unique endpoint
// addresses, ejection percentages ≤ 100, the router filter last. It
// returns every problem, joined.
func Validate(o *Output) error {
	var errs []error
	add := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	clusters := map[string]bool{}
	for _, c := range o.Clusters {
		add("cluster "+c.GetName(), c.ValidateAll())
		add("cluster "+c.GetName(), checkCluster(c))
		clusters[c.GetName()] = true
	}
	for _, e := range o.Endpoints {
		what := "endpoints " + e.GetClusterName()
		add(what, e.ValidateAll())
		if !clusters[e.GetClusterName()] {
			add(what, errors.New("no cluster of that name"))
		}
		seen := map[string]bool{}
		for i, l := range e.GetEndpoints() {
			if l.GetLocality() == nil {
				add(what, fmt.Errorf("locality %d has no Locality (gRPC NACKs the whole assignment)", i))
			}
			if l.GetLoadBalancingWeight().GetValue() < 1 {
				add(what, fmt.Errorf("locality %d has no weight (gRPC drops it)", i))
			}
			for _, ep := range l.GetLbEndpoints() {
				sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
				addr := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
				if seen[addr] {
					add(what, fmt.Errorf("address %s repeats", addr))
				}
				seen[addr] = true
				if w := ep.GetLoadBalancingWeight(); w != nil && w.GetValue() < 1 {
					add(what, fmt.Errorf("endpoint %s has weight 0", addr))
				}
			}
		}
	}
	routes := map[string]bool{}
	for _, r := range o.Routes {
		add("route config "+r.GetName(), r.ValidateAll())
		add("route config "+r.GetName(), checkRoutes(r, clusters))
		routes[r.GetName()] = true
	}
	for _, l := range o.Listeners {
		add("listener "+l.GetName(), l.ValidateAll())
		hcm := &hcmv3.HttpConnectionManager{}
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(hcm); err != nil {
			add("listener "+l.GetName(), fmt.Errorf("api_listener is not an HttpConnectionManager: %w", err))
			continue
		}
		if name := hcm.GetRds().GetRouteConfigName(); !routes[name] {
			add("listener "+l.GetName(), fmt.Errorf("names route config %q, which is not in the snapshot", name))
		}
		f := hcm.GetHttpFilters()
		if len(f) == 0 || f[len(f)-1].GetName() != wellknown.Router {
			add("listener "+l.GetName(), errors.New("the router must be the last HTTP filter"))
		}
	}
	if o.Extension == nil {
		add(ExtensionName, errors.New("missing"))
	} else {
		add(ExtensionName, o.Extension.ValidateAll())
	}
	return errors.Join(errs...)
}

func checkCluster(c *clusterv3.Cluster) error {
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST:
	default:
		return fmt.Errorf("lb_policy %v is not round-robin or least-request", c.GetLbPolicy())
	}
	if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		return errors.New("must be an EDS cluster fed over ADS")
	}
	if od := c.GetOutlierDetection(); od != nil && od.GetMaxEjectionPercent() != nil && od.GetMaxEjectionPercent().GetValue() > 100 {
		return errors.New("outlier_detection.max_ejection_percent is above 100")
	}
	return nil
}

func checkRoutes(rc *routev3.RouteConfiguration, clusters map[string]bool) error {
	var errs []error
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			if a == nil {
				errs = append(errs, fmt.Errorf("route %s: no route action", r.GetName()))
				continue
			}
			if r.GetMatch().GetPathSpecifier() == nil {
				errs = append(errs, fmt.Errorf("route %s: no path matcher", r.GetName()))
			}
			if c := a.GetCluster(); c != "" && !clusters[c] {
				errs = append(errs, fmt.Errorf("route %s: cluster %q is not in the snapshot", r.GetName(), c))
			}
			if wc := a.GetWeightedClusters(); wc != nil {
				var total uint64
				for _, c := range wc.GetClusters() {
					total += uint64(c.GetWeight().GetValue())
					if !clusters[c.GetName()] {
						errs = append(errs, fmt.Errorf("route %s: cluster %q is not in the snapshot", r.GetName(), c.GetName()))
					}
				}
				if total == 0 || total > 1<<32-1 {
					errs = append(errs, fmt.Errorf("route %s: weighted clusters total %d, want 1 to 2^32-1", r.GetName(), total))
				}
			}
			if rp := a.GetRetryPolicy(); rp != nil {
				if rp.GetNumRetries().GetValue() < 1 {
					errs = append(errs, fmt.Errorf("route %s: retry_policy.num_retries must be at least 1", r.GetName()))
				}
				if b := rp.GetRetryBackOff(); b != nil && (b.GetBaseInterval().AsDuration() <= 0 || b.GetMaxInterval().AsDuration() <= 0) {
					errs = append(errs, fmt.Errorf("route %s: retry back-off intervals must be above 0", r.GetName()))
				}
			}
		}
	}
	return errors.Join(errs...)
}
