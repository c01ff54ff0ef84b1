// Package retry runs an operation again when it fails, in a way that never
// makes an outage worse: jittered exponential backoff (the formulas of the AWS
// post "Exponential Backoff and Jitter"), limits on attempts, elapsed time and
// the context deadline, a shared [Budget] that caps retries at a fraction of the
// requests (as Finagle and Envoy do) and throttles them as gRPC does, server
// pushback through Retry-After, and hedged requests ([Hedge], "The Tail at
// Scale").
//
//	p, err := retry.New(retry.Config{MaxAttempts: 4, Budget: budget})
//	if err != nil { … }
//	err = p.Do(ctx, func(ctx context.Context) error { return client.Call(ctx, req) })
//
// A [Policy] and a Hedge are [bulwark.Policy] values, so they compose with
// the other guards: [bulwark.Compose](retryPolicy, circuitBreaker) retries
// calls that pass the breaker. Every error that has a RetryAfter()
// time.Duration method, such as a [*bulwark.StatusError] for a 503 with
// Retry-After, is a lower bound for the next delay; but an open breaker's
// refusal ends the call at once, as a breaker means it to, unless
// [Config].MaxOpenWait asks to wait for it. However a Policy and a Hedge are composed, one bulwark.Compose is one
// logical request: a Budget they share counts it once, so that a failing
// dependency sees at most (1 + Ratio) × its normal load plus the reserve.
//
// When Do gives up it returns a [*GiveUpError], which says why (one of the
// Err… sentinels such as [ErrAttempts] or [ErrBudget], reachable with
// errors.Is) and unwraps to the last error of the operation. [Attempt] tells
// the operation which attempt it is running.
//
// For HTTP, [Transport] retries replayable requests (see [Replayable]) under
// any bulwark.Policy, rewinds their bodies with GetBody, closes the responses
// it discards and honours Retry-After (see [ResponseError]); balancer.Transport
// follows the same rules. For a single upstream, put a breaker.Transport under
// it as its Base.
//
// The first attempt costs nothing beyond the call of op: no allocation, no
// clock read, no timer (unless MaxElapsed or AttemptTimeout asks for them;
// a Budget adds one atomic add). The clock is read, and the random source
// drawn from, only once a retry is needed. A Hedge runs its first attempt on
// the caller's goroutine: a call that no hedge joins costs a timer, and no
// goroutine, channel or context.
//
// Conventions, as in every bulwark package: [New], [NewBudget] and [NewHedge]
// never start a goroutine, and their errors wrap [ErrInvalidConfig].
// Config.Retryable takes the call's context and error, as every
// classification hook does.
package retry
