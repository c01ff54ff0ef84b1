// Package balancer spreads calls across a fleet of endpoints, in the manner of
// Envoy's load balancers, as a library: smooth weighted round robin,
// least-request by the power of two choices, Peak-EWMA, consistent hashing
// with bounded loads, and random. Before the algorithm runs, every pick
// filters the endpoints by eligibility, in this order: zone preference (stay
// in the caller's zone, spill over when too little of it is left), health and
// outlier ejection (pushed in through HealthChanged and EjectionChanged, so a
// *Balancer is a healthcheck.Listener), then optional per-endpoint circuit
// breakers. When too few endpoints are eligible, the balancer enters panic
// mode and picks among all of them, as Envoy does. Endpoints that are new or
// back from failure ramp their weight up over a slow-start window.
//
// A pick is a small value, not a closure: the caller calls Done on it once,
// with the call's error and latency, and that feeds the in-flight counts, the
// latency estimates, the outlier detector and the breaker.
//
//	lb, err := balancer.New(balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: eps})
//	pk, err := lb.Pick("")
//	if err != nil { return err }
//	resp, err := send(ctx, pk.Endpoint())
//	pk.Done(balancer.Outcome{Err: err, Latency: time.Since(start)})
//
// Transport does all of this for HTTP: it picks an endpoint per request and
// retries replayable requests on another endpoint under a bulwark.Policy.
//
// Pick never blocks and does no I/O: the endpoint set lives in an immutable
// snapshot behind an atomic pointer, with per-endpoint atomic counters, and is
// replaced as a whole by Update and by health changes.
package balancer
