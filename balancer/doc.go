// Package balancer spreads calls across a fleet of endpoints, in the manner of
// Envoy's load balancers, as a library: smooth weighted round robin,
// least-request by the power of two choices, Peak-EWMA, consistent hashing
// with bounded loads, and random. Before the algorithm runs, every pick
// filters the endpoints by eligibility, in this order: zone preference (stay
// in the caller's zone, spill over when too little of it is left), the
// verdicts of the judges (an active health checker, an outlier detector),
// then optional per-endpoint circuit breakers and concurrency limiters. When
// too few endpoints are
// eligible, the balancer enters panic mode and picks among all of them, as
// Envoy does. Endpoints that are new or back from failure ramp their weight
// up over a slow-start window.
//
// The Balancer owns the endpoint set. Its Followers — a *healthcheck.Checker,
// a *outlier.Detector, a *breaker.Group — are given the set by New
// and by every Update, so that a change of the fleet is one call, and the
// judges among them report their verdicts back through a function that New
// binds (Judge); nothing needs to be built before the balancer or wired to it
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
// A pick is a small value, not a closure: the caller calls Done on it once,
// with the call's error and latency, and that feeds the in-flight counts, the
// latency estimates, the outlier detector and the breaker. A call that
// retries keeps one Tried and passes it to each Pick, which then skips the
// endpoints already tried (for consistent hashing, it moves to the key's
// next owner):
//
//	var tried balancer.Tried // one per call
//	err := policy.Do(ctx, func(ctx context.Context) error {
//		pk, err := lb.Pick(key, &tried)
//		if err != nil { return err }
//		start := time.Now()
//		err = send(ctx, pk.Endpoint())
//		pk.Done(balancer.Result{Err: err, Latency: time.Since(start)})
//		return err
//	})
//
// Transport does all of this for HTTP: it picks an endpoint per request and
// retries replayable requests on another endpoint under a bulwark.Policy.
//
// A concurrency limiter per endpoint (Config.Limiter; a *limit.Limiter,
// adaptive, learns each endpoint's capacity from the latency and outcome of
// its calls) bounds the calls in flight on each: an endpoint at its limit is
// passed over for one with room, so that calls spill over to the others
// rather than queue on a slow one, and a pick that finds every endpoint at
// its limit fails at once with ErrUnavailable, wrapping the limiter's
// refusal and its RetryAfter. Done releases the slot and tells the limiter
// how the call went; Result.Overload marks a call the endpoint refused as
// too busy. Transport does not retry a request that the limits refused.
//
//	lb, err := balancer.New(balancer.Config{Endpoints: eps,
//		Limiter: func(ep bulwark.Endpoint) (balancer.Limiter, error) {
//			return limit.New(limit.Config{Name: "orders/" + ep.Addr, Headroom: -1})
//		}})
//
// Pick never blocks and does no I/O, and a pick that succeeds allocates
// nothing (with *limit.Limiter limiters too, even when it spills over): the
// endpoint set lives in an immutable snapshot behind an atomic pointer,
// with per-endpoint atomic counters and verdicts, and is replaced as a whole
// by Update and after verdicts change; Done never rebuilds it, even when its
// outcome gets the endpoint ejected.
//
// Conventions, as in every bulwark package: New never starts a goroutine,
// and its errors wrap [ErrInvalidConfig]. The Balancer has no standing
// background work: verdicts are published by a goroutine started on demand,
// and slow start runs on a timer; Close stops both and waits. A caller with
// its own classification of a call sets [Result].Outcome.
package balancer
