// Package bulwark is the shared vocabulary of the bulwark resilience library:
// the [Policy] interface that every guard satisfies, [Compose] and [Call] to
// combine guards around an operation, the [Endpoint] that balancers and health
// checkers talk about, the failure classification that retries and breakers
// agree on ([Permanent], [Classify], and [StatusError] for HTTP), one event
// model for observability ([Observer], [ContextObserver], [Event], with
// [SlogObserver] to log events) and an injectable [Clock].
//
// The capabilities live in sub-packages: consistenthash, balancer,
// healthcheck, retry, breaker and idempotency. They never import each other
// (balancer may use consistenthash); they meet in the caller through the
// types of this package:
//
//	guard := bulwark.Compose(retryPolicy, circuitBreaker) // outermost first
//	order, err := bulwark.Call(ctx, guard, func(ctx context.Context) (Order, error) {
//		return orders.Get(ctx, id)
//	})
//
// Every type in this package is safe for concurrent use unless its
// documentation says otherwise.
package bulwark
