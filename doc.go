// Package bulwark is the shared vocabulary of the bulwark resilience library:
// the [Policy] interface that every guard satisfies, [Compose] and [Call] to
// combine guards around an operation, the [Endpoint] that balancers and health
// checkers talk about, the failure classification that retries and breakers
// agree on ([Permanent], [Classify], and [StatusError] for HTTP), one event
// model for observability ([Observer], [ContextObserver], [Event], with
// [SlogObserver] to log events) and an injectable [Clock].
//
// The capabilities live in sub-packages: consistenthash, balancer,
// healthcheck, outlier, healthz, discovery, retry, breaker, limit,
// ratelimit, throttle, timeout, fallback and idempotency. They never import
// each other (balancer may use consistenthash); they meet in the caller
// through the types of this package:
//
//	guard := bulwark.Compose(retryPolicy, circuitBreaker) // outermost first
//	order, err := bulwark.Call(ctx, guard, func(ctx context.Context) (Order, error) {
//		return orders.Get(ctx, id)
//	})
//
// Every package follows the same conventions (CONTRIBUTING.md lists them):
// New(cfg Config) (*T, error) never starts a goroutine, and its errors wrap
// the package's ErrInvalidConfig; background work has Start(ctx) and a
// Close that waits; a nil Clock is the wall clock and a nil Observer costs
// nothing; classification hooks take the call's context and error; the zero
// [Outcome] is [OutcomeUnknown], "no outcome"; each [Event] field has one
// meaning.
//
// Every type in this package is safe for concurrent use unless its
// documentation says otherwise.
package bulwark
