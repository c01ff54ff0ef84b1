// Package retry runs an operation again when it fails, in a way that never
// makes an outage worse: jittered exponential backoff (the formulas of the AWS
// post "Exponential Backoff and Jitter"), limits on attempts, elapsed time and
// the context deadline, a shared Budget that caps retries at a fraction of the
// requests (as Finagle and Envoy do) and throttles them as gRPC does, server
// pushback through Retry-After, and hedged requests ("The Tail at Scale").
//
//	p, err := retry.New(retry.Config{MaxAttempts: 4, Budget: budget})
//	if err != nil { … }
//	err = p.Do(ctx, func(ctx context.Context) error { return client.Call(ctx, req) })
//
// A Policy and a Hedge are bulwark.Policy values, so they compose with the
// other guards: bulwark.Compose(retryPolicy, circuitBreaker) retries calls
// that pass the breaker, and waits out an open breaker instead of spinning on
// it, because every error that has a RetryAfter() time.Duration method is a
// lower bound for the next delay.
//
// When Do gives up it returns a *GiveUpError, which says why (one of the Err…
// sentinels, reachable with errors.Is) and unwraps to the last error of the
// operation.
//
// For HTTP, Transport retries replayable requests (see Replayable), rewinds
// their bodies with GetBody, closes the responses it discards and honours
// Retry-After (see ParseRetryAfter and StatusError).
//
// The first attempt costs nothing beyond the call of op: no allocation, no
// clock read, no timer (unless MaxElapsed or AttemptTimeout asks for them;
// a Budget adds one atomic add). The clock is read, and the random source
// drawn from, only once a retry is needed.
package retry
