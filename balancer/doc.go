// Package balancer spreads calls across a fleet of endpoints, in the manner of
// Envoy's load balancers, as a library: smooth weighted round robin,
// least-request by the power of two choices, Peak-EWMA, consistent hashing
// with bounded loads, and random ([Algorithm]). Before the algorithm runs,
// every pick filters the endpoints by eligibility, in this order: zone
// preference (stay in the caller's zone, spill over when too little of it is
// left), the verdicts of the judges (an active health checker, an outlier
// detector), then optional per-endpoint circuit breakers and concurrency
// limiters. When too few endpoints are eligible, the balancer enters panic
// mode and picks among all of them, as Envoy does. Endpoints that are new or
// back from failure ramp their weight up over a slow-start window.
//
// The [Balancer] owns the endpoint set. Its Followers — a *healthcheck.Checker,
// a *outlier.Detector, a *breaker.Group — are given the set by New and by
// every Update, so that a change of the fleet is one call, and the judges
// among them report their verdicts back through a function that New binds
// ([Judge]); nothing needs to be built before the balancer or wired to it
// afterwards. An endpoint that a checker has not probed yet is pending: it
// takes no call while another is eligible, and does not count against the
// panic threshold, so that start-up and rolling deploys never enter panic
// mode.
//
//	checker, _ := healthcheck.New(healthcheck.Config{Probe: probe, Interval: time.Second})
//	detector, _ := outlier.New(outlier.Config{})
//	lb, err := balancer.New(balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: eps,
//		Followers: []balancer.Follower{checker, detector}})
//	err = checker.Start(ctx)
//	err = lb.Update(newEps) // the checker and the detector follow
//
// A [Pick] is a small value, not a closure: the caller calls Done on it once,
// with the call's error and latency, and that feeds the in-flight counts, the
// latency estimates, the outlier detector and the breaker. A call that
// retries passes one [Tried] to each [Balancer.Pick], which then skips the
// endpoints already tried. [Transport] does all of this for HTTP: it picks
// an endpoint per request and retries replayable requests on another
// endpoint under a bulwark.Policy. A concurrency limiter per endpoint
// ([Limiter]) makes calls spill over from an endpoint at its limit rather
// than queue on it. Pick never blocks and does no I/O.
//
// Conventions, as in every bulwark package: New never starts a goroutine,
// and its errors wrap [ErrInvalidConfig]. The Balancer has no standing
// background work: verdicts are published by a goroutine started on demand,
// and slow start runs on a timer; Close stops both and waits. A caller with
// its own classification of a call sets [Result].Outcome.
package balancer
