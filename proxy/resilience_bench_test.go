package proxy

import (
	"testing"

	"github.com/causeway-mesh/causeway/proxy/config"
)

// BenchmarkResilienceOverhead measures what the outbound resilience layers
// cost on the full mesh hop (client → outbound sidecar → HTTP/2 → inbound
// sidecar → app, as BenchmarkMeshHop): the default policy against the
// lightest one the configuration allows. The retry budget and the
// endpoint's breaker bookkeeping cannot be turned off, so "light" still
// deposits in the budget and reports each result to a breaker that never
// trips; it drops the retries (and with them the replay buffer's use),
// the overall and idle timers, the concurrency limits and outlier
// detection. Run side by side:
//
//	go test -run '^$' -bench ResilienceOverhead -benchtime 20000x -count 3 ./proxy/
func BenchmarkResilienceOverhead(b *testing.B) {
	light := &config.Resilience{
		Timeouts: &config.TimeoutsSpec{Overall: resDur(0), Idle: resDur(0), PerTry: resDur(0)},
		Retry:    &config.RetrySpec{MaxAttempts: resPtr(1), BufferLimit: resPtr(0)},
		Breaker:  &config.BreakerSpec{ConsecutiveFailures: resPtr(0), FailureRatio: resPtr(0.0)},
		Outlier: &config.OutlierSpec{Consecutive5xx: resPtr(0), ConsecutiveGatewayErrors: resPtr(0),
			ConsecutiveConnectFailures: resPtr(0)},
		Limits: &config.LimitsSpec{MaxConnections: resPtr(0), MaxPending: resPtr(0), MaxRequests: resPtr(0), MaxRetries: resPtr(0)},
	}
	for _, bc := range []struct {
		name   string
		policy *config.Resilience // nil: the defaults
	}{
		{"default", nil},
		{"light", light},
	} {
		b.Run(bc.name, func(b *testing.B) {
			app := startApp(b, helloApp)
			server := startSidecar(b, testConfig("bench", app, config.ProtocolHTTP1))
			client := startSidecar(b, resClientConfig(map[string]config.Upstream{"bench": {
				Endpoints: []string{server.addr("inbound")}, Resilience: bc.policy}}))
			benchmarkGet(b, "http://"+client.addr("outbound")+"/", "bench", h1Client())
		})
	}
}
